"""Seeded, parametric flat-illustration portraits: the procedural avatar.

A seed picks a :class:`FaceParams` (skin tone, hair style and colour, eye colour and shape,
brows, nose, glasses, earrings, clothing, background); any field can be overridden. The
portrait is painted as smooth vector shapes, supersampled and area-downscaled, so edges are
antialiased like a finished flat illustration. The parameters travel in the image's
``provenance`` so the local renderer can redraw and animate the very same face.

The static layers live here; the moving features (mouth, eyes, brows) are drawn by
:class:`avatarkit.render.face.ProceduralFace`.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np

from avatarkit._image import encode_png
from avatarkit.errors import InputValidationError
from avatarkit.ports import ImageCapabilities, ProgressCallback
from avatarkit.render._canvas import Painter, catmull, ellipse, mix, rgb, shade
from avatarkit.types import PROVENANCE_KEY, AvatarImage, AvatarPrompt

__all__ = [
    "HAIR_STYLES",
    "FaceParams",
    "ProceduralImageGenerator",
    "generate_procedural",
    "random_params",
]

PARAMS_VERSION = 1
CX = 256.0
"""Horizontal centre of the face in design units (the portrait is 512 units square)."""

SKIN_TONES = (
    "#ffe0c4",
    "#f7d0af",
    "#ecbc96",
    "#e0ac80",
    "#c68c64",
    "#a7704c",
    "#82553a",
    "#5f3e2a",
)
HAIR_COLORS = (
    "#231e20", "#46302a", "#6e462d", "#96462a", "#e1b96e", "#ebe1c8", "#a9a9ae", "#be502d",
    "#3c96a0", "#e682aa",
)  # fmt: skip
EYE_COLORS = ("#5f3c23", "#3a2a1e", "#826432", "#508250", "#4678b4", "#78879a")
CLOTHING_COLORS = (
    "#2f5d8a", "#e0644b", "#3f8f6b", "#f2b441", "#7b5ea7", "#264653", "#d1495b", "#5d6d7e",
    "#f4a261", "#1d3557",
)  # fmt: skip
BACKGROUNDS = (
    "#fbe4c8",
    "#cde6f0",
    "#e1d7f5",
    "#d2f0dc",
    "#ffd7d7",
    "#f0efe6",
    "#fff1b8",
    "#d8e2dc",
)
HAIR_STYLES = ("short", "quiff", "bob", "long", "bun", "curly", "buzz", "ponytail")
CLOTHING = ("tshirt", "vneck", "hoodie", "collar", "turtleneck", "blazer")


@dataclass(frozen=True)
class FaceParams:
    """Everything that defines one procedural avatar's look (colours as ``#rrggbb``)."""

    skin: str = "#ecbc96"
    hair_style: str = "short"
    hair_color: str = "#46302a"
    eye_color: str = "#5f3c23"
    eye_shape: Literal["round", "almond"] = "almond"
    eye_size: float = 1.0
    brow_thickness: float = 1.0
    brow_arch: float = 0.5
    face_width: float = 1.0
    jaw: float = 0.4
    nose: Literal["button", "line", "soft"] = "button"
    lip_tint: float = 0.35
    blush: float = 0.25
    freckles: bool = False
    glasses: Literal["none", "round", "square"] = "none"
    glasses_color: str = "#2b2b2b"
    earrings: Literal["none", "stud", "hoop"] = "none"
    earring_color: str = "#e2b84a"
    clothing: str = "tshirt"
    clothing_color: str = "#2f5d8a"
    accent_color: str = "#f2f2f2"
    background: str = "#cde6f0"
    background_style: Literal["circle", "plain", "arch"] = "circle"
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain JSON-able data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaceParams:
        """Parameters from :meth:`to_dict` output (unknown keys are an error).

        Raises:
            InputValidationError: an unknown field or a bad value.
        """
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputValidationError(
                f"unknown procedural face parameters: {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(known))}",
                field="style",
            )
        params = cls(**data)
        params.validate()
        return params

    def validate(self) -> None:
        """Check every field; raises InputValidationError naming the first bad one."""
        choices: dict[str, tuple[str, ...]] = {
            "hair_style": HAIR_STYLES,
            "clothing": CLOTHING,
            "eye_shape": ("round", "almond"),
            "nose": ("button", "line", "soft"),
            "glasses": ("none", "round", "square"),
            "earrings": ("none", "stud", "hoop"),
            "background_style": ("circle", "plain", "arch"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputValidationError(
                    f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}",
                    field=name,
                )
        for name in ("skin", "hair_color", "eye_color", "glasses_color", "earring_color",
                     "clothing_color", "accent_color", "background"):  # fmt: skip
            value = getattr(self, name)
            ok = isinstance(value, str) and len(value) == 7 and value.startswith("#")
            try:
                int(value[1:], 16)
            except (ValueError, TypeError):
                ok = False
            if not ok:
                raise InputValidationError(
                    f"{name} must be a #rrggbb colour, got {value!r}", field=name
                )
        ranges = {"eye_size": (0.7, 1.3), "brow_thickness": (0.5, 2.0), "brow_arch": (0.0, 1.0),
                  "face_width": (0.85, 1.15), "jaw": (0.0, 1.0), "lip_tint": (0.0, 1.0),
                  "blush": (0.0, 1.0)}  # fmt: skip
        for name, (lo, hi) in ranges.items():
            if not lo <= float(getattr(self, name)) <= hi:
                raise InputValidationError(f"{name} must be in [{lo}, {hi}]", field=name)


def random_params(seed: int, **overrides: Any) -> FaceParams:
    """The parameters seed ``seed`` gives, with ``overrides`` applied on top.

    Raises:
        InputValidationError: an unknown override or a bad value.
    """
    r = random.Random(seed)
    style = r.choice(HAIR_STYLES)
    hair = r.choices(HAIR_COLORS, weights=(4, 5, 4, 2, 3, 1, 1, 1, 0.5, 0.5))[0]
    skin = r.choice(SKIN_TONES)
    clothing_color = r.choice(CLOTHING_COLORS)
    bg = r.choice(BACKGROUNDS)
    data: dict[str, Any] = dict(
        skin=skin,
        hair_style=style,
        hair_color=hair,
        eye_color=r.choice(EYE_COLORS),
        eye_shape=r.choice(("round", "almond")),
        eye_size=round(r.uniform(0.9, 1.12), 3),
        brow_thickness=round(r.uniform(0.8, 1.4), 3),
        brow_arch=round(r.uniform(0.1, 0.9), 3),
        face_width=round(r.uniform(0.93, 1.07), 3),
        jaw=round(r.uniform(0.0, 1.0), 3),
        nose=r.choice(("button", "line", "soft")),
        lip_tint=round(r.uniform(0.2, 0.6), 3),
        blush=round(r.uniform(0.0, 0.45), 3),
        freckles=r.random() < 0.15,
        glasses=r.choices(("none", "round", "square"), weights=(6, 2, 2))[0],
        glasses_color=r.choice(("#2b2b2b", "#7a4a2a", "#b03a48", "#3d5a80")),
        earrings=r.choices(("none", "stud", "hoop"), weights=(6, 2, 2))[0],
        earring_color=r.choice(("#e2b84a", "#d9d9d9")),
        clothing=r.choice(CLOTHING),
        clothing_color=clothing_color,
        accent_color=r.choice(("#f2f2f2", "#2b2b2b", "#f2b441", "#ffffff")),
        background=bg,
        background_style=r.choices(("circle", "plain", "arch"), weights=(3, 1, 2))[0],
        seed=seed,
    )
    data.update(overrides)
    return FaceParams.from_dict(data)


# ---------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Layout:
    """Key positions of the face in design units, derived from the parameters."""

    fw: float
    eye_y: float = 252.0
    eye_dx: float = 41.0
    brow_y: float = 224.0
    mouth_y: float = 319.0
    nose_y: float = 290.0
    chin_y: float = 358.0

    def face_outline(self, drop: float = 0.0, jaw: float = 0.4) -> Any:
        """The face's outline; ``drop`` lowers the chin (an open jaw)."""
        fw = self.fw
        jh = (68 + 18 * jaw) * fw
        ch = (30 + 14 * jaw) * fw
        pts = [
            (CX, 110), (CX + 62 * fw, 117), (CX + 88 * fw, 160), (CX + 95 * fw, 232),
            (CX + jh, 300 + drop * 0.5), (CX + ch, 343 + drop), (CX, self.chin_y + drop),
            (CX - ch, 343 + drop), (CX - jh, 300 + drop * 0.5), (CX - 95 * fw, 232),
            (CX - 88 * fw, 160), (CX - 62 * fw, 117),
        ]  # fmt: skip
        return catmull(pts, n=14)


def layout(p: FaceParams) -> Layout:
    """Where the features of ``p`` sit."""
    return Layout(fw=p.face_width)


# ---------------------------------------------------------------------------- painting


def paint_background(pt: Painter, p: FaceParams) -> None:
    """Fill the whole canvas with the background and its decoration."""
    bg = rgb(p.background)
    ox, oy = pt.origin
    w, h = pt.w / pt.scale, pt.h / pt.scale
    rect = np.array([(ox - 1, oy - 1), (ox + w + 1, oy - 1), (ox + w + 1, oy + h + 1),
                     (ox - 1, oy + h + 1)])  # fmt: skip
    pt.fill(rect, bg)
    if p.background_style == "circle":
        pt.fill(ellipse(CX, 262, 200, 200, n=160), shade(bg, 1.35))
    elif p.background_style == "arch":
        arch = np.vstack(
            [
                [(CX - 170, 600), (CX - 170, 250)],
                ellipse(CX, 250, 170, 170, n=160)[80:],
                [(CX + 170, 600)],
            ]
        )
        pt.fill(arch, shade(bg, 0.93))
    else:
        pt.fill(ellipse(CX, 240, 260, 240, n=120), shade(bg, 1.18), blur=40)
    # a few soft confetti dots for life
    r = random.Random(p.seed or 0)
    for _ in range(5):
        x, y = r.uniform(20, 492), r.uniform(20, 200)
        if abs(x - CX) < 150:
            continue
        pt.fill(ellipse(x, y, 5, 5, n=24), shade(bg, 0.85), alpha=0.7)


def _hair_back(p: FaceParams, lay: Layout) -> list[Any]:
    """Hair shapes that sit behind the head (drawn in the head layer)."""
    fw = lay.fw
    s = p.hair_style
    if s == "bob":
        return [catmull([(CX - 112 * fw, 345), (CX - 120 * fw, 250), (CX - 110, 150), (CX - 70, 96),
                         (CX, 80), (CX + 70, 96), (CX + 110, 150), (CX + 120 * fw, 250),
                         (CX + 112 * fw, 345), (CX + 70, 356), (CX - 70, 356)], n=16)]  # fmt: skip
    if s == "curly":
        a = np.linspace(0, 2 * np.pi, 200, endpoint=False)
        rad = 1 + 0.05 * np.sin(a * 15) ** 2
        x = CX + 138 * fw * rad * np.cos(a)
        y = 196 + 128 * rad * np.sin(a)
        y = np.minimum(y, 318)
        return [np.stack([x, y], axis=1)]
    if s == "bun":
        return [ellipse(CX, 84, 40, 36, n=60)]
    if s == "ponytail":
        return [
            catmull(
                [
                    (CX + 70, 130),
                    (CX + 118, 170),
                    (CX + 128 * fw, 260),
                    (CX + 116 * fw, 350),
                    (CX + 96 * fw, 380),
                    (CX + 92 * fw, 300),
                    (CX + 88, 200),
                ],
                n=12,
            )
        ]
    return []


def _hair_body(p: FaceParams, lay: Layout) -> list[Any]:
    """Hair behind the neck and shoulders (long styles), drawn in the body layer."""
    fw = lay.fw
    if p.hair_style == "long":
        return [catmull([(CX - 122 * fw, 470), (CX - 124 * fw, 250), (CX - 108, 140), (CX - 60, 92),
                         (CX, 82), (CX + 60, 92), (CX + 108, 140), (CX + 124 * fw, 250),
                         (CX + 122 * fw, 470), (CX, 480)], n=16)]  # fmt: skip
    return []


def _hair_front(p: FaceParams, lay: Layout) -> list[Any]:
    """Hair over the forehead (drawn over the face, in the top layer)."""
    fw = lay.fw
    s = p.hair_style
    if s in ("short", "quiff"):
        top = 66 if s == "quiff" else 88
        return [catmull([
            (CX - 91 * fw, 256), (CX - 99 * fw, 200), (CX - 94 * fw, 146), (CX - 66, 106),
            (CX - 12, top + 4), (CX + 40, top - 4 if s == "quiff" else top + 2), (CX + 84, 116),
            (CX + 101 * fw, 168), (CX + 98 * fw, 222), (CX + 91 * fw, 256), (CX + 86 * fw, 214),
            (CX + 76 * fw, 170), (CX + 38, 146), (CX - 12, 156), (CX - 54, 158),
            (CX - 78 * fw, 178), (CX - 86 * fw, 214),
        ], n=12)]  # fmt: skip
    if s == "bob":
        return [catmull([
            (CX - 106 * fw, 300), (CX - 104 * fw, 170), (CX - 72, 104), (CX, 90), (CX + 72, 104),
            (CX + 104 * fw, 170), (CX + 106 * fw, 300), (CX + 90 * fw, 250), (CX + 84 * fw, 190),
            (CX + 60, 184), (CX, 188), (CX - 60, 184), (CX - 84 * fw, 190), (CX - 90 * fw, 250),
        ], n=12)]  # fmt: skip
    if s == "long":
        left = catmull([(CX - 4, 100), (CX - 60, 104), (CX - 100 * fw, 150), (CX - 112 * fw, 250),
                        (CX - 110 * fw, 340), (CX - 92 * fw, 330), (CX - 88 * fw, 240),
                        (CX - 72, 160), (CX - 30, 124)], n=12)  # fmt: skip
        right = left.copy()
        right[:, 0] = 2 * CX - right[:, 0]
        cap = catmull([(CX - 70, 110), (CX, 88), (CX + 70, 110), (CX + 30, 124), (CX, 112),
                       (CX - 30, 124)], n=10)  # fmt: skip
        return [left, right, cap]
    if s in ("bun", "ponytail"):
        return [catmull([
            (CX - 90 * fw, 240), (CX - 97 * fw, 180), (CX - 84, 124), (CX - 40, 96), (CX, 90),
            (CX + 40, 96), (CX + 84, 124), (CX + 97 * fw, 180), (CX + 90 * fw, 240),
            (CX + 82 * fw, 180), (CX + 56, 140), (CX, 130), (CX - 56, 140), (CX - 82 * fw, 180),
        ], n=12)]  # fmt: skip
    if s == "curly":
        a = np.linspace(np.pi * 1.05, np.pi * 1.95, 90)
        rad = 1 + 0.06 * np.abs(np.sin(a * 14))
        crown = np.stack([CX + 104 * fw * rad * np.cos(a), 176 + 84 * rad * np.sin(a)], axis=1)
        fringe = [(CX + 92 * fw, 190), (CX + 60, 150), (CX + 30, 160), (CX, 148), (CX - 30, 160),
                  (CX - 60, 150), (CX - 92 * fw, 190)]  # fmt: skip
        return [np.vstack([crown, catmull(fringe, closed=False, n=8)])]
    if s == "buzz":
        return [catmull([
            (CX - 88 * fw, 220), (CX - 93 * fw, 168), (CX - 70, 112), (CX, 96), (CX + 70, 112),
            (CX + 93 * fw, 168), (CX + 88 * fw, 220), (CX + 80 * fw, 178), (CX + 50, 150),
            (CX, 146), (CX - 50, 150), (CX - 80 * fw, 178),
        ], n=12)]  # fmt: skip
    return []


def paint_body(pt: Painter, p: FaceParams) -> None:
    """Long hair behind, the neck, the shoulders and the clothing (the static body layer)."""
    lay = layout(p)
    skin = rgb(p.skin)
    hair = rgb(p.hair_color)
    cloth = rgb(p.clothing_color)
    accent = rgb(p.accent_color)
    for shape in _hair_body(p, lay):
        pt.fill(shape, shade(hair, 0.85))
    neck = catmull([(CX - 33, 300), (CX + 33, 300), (CX + 35, 396), (CX + 46, 440),
                    (CX - 46, 440), (CX - 35, 396)], n=8)  # fmt: skip
    pt.fill(neck, skin)
    # shadow the head casts on the neck
    pt.fill(catmull([(CX - 38, 330), (CX + 38, 330), (CX + 37, 352), (CX, 374), (CX - 37, 352)],
                    n=8), shade(skin, 0.86))  # fmt: skip
    if p.clothing == "hoodie":
        pt.fill(catmull([(CX - 100, 440), (CX - 70, 400), (CX, 392), (CX + 70, 400),
                         (CX + 100, 440), (CX, 470)], n=10), shade(cloth, 0.75))  # fmt: skip
    body = catmull([(CX - 215, 620), (CX - 200, 478), (CX - 160, 432), (CX - 70, 412),
                    (CX + 70, 412), (CX + 160, 432), (CX + 200, 478), (CX + 215, 620)],
                   n=12)  # fmt: skip
    pt.fill(body, cloth)
    if p.clothing in ("tshirt", "hoodie"):
        neckline = catmull([(CX - 56, 408), (CX - 34, 438), (CX, 448), (CX + 34, 438),
                            (CX + 56, 408)], closed=False, n=10)  # fmt: skip
        pt.fill(np.vstack([neckline, [(CX + 50, 398), (CX - 50, 398)]]), skin)
        pt.stroke(neckline, 7, shade(cloth, 0.8))
        if p.clothing == "hoodie":
            for dx in (-24, 24):
                pt.stroke(np.array([(CX + dx, 446), (CX + dx * 1.1, 500)]), 4, accent)
                pt.fill(ellipse(CX + dx * 1.1, 502, 4, 5), accent)
    elif p.clothing == "vneck":
        v = np.array([(CX - 50, 405), (CX, 472), (CX + 50, 405), (CX + 50, 396), (CX - 50, 396)])
        pt.fill(v, skin)
        pt.stroke(np.array([(CX - 52, 408), (CX, 474), (CX + 52, 408)]), 7, shade(cloth, 0.8))
    elif p.clothing == "turtleneck":
        pt.fill(catmull([(CX - 50, 380), (CX + 50, 380), (CX + 56, 430), (CX, 440),
                         (CX - 56, 430)], n=10), shade(cloth, 0.9))  # fmt: skip
        for y in (396, 410, 424):
            pt.stroke(catmull([(CX - 48, y), (CX, y + 6), (CX + 48, y)], closed=False, n=8), 2.2,
                      shade(cloth, 0.75), alpha=0.7)  # fmt: skip
    elif p.clothing in ("collar", "blazer"):
        shirt = accent if p.clothing == "blazer" else shade(cloth, 1.0)
        if p.clothing == "blazer":
            pt.fill(np.array([(CX - 62, 412), (CX + 62, 412), (CX + 30, 540), (CX - 30, 540)]),
                    shirt)  # fmt: skip
        pt.fill(np.array([(CX - 48, 400), (CX, 452), (CX + 48, 400), (CX + 48, 392),
                          (CX - 48, 392)]), skin)  # fmt: skip
        collar = shade(shirt, 0.92) if p.clothing == "blazer" else shade(cloth, 1.25)
        for sgn in (-1, 1):
            pt.fill(np.array([(CX + sgn * 50, 398), (CX + sgn * 4, 456), (CX + sgn * 34, 462),
                              (CX + sgn * 62, 410)]), collar)  # fmt: skip
            if p.clothing == "blazer":
                pt.stroke(np.array([(CX + sgn * 66, 414), (CX + sgn * 30, 540)]), 3,
                          shade(cloth, 0.7))  # fmt: skip
    # soft fold lines at the armpits
    for sgn in (-1, 1):
        pt.stroke(catmull([(CX + sgn * 150, 470), (CX + sgn * 146, 500), (CX + sgn * 150, 530)],
                          closed=False, n=8), 3, shade(cloth, 0.82), alpha=0.8)  # fmt: skip


def paint_head(pt: Painter, p: FaceParams) -> None:
    """Hair behind the head, ears, face, blush, nose and freckles (the head's base layer)."""
    lay = layout(p)
    skin = rgb(p.skin)
    hair = rgb(p.hair_color)
    for shape in _hair_back(p, lay):
        pt.fill(shape, shade(hair, 0.88))
    for sgn in (-1, 1):
        ex = CX + sgn * 93 * lay.fw
        pt.fill(ellipse(ex, 262, 14, 22, rot=sgn * 8), skin)
        pt.fill(ellipse(ex + sgn * 2, 263, 7, 13, rot=sgn * 8), shade(skin, 0.84))
        if p.earrings == "stud":
            pt.fill(ellipse(ex + sgn * 1, 284, 4, 4), rgb(p.earring_color))
        elif p.earrings == "hoop":
            pt.stroke(ellipse(ex + sgn * 1, 296, 8, 11), 2.6, rgb(p.earring_color), closed=True)
    pt.fill(lay.face_outline(jaw=p.jaw), skin)
    if p.blush > 0:
        for sgn in (-1, 1):
            pt.fill(ellipse(CX + sgn * 56 * lay.fw, 292, 17, 10), (240, 110, 110),
                    alpha=p.blush, blur=5)  # fmt: skip
    if p.freckles:
        r = random.Random((p.seed or 0) + 7)
        for sgn in (-1, 1):
            for _ in range(7):
                x, y = CX + sgn * r.uniform(34, 70), r.uniform(272, 296)
                pt.fill(ellipse(x, y, 1.5, 1.5, n=12), shade(skin, 0.72), alpha=0.8)
    nose_c = shade(skin, 0.8)
    if p.nose == "button":
        pt.fill(ellipse(CX, lay.nose_y + 1, 11, 7), shade(skin, 0.9), blur=2)
        pt.stroke(catmull([(CX - 9, lay.nose_y), (CX - 4, lay.nose_y + 5), (CX + 4, lay.nose_y + 5),
                           (CX + 9, lay.nose_y)], closed=False, n=8), 2.4, nose_c)  # fmt: skip
    elif p.nose == "line":
        pt.stroke(catmull([(CX + 4, 258), (CX + 8, 282), (CX + 9, lay.nose_y + 2),
                           (CX, lay.nose_y + 5), (CX - 5, lay.nose_y + 3)], closed=False, n=8),
                  2.4, nose_c)  # fmt: skip
    else:
        pt.fill(catmull([(CX + 3, 268), (CX + 9, lay.nose_y - 1), (CX + 5, lay.nose_y + 5),
                         (CX - 6, lay.nose_y + 5), (CX - 7, lay.nose_y + 1)], n=8),
                shade(skin, 0.92))  # fmt: skip


def paint_head_top(pt: Painter, p: FaceParams) -> None:
    """Hair over the forehead and glasses: everything above the moving features."""
    lay = layout(p)
    hair = rgb(p.hair_color)
    skin = rgb(p.skin)
    color = mix(hair, skin, 0.45) if p.hair_style == "buzz" else hair
    for shape in _hair_front(p, lay):
        pt.fill(shape, color)
    if p.hair_style not in ("buzz",):
        hi = shade(hair, 1.25) if sum(hair) < 300 else shade(hair, 0.85)
        pt.stroke(catmull([(CX - 60, 118), (CX - 30, 104), (CX + 4, 100)], closed=False, n=8),
                  5, hi, alpha=0.6)  # fmt: skip
    if p.hair_style == "bun":
        pt.stroke(
            catmull([(CX - 24, 72), (CX, 62), (CX + 22, 74)], closed=False, n=8),
            4,
            shade(hair, 1.25) if sum(hair) < 300 else shade(hair, 0.85),
            alpha=0.6,
        )
    if p.glasses != "none":
        gc = rgb(p.glasses_color)
        for sgn in (-1, 1):
            ex = CX + sgn * lay.eye_dx
            if p.glasses == "round":
                rim = ellipse(ex, lay.eye_y + 2, 24, 22, n=64)
            else:
                rim = catmull([(ex - 26, lay.eye_y - 16), (ex + 26, lay.eye_y - 16),
                               (ex + 25, lay.eye_y + 16), (ex - 25, lay.eye_y + 16)],
                              n=8)  # fmt: skip
            pt.fill(rim, (255, 255, 255), alpha=0.07)
            pt.stroke(rim, 4.2, gc, closed=True)
            pt.stroke(np.array([(ex + sgn * 24, lay.eye_y - 4), (CX + sgn * 94 * lay.fw, 248)]),
                      3.6, gc)  # fmt: skip
        pt.stroke(catmull([(CX - 17, lay.eye_y - 2), (CX, lay.eye_y - 7), (CX + 17, lay.eye_y - 2)],
                          closed=False, n=8), 3.6, rgb(p.glasses_color))  # fmt: skip


# Plain words of a prompt the local generator honours, as whole words or phrases
# ("dark-skinned" and "curly-haired" too): "shorts" is no "short" haircut, "bunny" no "bun".
_SKIN_WORDS = {  # longer phrases first: "dark brown skin" is not "brown skin"
    "dark brown": 6, "pale": 0, "fair": 0, "light": 1, "olive": 3, "medium": 3, "tan": 4,
    "tanned": 4, "brown": 5, "dark": 7, "deep": 7, "black": 7,
}  # fmt: skip
_HAIR_COLOR_WORDS = {
    "blonde": "#e1b96e", "blond": "#e1b96e", "platinum": "#ebe1c8", "red hair": "#be502d",
    "ginger": "#be502d", "auburn": "#96462a", "black hair": "#231e20",
    "grey hair": "#a9a9ae", "gray hair": "#a9a9ae", "silver hair": "#a9a9ae",
    "white hair": "#a9a9ae", "brown hair": "#6e462d", "pink hair": "#e682aa",
    "blue hair": "#3c96a0", "teal hair": "#3c96a0",
}  # fmt: skip
_CLOTHING_WORDS = {
    "tshirt": "tshirt", "t-shirt": "tshirt", "t shirt": "tshirt", "tee": "tshirt",
    "vneck": "vneck", "v-neck": "vneck", "v neck": "vneck", "hoodie": "hoodie",
    "collar": "collar", "collared": "collar", "turtleneck": "turtleneck",
    "turtle neck": "turtleneck", "blazer": "blazer",
}  # fmt: skip


def _has(phrase: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def _overrides_from_prompt(prompt: AvatarPrompt) -> dict[str, Any]:
    """A few plain words of the prompt as overrides (``dark skin``, ``curly``, ``glasses``...)."""
    text = prompt.prompt.lower()
    out: dict[str, Any] = {}
    for word, tone in _SKIN_WORDS.items():
        if re.search(rf"(?<!\w){word}[\s-]skin(?:ned)?(?!\w)", text):
            out["skin"] = SKIN_TONES[tone]
            break
    for style in HAIR_STYLES:
        if _has(style, text):
            out["hair_style"] = style
    for word, color in _HAIR_COLOR_WORDS.items():
        if _has(word, text):
            out["hair_color"] = color
    if _has("glasses", text):
        out["glasses"] = "round"
    if _has("earring", text) or _has("earrings", text):
        out["earrings"] = "hoop"
    for word, cloth in _CLOTHING_WORDS.items():
        if _has(word, text):
            out["clothing"] = cloth
    return out


def generate_procedural(
    seed: int, size: int | tuple[int, int] = 512, **overrides: Any
) -> AvatarImage:
    """Paint the procedural avatar of ``seed`` as a PNG AvatarImage.

    Args:
        seed: Which avatar: the same seed always gives the same face.
        size: Side of the square image, or ``(width, height)``.
        **overrides: FaceParams fields to set (``hair_style="bob"``, ``glasses="round"``...).

    Returns:
        An AvatarImage of kind ``"procedural"`` whose provenance holds the parameters.

    Raises:
        InputValidationError: a bad size or override.
    """
    from avatarkit.animation.face_state import FaceState
    from avatarkit.render.face import borrow_face, return_face

    params = random_params(seed, **overrides)
    w, h = (size, size) if isinstance(size, int) else size
    face = borrow_face(params, (w, h))  # the renderer will reuse its painted layers
    try:
        frame = face.draw(FaceState())
        face_box = face.face_box
    finally:
        return_face(face)
    provenance = {
        "generator": "procedural",
        "version": PARAMS_VERSION,
        "seed": seed,
        "params": params.to_dict(),
        "face_box": list(face_box),
    }
    # the PNG keeps the record, so a saved avatar loads back as this face (AvatarImage.load)
    return AvatarImage(
        data=encode_png(frame, {PROVENANCE_KEY: json.dumps(provenance)}),
        format="png",
        width=w,
        height=h,
        kind="procedural",
        face_box=face_box,
        provenance=provenance,
    )


class ProceduralImageGenerator:
    """The ``local`` image generator: seeded procedural portraits, offline and instant.

    ``AvatarPrompt.seed`` picks the face (random when None), ``AvatarPrompt.style`` overrides
    any :class:`FaceParams` field, and a few plain words of the prompt are honoured
    (``"curly"``, ``"glasses"``, ``"blonde"``, ``"hoodie"``...).
    """

    @property
    def capabilities(self) -> ImageCapabilities:
        """Procedural images, same seed → same image, offline."""
        return ImageCapabilities(kinds=("procedural",), negative_prompt=False, seed=True,
                                 offline=True)  # fmt: skip

    async def generate(
        self, prompt: AvatarPrompt, *, progress: ProgressCallback | None = None
    ) -> AvatarImage:
        """Paint the avatar ``prompt`` describes."""
        import asyncio

        seed = prompt.seed if prompt.seed is not None else random.SystemRandom().randrange(2**31)
        overrides = {**_overrides_from_prompt(prompt), **prompt.style}
        size = (prompt.width - prompt.width % 2, prompt.height - prompt.height % 2)
        image = await asyncio.to_thread(generate_procedural, seed, size, **overrides)
        if progress is not None:
            progress(1, 1)
        return image


def params_from_image(image: AvatarImage) -> FaceParams:
    """The FaceParams a procedural AvatarImage was painted from.

    Raises:
        InputValidationError: the image carries neither parameters nor a seed.
    """
    prov = image.provenance
    if isinstance(prov.get("params"), dict):
        return FaceParams.from_dict(dict(prov["params"]))
    if isinstance(prov.get("seed"), int):
        return random_params(prov["seed"])
    raise InputValidationError(
        "this procedural image has no 'params' or 'seed' in its provenance, so it cannot be "
        "redrawn; make it with generate_procedural() or the 'local' image generator",
        field="image",
    )
