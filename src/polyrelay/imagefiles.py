"""Recognise uploaded images by their bytes, never by filename or declared type.

Upstreams reject other formats only after the upload (and sometimes after charging),
so families check the magic bytes, and read the pixel size from the header when a
provider limits megapixels, before anything is relayed. They read a ``memoryview`` of
the upload as well as bytes, so checking a file never copies it.
"""

from __future__ import annotations

import struct

JPEG, PNG, WEBP = "image/jpeg", "image/png", "image/webp"


def sniff(data: bytes | memoryview) -> str | None:
    """The image's media type from its magic bytes, or None when it is not JPEG/PNG/WEBP."""
    if data[:3] == b"\xff\xd8\xff":
        return JPEG
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return PNG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


def dimensions(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) read from the header; None when the header is not understood."""
    kind = sniff(data)
    try:
        if kind == PNG and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if kind == WEBP:
            return _webp_size(data)
        if kind == JPEG:
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _webp_size(data: bytes | memoryview) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    offset = 2
    while offset + 9 < len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        length = struct.unpack(">H", data[offset + 2 : offset + 4])[0]
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return width, height
        offset += 2 + length
    return None
