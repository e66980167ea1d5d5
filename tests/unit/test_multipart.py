"""Multipart bodies: parsing parts with their byte spans, finding fields, splicing values in place.

Bodies follow RFC 7578 (multipart/form-data) and RFC 2046 framing: CRLF line breaks, parts
opened by ``--boundary`` and the body closed by ``--boundary--``.
"""

from __future__ import annotations

import random

import pytest

from polyrelay import multipart
from polyrelay.errors import RelayError

BOUNDARY = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
# Bytes a careless parser or splice would damage: CRLFs, dashes that start a boundary line,
# a boundary prefix, NULs and every other byte value.
IMAGE = (b"\x89PNG\r\n\x1a\n" + b"\r\n--\r\n-- \r\n--" + BOUNDARY[:-3].encode() + b"\r\n\x00"
         + random.Random(7).randbytes(3000) + b"\r\n--")


def form(*parts: tuple[str, bytes, str | None, str | None], boundary: str = BOUNDARY, epilogue: bytes = b"") -> bytes:
    """A body as browsers and HTTP clients write it: (name, value, filename, content type)."""
    out = b""
    for name, value, filename, content_type in parts:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
        if filename is not None:
            out += f'; filename="{filename}"'.encode()
        out += b"\r\n"
        if content_type is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode() + epilogue


EDIT = form(
    ("model", b"dall-e-2", None, None),
    ("image", IMAGE, "cat.png", "image/png"),
    ("prompt", b"A cat\r\nwearing a hat", None, None),
    ("response_format", b"b64_json", None, None),
)


def values(body: bytes, content_type: str = CONTENT_TYPE) -> list[tuple[str, bytes]]:
    return [(p.name, p.value(body)) for p in multipart.parse_parts(body, content_type)]


# ---------------------------------------------------------------- parse_parts, find, boundary_of

def test_parse_parts_gives_names_filenames_types_and_exact_values() -> None:
    parts = multipart.parse_parts(EDIT, CONTENT_TYPE)
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("model", None, None), ("image", "cat.png", "image/png"), ("prompt", None, None), ("response_format", None, None)]
    assert [p.value(EDIT) for p in parts] == [b"dall-e-2", IMAGE, b"A cat\r\nwearing a hat", b"b64_json"]
    # The spans point into the body itself (what splicing relies on).
    image = parts[1]
    assert EDIT[image.start - 4 : image.start] == b"\r\n\r\n"
    assert EDIT[image.end : image.end + 2 + 2 + len(BOUNDARY)] == f"\r\n--{BOUNDARY}".encode()


@pytest.mark.parametrize("value", [b"\r\n", b"\r", b"-", b"--", b"\r\n--", b"\r\n--" + BOUNDARY.encode()[:10],
                                   b"\r\n--" + BOUNDARY.encode()[:-1] + b"X", b"\r\n\r\n", b"x--" + BOUNDARY.encode() + b"--"])
def test_values_that_look_like_boundaries_are_kept_intact(value: bytes) -> None:
    body = form(("file", value, "f.bin", "application/octet-stream"), ("model", b"m", None, None))
    assert values(body) == [("file", value), ("model", b"m")]


def test_header_names_are_case_insensitive_and_filenames_utf8() -> None:
    body = (f"--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"image\"; filename=\"café.png\"\r\n"
            f"CONTENT-TYPE: image/png\r\n\r\n").encode() + b"DATA" + f"\r\n--{BOUNDARY}--\r\n".encode()
    [part] = multipart.parse_parts(body, CONTENT_TYPE)
    assert (part.name, part.filename, part.content_type, part.value(body)) == ("image", "café.png", "image/png", b"DATA")


def test_parts_without_a_name_are_skipped() -> None:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nnameless\r\n").encode() + form(("model", b"m", None, None))
    assert values(body) == [("model", b"m")]


