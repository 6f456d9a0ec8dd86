"""Photo mode: make any portrait talk by warping its mouth, closing its eyes and moving its head.

``PhotoRig`` finds the face, eyes and mouth once (OpenCV's bundled Haar cascades, or a face box
the caller gives), frames the portrait as a square, and then draws one frame per ``FaceState``:

- **jaw and lips**: a smooth displacement field over a small crop around the mouth, applied with
  ``cv2.remap``: the lower lip and chin drop with ``jaw_open``, the lips part unless
  ``lips_closed``, the corners spread or round with ``mouth_width`` and lift with ``happy``;
- **mouth interior**: a dark cavity with a hint of upper teeth drawn, antialiased, in the gap;
- **blinks**: the skin above each eye is stretched down over it (another small remap), with a
  lash line along the lid's edge;
- **head motion**: yaw, pitch and roll become one small ``cv2.warpAffine`` of the framed picture
  (which has a margin of real picture around it), or with ``still_background=True`` an affine
  motion of the head alone that fades out towards the background (a coarse displacement grid,
  upsampled, and one ``cv2.remap``).

Every warp grid is built once per quantised state and cached, so a frame costs a couple of
milliseconds at 512×512. Frames are RGB ``uint8`` arrays.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from avatarkit.animation.face_state import FaceState
from avatarkit.errors import InputValidationError
from avatarkit.types import AvatarImage, Emotion

__all__ = ["FaceLandmarks", "PhotoRig", "detect_face"]

Image = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float32]

_FACE_CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")
_EYE_CASCADES = ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml")
_DETECT_SIDE = 640
MIN_FACE_BOX = 16
"""The smallest face box (width and height, in pixels) the rig animates."""
_UPPER_LIP = 0.14
"""Share of the lip gap taken by the upper lip moving up (the lower lip and jaw do the rest)."""
_BLINK_SHOWN = 0.03
"""Lid closures up to this draw the open eye."""


@lru_cache(maxsize=8)
def _cascade(name: str) -> Any:
    path = str(cv2.data.haarcascades) + name  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():  # pragma: no cover - broken OpenCV install
        raise InputValidationError(f"OpenCV cascade {name} could not be loaded from {path}")
    return cascade


def _decode(image: AvatarImage) -> Image:
    buf = np.frombuffer(image.data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise InputValidationError(
            f"The avatar image could not be decoded as {image.format}: pass PNG, JPEG or WebP "
            "bytes in AvatarImage.data.",
            field="image",
        )
    if min(bgr.shape[:2]) < 48:
        raise InputValidationError(
            f"The avatar image is too small ({bgr.shape[1]}x{bgr.shape[0]}); photo mode needs a "
            "portrait at least 48 pixels on each side (256 or more looks good).",
            field="image",
        )
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def detect_face(rgb: Image) -> tuple[int, int, int, int]:
    """Find the largest frontal face in an RGB picture with OpenCV's Haar cascades.

    Args:
        rgb: The picture, ``(height, width, 3)`` uint8 RGB.

    Returns:
        The face box ``(left, top, width, height)`` in pixels.

    Raises:
        InputValidationError: No face was found.
    """
    h, w = rgb.shape[:2]
    scale = min(1.0, _DETECT_SIDE / max(h, w))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    min_side = max(24, int(min(gray.shape) * 0.12))
    for name in _FACE_CASCADES:
        faces = _cascade(name).detectMultiScale(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
        )
        if len(faces):
            x, y, fw, fh = max(faces, key=lambda f: int(f[2]) * int(f[3]))
            return (round(x / scale), round(y / scale), round(fw / scale), round(fh / scale))
    raise InputValidationError(
        "No face found in the avatar image (OpenCV Haar cascades look for a frontal face that "
        "fills at least about an eighth of the picture). Use a front-facing portrait, or pass "
        "face_box=(left, top, width, height) to PhotoRig / AvatarImage.face_box (on the "
        "command line: --face-box LEFT,TOP,WIDTH,HEIGHT).",
        field="image",
    )


@dataclass(frozen=True)
class FaceLandmarks:
    """Where the features are, in pixels of the framed square picture.

    Attributes:
        face: Face box ``(left, top, width, height)``.
        eyes: Centre ``(x, y)`` of the left-in-picture and right-in-picture eye.
        eye_width: Width of the visible eye opening.
        mouth: Centre ``(x, y)`` of the line between the lips.
        mouth_width: Distance between the mouth corners.
    """

    face: tuple[float, float, float, float]
    eyes: tuple[tuple[float, float], tuple[float, float]]
    eye_width: float
    mouth: tuple[float, float]
    mouth_width: float


def _locate(gray: Image, box: tuple[int, int, int, int]) -> FaceLandmarks:
    """Eyes from the eye cascades (mirrored or guessed when missing), mouth by the lip seam."""
    x, y, w, h = box
    # priors from average face proportions within a Haar face box
    prior = [(x + 0.31 * w, y + 0.39 * h), (x + 0.69 * w, y + 0.39 * h)]
    found: list[tuple[float, float, float] | None] = [None, None]
    top = gray[max(0, y) : max(0, y + int(0.6 * h)), max(0, x) : max(0, x + w)]
    if top.size:
        for name in _EYE_CASCADES:
            eyes = _cascade(name).detectMultiScale(
                top, 1.05, 3, minSize=(max(8, int(0.07 * w)),) * 2, maxSize=(int(0.35 * w),) * 2
            )
            for ex, ey, ew, eh in eyes:
                cx, cy = x + ex + ew / 2, y + ey + eh / 2 + 0.04 * eh
                if not (y + 0.2 * h <= cy <= y + 0.55 * h):
                    continue
                side = 0 if cx < x + w / 2 else 1
                dist = math.hypot(cx - prior[side][0], cy - prior[side][1])
                current = found[side]
                if dist < 0.2 * w and (
                    current is None
                    or dist < math.hypot(current[0] - prior[side][0], current[1] - prior[side][1])
                ):
                    found[side] = (cx, cy, float(ew))
            if found[0] and found[1]:
                break
    mid = x + w / 2
    if found[0] is None and found[1] is not None:
        found[0] = (2 * mid - found[1][0], found[1][1], found[1][2])
    if found[1] is None and found[0] is not None:
        found[1] = (2 * mid - found[0][0], found[0][1], found[0][2])
    left = found[0] or (prior[0][0], prior[0][1], 0.24 * w)
    right = found[1] or (prior[1][0], prior[1][1], 0.24 * w)
    both = found[0] is not None and found[1] is not None and found[0][0] != 2 * mid - found[1][0]
    iod = min(max(right[0] - left[0], 0.28 * w), 0.48 * w)
    eye_w = min(max(0.85 * (left[2] + right[2]) / 2, 0.11 * w), 0.18 * w)
    mx = (left[0] + right[0]) / 2
    guess_y = y + 0.78 * h  # the mouth's usual place in a Haar face box
    if both:
        guess_y = 0.5 * guess_y + 0.5 * ((left[1] + right[1]) / 2 + 1.05 * iod)
    my = _lip_seam(gray, mx, guess_y, 0.07 * h, iod)
    return FaceLandmarks(
        face=(float(x), float(y), float(w), float(h)),
        eyes=((left[0], left[1]), (right[0], right[1])),
        eye_width=eye_w,
        mouth=(float(mx), float(my)),
        mouth_width=float(0.9 * iod),
    )


def _lip_seam(gray: Image, cx: float, guess_y: float, reach: float, iod: float) -> float:
    """The darkest row (the line between the lips) within ``reach`` of the expected height."""
    half = max(2, int(0.28 * iod))
    y0 = max(0, int(guess_y - reach))
    y1 = min(gray.shape[0], int(guess_y + reach) + 1)
    x0, x1 = max(0, int(cx - half)), min(gray.shape[1], int(cx + half))
    if y1 - y0 < 5 or x1 - x0 < 4:
        return guess_y
    rows = gray[y0:y1, x0:x1].astype(np.float32).mean(axis=1)
    rows = np.convolve(rows, np.ones(3, np.float32) / 3, mode="same")
    penalty = 0.15 * np.abs(np.arange(y0, y1) - guess_y) / max(iod, 1.0) * float(np.ptp(rows) + 1)
    return float(y0 + int(np.argmin(rows + penalty)))


def _smoothstep(e0: float, e1: float, x: FloatArray) -> FloatArray:
    t: FloatArray = np.clip((x - e0) / (e1 - e0), 0.0, 1.0).astype(np.float32)
    out: FloatArray = t * t * (3 - 2 * t)
    return out


@dataclass
class _Patch:
    """A cached warp of one crop: fixed-point remap grids plus an optional overlay."""

    map1: Any
    map2: Any
    overlay: Image | None = None
    alpha: FloatArray | None = None
    """Overlay opacity per pixel, (h, w, 1) float32; ``None`` when there is no overlay."""
    shade: FloatArray | None = None
    """Brightness multiplier per pixel (h, w, 1) float32 (lash line), or ``None``."""
    roi: tuple[int, int, int, int] | None = None
    """Where the overlay goes (x0, y0, x1, y1) on the canvas, when not the whole crop."""


class PhotoRig:
    """Animate a portrait from ``FaceState``s: jaw, lips, mouth interior, blinks, head motion.

    A rig keeps a working buffer between frames: use one rig per thread (or per clip).

    Example:
        >>> rig = PhotoRig(image)                        # doctest: +SKIP
        >>> frame = rig.draw(FaceState(jaw_open=0.6, lips_closed=0.0))  # doctest: +SKIP

    Args:
        image: The portrait (any size; PNG, JPEG or WebP bytes).
        face_box: Face rectangle ``(left, top, width, height)`` in the image's pixels; when
            ``None``, ``image.face_box`` or the Haar cascade's detection is used.
        size: Side of the square frames drawn, in pixels.
        cache_size: Mouth interiors kept (LRU, one per quarter pixel of lip gap, a few kB each).
        still_background: Move only the head, the motion fading out towards the picture's
            edges (one full-frame ``cv2.remap``, about 1.4 times the cost of the default); by
            default the whole framed picture moves with one ``cv2.warpAffine``.

    Raises:
        InputValidationError: The image cannot be decoded, is tiny, the face box lies outside
            it, or no face is found.
    """

    def __init__(
        self,
        image: AvatarImage,
        *,
        face_box: tuple[int, int, int, int] | None = None,
        size: int = 512,
        cache_size: int = 256,
        still_background: bool = False,
    ) -> None:
        if size < 64:
            raise InputValidationError(f"size must be at least 64 pixels, got {size}", field="size")
        rgb = _decode(image)
        ih, iw = rgb.shape[:2]
        box = face_box or image.face_box
        if box is not None:
            bx, by, bw, bh = (int(v) for v in box)
            if min(bw, bh) < MIN_FACE_BOX or min(bx, by) < 0 or bx + bw > iw or by + bh > ih:
                raise InputValidationError(
                    f"face_box {tuple(box)} does not fit the {iw}x{ih} image: give "
                    f"(left, top, width, height) inside it, at least {MIN_FACE_BOX} pixels wide "
                    "and high.",
                    field="face_box",
                )
            box = (bx, by, bw, bh)
        else:
            box = detect_face(rgb)
        self.size = size
        self.face_box = box
        self._cache_size = cache_size
        self.still_background = still_background

        # Framing: a square around the face with head and shoulders, plus a margin for motion.
        x, y, w, h = box
        # as much head and shoulders as the picture holds (1.9 face heights), at least 1.3
        side = max(1.3 * max(w, h), min(1.9 * max(w, h), float(min(iw, ih))))
        cx = min(max(x + w / 2, side / 2), iw - side / 2) if side <= iw else iw / 2
        cy = y + h / 2 + 0.1 * h
        cy = min(max(cy, side / 2), ih - side / 2) if side <= ih else ih / 2
        self._scale = size / side
        self._margin = max(8, round(0.06 * size))
        full = size + 2 * self._margin
        m = np.array(
            [
                [self._scale, 0.0, self._margin - (cx - side / 2) * self._scale],
                [0.0, self._scale, self._margin - (cy - side / 2) * self._scale],
            ],
            dtype=np.float64,
        )
        interp = cv2.INTER_AREA if self._scale < 1 else cv2.INTER_CUBIC
        if self._scale < 1:
            # INTER_AREA works for resize only: shrink first, then place
            small = cv2.resize(rgb, None, fx=self._scale, fy=self._scale, interpolation=interp)
            m2 = m.copy()
            m2[0, 0] = m2[1, 1] = 1.0
            canvas = cv2.warpAffine(
                small, m2, (full, full), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
        else:
            canvas = cv2.warpAffine(
                rgb, m, (full, full), flags=interp, borderMode=cv2.BORDER_REPLICATE
            )
        # RGBA inside (alpha unused): OpenCV warps four channels about twice as fast as three
        # (its vector path), and every frame warps the whole picture
        self._canvas: Image = np.asarray(cv2.cvtColor(canvas, cv2.COLOR_RGB2RGBA), np.uint8)
        gray_src: Image = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint8)
        marks = _locate(gray_src, box)
        self.landmarks = self._to_canvas(marks, m)
        self._work: Image = self._canvas.copy()
        self._setup_mouth()
        self._setup_eyes()
        self._setup_head()
        self._mouth_cache: OrderedDict[tuple[int, int], _Patch] = OrderedDict()
        self._eye_cache: OrderedDict[tuple[int, int], _Patch] = OrderedDict()

    def __repr__(self) -> str:
        return f"PhotoRig(size={self.size}, face_box={self.face_box})"

    # ------------------------------------------------------------------ geometry

    def _to_canvas(self, marks: FaceLandmarks, m: npt.NDArray[np.float64]) -> FaceLandmarks:
        def pt(p: tuple[float, float]) -> tuple[float, float]:
            return (
                float(m[0, 0] * p[0] + m[0, 2]) - self._margin,
                float(m[1, 1] * p[1] + m[1, 2]) - self._margin,
            )

        fx, fy = pt((marks.face[0], marks.face[1]))
        s = self._scale
        return FaceLandmarks(
            face=(fx, fy, marks.face[2] * s, marks.face[3] * s),
            eyes=(pt(marks.eyes[0]), pt(marks.eyes[1])),
            eye_width=marks.eye_width * s,
            mouth=pt(marks.mouth),
            mouth_width=marks.mouth_width * s,
        )

    def _roi(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        full = self._canvas.shape[0]
        m = self._margin
        return (
            max(0, int(x0) + m),
            max(0, int(y0) + m),
            min(full, math.ceil(x1) + m),
            min(full, math.ceil(y1) + m),
        )

    def _setup_mouth(self) -> None:
        """Precompute the mouth's displacement fields; a frame only scales and adds them."""
        lm = self.landmarks
        mx, my = lm.mouth
        mw = lm.mouth_width
        self._mouth_roi = self._roi(mx - 1.0 * mw, my - 0.6 * mw, mx + 1.0 * mw, my + 1.3 * mw)
        x0, y0, x1, y1 = self._mouth_roi
        mx, my = mx + self._margin, my + self._margin
        self._mx, self._my, self._mw = float(mx), float(my), float(mw)
        X, Y = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        u = (X - mx) / (mw / 2)
        v = Y - my
        # horizontal profiles: the lip gap is a lens between the corners; the chin is broader
        lens = np.clip(1 - u * u, 0, None) ** 0.85
        chin = 1 - _smoothstep(0.8, 2.0, np.abs(u))
        below = 1 - _smoothstep(0.85 * mw, 1.3 * mw, v)  # the chin moves, the neck stays
        above = 1 - _smoothstep(0.0, 0.5 * mw, -v)  # the upper lip moves a little, the nose stays
        ramp = _smoothstep(0.0, 0.8 * mw, v)
        low = v >= 0
        # vertical shift = drop * (A + apart * B) below the seam, -drop * apart * U above it,
        # where drop = 0.4 * mw * jaw_open and apart = 1 - lips_closed
        self._fa = np.where(low, below * ramp * chin, 0).astype(np.float32)
        self._fb = np.where(low, below * lens * (1 - ramp * chin), -_UPPER_LIP * lens * above)
        self._fb = self._fb.astype(np.float32)
        near_seam = np.exp(-((v / (0.3 * mw)) ** 2)) * (1 - _smoothstep(1.0, 1.9, np.abs(u)))
        self._fh = ((X - mx) * near_seam).astype(np.float32)  # corners spread / round
        self._fl = (0.07 * mw * np.clip(u * u, 0, 1.5) * near_seam).astype(np.float32)  # smile
        self._mX, self._mY = X, Y
        lip = self._canvas[int(my) - 2 : int(my) + 3, int(mx - 0.25 * mw) : int(mx + 0.25 * mw), :3]
        self._lip_rgb = (
            lip.reshape(-1, 3).mean(axis=0) if lip.size else np.array([120.0, 60.0, 60.0])
        ).astype(np.float32)

    def _setup_eyes(self) -> None:
        lm = self.landmarks
        ew = lm.eye_width
        self._eyes: list[tuple[tuple[int, int, int, int], float, float]] = []
        self._lid_rgb: list[npt.NDArray[np.float32]] = []
        for ex, ey in lm.eyes:
            roi = self._roi(ex - 0.75 * ew, ey - 0.75 * ew, ex + 0.75 * ew, ey + 0.45 * ew)
            cx, cy = ex + self._margin, ey + self._margin
            self._eyes.append((roi, cx, cy))
            # eyelid colour: the skin just under the eye (above it lie brows, lashes, frames)
            cheek = self._canvas[
                int(cy + 0.3 * ew) : int(cy + 0.5 * ew),
                int(cx - 0.25 * ew) : int(cx + 0.25 * ew),
                :3,
            ].reshape(-1, 3)
            skin = np.median(cheek, axis=0) if cheek.size else np.array([190.0, 150.0, 130.0])
            self._lid_rgb.append((0.92 * skin).astype(np.float32))

    # ------------------------------------------------------------------ warps

    def _mouth_maps(
        self, jaw: float, closed: float, width: float, smile: float
    ) -> tuple[FloatArray, FloatArray]:
        drop = 0.4 * self._mw * jaw
        apart = 1 - closed
        spread = 0.12 * width - 0.05 * jaw
        map_x = self._mX - (spread / (1 + spread)) * self._fh
        map_y = self._mY - drop * self._fa - (drop * apart) * self._fb + smile * self._fl
        return map_x, map_y

    def _mouth_interior(self, gap: float) -> _Patch | None:
        """Cavity and teeth for a lip gap of ``gap`` pixels (cached by quarter pixels)."""
        key = (round(gap * 4), 0)
        if key[0] < 3:
            return None
        patch = self._mouth_cache.get(key)
        if patch is not None:
            self._mouth_cache.move_to_end(key)
            return patch
        gap = key[0] / 4
        mw, mx, my = self._mw, self._mx, self._my
        full = self._canvas.shape[0]
        x0, x1 = max(0, int(mx - mw / 2) - 1), min(full, int(mx + mw / 2) + 2)
        y0 = max(0, int(my - _UPPER_LIP * gap) - 2)
        y1 = min(full, int(my + gap) + 2)
        X, Y = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        u = (X - mx) / (mw / 2)
        v = Y - my
        lens = np.clip(1 - u * u, 0, None) ** 0.85
        top = -_UPPER_LIP * gap * lens
        bottom = gap * lens
        inside = np.minimum(v - top, bottom - v)
        a = np.clip(inside + 0.5, 0, 1) * (np.abs(u) < 1)
        depth = (np.clip(inside / np.maximum(bottom - top, 1e-3), 0, 0.5) * 2)[..., None]
        cavity = np.array([92, 38, 40], np.float32)
        deep = np.array([34, 12, 16], np.float32)
        rgb = cavity + (deep - cavity) * depth
        rgb = rgb * 0.8 + 0.2 * self._lip_rgb * (1 - depth)
        # upper teeth: a soft light band under the upper lip, narrower than the mouth
        tooth_h = np.minimum(0.08 * mw, 0.3 * (bottom - top))
        teeth = (v - top < tooth_h) & (np.abs(u) < 0.6)
        tshade = np.clip(1.0 - (np.abs(u) / 0.6) ** 2, 0, 1)[..., None]
        tooth_rgb = np.array([214, 204, 190], np.float32) * (0.55 + 0.4 * tshade)
        ta = 0.8 * np.clip(tooth_h - (v - top) + 0.5, 0, 1) * teeth
        ta = ta * np.clip((0.6 - np.abs(u)) / 0.15, 0, 1)  # rounded ends
        ta = (ta * np.clip((v - top) / 1.5, 0.4, 1))[..., None]
        rgb = rgb * (1 - ta) + tooth_rgb * ta
        patch = _Patch(
            None,
            None,
            overlay=np.clip(rgb, 0, 255).astype(np.uint8),
            alpha=a.astype(np.float32)[..., None],
            roi=(x0, y0, x1, y1),
        )
        self._mouth_cache[key] = patch
        if len(self._mouth_cache) > self._cache_size:
            self._mouth_cache.popitem(last=False)
        return patch

    def _eye_patch(self, index: int, blink: float) -> _Patch:
        key = (index, round(blink * 20))
        patch = self._eye_cache.get(key)
        if patch is not None:
            self._eye_cache.move_to_end(key)
            return patch
        b = key[1] / 20
        (x0, y0, x1, y1), ex, ey = self._eyes[index]
        ew = self.landmarks.eye_width
        eh = 0.4 * ew
        X, Y = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        xr = (X - ex) / (0.55 * ew)
        q = np.clip(1 - xr * xr, 0, None)
        upper = ey - 0.5 * eh * q  # upper contour of the eye opening
        lower = ey + 0.42 * eh * q
        edge = upper + b * (lower - upper)  # the lid's edge now
        band = 0.4 * eh  # skin above the eye that slides down over it
        start = upper - band
        inside = (start <= Y) & (edge >= Y) & (q > 0)
        src_y = np.where(inside, start + (Y - start) * band / np.maximum(edge - start, 1e-3), Y)
        map1, map2 = cv2.convertMaps(X, src_y.astype(np.float32), cv2.CV_16SC2)
        shade: FloatArray | None = None
        alpha: FloatArray | None = None
        overlay: Image | None = None
        if b > 0.05:
            # the lid over the eye: the stretched skin, tinted towards the sampled skin colour
            lid = np.clip(edge - Y + 0.5, 0, 1) * np.clip(Y - (upper - 0.25 * eh), 0, 1)
            alpha = (0.7 * lid * np.clip(q * 3, 0, 1)).astype(np.float32)[..., None]
            overlay = np.broadcast_to(self._lid_rgb[index], (*alpha.shape[:2], 3)).astype(np.uint8)
            lash = np.exp(-(((Y - edge) / 1.2) ** 2)) * (q > 0.05) * min(1.0, 2.5 * b)
            crease = np.exp(-(((Y - (edge - 0.35 * eh)) / (0.25 * eh)) ** 2)) * q * 0.12 * b
            shade = (1 - 0.55 * lash - crease).astype(np.float32)[..., None]
        patch = _Patch(map1, map2, overlay=overlay, alpha=alpha, shade=shade)
        self._eye_cache[key] = patch
        if len(self._eye_cache) > 2 * 21:
            self._eye_cache.popitem(last=False)
        return patch

    # ------------------------------------------------------------------ drawing

    def draw(self, state: FaceState) -> Image:
        """Draw one frame for ``state``.

        Args:
            state: The face's state (jaw, lips, emotions, head angles, blink).

        Returns:
            The frame, ``(size, size, 3)`` uint8 RGB. A new array each call.
        """
        work = self._work
        canvas = self._canvas
        jaw, closed, width, smile = _mouth_pose(state)
        dirty: list[tuple[int, int, int, int]] = []
        if jaw > 0.01 or abs(width) > 0.06 or abs(smile) > 0.06:
            x0, y0, x1, y1 = roi = self._mouth_roi
            # remap reads the untouched canvas: the grids hold absolute canvas coordinates
            map_x, map_y = self._mouth_maps(jaw, closed, width, smile)
            work[y0:y1, x0:x1] = cv2.remap(
                canvas, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            interior = self._mouth_interior(self._lip_gap(jaw, closed))
            if interior is not None and interior.roi and interior.overlay is not None:
                ix0, iy0, ix1, iy1 = interior.roi
                a = interior.alpha if interior.alpha is not None else 1.0
                region = work[iy0:iy1, ix0:ix1, :3]
                region[:] = region * (1 - a) + interior.overlay * a
            dirty.append(roi)
        blink = min(max(state.blink, 0.0), 1.0)
        if blink > _BLINK_SHOWN:
            for i, (roi, _, _) in enumerate(self._eyes):
                self._apply_abs(work, canvas, roi, self._eye_patch(i, blink))
                dirty.append(roi)
        out = self._head(work, state)
        for x0, y0, x1, y1 in dirty:  # restore the working canvas for the next frame
            work[y0:y1, x0:x1] = canvas[y0:y1, x0:x1]
        return out

    def prepare(self, states: Iterable[FaceState]) -> None:
        """Build the mouth-interior and eyelid patches ``states`` need, without drawing frames.

        Optional: drawing builds them on first use. ``LocalRenderer.prepare`` calls it beside
        the reply's voice stage, so the first clip draws as fast as later ones.
        """
        for state in states:
            jaw, closed, _, _ = _mouth_pose(state)
            self._mouth_interior(self._lip_gap(jaw, closed))
            blink = min(max(state.blink, 0.0), 1.0)
            if blink > _BLINK_SHOWN:
                for i in range(len(self._eyes)):
                    self._eye_patch(i, blink)

    def _lip_gap(self, jaw: float, closed: float) -> float:
        """Pixels between the lips for a jaw opening and a lip closure."""
        return 0.4 * self._mw * jaw * (1 - closed)

    @staticmethod
    def _apply_abs(work: Image, src: Image, roi: tuple[int, int, int, int], patch: _Patch) -> None:
        x0, y0, x1, y1 = roi
        out = cv2.remap(
            src, patch.map1, patch.map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        rgb = out[..., :3]
        if patch.overlay is not None and patch.alpha is not None:
            a = patch.alpha
            rgb = (rgb * (1 - a) + patch.overlay * a).astype(np.uint8)
        if patch.shade is not None:
            rgb = (rgb * patch.shade).astype(np.uint8)
        work[y0:y1, x0:x1, :3] = rgb

    def _setup_head(self) -> None:
        """A coarse grid and per-point head weight: the head moves, the background stays."""
        step = 8
        n = self.size // step
        scale = self.size / n
        # coarse sample positions that cv2.resize maps back onto the fine pixel grid exactly
        c = (np.arange(n, dtype=np.float32) + 0.5) * scale - 0.5 + self._margin
        self._gx, self._gy = np.meshgrid(c, c)
        fine = np.arange(self.size, dtype=np.float32) + self._margin
        self._fx, self._fy = np.meshgrid(fine, fine)
        fx, fy, fw, fh = self.landmarks.face
        hx = fx + fw / 2 + self._margin
        hy = fy + 0.45 * fh + self._margin
        r = np.sqrt(((self._gx - hx) / (0.7 * fw)) ** 2 + ((self._gy - hy) / (0.9 * fh)) ** 2)
        self._gw = 1 - _smoothstep(1.0, 1.55, r)

    def _head(self, work: Image, state: FaceState) -> Image:
        m, size = self._margin, self.size
        if abs(state.yaw) < 0.02 and abs(state.pitch) < 0.02 and abs(state.roll) < 0.02:
            return _rgb(work[m : m + size, m : m + size])
        fw = self.landmarks.face[2]
        px = self.landmarks.mouth[0] + m
        py = self.landmarks.mouth[1] + m + 0.6 * self.landmarks.mouth_width  # pivot near the chin
        forward = cv2.getRotationMatrix2D((px, py), -state.roll, 1.0)
        forward[0, 2] += 0.01 * fw * state.yaw
        forward[1, 2] += 0.008 * fw * state.pitch
        if not self.still_background:
            forward[:, 2] -= m
            moved = cv2.warpAffine(
                work, forward, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            return _rgb(moved)
        a = [float(v) for v in cv2.invertAffineTransform(forward).ravel()]
        gx, gy, w = self._gx, self._gy, self._gw
        dx = (a[0] - 1) * gx + a[1] * gy + a[2]
        dy = a[3] * gx + (a[4] - 1) * gy + a[5]
        # upsample the displacement (zero near the edges), then add the identity grid
        map_x = self._fx + cv2.resize(w * dx, (size, size), interpolation=cv2.INTER_LINEAR)
        map_y = self._fy + cv2.resize(w * dy, (size, size), interpolation=cv2.INTER_LINEAR)
        return _rgb(
            cv2.remap(work, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        )


def _mouth_pose(state: FaceState) -> tuple[float, float, float, float]:
    """The state's jaw opening, lip closure, mouth width and smile, clipped to their ranges."""
    jaw = min(max(state.jaw_open, 0.0), 1.0)
    closed = min(max(state.lips_closed, 0.0), 1.0)
    width = min(max(state.mouth_width, -1.0), 1.0)
    emo = state.emotions
    smile = emo.get(Emotion.HAPPY, 0.0) - 0.7 * emo.get(Emotion.SAD, 0.0)
    return jaw, closed, width, min(max(smile, -1.0), 1.0)


def _rgb(rgba: npt.NDArray[Any]) -> Image:
    """A new RGB frame from the rig's RGBA working image (its alpha unused)."""
    return np.asarray(cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB), np.uint8)
