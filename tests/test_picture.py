"""The one helper that reads picture bytes with Pillow, and the PNG writer beside it."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from avatarkit._image import decode_picture, encode_png, read_picture
from avatarkit.errors import InputValidationError


def _encoded(fmt: str, size: tuple[int, int] = (24, 16), **options: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buf, format=fmt, **options)
    return buf.getvalue()


def _camera_jpeg() -> bytes:
    """A camera's MPO: a JPEG with a second picture appended."""
    buf = io.BytesIO()
    first, second = Image.new("RGB", (32, 24), "red"), Image.new("RGB", (32, 24), "blue")
    first.save(buf, format="MPO", save_all=True, append_images=[second])
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (_encoded("PNG"), "png"),
        (_encoded("JPEG"), "jpeg"),
        (_encoded("WEBP"), "webp"),
        (_encoded("GIF"), "gif"),
        (_camera_jpeg(), "jpeg"),
    ],
)
def test_read_picture_names_the_format_and_size(data: bytes, fmt: str) -> None:
    info = read_picture(data, verify=True)
    assert info.format == fmt
    assert (info.width, info.height) == ((32, 24) if data == _camera_jpeg() else (24, 16))


def test_png_text_chunks_round_trip() -> None:
    pixels = np.zeros((8, 12, 3), dtype=np.uint8)
    data = encode_png(pixels, {"avatarkit": '{"seed": 7}', "note": "Grüße ☺"})
    info = read_picture(data)
    assert (info.format, info.width, info.height) == ("png", 12, 8)
    assert info.text == {"avatarkit": '{"seed": 7}', "note": "Grüße ☺"}
    assert read_picture(encode_png(Image.new("RGBA", (3, 3)))).text == {}
    # the same bytes as Pillow's own save with those chunks: saved pictures do not change
    assert encode_png(Image.fromarray(pixels)) == _save_png(Image.fromarray(pixels))


def _save_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("read", [read_picture, decode_picture])
def test_bytes_that_are_no_picture_are_refused_without_a_buffer_repr(
    read: Callable[[bytes], object],
) -> None:
    with pytest.raises(
        InputValidationError, match=r"^not a readable image \(Pillow knows no"
    ) as info:
        read(b"<html>502 Bad Gateway</html>")
    assert info.value.field == "image"
    assert "BytesIO" not in str(info.value)


def test_a_damaged_picture_is_refused_by_verify_and_decode() -> None:
    data = _encoded("PNG", size=(64, 64))
    cut = data[: len(data) - 30]  # the header is whole, the pixels are not
    assert read_picture(cut).format == "png"  # the header alone reads
    with pytest.raises(InputValidationError, match=r"^not a readable image: "):
        decode_picture(cut)
    corrupt = bytearray(data)
    corrupt[-20] ^= 0xFF  # inside IDAT (before its checksum and IEND): the checksum fails
    with pytest.raises(InputValidationError, match=r"^not a readable image: "):
        read_picture(bytes(corrupt), verify=True)
    assert decode_picture(data).size == (64, 64)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_verify_finds_a_jpeg_or_webp_cut_off(fmt: str) -> None:
    # Pillow's verify() checks nothing for these: a JPEG cut in half passed as whole
    noise = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format=fmt)
    data = buf.getvalue()
    assert read_picture(data, verify=True).width == 96
    with pytest.raises(InputValidationError, match=r"^not a readable image"):
        read_picture(data[: len(data) // 2], verify=True)
