"""The animated procedural face: draws one frame per FaceState, fast.

How it stays fast (about a millisecond a frame at 512×512):

- The background and body are painted once (2× supersampled with antialiased edges,
  area-downscaled).
- The head is painted once into a premultiplied-RGBA layer; the parts over the features (fringe,
  glasses) into a second one.
- The moving features live in two small regions: the mouth (with the chin, which drops as the
  jaw opens) and the eyes with the brows. Each is painted on demand for a *quantised* feature
  state at 2× with antialiased fills, composed with the layers above and below, and cached as
  an opaque sprite; a frame pastes two sprites (plain array copies).
- Head motion is one ``cv2.warpAffine`` of the head layer and one blend onto the body.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from avatarkit.animation.face_state import FaceState
from avatarkit.errors import InputValidationError
from avatarkit.render._canvas import (
    Painter,
    bezier,
    catmull,
    content_box,
    ellipse,
    inverse_alpha,
    mix,
    outline,
    over,
    rgb,
    shade,
    shrink,
)
from avatarkit.render.procedural import (
    CX,
    FaceParams,
    Layout,
    layout,
    paint_background,
    paint_body,
    paint_head,
    paint_head_top,
)
from avatarkit.types import Emotion

__all__ = [
    "FeatureState",
    "ProceduralFace",
    "borrow_face",
    "clear_pool",
    "feature_state",
    "return_face",
]

Frame = npt.NDArray[np.uint8]

# per viseme: (upper teeth shown, tongue raise, lower lip tucked under teeth)
_VISEME_EXTRAS: dict[str, tuple[float, float, float]] = {
    "sil": (0.0, 0.0, 0.0), "PP": (0.0, 0.0, 0.0), "FF": (1.0, 0.0, 1.0), "TH": (1.0, 1.0, 0.0),
    "DD": (1.0, 0.5, 0.0), "kk": (0.8, 0.2, 0.0), "CH": (1.0, 0.0, 0.0), "SS": (1.0, 0.0, 0.0),
    "nn": (0.6, 1.0, 0.0), "RR": (0.6, 0.2, 0.0), "aa": (0.5, 0.3, 0.0), "E": (0.9, 0.2, 0.0),
    "ih": (1.0, 0.1, 0.0), "oh": (0.3, 0.2, 0.0), "ou": (0.2, 0.0, 0.0),
}  # fmt: skip

# per emotion: smile, squint, wide, brow raise, brow inner (+sad / -angry), brow asym, jaw add,
# lid droop
_EMOTION_FEATURES: dict[Emotion, tuple[float, ...]] = {
    Emotion.NEUTRAL: (0, 0, 0, 0, 0, 0, 0, 0),
    Emotion.HAPPY: (1.0, 0.55, 0, 0.25, 0, 0, 0, 0),
    Emotion.SAD: (-0.9, 0.0, 0, -0.1, 1.0, 0, 0, 0.35),
    Emotion.ANGRY: (-0.6, 0.3, 0, -0.6, -1.0, 0, 0, 0.2),
    Emotion.SURPRISED: (0.0, 0, 1.0, 1.0, 0.2, 0, 0.3, 0),
    Emotion.THINKING: (-0.3, 0.15, 0, 0.1, -0.2, 1.0, 0, 0.15),
    Emotion.FEARFUL: (-0.5, 0, 0.8, 0.6, 0.9, 0, 0.12, 0),
    Emotion.DISGUSTED: (-0.7, 0.5, 0, -0.3, -0.6, 0.3, 0, 0.2),
}


@dataclass(frozen=True)
class FeatureState:
    """Quantised feature geometry: the cache key of the mouth and eye sprites."""

    mouth: tuple[int, ...]
    eyes: tuple[int, ...]


_MOUTH_STEPS = (16, 8, 2, 2, 2, 2, 8)  # open, width, closed, teeth, tongue, bite, smile
_EYE_STEPS = (5, 4, 2, 4, 4, 6, 6, 2)  # blink, gaze x, gaze y, squint, wide, raise, inner, asym


def _q(value: float, lo: float, hi: float, steps: int) -> int:
    return round((min(max(value, lo), hi) - lo) / (hi - lo) * steps)


def _dq(index: int, lo: float, hi: float, steps: int) -> float:
    return lo + (hi - lo) * index / steps


def feature_state(state: FaceState) -> FeatureState:
    """Map a FaceState to the quantised feature geometry the sprites are keyed by."""
    teeth = tongue = bite = 0.0
    for vis, w in state.visemes.items():
        ex = _VISEME_EXTRAS.get(vis)
        if ex is not None:
            teeth += w * ex[0]
            tongue += w * ex[1]
            bite += w * ex[2]
    # plain floats: a frame's handful of products costs less than one NumPy call
    f: tuple[float, ...] = (0.0,) * 8
    for emo, w in state.emotions.items():
        row = _EMOTION_FEATURES.get(Emotion(emo))
        if row is not None:
            f = tuple(a + w * b for a, b in zip(f, row, strict=True))
    smile, squint, wide, raise_, inner, asym, jaw_add, droop = f
    jaw = state.jaw_open + jaw_add * (1 - state.jaw_open)
    lips = state.lips_closed * (1.0 - min(jaw_add * 2, 1.0))
    ms = _MOUTH_STEPS
    mouth = (
        _q(jaw, 0, 1, ms[0]), _q(state.mouth_width, -1, 1, ms[1]), _q(lips, 0, 1, ms[2]),
        _q(teeth, 0, 1, ms[3]), _q(tongue, 0, 1, ms[4]), _q(bite, 0, 1, ms[5]),
        _q(smile, -1, 1, ms[6]),
    )  # fmt: skip
    es = _EYE_STEPS
    blink = max(state.blink, droop)
    eyes = (
        _q(blink, 0, 1, es[0]), _q(state.gaze_x, -1, 1, es[1]), _q(state.gaze_y, -1, 1, es[2]),
        _q(squint, 0, 1, es[3]), _q(wide, 0, 1, es[4]), _q(raise_, -1, 1, es[5]),
        _q(inner, -1, 1, es[6]), _q(asym, 0, 1, es[7]),
    )  # fmt: skip
    return FeatureState(mouth=mouth, eyes=eyes)


# ----------------------------------------------------------------------------- feature painting


@functools.lru_cache(maxsize=64)
def _jaw_line(lay: Layout, jaw: float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The resting jaw line (cheek to cheek) and how far each point drops per unit of drop."""
    rest = lay.face_outline(jaw=jaw)
    seg = len(rest) // 12  # points per control point of the outline
    lower = rest[3 * seg : 9 * seg + 1]
    fall = np.clip(1.0 - (np.abs(lower[:, 0] - CX) / 54.0) ** 2, 0.0, 1.0) ** 1.5
    fall = np.stack([np.zeros(len(lower)), fall], axis=1)  # (dx, dy) per unit of drop
    lower.setflags(write=False)
    fall.setflags(write=False)
    return lower, fall


