"""Is a picture fit for talking-head rendering? One frontal face, big enough, mouth in view.

Uses the Haar cascades bundled with OpenCV (``cv2.data.haarcascades``): no download, a few
milliseconds per 512×512 image on a CPU. Also makes the centred square portrait crop that
renderers want.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from avatarkit._image import decode_picture, encode_png
from avatarkit.errors import InputValidationError, ProviderError
from avatarkit.types import AvatarImage

__all__ = [
    "NotRendererReadyError",
    "PortraitCheck",
    "check_portrait",
    "portrait_crop",
]

Box = tuple[int, int, int, int]


class NotRendererReadyError(ProviderError):
    """No seed tried gave a picture a talking-head renderer can use.

    Attributes:
        seeds_tried: The seeds generated, in order.
        reasons: Why each seed's picture was refused, by seed.
    """

    def __init__(self, provider: str, seeds_tried: list[int], reasons: dict[int, list[str]]):
        detail = "; ".join(f"seed {s}: {', '.join(reasons.get(s, []))}" for s in seeds_tried)
        super().__init__(
            f"no renderer-ready portrait after {len(seeds_tried)} seed(s) ({detail}). Try "
            "another prompt (a frontal head-and-shoulders portrait, mouth closed), more "
            "attempts, or turn the check off",
            provider=provider,
            code="not_renderer_ready",
        )
        self.seeds_tried = seeds_tried
        self.reasons = reasons


@dataclass(frozen=True)
class PortraitCheck:
    """The verdict on one picture; true when it suits talking-head rendering."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    """Why it was refused (empty when ``ok``)."""
    faces: list[Box] = field(default_factory=list)
    """Every frontal face found, (left, top, width, height), largest first."""
    face_box: Box | None = None
    """The one face, when exactly one was found."""

    def __bool__(self) -> bool:
        return self.ok


@cache
def _cascade(name: str) -> Any:
    import cv2

    path = Path(cv2.data.haarcascades) / name  # type: ignore[attr-defined]
    clf = cv2.CascadeClassifier(str(path))
    if clf.empty():  # pragma: no cover - a broken OpenCV install
        raise RuntimeError(f"OpenCV cascade {path} could not be loaded")
    return clf


def _to_rgb(image: AvatarImage | bytes | Image.Image | NDArray[np.uint8]) -> NDArray[np.uint8]:
    if isinstance(image, AvatarImage):
        image = image.data
    if isinstance(image, bytes):
        image = decode_picture(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputValidationError(f"expected an H×W×3 image, got shape {arr.shape}", field="image")
    return np.ascontiguousarray(arr[:, :, :3], dtype=np.uint8)


def _overlap(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    return (ix * iy) / float(min(aw * ah, bw * bh))


def _faces(gray: NDArray[np.uint8], min_px: int) -> list[Box]:
    found = _cascade("haarcascade_frontalface_default.xml").detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=6, minSize=(min_px, min_px)
    )
    boxes: list[Box] = sorted(
        (tuple(int(v) for v in f) for f in found),  # type: ignore[misc]
        key=lambda b: -b[2] * b[3],
    )
    kept: list[Box] = []
    for b in boxes:
        # A face inside a bigger face is the same face; a "face" under a third of the
        # largest one's width is far more often a cascade false positive than a bystander.
        if all(_overlap(b, k) < 0.5 for k in kept) and (not kept or b[2] * 3 >= kept[0][2]):
            kept.append(b)
    return kept


def check_portrait(
    image: AvatarImage | bytes | Image.Image | NDArray[np.uint8],
    *,
    min_face_fraction: float = 0.2,
    min_face_px: int = 64,
    require_eyes: bool = True,
) -> PortraitCheck:
    """Check that ``image`` shows exactly one frontal face, big enough, with its mouth in view.

    Args:
        image: The picture (AvatarImage, encoded bytes, PIL image or RGB array).
        min_face_fraction: Smallest face width as a fraction of the picture's shorter side.
        min_face_px: Smallest face width in pixels.
        require_eyes: Also require an eye in each upper quarter of the face (a frontal,
            unoccluded face; a profile or a face in sunglasses fails).

    The mouth counts as visible when the lower third of the face box lies inside the picture
    and is not flat (a mask, a hand or the frame edge over it leaves no contrast).
    """
    import cv2

    rgb = _to_rgb(image)
    h, w = rgb.shape[:2]
    plain = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gray = np.asarray(cv2.equalizeHist(plain), dtype=np.uint8)
    faces = _faces(gray, max(24, min(h, w) // 20))
    if not faces:
        return PortraitCheck(False, ["no frontal face found"])
    if len(faces) > 1:
        return PortraitCheck(False, [f"{len(faces)} faces found, need exactly one"], faces)
    box = faces[0]
    x, y, fw, fh = box
    reasons: list[str] = []
    need = max(min_face_px, round(min_face_fraction * min(h, w)))
    if fw < need:
        reasons.append(f"face is {fw} px wide, need at least {need} px")
    if require_eyes:
        # Two eye cascades together: the plain one misses eyes behind glasses, the other
        # misses some bare eyes. Run on the unequalised face, where both do best.
        # The face is scaled to 256 px wide first: eye cascades miss eyes under ~25 px.
        upper = cv2.resize(plain[y : y + fh * 55 // 100, x : x + fw], (256, 256 * 55 // 100))
        fw_eye, min_eye = 256, (20, 20)
        eyes = [
            *_cascade("haarcascade_eye.xml").detectMultiScale(upper, 1.1, 2, minSize=min_eye),
            *_cascade("haarcascade_eye_tree_eyeglasses.xml").detectMultiScale(
                upper, 1.1, 2, minSize=min_eye
            ),
        ]
        sides = {int(ex + ew / 2 > fw_eye / 2) for ex, _, ew, _ in eyes}
        if len(sides) < 2:
            reasons.append("face is not frontal (both eyes not found)")
    # Mouth: the band from 65 % to 95 % of the face height, the middle half of its width.
    my0, my1 = y + fh * 65 // 100, y + fh * 95 // 100
    mx0, mx1 = x + fw // 4, x + fw * 3 // 4
    if my1 > h or mx0 < 0 or mx1 > w:
        reasons.append("mouth is outside the picture")
    else:
        band = gray[my0:my1, mx0:mx1].astype(np.float32)
        if band.size == 0 or float(np.abs(np.diff(band, axis=0)).mean()) < 2.0:
            reasons.append("mouth region is flat (covered or blank)")
    return PortraitCheck(not reasons, reasons, faces, box)


def portrait_crop(
    image: AvatarImage,
    face_box: Box | None = None,
    *,
    size: int = 512,
    face_scale: float = 2.2,
) -> AvatarImage:
    """A square crop centred on the face, resized to ``size``×``size``, for the renderer.

    Args:
        image: The picture.
        face_box: The face (left, top, width, height); ``image.face_box`` or a detection
            when None.
        size: Edge of the output square in pixels.
        face_scale: Crop edge as a multiple of the face width (2.2: head and shoulders).

    Raises:
        InputValidationError: no face is given and none is found.
    """
    rgb = _to_rgb(image)
    h, w = rgb.shape[:2]
    box = face_box or image.face_box
    if box is None:
        found = check_portrait(image, require_eyes=False)
        if not found.faces:
            raise InputValidationError("no face found to centre the crop on", field="image")
        box = found.faces[0]
    if size < 16:
        raise InputValidationError(f"crop size must be at least 16 px, got {size}", field="size")
    x, y, fw, fh = box
    side = min(w, h, max(1, round(fw * face_scale)))
    cx, cy = x + fw / 2, y + fh / 2
    left = round(min(max(cx - side / 2, 0), w - side))
    top = round(min(max(cy - side / 2, 0), h - side))
    crop = Image.fromarray(rgb[top : top + side, left : left + side]).resize(
        (size, size), Image.Resampling.LANCZOS
    )
    k = size / side
    # the face as the crop shows it: a face wider than the picture's short side is cut
    x0, y0 = max(round((x - left) * k), 0), max(round((y - top) * k), 0)
    x1, y1 = min(round((x + fw - left) * k), size), min(round((y + fh - top) * k), size)
    new_box = (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None
    provenance = dict(image.provenance)
    provenance["crop"] = {"left": left, "top": top, "side": side, "size": size}
    provenance.pop("face_box", None)  # the uncropped picture's: save_image writes the new one
    return AvatarImage(
        data=encode_png(crop),
        format="png",
        width=size,
        height=size,
        kind=image.kind,
        face_box=new_box,
        provenance=provenance,
    )
