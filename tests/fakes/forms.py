"""A strict multipart/form-data reader for the fakes, independent of polyrelay's own parser.

The recording middleware has already read the body, so aiohttp's ``request.post()``
cannot; this splits the recorded bytes on the boundary exactly as an upstream would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web


@dataclass
class Field:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode()


class Form:
    def __init__(self, fields: list[Field]) -> None:
        self.fields = fields

    def get(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)

    def all(self, name: str) -> list[Field]:
        return [f for f in self.fields if f.name == name]

    def text(self, name: str, default: str | None = None) -> str | None:
        field = self.get(name)
        return field.text if field is not None else default


def parse(content_type: str, body: bytes) -> Form:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        raise ValueError("not a multipart/form-data body")
    delimiter = b"--" + match.group(1).encode()
    chunks = body.split(delimiter)
    if not chunks[-1].startswith(b"--"):
        raise ValueError("no closing boundary")
    fields = []
    for chunk in chunks[1:-1]:
        head, _, data = chunk[2:].partition(b"\r\n\r\n")  # skip the CRLF after the delimiter
        if not data.endswith(b"\r\n"):
            raise ValueError("part does not end with CRLF")
        headers = {}
        for line in head.decode("utf-8").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        fields.append(Field(name.group(1) if name else "", filename.group(1) if filename else None,
                            headers.get("content-type"), data[:-2]))
    return Form(fields)


async def read_form(request: web.Request) -> Form:
    return parse(request.headers.get("Content-Type", ""), await request.read())
