"""Multipart bodies: find fields by name, and splice small field values without re-encoding files.

The relay forwards multipart uploads byte for byte; it only needs a few text fields
(``model``, ``response_format``) and their byte offsets so a mapped model name can be
swapped in place, without copying the files around it. Parsing uses python-multipart's
streaming parser, and stops at the first part beyond ``max_parts`` or the first text field
longer than ``max_field_bytes``: a hostile body costs about what an honest one does.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from python_multipart.multipart import MultipartParser, parse_options_header

from polyrelay.errors import RelayError, bad_request

MAX_PARTS = 100
MAX_FIELD_BYTES = 128 * 1024  # a 32,000-character prompt (gpt-image-1's limit) in any script fits
NOT_MULTIPART = "Expected a multipart/form-data body with a boundary."


@dataclass(slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    start: int  # byte offsets of the part's data inside the body
    end: int

    def value(self, body: bytes) -> bytes:
        return body[self.start : self.end]


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise bad_request(NOT_MULTIPART)
    return boundary


def parse_parts(body: bytes, content_type: str, *, max_parts: int = MAX_PARTS,
                max_field_bytes: int = MAX_FIELD_BYTES) -> list[Part]:
    """Every part with its headers and data span. The body is parsed in one pass, in place.

    A part with a filename is a file and only the body's limit applies to it; any other part
    is a text field, refused (413) beyond ``max_field_bytes``.
    """
    parts: list[Part] = []
    begun = 0  # every part, named or not
    header_name = b""
    headers: dict[bytes, bytes] = {}
    disposition: dict[bytes, bytes] = {}
    span: list[int] = []
    headers_end = 0  # where the part's last header value ends

    def on_part_begin() -> None:
        nonlocal begun
        begun += 1
        if begun > max_parts:  # before the part's work: the excess costs nothing
            raise RelayError(413, f"The multipart body has more than the {max_parts} parts this gateway accepts.",
                             code="too_many_parts")
        headers.clear()
        span.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        nonlocal header_name
        header_name = data[start:end].lower()

    def on_header_value(data: bytes, start: int, end: int) -> None:
        nonlocal headers_end
        headers[header_name] = headers.get(header_name, b"") + data[start:end]
        headers_end = end

    def on_headers_finished() -> None:
        nonlocal disposition
        disposition = parse_options_header(headers.get(b"content-disposition", b""))[1]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        # Fed the whole body at once, so offsets into ``data`` are offsets into ``body``.
        if not span:
            span.extend((start, end))
        else:
            span[1] = end
        if span[1] - span[0] > max_field_bytes and b"filename" not in disposition:
            name = disposition.get(b"name", b"").decode("utf-8", "replace")
            raise RelayError(413, f"The multipart field '{name}' is larger than the {max_field_bytes} bytes this "
                             "gateway accepts for a field that is not a file.", code="field_too_large", param=name)

    def on_part_end() -> None:
        name = disposition.get(b"name")
        if name is None:
            return
        filename = disposition.get(b"filename")
        if span:
            start, end = span
        else:  # an empty value: the parser reports no data, so its place is just after the blank line
            start = end = body.index(b"\r\n\r\n", headers_end) + 4
        content_type = headers.get(b"content-type")
        parts.append(
            Part(
                name=name.decode("utf-8", "replace"),
                filename=filename.decode("utf-8", "replace") if filename is not None else None,
                content_type=content_type.decode("latin-1") if content_type else None,
                start=start,
                end=end,
            )
        )

    parser = MultipartParser(
        boundary_of(content_type),
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except RelayError:
        raise
    except Exception as exc:  # the parser raises several types; all mean a malformed body
        raise bad_request(f"Malformed multipart body: {exc}") from None
    return parts


def find(parts: list[Part], name: str) -> Part | None:
    return next((part for part in parts if part.name == name), None)


def splice(
    body: bytes, content_type: str, replace: list[tuple[Part, bytes]], append: list[tuple[str, bytes]]
) -> list[bytes | memoryview]:
    """The body with some parts' values replaced and text fields added before the closing boundary.

    Returned as consecutive buffers (views of ``body`` around the small new values) that the
    upstream client writes one after the other, so the upload is never copied.
    """
    view = memoryview(body)
    pieces: list[bytes | memoryview] = []
    position = 0
    for part, value in sorted(replace, key=lambda edit: edit[0].start):
        pieces += (view[position : part.start], value)
        position = part.end
    if append:
        boundary = boundary_of(content_type)
        closing = body.rfind(b"--" + boundary + b"--")
        if closing < position:
            raise bad_request("Malformed multipart body: no closing boundary.")
        pieces.append(view[position:closing])
        for name, value in append:
            disposition = b'\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n'
            pieces.append(b"--" + boundary + disposition + value + b"\r\n")
        position = closing
    pieces.append(view[position:])
    return pieces


def encode(fields: list[tuple[str, bytes, str | None, str | None]]) -> tuple[bytes, str]:
    """Build a multipart/form-data body for adaptors that translate JSON into a form upload.

    ``fields`` are ``(name, value, filename, content_type)``; returns the body and its
    Content-Type header (with a fresh random boundary).
    """
    boundary = "polyrelay" + secrets.token_hex(16)
    out: list[bytes] = []
    for name, value, filename, content_type in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode())
        if content_type:
            out.append(f"Content-Type: {content_type}\r\n".encode())
        out.append(b"\r\n" + value + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"
