"""A small vector painter on NumPy/OpenCV: smooth paths filled antialiased, premultiplied alpha.

Shapes are given in design units (a 512-unit square portrait); the painter maps them to pixels
with a scale (supersampling factor included) and an origin (for painting one region only).
Each fill works inside the shape's bounding box only, so small shapes stay cheap.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

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


# Curve bases depend only on the point count: computed once per count. A curve is then one
# matrix product of its basis with its control points (a sprite draws dozens of curves, and
# NumPy's per-call overhead costs more than the arithmetic on so few points).
@functools.lru_cache(maxsize=64)
def _catmull_basis(n: int) -> npt.NDArray[np.float64]:
    """``(n, 4)`` weights of (p0, p1, p2, p3) for ``n`` points from p1 towards p2."""
    s = np.linspace(0.0, 1.0, n, endpoint=False)
    s2, s3 = s * s, s * s * s
    basis = 0.5 * np.stack(
        [-s + 2 * s2 - s3, 2 - 5 * s2 + 3 * s3, s + 4 * s2 - 3 * s3, -s2 + s3], axis=1
    )
    return _frozen(basis)


@functools.lru_cache(maxsize=64)
def _bezier_basis(n: int) -> npt.NDArray[np.float64]:
    """``(n, 4)`` Bernstein weights of the four control points."""
    s = np.linspace(0.0, 1.0, n)
    return _frozen(np.stack([(1 - s) ** 3, 3 * (1 - s) ** 2 * s, 3 * (1 - s) * s**2, s**3], axis=1))


@functools.lru_cache(maxsize=64)
def _unit_circle(n: int) -> npt.NDArray[np.float64]:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return _frozen(np.stack([np.cos(a), np.sin(a)], axis=1))


@functools.lru_cache(maxsize=64)
def _windows(count: int) -> npt.NDArray[np.intp]:
    """Indices of the ``count - 3`` runs of four consecutive control points."""
    idx = np.arange(count - 3)[:, None] + np.arange(4)
    idx.setflags(write=False)
    return idx


def catmull(points: Sequence[tuple[float, float]], *, closed: bool = True, n: int = 10) -> Points:
    """A Catmull-Rom spline through ``points`` (closed by default), as a dense polyline."""
    p = np.asarray(points, dtype=np.float64)
    p = np.concatenate([p[-1:], p, p[:2]]) if closed else np.concatenate([p[:1], p, p[-1:]])
    # all segments at once: (n, 4) basis @ (segments, 4, 2) control points
    out: Points = (_catmull_basis(n) @ p[_windows(len(p))]).reshape(-1, 2)
    if not closed:
        return np.concatenate([out, p[-2:-1]])
    return out


def bezier(
    p0: tuple[float, float],
    p1: tuple[float, float],
    p2: tuple[float, float],
    p3: tuple[float, float],
    n: int = 24,
) -> Points:
    """A cubic Bézier from ``p0`` to ``p3`` with control points ``p1``, ``p2``."""
    out: Points = _bezier_basis(n) @ np.array((p0, p1, p2, p3), dtype=np.float64)
    return out


def ellipse(cx: float, cy: float, rx: float, ry: float, *, rot: float = 0.0, n: int = 72) -> Points:
    """Points of an ellipse rotated by ``rot`` degrees."""
    pts = _unit_circle(n) * (rx, ry)
    if rot:
        r = np.deg2rad(rot)
        c, s = np.cos(r), np.sin(r)
        pts = pts @ np.array([[c, s], [-s, c]])
    out: Points = np.add(pts, (cx, cy))
    return out


def outline(center: Points, half: npt.NDArray[np.float64]) -> Points:
    """A closed outline around a centreline, ``half`` (one per point, ``(n, 1)``) to each side."""
    c = np.asarray(center, dtype=np.float64)
    d = np.gradient(c, axis=0)
    nrm = np.stack([-d[:, 1], d[:, 0]], axis=1)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-9)
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


def content_box(image: ByteArray) -> tuple[int, int, int, int]:
    """Box ``(x0, y0, x1, y1)`` of the pixels with any non-zero channel; all 0 when none."""
    h, w = image.shape[:2]
    channels = image.size // (h * w) if h * w else 1
    x, y, bw, bh = cv2.boundingRect(np.ascontiguousarray(image).reshape(h, w * channels))
    return x // channels, y, -(-(x + bw) // channels), y + bh


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


def _solid(color: tuple[float, float, float, float], h: int, w: int) -> ByteArray:
    """An ``h``×``w`` RGBA image of one colour."""
    img = np.empty((h, w, 4), np.uint8)
    cv2.rectangle(img, (0, 0), (w, h), _rounded(color), -1)
    return img


def _rounded(color: tuple[float, ...]) -> tuple[int, ...]:
    """A colour as the 0–255 integers a ``uint8`` image holds."""
    return tuple(min(max(round(c), 0), 255) for c in color)


def _pixel_box(px: Points, pad: int, h: int, w: int) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` of pixel points grown by ``pad``, on the canvas.

    Clipped to the ``h``×``w`` canvas; None when nothing of it is on the canvas.
    """
    lo, hi = np.floor(px.min(axis=0)), np.ceil(px.max(axis=0))
    return _clipped_box(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]), pad, h, w)