def paint_mouth(pt: Painter, p: FaceParams, key: tuple[int, ...]) -> None:
    """Paint the mouth (and the chin it drags down) for a quantised mouth key."""
    ms = _MOUTH_STEPS
    o = _dq(key[0], 0, 1, ms[0])
    w = _dq(key[1], -1, 1, ms[1])
    closed = _dq(key[2], 0, 1, ms[2])
    teeth = _dq(key[3], 0, 1, ms[3])
    tongue = _dq(key[4], 0, 1, ms[4])
    bite = _dq(key[5], 0, 1, ms[5])
    smile = _dq(key[6], -1, 1, ms[6]) + 0.25  # a resting face smiles a little
    lay = layout(p)
    skin = rgb(p.skin)
    lip = mix(shade(skin, 0.78), (196, 84, 92), p.lip_tint)
    lip_low = shade(lip, 1.12)
    mx, my = CX, lay.mouth_y

    drop = 9.0 * o
    if drop > 0.3:  # the open jaw lowers the chin
        # fill only the crescent between the resting and the dropped jaw line (cheek to
        # cheek), so nothing already painted inside the face (blush, freckles) is covered
        # the chin moves most; the drop fades out before the edges of the mouth region
        lower, fall = _jaw_line(lay, p.jaw)
        dropped = lower + drop * fall
        pt.fill(np.vstack([dropped, lower[::-1]]), skin)

    rnd = max(0.0, -w)
    hw = 26.0 * (1 + 0.16 * w) if w >= 0 else 26.0 * (1 + 0.36 * w)
    hw *= 1 + 0.12 * max(smile, 0.0)  # a smile stretches the mouth
    gap = 27.0 * o * (1 - 0.85 * closed)
    corner_y = my - 6.5 * smile + 1.0 * rnd
    mid = my + 1.8 * smile
    k = 0.5 + 0.32 * rnd
    lc, rc = (mx - hw, corner_y), (mx + hw, corner_y)
    up_y = mid - gap * 0.30 * 1.33
    lo_y = mid + gap * (0.70 - 0.45 * bite) * 1.33
    upper_in = bezier(lc, (mx - hw * k, up_y), (mx + hw * k, up_y), rc, n=28)
    lower_in = bezier(rc, (mx + hw * k, lo_y), (mx - hw * k, lo_y), lc, n=28)

    lip_u = 5.5 * (1 - 0.35 * closed * (1 - o)) + 2.5 * rnd
    lip_l = 7.5 * (1 - 0.3 * closed * (1 - o)) + 2.5 * rnd
    uy = float(upper_in[14, 1])
    upper_out = catmull([
        (lc[0] - 2, lc[1] + 0.5), (mx - hw * 0.55, uy - lip_u * 0.9), (mx - 5, uy - lip_u - 1.2),
        (mx, uy - lip_u + 0.8), (mx + 5, uy - lip_u - 1.2), (mx + hw * 0.55, uy - lip_u * 0.9),
        (rc[0] + 2, rc[1] + 0.5)], closed=False, n=8)  # fmt: skip
    ly = float(lower_in[14, 1])
    lower_out = catmull([
        (rc[0] + 2, rc[1] + 0.5), (mx + hw * 0.6, ly + lip_l * 0.8), (mx, ly + lip_l + 0.6),
        (mx - hw * 0.6, ly + lip_l * 0.8), (lc[0] - 2, lc[1] + 0.5)],
        closed=False, n=8)  # fmt: skip

    interior = np.vstack([upper_in, lower_in])
    if gap > 0.8:
        with pt.clip(interior) as inside:
            inside.cover((92, 30, 40))
            # tongue
            ty = float(lower_in[14, 1]) - 3 - tongue * gap * 0.55
            inside.fill(ellipse(mx, ty + 7, hw * 0.62, 8 + 2 * o, n=48), (214, 104, 112))
            # teeth
            th = min(gap * 0.5, 6.5) * max(teeth, 0.35 if o > 0.45 else teeth)
            if th > 0.4:
                band = np.vstack([upper_in[4:24], upper_in[4:24][::-1] + np.array([0.0, th])])
                inside.fill(band, (250, 248, 242))
            low_t = min(gap * 0.25, 4.0) * teeth * (1 - o)
            if low_t > 0.4:
                lb = np.vstack([lower_in[6:22], lower_in[6:22][::-1] - np.array([0.0, low_t])])
                inside.fill(lb, (236, 232, 226))
    # lips, and a highlight on the lower one (inside it: mixed as 70 % over the lip colour)
    pt.fill(np.vstack([upper_out, upper_in[::-1]]), lip)
    pt.fill(np.vstack([lower_in, lower_out[::-1]]), lip_low)
    pt.fill(ellipse(mx - 3, ly + lip_l * 0.5, hw * 0.28, 1.6, n=24),
            mix(lip_low, shade(lip_low, 1.25), 0.7))  # fmt: skip
    if bite > 0.2:  # upper teeth resting on the lower lip (F, V)
        tb = np.vstack([upper_in[6:22], upper_in[6:22][::-1] + np.array([0.0, 4.5 * bite])])
        pt.fill(tb, (250, 248, 242))
    if gap <= 0.8:
        pt.stroke(upper_in, 1.8, shade(lip, 0.55))
    # mouth corners: a small dimple line that follows the smile (on the skin: its colour
    # mixed 80 % over the skin's, drawn opaque)
    dimples = [
        np.array([(cx, corner_y - 1.5 - 1.5 * smile), (cx + sgn * 1.5, corner_y + 1.5)])
        for sgn in (-1, 1)
        for cx in [mx + sgn * (hw + 2.5)]
    ]
    pt.stroke(dimples, 1.4, mix(skin, shade(skin, 0.72), 0.8))


