"""Image sizes read from file headers, without decoding (numpy-free, no TensorFlow).

The server checks how many pixels an encoded image would decode to before TensorFlow's
`decode_image` allocates them: a 1 MB PNG can declare 16000 x 16000 pixels (768 MB decoded).
Formats are those `tf.io.decode_image` reads: PNG, JPEG, GIF (logical screen), BMP and WebP;
a JPEG XL file is recognised but its size is not parsed.
"""

from __future__ import annotations

import struct

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_NO_LENGTH = {0x01, 0xD8, *range(0xD0, 0xD8)}
_JXL_MAGIC = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")


class ImageHeaderError(ValueError):
    """Bytes that start like an image file but whose size cannot be read."""


def image_format(data: bytes) -> str | None:
    """ "png", "jpeg", "gif", "bmp", "webp" or "jxl" from the leading bytes; None otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(_JXL_MAGIC):
        return "jxl"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by an image file's header; None for bytes that are no image.

    Raises:
      ImageHeaderError: a recognised format whose header is cut short or malformed, or JPEG XL.
    """
    kind = image_format(data)
    if kind is None:
        return None
    try:
        size = _PARSERS[kind](data)
    except (struct.error, IndexError):
        size = None
    if size is None:
        raise ImageHeaderError(f"{kind.upper()} file of {len(data)} bytes with an unreadable header")
    return size


def _png(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _gif(data: bytes) -> tuple[int, int]:
    return struct.unpack("<HH", data[6:10])


def _bmp(data: bytes) -> tuple[int, int]:
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # negative height: rows stored top-down


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            index += 2
            continue
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        (length,) = struct.unpack(">H", data[index + 2 : index + 4])
        index += 2 + length
    return None


_PARSERS = {"png": _png, "jpeg": _jpeg, "gif": _gif, "bmp": _bmp, "webp": _webp, "jxl": lambda data: None}
