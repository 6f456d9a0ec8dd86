"""A small vector painter on NumPy/OpenCV: smooth paths filled antialiased, premultiplied alpha.

Shapes are given in design units (a 512-unit square portrait); the painter maps them to pixels
with a scale (supersampling factor included) and an origin (for painting one region only).
Each fill works inside the shape's bounding box only, so small shapes stay cheap.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
ByteArray = npt.NDArray[np.uint8]
Points = npt.NDArray[np.float64]
Color = tuple[float, float, float]

_SHIFT = 4  # sub-pixel bits for cv2 polygon filling
_BLUR_PX = 8.0  # blurs wider than twice this (pixels) run on a shrunk mask


def _frozen(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    a.setflags(write=False)
    return a


# Curve parameters depend only on the point count: computed once per count (a sprite draws
# dozens of curves, and ``np.linspace`` costs more than the arithmetic on so few points).
@functools.lru_cache(maxsize=64)
def _catmull_s(n: int) -> tuple[npt.NDArray[np.float64], ...]:
    s = np.linspace(0.0, 1.0, n, endpoint=False)[None, :, None]
    return _frozen(s), _frozen(s * s), _frozen(s * s * s)


@functools.lru_cache(maxsize=64)
def _bezier_basis(n: int) -> tuple[npt.NDArray[np.float64], ...]:
    s = np.linspace(0.0, 1.0, n)[:, None]
    return (
        _frozen((1 - s) ** 3),
        _frozen(3 * (1 - s) ** 2 * s),
        _frozen(3 * (1 - s) * s**2),
        _frozen(s**3),
    )


@functools.lru_cache(maxsize=64)
def _unit_circle(n: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return _frozen(np.cos(a)), _frozen(np.sin(a))


def catmull(points: Sequence[tuple[float, float]], *, closed: bool = True, n: int = 10) -> Points:
    """A Catmull-Rom spline through ``points`` (closed by default), as a dense polyline."""
    p = np.asarray(points, dtype=np.float64)
    p = np.vstack([p[-1:], p, p[:2]]) if closed else np.vstack([p[:1], p, p[-1:]])
    s, s2, s3 = _catmull_s(n)
    # all segments at once (one (segments, n, 2) array), not one small array per segment
    p0, p1, p2, p3 = (q[:, None, :] for q in (p[:-3], p[1:-2], p[2:-1], p[3:]))
    seg = 0.5 * (
        2 * p1
        + (-p0 + p2) * s
        + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s2
        + (-p0 + 3 * p1 - 3 * p2 + p3) * s3
    )
    out = seg.reshape(-1, 2)
    if not closed:
        return np.vstack([out, p[-2:-1]])
    return out


def bezier(
    p0: tuple[float, float],
    p1: tuple[float, float],
    p2: tuple[float, float],
    p3: tuple[float, float],
    n: int = 24,
) -> Points:
    """A cubic Bézier from ``p0`` to ``p3`` with control points ``p1``, ``p2``."""
    k0, k1, k2, k3 = _bezier_basis(n)
    a, b, c, d = (np.asarray(q, dtype=np.float64) for q in (p0, p1, p2, p3))
    out: Points = k0 * a + k1 * b + k2 * c + k3 * d
    return out


def ellipse(cx: float, cy: float, rx: float, ry: float, *, rot: float = 0.0, n: int = 72) -> Points:
    """Points of an ellipse rotated by ``rot`` degrees."""
    cos, sin = _unit_circle(n)
    x, y = rx * cos, ry * sin
    r = np.deg2rad(rot)
    return np.stack(
        [cx + x * np.cos(r) - y * np.sin(r), cy + x * np.sin(r) + y * np.cos(r)], axis=1
    )


def tapered(center: Points, width: float, *, taper: float = 0.9, power: float = 1.0) -> Points:
    """A closed outline around a centreline, widest in the middle, tapering to the ends."""
    c = np.asarray(center, dtype=np.float64)
    d = np.gradient(c, axis=0)
    nrm = np.stack([-d[:, 1], d[:, 0]], axis=1)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-9)
    s = np.linspace(0.0, 1.0, len(c))
    half = 0.5 * width * (1.0 - taper * np.abs(2 * s - 1) ** (1.0 / power))[:, None]
    return np.vstack([c + nrm * half, (c - nrm * half)[::-1]])


def rgb(hex_or_tuple: str | Sequence[float]) -> Color:
    """``"#rrggbb"`` or an (r, g, b) tuple as a float colour."""
    if isinstance(hex_or_tuple, str):
        h = hex_or_tuple.lstrip("#")
        return (float(int(h[0:2], 16)), float(int(h[2:4], 16)), float(int(h[4:6], 16)))
    r, g, b = hex_or_tuple
    return (float(r), float(g), float(b))


def shade(c: Color, f: float) -> Color:
    """Darken (f < 1) or lighten towards white (f > 1) a colour."""
    if f <= 1:
        return (c[0] * f, c[1] * f, c[2] * f)
    t = min(f - 1.0, 1.0)
    return (c[0] + (255 - c[0]) * t, c[1] + (255 - c[1]) * t, c[2] + (255 - c[2]) * t)


def mix(a: Color, b: Color, t: float) -> Color:
    """Linear mix of two colours (t = 0 gives ``a``)."""
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def shape_coverage(
    px: Points, h: int, w: int, blur: float = 0.0
) -> tuple[FloatArray, tuple[int, int]] | None:
    """Antialiased coverage (0..1) of a closed shape given in pixels, in its bounding box.

    Returns the box's mask and its top-left pixel, or None when the shape misses the
    ``h``×``w`` canvas; ``blur`` is a Gaussian sigma in pixels.
    """
    box = _pixel_box(px, int(np.ceil(blur * 3)) + 2, h, w)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    ipts = np.round((px - (x0, y0)) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(m, [ipts], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    mf = np.multiply(m, np.float32(1.0 / 255.0), dtype=np.float32)
    if blur > 0:
        k = blur
        f = int(k // _BLUR_PX)
        if f >= 2:
            # a wide blur keeps no detail finer than its radius: blur a copy shrunk so the
            # radius is _BLUR_PX pixels, then enlarge it (the background glow's 80-pixel
            # blur costs a few ms instead of 0.3 s; the result differs by under 1/255)
            hh, ww = mf.shape
            small = cv2.resize(mf, (max(ww // f, 1), max(hh // f, 1)),
                               interpolation=cv2.INTER_AREA)  # fmt: skip
            small = cv2.GaussianBlur(small, (0, 0), sigmaX=k / f, sigmaY=k / f)
            mf = np.asarray(cv2.resize(small, (ww, hh), interpolation=cv2.INTER_LINEAR),
                            np.float32)  # fmt: skip
        else:
            mf = np.asarray(cv2.GaussianBlur(mf, (0, 0), sigmaX=k, sigmaY=k), np.float32)
    return mf, (x0, y0)


def shrink(rgba: ByteArray, factor: int) -> ByteArray:
    """Area-downscale an image by an integer factor (supersampled painting to pixels)."""
    if factor <= 1:
        return rgba.copy()
    h, w = rgba.shape[:2]
    size = (w // factor, h // factor)
    return np.asarray(cv2.resize(rgba, size, interpolation=cv2.INTER_AREA), np.uint8)


def inverse_alpha(rgba: ByteArray) -> ByteArray:
    """``255 - alpha`` of an RGBA image, spread to its four channels (for :func:`over`)."""
    inv = np.asarray(cv2.bitwise_not(rgba[..., 3]), np.uint8)
    return np.asarray(cv2.merge((inv, inv, inv, inv)), np.uint8)


def over(top: ByteArray, below: ByteArray, inverse: ByteArray | None = None) -> ByteArray:
    """Premultiplied RGBA ``top`` composited over ``below`` (same size), a new image.

    ``inverse`` is ``inverse_alpha(top)`` when the caller keeps it for a ``top`` used often.
    """
    inv = inverse_alpha(top) if inverse is None else inverse
    return np.asarray(cv2.add(top, cv2.multiply(below, inv, scale=1.0 / 255.0)), np.uint8)


_SOLID_CACHE_PIXELS = 512 * 512  # 1 MB an image at most: 32 MB for the whole cache


def _solid(color: tuple[float, float, float, float], h: int, w: int) -> ByteArray:
    """An ``h``×``w`` RGBA image of one colour."""
    img = np.empty((h, w, 4), np.uint8)
    img[:] = np.clip(np.round(color), 0, 255)
    return img


@functools.lru_cache(maxsize=32)
def _cached_solid(color: tuple[float, float, float, float], h: int, w: int) -> ByteArray:
    """A read-only :func:`_solid` kept for reuse (sprites blend a few colours a lot)."""
    img = _solid(color, h, w)
    img.setflags(write=False)
    return img


def _pixel_box(px: Points, pad: int, h: int, w: int) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` of pixel points grown by ``pad``, on the canvas.

    Clipped to the ``h``×``w`` canvas; None when nothing of it is on the canvas.
    """
    lo, hi = np.floor(px.min(axis=0)), np.ceil(px.max(axis=0))
    x0, y0 = max(int(lo[0]) - pad, 0), max(int(lo[1]) - pad, 0)
    x1, y1 = min(int(hi[0]) + pad, w), min(int(hi[1]) + pad, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


class Painter:
    """A premultiplied-RGBA ``uint8`` canvas (``HxWx4``) that shapes are drawn into in place.

    An opaque fill or stroke is one OpenCV call: antialiased filling with an opaque colour
    blends each channel as ``x + (colour - x) * coverage``, which on premultiplied RGBA (alpha
    drawn as 255) is exactly the "over" operator. Translucent, clipped and soft shapes blend a
    coverage mask with ``cv2.blendLinear``. (The float32 painter this replaced gave the same
    pixels within 2/255 at two to four times the cost.)

    Args:
        rgba: The canvas, premultiplied RGBA ``uint8``; drawn into in place.
        scale: Pixels per design unit.
        origin: Design-unit coordinate of the canvas's top-left pixel.
    """

    def __init__(self, rgba: ByteArray, scale: float, origin: tuple[float, float]) -> None:
        if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
            raise ValueError("a Painter draws on an HxWx4 uint8 array")
        self.rgba = rgba
        self.h, self.w = rgba.shape[:2]
        self.scale = float(scale)
        self.origin = origin

    def to_px(self, pts: Points) -> Points:
        """Design units to pixel coordinates."""
        out: Points = (np.asarray(pts, dtype=np.float64) - self.origin) * self.scale
        return out

    def _fixed(self, pts: Points) -> npt.NDArray[np.int32]:
        return np.round(self.to_px(pts) * (1 << _SHIFT)).astype(np.int32)

    @staticmethod
    def _opaque(color: Color) -> tuple[float, float, float, float]:
        return (color[0], color[1], color[2], 255.0)

    def mask(self, pts: Points, *, blur: float = 0.0) -> FloatArray:
        """A full-canvas coverage mask (0..1) of a closed shape."""
        full = np.zeros((self.h, self.w), np.float32)
        box = shape_coverage(self.to_px(pts), self.h, self.w, blur * self.scale)
        if box is not None:
            m, (x0, y0) = box
            full[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
        return full

    def fill(
        self,
        pts: Points,
        color: Color,
        *,
        alpha: float = 1.0,
        clip: FloatArray | None = None,
        blur: float = 0.0,
    ) -> None:
        """Fill a closed shape with ``color``, optionally soft (blur) or clipped to a mask."""
        if alpha >= 1.0 and clip is None and blur <= 0:
            cv2.fillPoly(self.rgba, [self._fixed(pts)], self._opaque(color),
                         lineType=cv2.LINE_AA, shift=_SHIFT)  # fmt: skip
            return
        box = shape_coverage(self.to_px(pts), self.h, self.w, blur * self.scale)
        if box is not None:
            m, (x0, y0) = box
            self._blend(m * np.float32(alpha), x0, y0, color, clip)

    def stroke(
        self,
        pts: Points,
        width: float,
        color: Color,
        *,
        closed: bool = False,
        alpha: float = 1.0,
        clip: FloatArray | None = None,
    ) -> None:
        """Draw a round-capped line of ``width`` design units along ``pts``."""
        t = max(1, round(width * self.scale))
        if alpha >= 1.0 and clip is None:
            cv2.polylines(self.rgba, [self._fixed(pts)], closed, self._opaque(color),
                          thickness=t, lineType=cv2.LINE_AA, shift=_SHIFT)  # fmt: skip
            return
        px = self.to_px(pts)
        box = _pixel_box(px, t + 2, self.h, self.w)
        if box is None:
            return
        x0, y0, x1, y1 = box
        m = np.zeros((y1 - y0, x1 - x0), np.uint8)
        ipts = np.round((px - (x0, y0)) * (1 << _SHIFT)).astype(np.int32)
        cv2.polylines(m, [ipts], closed, 255, thickness=t, lineType=cv2.LINE_AA, shift=_SHIFT)
        self._blend(m.astype(np.float32) * np.float32(alpha / 255.0), x0, y0, color, clip)

    def _blend(
        self, m: FloatArray, x0: int, y0: int, color: Color, clip: FloatArray | None
    ) -> None:
        hh, ww = m.shape
        if clip is not None:
            m = m * clip[y0 : y0 + hh, x0 : x0 + ww]
        box = self.rgba[y0 : y0 + hh, x0 : x0 + ww]
        if self.h * self.w <= _SOLID_CACHE_PIXELS:  # sprites: a few colours, blended often
            paint = _cached_solid(self._opaque(color), self.h, self.w)[:hh, :ww]
        else:  # layers: painted once, and a cached canvas-sized image would be megabytes
            paint = _solid(self._opaque(color), hh, ww)
        box[:] = cv2.blendLinear(box, paint, np.float32(1.0) - m, m)