def test_find_returns_the_first_part_of_that_name() -> None:
    body = form(("image[]", b"one", "1.png", "image/png"), ("image[]", b"two", "2.png", "image/png"))
    parts = multipart.parse_parts(body, CONTENT_TYPE)
    found = multipart.find(parts, "image[]")
    assert found is not None and found.value(body) == b"one"
    assert multipart.find(parts, "image") is None


@pytest.mark.parametrize(("content_type", "boundary"), [
    ("multipart/form-data; boundary=abc123", b"abc123"),
    ('multipart/form-data; boundary="a b:c"', b"a b:c"),
    ("multipart/form-data; charset=utf-8; boundary=xyz", b"xyz"),
    ("Multipart/Form-Data; Boundary=xyz", b"xyz"),
])
def test_boundary_of(content_type: str, boundary: bytes) -> None:
    assert multipart.boundary_of(content_type) == boundary


@pytest.mark.parametrize("content_type", ["multipart/form-data", "application/json; boundary=x", "multipart/mixed; boundary=x", ""])
def test_boundary_of_rejects_other_content_types(content_type: str) -> None:
    with pytest.raises(RelayError) as caught:
        multipart.boundary_of(content_type)
    assert caught.value.status == 400


def test_quoted_boundary_with_special_characters_parses() -> None:
    boundary = "a'()+_,-./:=? b"
    body = form(("model", b"whisper-1", None, None), ("file", b"RIFF\r\n--", "a.wav", "audio/wav"), boundary=boundary)
    assert values(body, f'multipart/form-data; boundary="{boundary}"') == [("model", b"whisper-1"), ("file", b"RIFF\r\n--")]


def test_lf_only_line_breaks_are_a_400() -> None:
    """Multipart framing is CRLF; a body written with bare LFs is rejected, not half-parsed."""
    with pytest.raises(RelayError) as caught:
        multipart.parse_parts(form(("model", b"m", None, None)).replace(b"\r\n", b"\n"), CONTENT_TYPE)
    assert caught.value.status == 400
    assert "Malformed multipart body" in caught.value.message


def test_body_with_another_boundary_is_a_400() -> None:
    with pytest.raises(RelayError) as caught:
        multipart.parse_parts(form(("model", b"m", None, None), boundary="other"), CONTENT_TYPE)
    assert caught.value.status == 400


def test_epilogue_after_the_closing_boundary_is_ignored() -> None:
    body = form(("model", b"m", None, None), epilogue=b"trailing junk\r\n")
    assert values(body) == [("model", b"m")]


# ---------------------------------------------------------------- splice

def parts_by_name(body: bytes) -> dict[str, multipart.Part]:
    return {p.name: p for p in multipart.parse_parts(body, CONTENT_TYPE)}


@pytest.mark.parametrize("new", [b"gpt-image-1", b"x", b"a-much-longer-model-name-than-before"])
def test_splice_replaces_one_value_and_keeps_every_other_byte(new: bytes) -> None:
    model = parts_by_name(EDIT)["model"]
    pieces = multipart.splice(EDIT, CONTENT_TYPE, [(model, new)], [])
    spliced = b"".join(pieces)
    assert values(spliced) == [("model", new), ("image", IMAGE), ("prompt", b"A cat\r\nwearing a hat"),
                               ("response_format", b"b64_json")]
    assert spliced == EDIT[: model.start] + new + EDIT[model.end :]


def test_splice_several_replacements_given_in_any_order() -> None:
    parts = parts_by_name(EDIT)
    pieces = multipart.splice(EDIT, CONTENT_TYPE, [(parts["response_format"], b"url"), (parts["model"], b"gpt-image-1")], [])
    assert values(b"".join(pieces)) == [("model", b"gpt-image-1"), ("image", IMAGE), ("prompt", b"A cat\r\nwearing a hat"),
                                        ("response_format", b"url")]


