"""Picture bytes: what Pillow reads in them, and PNGs written with text chunks.

The one place that asks Pillow whether some bytes are a picture; callers turn its refusal into
their own error (a refused input, a provider's bad answer). Pillow is imported on first use.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from avatarkit.errors import InputValidationError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray
    from PIL.Image import Image

__all__ = ["PictureInfo", "decode_picture", "encode_png", "read_picture"]


@dataclass(frozen=True)
class PictureInfo:
    """What the header of a picture's bytes says."""

    format: str
    """Pillow's format name in lower case (``png``, ``jpeg``, ``webp``, ``gif``...); a camera's
    MPO (a JPEG with a second picture appended, which any JPEG reader shows) is ``jpeg``."""
    width: int
    height: int
    text: dict[str, str]
    """Text entries (a PNG's text chunks: ``parameters``, ``avatarkit``...), by key."""


def _refusal(exc: Exception) -> InputValidationError:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):  # its message quotes an in-memory buffer's repr
        return InputValidationError(
            "not a readable image (Pillow knows no format with these bytes)", field="image"
        )
    return InputValidationError(f"not a readable image: {exc}", field="image")


def read_picture(data: bytes, *, verify: bool = False) -> PictureInfo:
    """The format, size and text entries of encoded picture bytes, from their header.

    ``verify=True`` also checks that the whole file is there: a PNG's chunk checksums, without
    decoding its pixels; other formats are decoded (Pillow's verify checks nothing for them,
    and a JPEG cut in half opened as a whole one).

    Raises:
        InputValidationError: Pillow cannot read the bytes as a picture (``field="image"``).
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "").lower()
            width, height = img.size
            text = {k: v for k, v in img.info.items() if isinstance(k, str) and isinstance(v, str)}
            if verify and fmt == "png":
                img.verify()
            elif verify:
                img.load()
    except Exception as exc:  # Pillow raises many kinds for bad bytes; all mean "not readable"
        raise _refusal(exc) from exc
    return PictureInfo("jpeg" if fmt == "mpo" else fmt, width, height, text)


def decode_picture(data: bytes) -> Image:
    """Encoded picture bytes decoded into a Pillow image (pixels loaded).

    Raises:
        InputValidationError: Pillow cannot read or decode the bytes (``field="image"``).
    """
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # as in read_picture
        raise _refusal(exc) from exc
    return img


def encode_png(image: Image | NDArray[np.uint8], text: Mapping[str, str] | None = None) -> bytes:
    """``image`` (a Pillow image, or an ``H×W×3``/``H×W×4`` uint8 array) as PNG bytes.

    Each ``text`` entry becomes a text chunk (``tEXt``, or ``iTXt`` when not Latin-1), which
    :func:`read_picture` gives back.
    """
    from PIL import Image, PngImagePlugin

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()