def paint_eyes(pt: Painter, p: FaceParams, key: tuple[int, ...]) -> None:
    """Paint both eyes and brows for a quantised eye key."""
    es = _EYE_STEPS
    blink = _dq(key[0], 0, 1, es[0])
    gx = _dq(key[1], -1, 1, es[1])
    gy = _dq(key[2], -1, 1, es[2])
    squint = _dq(key[3], 0, 1, es[3])
    wide = _dq(key[4], 0, 1, es[4])
    raise_ = _dq(key[5], -1, 1, es[5])
    inner = _dq(key[6], -1, 1, es[6])
    asym = _dq(key[7], 0, 1, es[7])
    lay = layout(p)
    skin = rgb(p.skin)
    lash = (38, 28, 30)
    size = p.eye_size
    hair = rgb(p.hair_color)
    brow_c = shade(hair, 0.8) if sum(hair) > 450 else mix(hair, (30, 22, 20), 0.35)

    def luma(c: tuple[float, float, float]) -> float:
        return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]

    for _ in range(8):  # brows must read against the skin, whatever the hair colour
        if luma(brow_c) <= 0.62 * luma(skin):
            break
        brow_c = mix(brow_c, (28, 20, 18), 0.3)
    # Both eyes' shapes first, then each layer of them in one call for the pair.
    lids, lowers, uppers, visible, brows = [], [], [], [], []
    irises: list[tuple[float, float, float]] = []
    for sgn in (-1, 1):  # -1: the avatar's right eye (image left)
        ex, ey = CX + sgn * lay.eye_dx, lay.eye_y
        hw = 15.5 * size
        top = (10.5 if p.eye_shape == "round" else 8.5) * size * (1 + 0.4 * wide)
        bot = (7.5 if p.eye_shape == "round" else 6.0) * size * (1 + 0.2 * wide)
        tilt = 0.0 if p.eye_shape == "round" else 2.0
        inner_c = (ex - sgn * hw, ey + 0.5)
        outer_c = (ex + sgn * hw, ey - tilt)
        c = 1.33
        upper = bezier(
            inner_c,
            (ex - sgn * hw * 0.45, ey - top * c),
            (ex + sgn * hw * 0.5, ey - top * c),
            outer_c,
            n=30,
        )
        lower_y = ey + bot * c * (1 - 0.75 * squint)
        lower = bezier(outer_c, (ex + sgn * hw * 0.45, lower_y), (ex - sgn * hw * 0.5, lower_y),
                       inner_c, n=30)  # fmt: skip
        lid = upper * (1 - blink) + lower[::-1] * blink
        lid[:, 1] = np.minimum(lid[:, 1] + squint * 1.5, np.maximum(lid[:, 1], lower[::-1][:, 1]))
        lids.append(lid)
        lowers.append(lower)
        uppers.append(upper)
        visible.append(np.vstack([lid, lower]))
        ir = 8.2 * size * (1 - 0.12 * wide)
        irises.append((ex + gx * hw * 0.38, ey + 0.5 + gy * 3.0 - 0.5 * top * 0.1, ir))

        # brow
        r = raise_ + (asym * 1.4 if sgn > 0 else -asym * 0.3)
        by = lay.brow_y - 8.0 * r - 3.0 * wide
        in_x, out_x = CX + sgn * 19, CX + sgn * 64
        in_y = by + 2.0 - 9.0 * inner
        out_y = by + 4.0 + 3.5 * inner
        arch = 5.0 + 4.0 * p.brow_arch
        center = bezier(
            (in_x, in_y),
            (CX + sgn * 34, in_y - arch - 1),
            (CX + sgn * 52, by - arch + 1),
            (out_x, out_y),
            n=30,
        )
        brows.append(outline(center, _brow_half(len(center)) * p.brow_thickness))

    if blink < 0.97:
        iris_c = rgb(p.eye_color)
        with pt.clip(visible) as eyeball:
            eyeball.cover((250, 248, 244))
            eyeball.fill([ellipse(x, y, ir, ir, n=48) for x, y, ir in irises], iris_c)
            # a lighter lower iris, inside the iris: mixed as 50 % over its colour
            low = [ellipse(x, y + ir * 0.35, ir * 0.8, ir * 0.5, n=32) for x, y, ir in irises]
            eyeball.fill(low, mix(iris_c, shade(iris_c, 1.2), 0.5))
            eyeball.fill([ellipse(x, y, ir * 0.48, ir * 0.48, n=32) for x, y, ir in irises],
                         (24, 18, 20))  # fmt: skip
            eyeball.fill([ellipse(x + ir * 0.35, y - ir * 0.38, ir * 0.24, ir * 0.24, n=24)
                          for x, y, ir in irises], (255, 255, 255), alpha=0.95)  # fmt: skip
            # shadow of the upper lid on the eyeball
            eyeball.fill([np.vstack([lid, lid[::-1] + np.array([0.0, 2.2])]) for lid in lids],
                         (0, 0, 0), alpha=0.12)  # fmt: skip
    pt.stroke(lids, 2.8, lash)
    # outer lash flicks
    pt.stroke([np.array([(lid[-1, 0] - sgn * 1.5, lid[-1, 1] + 0.5),
                         (lid[-1, 0] + sgn * 3.5, lid[-1, 1] - 2.5)])
               for sgn, lid in zip((-1, 1), lids, strict=True)], 2.4, lash)  # fmt: skip
    # creases above the lids
    crease_c = shade(skin, 0.78)
    creases = [upper[4:26] + np.array([0.0, -4.5 - 2 * wide]) for upper in uppers]
    pt.stroke(creases, 1.4, crease_c, alpha=0.6 * (1 - blink * 0.6))
    if squint > 0.3:
        pt.stroke([lower[6:24] + np.array([0.0, 2.0]) for lower in lowers], 1.3, crease_c,
                  alpha=0.5 * squint)  # fmt: skip
    pt.fill(brows, brow_c)