def _clipped_box(
    x0: int, y0: int, x1: int, y1: int, pad: int, h: int, w: int
) -> tuple[int, int, int, int] | None:
    """The box grown by ``pad`` and clipped to an ``h``×``w`` canvas; None when off it."""
    x0, y0 = max(x0 - pad, 0), max(y0 - pad, 0)
    x1, y1 = min(x1 + pad, w), min(y1 + pad, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


Shapes = Points | Sequence[Points]
"""One shape's points, or several shapes drawn alike in one call (both eyes, say)."""


class Painter:
    """A premultiplied-RGBA ``uint8`` canvas (``HxWx4``) that shapes are drawn into in place.

    An opaque fill or stroke is one OpenCV call: antialiased filling with an opaque colour
    blends each channel as ``x + (colour - x) * coverage``, which on premultiplied RGBA (alpha
    drawn as 255) is exactly the "over" operator. A translucent shape is drawn the same way on
    a copy of its bounding box, mixed back by its opacity (``cv2.addWeighted``); only soft
    (blurred) shapes need a coverage mask. Shapes clipped to another are painted on a layer
    (:meth:`clip`) that is blended in once through the clip's coverage. Every drawing call
    takes one shape or a list of shapes drawn alike (one OpenCV call for both eyes). (The
    float32 painter this replaced gave the same pixels within 2/255 at two to four times the
    cost.)

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

    def fill(self, shapes: Shapes, color: Color, *, alpha: float = 1.0, blur: float = 0.0) -> None:
        """Fill closed shapes with ``color``, optionally translucent or soft (blur)."""
        if blur > 0:
            for pts in _shape_list(shapes):
                soft = shape_coverage(self.to_px(pts), self.h, self.w, blur * self.scale)
                if soft is not None:
                    m, (x0, y0) = soft
                    self._blend_coverage(m * np.float32(alpha), x0, y0, color)
            return
        polys = self._fixed(shapes)
        if alpha >= 1.0:
            cv2.fillPoly(self.rgba, polys, self._opaque(color), lineType=cv2.LINE_AA,
                         shift=_SHIFT)  # fmt: skip
            return
        box = self._box(polys, 2)
        if box is not None:
            region, local = self._on_copy(box)
            cv2.fillPoly(local, self._moved(polys, box), self._opaque(color),
                         lineType=cv2.LINE_AA, shift=_SHIFT)  # fmt: skip
            cv2.addWeighted(region, 1.0 - alpha, local, alpha, 0.0, dst=region)

    def stroke(
        self,
        shapes: Shapes,
        width: float,
        color: Color,
        *,
        closed: bool = False,
        alpha: float = 1.0,
    ) -> None:
        """Draw round-capped lines of ``width`` design units along ``shapes``."""
        t = max(1, round(width * self.scale))
        polys = self._fixed(shapes)
        if alpha >= 1.0:
            cv2.polylines(self.rgba, polys, closed, self._opaque(color), thickness=t,
                          lineType=cv2.LINE_AA, shift=_SHIFT)  # fmt: skip
            return
        box = self._box(polys, t + 2)
        if box is not None:
            region, local = self._on_copy(box)
            cv2.polylines(local, self._moved(polys, box), closed, self._opaque(color),
                          thickness=t, lineType=cv2.LINE_AA, shift=_SHIFT)  # fmt: skip
            cv2.addWeighted(region, 1.0 - alpha, local, alpha, 0.0, dst=region)

    def cover(self, color: Color) -> None:
        """Paint the whole canvas one opaque colour (a clip layer's background, say)."""
        # one C call: assigning a colour tuple through NumPy broadcasting is 30 times slower
        cv2.rectangle(self.rgba, (0, 0), (self.w, self.h), _rounded(self._opaque(color)), -1)

    @contextlib.contextmanager
    def clip(self, shapes: Shapes) -> Iterator[Painter]:
        """Paint inside ``shapes`` only: a layer for the ``with`` block, blended in on exit.

        The layer starts as a copy of the canvas in the shapes' box; what is drawn on it shows
        through the shapes' antialiased coverage (a mouth's tongue and teeth, an eye's iris).
        """
        polys = self._fixed(shapes)
        box = self._box(polys, 2)
        if box is None:  # the clip misses the canvas: what is drawn inside it is dropped
            yield Painter(np.zeros((1, 1, 4), np.uint8), self.scale, self.origin)
            return
        x0, y0, x1, y1 = box
        region, local = self._on_copy(box)
        layer = Painter(local, self.scale, (self.origin[0] + x0 / self.scale,
                                            self.origin[1] + y0 / self.scale))  # fmt: skip
        yield layer
        cov = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(cov, self._moved(polys, box), 255, lineType=cv2.LINE_AA, shift=_SHIFT)
        w = np.multiply(cov, np.float32(1.0 / 255.0), dtype=np.float32)
        region[:] = cv2.blendLinear(region, local, np.float32(1.0) - w, w)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _opaque(color: Color) -> tuple[float, float, float, float]:
        return (color[0], color[1], color[2], 255.0)

    def _fixed(self, shapes: Shapes) -> list[npt.NDArray[np.int32]]:
        """Design units to the fixed-point pixels OpenCV draws (``_SHIFT`` fraction bits)."""
        k = self.scale * (1 << _SHIFT)
        out = []
        for pts in _shape_list(shapes):
            px = np.array(pts, dtype=np.float64)
            px -= self.origin
            px *= k
            out.append(np.rint(px, out=px).astype(np.int32))
        return out

    def _box(
        self, polys: list[npt.NDArray[np.int32]], pad: int
    ) -> tuple[int, int, int, int] | None:
        """Pixel box ``(x0, y0, x1, y1)`` of fixed-point shapes grown by ``pad``, clipped."""
        x, y, bw, bh = cv2.boundingRect(polys[0] if len(polys) == 1 else np.concatenate(polys))
        x1, y1 = ((x + bw) >> _SHIFT) + 1, ((y + bh) >> _SHIFT) + 1
        return _clipped_box(x >> _SHIFT, y >> _SHIFT, x1, y1, pad, self.h, self.w)

    @staticmethod
    def _moved(
        polys: list[npt.NDArray[np.int32]], box: tuple[int, int, int, int]
    ) -> list[npt.NDArray[np.int32]]:
        """Fixed-point shapes relative to the box's top-left pixel."""
        offset = np.array([box[0] << _SHIFT, box[1] << _SHIFT], np.int32)
        return [p - offset for p in polys]

    def _on_copy(self, box: tuple[int, int, int, int]) -> tuple[ByteArray, ByteArray]:
        """The canvas in ``box`` (a view) and a copy of it to draw on."""
        x0, y0, x1, y1 = box
        region = self.rgba[y0:y1, x0:x1]
        return region, region.copy()

    def _blend_coverage(self, m: FloatArray, x0: int, y0: int, color: Color) -> None:
        """Blend ``color`` into the canvas through a coverage mask whose top-left is at x0, y0."""
        hh, ww = m.shape
        box = self.rgba[y0 : y0 + hh, x0 : x0 + ww]
        paint = _solid(self._opaque(color), hh, ww)
        box[:] = cv2.blendLinear(box, paint, np.float32(1.0) - m, m)


def _shape_list(shapes: Shapes) -> Sequence[Points]:
    """``shapes`` as a list of point arrays (one shape's points are an ``(n, 2)`` array)."""
    if isinstance(shapes, np.ndarray) or (len(shapes) and np.ndim(shapes[0]) == 1):
        return [np.asarray(shapes)]
    return shapes