def test_splice_does_not_copy_the_upload() -> None:
    model = parts_by_name(EDIT)["model"]
    pieces = multipart.splice(EDIT, CONTENT_TYPE, [(model, b"gpt-image-1")], [])
    views = [p for p in pieces if isinstance(p, memoryview)]
    assert views and all(v.obj is EDIT for v in views)
    assert sum(len(p) for p in pieces) == len(EDIT) - len(b"dall-e-2") + len(b"gpt-image-1")


def test_splice_appends_fields_before_the_closing_boundary() -> None:
    body = form(("file", IMAGE, "a.png", "image/png"), ("prompt", b"p", None, None), epilogue=b"epilogue")
    pieces = multipart.splice(body, CONTENT_TYPE, [], [("model", b"whisper-1"), ("response_format", b"verbose_json")])
    spliced = b"".join(pieces)
    assert values(spliced) == [("file", IMAGE), ("prompt", b"p"), ("model", b"whisper-1"), ("response_format", b"verbose_json")]
    assert spliced.endswith(f"--{BOUNDARY}--\r\nepilogue".encode())
    closing = body.rfind(f"--{BOUNDARY}--".encode())
    assert spliced.startswith(body[:closing])


def test_splice_replace_and_append_together() -> None:
    model = parts_by_name(EDIT)["model"]
    spliced = b"".join(multipart.splice(EDIT, CONTENT_TYPE, [(model, b"gpt-image-1")], [("user", b"u-1")]))
    assert values(spliced) == [("model", b"gpt-image-1"), ("image", IMAGE), ("prompt", b"A cat\r\nwearing a hat"),
                               ("response_format", b"b64_json"), ("user", b"u-1")]


def test_splice_with_no_edits_is_the_same_body() -> None:
    assert b"".join(multipart.splice(EDIT, CONTENT_TYPE, [], [])) == EDIT


def test_splice_append_without_a_closing_boundary_is_a_400() -> None:
    truncated = EDIT[: EDIT.rfind(f"--{BOUNDARY}--".encode())]
    with pytest.raises(RelayError) as caught:
        multipart.splice(truncated, CONTENT_TYPE, [], [("model", b"m")])
    assert caught.value.status == 400


# ---------------------------------------------------------------- encode

def test_encode_round_trips_through_parse_parts() -> None:
    body, content_type = multipart.encode([
        ("prompt", "A cat in a hat é".encode(), None, None),
        ("image", IMAGE, "cat.png", "image/png"),
        ("output_format", b"", None, None),
    ])
    assert content_type.startswith("multipart/form-data; boundary=")
    parts = multipart.parse_parts(body, content_type)
    assert [(p.name, p.filename, p.content_type, p.value(body)) for p in parts] == [
        ("prompt", None, None, "A cat in a hat é".encode()),
        ("image", "cat.png", "image/png", IMAGE),
        ("output_format", None, None, b""),
    ]


def test_encode_uses_a_fresh_boundary_each_time() -> None:
    first = multipart.encode([("a", b"1", None, None)])[1]
    second = multipart.encode([("a", b"1", None, None)])[1]
    assert first != second


# ---------------------------------------------------------------- edge cases once broken

def test_splicing_an_empty_field_keeps_the_body_well_formed() -> None:
    """An empty field gets the span (0, 0): python-multipart sends no data callback for it.

    Splicing a new value into it then writes the value at byte 0, before the first boundary,
    and leaves the empty field in place: the upstream receives a malformed body. Expected: the
    field's span is its (empty) place after the part headers, and the splice yields a body that
    parses back with the new value and every other part unchanged.
    """
    body = form(("model", b"", None, None), ("image", IMAGE, "cat.png", "image/png"))
    model = parts_by_name(body)["model"]
    spliced = b"".join(multipart.splice(body, CONTENT_TYPE, [(model, b"gpt-image-1")], []))
    opening = f"--{BOUNDARY}\r\n".encode()
    assert spliced[: len(opening)] == opening
    assert values(spliced) == [("model", b"gpt-image-1"), ("image", IMAGE)]