@functools.lru_cache(maxsize=8)
def _brow_half(n: int) -> npt.NDArray[np.float64]:
    """Half-width profile of a brow of unit thickness along its ``n`` centreline points."""
    s = np.linspace(0, 1, n)
    half = 0.5 * 6.5 * (1 - 0.65 * s**1.5) * (0.75 + 0.25 * np.sin(np.pi * np.minimum(s * 1.6, 1)))
    half = half[:, None]
    half.setflags(write=False)
    return half


# ----------------------------------------------------------------------------- the face


@dataclass
class _Region:
    x: int  # pixel box in head-canvas coordinates (1×)
    y: int
    w: int
    h: int


class ProceduralFace:
    """A procedural avatar that draws itself for any FaceState.

    Args:
        params: The avatar's look.
        size: Frame size: a side for a square, or ``(width, height)``.
        supersample: Supersampling of the head layers (even; 2 with antialiased edges is
            indistinguishable from 4 at video sizes and paints 2.5 times faster).
        cache_size: Sprites kept per feature (memory stays bounded on long clips).
    """

    def __init__(
        self,
        params: FaceParams,
        size: int | tuple[int, int] = 512,
        *,
        supersample: int = 2,
        cache_size: int = 768,
    ) -> None:
        w, h = (size, size) if isinstance(size, int) else size
        if not (32 <= w <= 4096 and 32 <= h <= 4096):
            raise InputValidationError(f"frame size {w}x{h} is out of range (32–4096)",
                                       field="size")  # fmt: skip
        params.validate()
        self.params = params
        self.width, self.height = w, h
        s = min(w, h)
        self.scale = s / 512.0  # pixels per design unit
        self.origin = (-(w - s) / 2 / self.scale, 512.0 - h / self.scale)
        ss = max(2, int(supersample) // 2 * 2)  # even: the 2× sprite grid must align
        self._ss = ss

        # Static background + body, full frame.
        # big smooth shapes: 2× supersampling with antialiased edges is plenty
        bg = Painter(np.zeros((h * 2, w * 2, 4), np.uint8), self.scale * 2, self.origin)
        paint_background(bg, params)
        paint_body(bg, params)
        self._bg = np.ascontiguousarray(shrink(bg.rgba, 2)[..., :3])
        del bg

        # Head layers, in a box around the head (design units → 1× pixels).
        hx0 = int(np.floor((96 - self.origin[0]) * self.scale))
        hy0 = int(np.floor((36 - self.origin[1]) * self.scale))
        hx1 = int(np.ceil((416 - self.origin[0]) * self.scale))
        hy1 = int(np.ceil((392 - self.origin[1]) * self.scale))
        hx0, hy0 = max(hx0, 0), max(hy0, 0)
        hx1, hy1 = min(hx1, w), min(hy1, h)
        self._hbox = (hx0, hy0, hx1 - hx0, hy1 - hy0)
        horigin = (self.origin[0] + hx0 / self.scale, self.origin[1] + hy0 / self.scale)
        hh, hw = hy1 - hy0, hx1 - hx0
        base = Painter(np.zeros((hh * ss, hw * ss, 4), np.uint8), self.scale * ss, horigin)
        paint_head(base, params)
        top = Painter(np.zeros((hh * ss, hw * ss, 4), np.uint8), self.scale * ss, horigin)
        paint_head_top(top, params)
        self._horigin = horigin
        # 2× copies for sprite painting
        self._sprite_ss = 2
        f = ss // self._sprite_ss
        base2, top2 = shrink(base.rgba, f), shrink(top.rgba, f)
        head = shrink(over(top.rgba, base.rgba), ss)
        del base, top
        # Shrink the head box to what the head covers, plus room for head motion.
        x0, y0, x1, y1 = content_box(head[..., 3])
        margin = int(np.ceil(24 * self.scale))
        tx0 = max(x0 - margin, 0)
        ty0 = max(y0 - margin, 0)
        tx1 = min(x1 + margin, hw)
        ty1 = min(y1 + margin, hh)
        # keep the 2× sprite grid aligned: crop the 2× copies by the same pixel box
        crop2 = (slice(ty0 * 2, ty1 * 2), slice(tx0 * 2, tx1 * 2))
        self._base2 = np.ascontiguousarray(base2[crop2])  # what sprites are painted on
        self._top2 = np.ascontiguousarray(top2[crop2])
        del base2, top2
        hx0, hy0 = hx0 + tx0, hy0 + ty0
        hw, hh = tx1 - tx0, ty1 - ty0
        self._hbox = (hx0, hy0, hw, hh)
        horigin = (self.origin[0] + hx0 / self.scale, self.origin[1] + hy0 / self.scale)
        self._horigin = horigin
        self._head = np.ascontiguousarray(head[ty0:ty1, tx0:tx1])

        lay = layout(params)
        self._mouth_region = self._region(CX - 58, lay.mouth_y - 30, CX + 58, lay.chin_y + 14)
        self._eye_region = self._region(CX - 78, lay.brow_y - 30, CX + 78, lay.eye_y + 24)
        self._mouth_cache: OrderedDict[tuple[int, ...], Frame] = OrderedDict()
        self._eye_cache: OrderedDict[tuple[int, ...], Frame] = OrderedDict()
        self._cache_size = cache_size
        self._top_cache: dict[bool, tuple[Frame, Frame] | None] = {}
        self._canvas = self._head.copy()
        # the part of the head canvas that can be non-transparent: the head, plus the feature
        # regions (an open jaw drops the chin below the resting head); the margin around it
        # only makes room for head motion, so frames warp and blend this box alone
        boxes = [content_box(self._head[..., 3])]
        boxes += [(r.x, r.y, r.x + r.w, r.y + r.h) for r in (self._mouth_region, self._eye_region)]
        self._content = (
            min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes),
        )  # fmt: skip
        self._last: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        fx0 = (CX - 100 - self.origin[0]) * self.scale
        fy0 = (110 - self.origin[1]) * self.scale
        self.face_box = (int(fx0), int(fy0), int(200 * self.scale), int(250 * self.scale))
        # the head turns about the chin, in single precision as OpenCV's rotation matrices take it
        pivot_x = (CX - self.origin[0]) * self.scale - hx0
        pivot_y = (lay.chin_y - 10 - self.origin[1]) * self.scale - hy0
        pivot = np.array([pivot_x, pivot_y], np.float32)
        self._pivot = (float(pivot[0]), float(pivot[1]))
        self.sprites_painted = 0
        mr = self._mouth_region
        self.mouth_box = (hx0 + mr.x, hy0 + mr.y, mr.w, mr.h)
        """Frame-pixel box (left, top, width, height) of the mouth and chin, before head motion."""

    # ------------------------------------------------------------------ public

    def draw(self, state: FaceState) -> Frame:
        """The frame for ``state``: an ``HxWx3`` uint8 RGB array (a new array each call)."""
        fs = feature_state(state)
        if self._last is None or self._last[0] != fs.mouth:
            self._paste(self._mouth_region, self._sprite(self._mouth_cache, fs.mouth, True))
        if self._last is None or self._last[1] != fs.eyes:
            self._paste(self._eye_region, self._sprite(self._eye_cache, fs.eyes, False))
        self._last = (fs.mouth, fs.eyes)
        return self._compose(state)

    def prepare(self, states: Iterable[FaceState]) -> None:
        """Paint the mouth and eye shapes ``states`` need, without drawing their frames."""
        for state in states:
            fs = feature_state(state)
            self._sprite(self._mouth_cache, fs.mouth, True)
            self._sprite(self._eye_cache, fs.eyes, False)

    # ------------------------------------------------------------------ internals

    def _region(self, x0: float, y0: float, x1: float, y1: float) -> _Region:
        ox, oy = self._horigin
        px0 = max(int(np.floor((x0 - ox) * self.scale)), 0)
        py0 = max(int(np.floor((y0 - oy) * self.scale)), 0)
        px1 = min(int(np.ceil((x1 - ox) * self.scale)), self._hbox[2])
        py1 = min(int(np.ceil((y1 - oy) * self.scale)), self._hbox[3])
        return _Region(px0, py0, px1 - px0, py1 - py0)

    def _sprite(
        self,
        cache: OrderedDict[tuple[int, ...], Frame],
        key: tuple[int, ...],
        mouth: bool,
    ) -> Frame:
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        reg = self._mouth_region if mouth else self._eye_region
        s2 = self._sprite_ss
        ox, oy = self._horigin
        origin = (ox + reg.x / self.scale, oy + reg.y / self.scale)
        ys, xs = slice(reg.y * s2, (reg.y + reg.h) * s2), slice(reg.x * s2, (reg.x + reg.w) * s2)
        pt = Painter(self._base2[ys, xs].copy(), self.scale * s2, origin)
        if mouth:
            paint_mouth(pt, self.params, key)
        else:
            paint_eyes(pt, self.params, key)
        sprite = np.asarray(cv2.resize(pt.rgba, (reg.w, reg.h), interpolation=cv2.INTER_AREA),
                            np.uint8)  # fmt: skip
        top = self._top_region(reg, mouth)
        if top is not None:  # hair and glasses over the features (premultiplied "over")
            layer, inverse = top
            sprite = over(layer, sprite, inverse)
        self.sprites_painted += 1
        cache[key] = sprite
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return sprite

    def _top_region(self, reg: _Region, mouth: bool) -> tuple[Frame, Frame] | None:
        """The top layer (fringe, glasses) over a feature region at 1×, or None where empty.

        Returned with its inverse alpha spread to four channels, ready for the "over" blend.
        """
        cache = self._top_cache
        if mouth not in cache:
            s2 = self._sprite_ss
            ys = slice(reg.y * s2, (reg.y + reg.h) * s2)
            xs = slice(reg.x * s2, (reg.x + reg.w) * s2)
            trgba = np.asarray(
                cv2.resize(self._top2[ys, xs], (reg.w, reg.h), interpolation=cv2.INTER_AREA),
                np.uint8,
            )
            cache[mouth] = (trgba, inverse_alpha(trgba)) if trgba[..., 3].any() else None
        return cache[mouth]

    def _paste(self, reg: _Region, sprite: Frame) -> None:
        self._canvas[reg.y : reg.y + reg.h, reg.x : reg.x + reg.w] = sprite

    def _compose(self, state: FaceState) -> Frame:
        x0, y0, w, h = self._hbox
        frame = self._bg.copy()
        px, py = self._pivot
        cx0, cy0, cx1, cy1 = self._content
        moving = abs(state.roll) > 0.02 or abs(state.yaw) > 0.02 or abs(state.pitch) > 0.02
        if moving:
            # cv2.getRotationMatrix2D((px, py), -roll, 1) plus the head's shift, in plain
            # floats: NumPy's per-call overhead on 2x3 arrays cost more than the arithmetic
            a = math.radians(-state.roll)
            c, s = math.cos(a), math.sin(a)
            tx = (1 - c) * px - s * py - state.yaw * 1.1 * self.scale
            ty = s * px + (1 - c) * py + state.pitch * 0.9 * self.scale
            # where the content lands (bilinear taps reach one pixel further), clipped
            xs = [c * x + s * y + tx for x in (cx0 - 1, cx1 + 1) for y in (cy0 - 1, cy1 + 1)]
            ys = [c * y - s * x + ty for x in (cx0 - 1, cx1 + 1) for y in (cy0 - 1, cy1 + 1)]
            rx0 = min(max(math.floor(min(xs)) - 1, 0), w)
            ry0 = min(max(math.floor(min(ys)) - 1, 0), h)
            rx1 = max(min(math.ceil(max(xs)) + 2, w), rx0)
            ry1 = max(min(math.ceil(max(ys)) + 2, h), ry0)
            if rx1 <= rx0 or ry1 <= ry0:
                return frame
            m = np.array([[c, s, tx - rx0], [-s, c, ty - ry0]])
            head = cv2.warpAffine(self._canvas, m, (rx1 - rx0, ry1 - ry0),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)  # fmt: skip
        else:
            rx0, ry0, rx1, ry1 = cx0, cy0, cx1, cy1
            head = self._canvas[ry0:ry1, rx0:rx1]
        # outside the box the head is transparent and the frame is the background already;
        # inside, "over" in place: background × (1 - alpha) + premultiplied head
        inv = cv2.cvtColor(cv2.bitwise_not(head[..., 3]), cv2.COLOR_GRAY2RGB)
        region = frame[y0 + ry0 : y0 + ry1, x0 + rx0 : x0 + rx1]
        cv2.multiply(region, inv, dst=region, scale=1.0 / 255.0)
        cv2.add(region, cv2.cvtColor(head, cv2.COLOR_RGBA2RGB), dst=region)
        return frame


# ----------------------------------------------------------------------------- shared faces

_POOL_KEYS = 4
_POOL_PER_KEY = 2
_pool: OrderedDict[tuple[str, int, int], list[ProceduralFace]] = OrderedDict()
_pool_lock = threading.Lock()


def _pool_key(params: FaceParams, size: tuple[int, int]) -> tuple[str, int, int]:
    return (json.dumps(params.to_dict(), sort_keys=True), size[0], size[1])


def borrow_face(params: FaceParams, size: int | tuple[int, int] = 512) -> ProceduralFace:
    """A face for ``params`` at ``size`` for this thread's exclusive use until returned.

    Faces are pooled: painting an avatar's layers costs about 25 ms, so the picture made
    by :func:`~avatarkit.render.procedural.generate_procedural` and every later utterance's
    render reuse the same painted layers and mouth/eye sprites. Return it with
    :func:`return_face`.
    """
    wh = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    key = _pool_key(params, wh)
    with _pool_lock:
        idle = _pool.get(key)
        if idle:
            return idle.pop()
    return ProceduralFace(params, wh)


def return_face(face: ProceduralFace) -> None:
    """Give a face from :func:`borrow_face` back to the pool (bounded; extras are dropped)."""
    key = _pool_key(face.params, (face.width, face.height))
    with _pool_lock:
        idle = _pool.setdefault(key, [])
        _pool.move_to_end(key)
        if len(idle) < _POOL_PER_KEY and face not in idle:
            idle.append(face)
        while len(_pool) > _POOL_KEYS:
            _pool.popitem(last=False)


def clear_pool() -> None:
    """Forget every pooled face (frees their memory; the next render paints afresh)."""
    with _pool_lock:
        _pool.clear()
