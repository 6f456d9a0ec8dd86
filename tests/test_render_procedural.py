"""Procedural avatars: seeded, parametric, redrawable, and an animated face that moves."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from avatarkit.animation.face_state import FaceState
from avatarkit.errors import InputValidationError
from avatarkit.ports import ImageGenerator
from avatarkit.render.face import ProceduralFace
from avatarkit.render.procedural import (
    HAIR_STYLES,
    FaceParams,
    ProceduralImageGenerator,
    generate_procedural,
    params_from_image,
    random_params,
)
from avatarkit.types import AvatarPrompt, Emotion


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_same_seed_same_avatar_other_seed_other_avatar() -> None:
    a = generate_procedural(7, size=128)
    b = generate_procedural(7, size=128)
    c = generate_procedural(8, size=128)
    assert a.data == b.data
    assert a.provenance == b.provenance
    assert random_params(7) != random_params(8)
    assert np.abs(_pixels(a.data).astype(int) - _pixels(c.data)).mean() > 1.0


def test_image_is_a_procedural_png_with_params_to_redraw_it() -> None:
    img = generate_procedural(3, size=(160, 128), glasses="round", hair_style="bob")
    assert img.kind == "procedural"
    assert (img.width, img.height) == (160, 128)
    assert _pixels(img.data).shape == (128, 160, 3)
    params = params_from_image(img)
    assert params.glasses == "round" and params.hair_style == "bob"
    assert params == random_params(3, glasses="round", hair_style="bob")
    assert img.face_box is not None


def test_overrides_change_the_picture() -> None:
    plain = _pixels(generate_procedural(5, size=128, glasses="none").data).astype(int)
    specs = _pixels(generate_procedural(5, size=128, glasses="square").data).astype(int)
    assert np.abs(plain - specs).mean() > 0.3


def test_bad_overrides_are_clear_errors() -> None:
    with pytest.raises(InputValidationError, match="hair_style"):
        random_params(1, hair_style="mohawk")
    with pytest.raises(InputValidationError, match="unknown procedural face parameters"):
        random_params(1, hat=True)
    with pytest.raises(InputValidationError, match="skin"):
        random_params(1, skin="pink")


def test_every_hair_style_draws() -> None:
    for style in HAIR_STYLES:
        face = ProceduralFace(random_params(11, hair_style=style), 96, supersample=2)
        frame = face.draw(FaceState())
        assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8


def test_face_moves_its_features() -> None:
    face = ProceduralFace(FaceParams(), 160)
    rest = face.draw(FaceState()).astype(int)
    x, y, w, h = face.mouth_box
    open_ = face.draw(FaceState(visemes={"aa": 1.0}, jaw_open=0.9, lips_closed=0.0)).astype(int)
    assert np.abs(open_[y : y + h, x : x + w] - rest[y : y + h, x : x + w]).mean() > 5
    # outside the mouth nothing changed
    outside = open_.copy()
    outside[y : y + h, x : x + w] = rest[y : y + h, x : x + w]
    assert np.array_equal(outside, rest)
    blink = face.draw(FaceState(blink=1.0)).astype(int)
    assert np.abs(blink - rest).mean() > 0.1
    happy = face.draw(FaceState(emotions={Emotion.HAPPY: 1.0})).astype(int)
    angry = face.draw(FaceState(emotions={Emotion.ANGRY: 1.0})).astype(int)
    assert np.abs(happy - angry).mean() > 0.2
    turned = face.draw(FaceState(yaw=5.0, roll=4.0)).astype(int)
    assert np.abs(turned - rest).mean() > 1.0
    assert np.array_equal(face.draw(FaceState()), rest)  # back to rest exactly


def test_distinct_mouth_for_each_viseme() -> None:
    from avatarkit.animation.face_state import OCULUS_VISEMES
    from avatarkit.animation.sampler import VISEME_MOUTH

    face = ProceduralFace(FaceParams(), 192)
    x, y, w, h = face.mouth_box
    crops = {}
    for v in OCULUS_VISEMES:
        jaw, width, closed = VISEME_MOUTH[v]
        st = FaceState(visemes={v: 1.0}, jaw_open=jaw, mouth_width=width, lips_closed=closed)
        crops[v] = face.draw(st)[y : y + h, x : x + w].astype(int)
    # the speech shapes (all but rest/PP, which are both closed) are pairwise distinct
    speech = [v for v in OCULUS_VISEMES if v not in ("sil", "PP")]
    for i, a in enumerate(speech):
        for b in speech[i + 1 :]:
            assert np.abs(crops[a] - crops[b]).mean() > 0.05, (a, b)


def test_sprite_cache_is_bounded() -> None:
    face = ProceduralFace(FaceParams(), 96, supersample=2, cache_size=4)
    for k in range(10):
        face.draw(FaceState(jaw_open=k / 10, lips_closed=0.0))
    assert len(face._mouth_cache) <= 4


def test_image_generator_port() -> None:
    gen = ProceduralImageGenerator()
    assert isinstance(gen, ImageGenerator)
    assert gen.capabilities.seed and gen.capabilities.offline
    prompt = AvatarPrompt(
        "a person with curly hair and glasses",
        seed=42,
        width=128,
        height=128,
        style={"clothing": "hoodie"},
    )
    img = asyncio.run(gen.generate(prompt))
    p = params_from_image(img)
    assert (p.hair_style, p.glasses, p.clothing) == ("curly", "round", "hoodie")
    again = asyncio.run(gen.generate(prompt))
    assert again.data == img.data


def test_picture_and_renderer_share_painted_layers() -> None:
    from avatarkit.render.face import borrow_face, clear_pool, return_face

    clear_pool()
    img = generate_procedural(9, size=96)
    face = borrow_face(params_from_image(img), 96)
    try:
        assert face.sprites_painted == 2  # the still's mouth and eyes: painted once, reused
        other = borrow_face(params_from_image(img), 96)  # in use: a second one is made
        assert other is not face and other.sprites_painted == 0
    finally:
        return_face(face)
    clear_pool()


def test_sprite_painter_draws_what_the_float_painter_draws() -> None:
    """The uint8 sprite painter is a faster route to the same pixels (within 2/255)."""
    from avatarkit.render._canvas import Painter, SpritePainter, bezier, ellipse

    rng = np.random.default_rng(3)
    rgb = rng.uniform(0, 200, (90, 120, 3)).astype(np.float32)
    alpha = np.ones((90, 120), np.float32)
    alpha[60:] = 0.0  # a transparent strip: fills there must raise alpha too
    rgb[60:] = 0.0  # (premultiplied)
    ref = Painter(90, 120, 2.0, (0.0, 0.0))
    ref.rgb[:], ref.alpha[:] = rgb, alpha
    rgba = np.dstack([rgb + 0.5, alpha * 255 + 0.5]).astype(np.uint8)
    fast = SpritePainter(rgba, 2.0, (0.0, 0.0))
    shapes = [
        (ellipse(30, 25, 18, 12), (200.0, 60.0, 70.0), 1.0),
        (ellipse(35, 28, 8, 8), (20.0, 20.0, 30.0), 0.6),
        (
            np.array([(5.0, 20.0), (55.0, 25.0), (50.0, 42.0), (8.0, 40.0)]),
            (240.0, 240.0, 230.0),
            1.0,
        ),
    ]
    for pts, color, a in shapes:
        ref.fill(pts, color, alpha=a)
        fast.fill(pts, color, alpha=a)
    want_rgba = np.dstack([ref.rgb + 0.5, ref.alpha * 255 + 0.5]).clip(0, 255).astype(np.uint8)
    assert np.abs(fast.rgba.astype(int) - want_rgba.astype(int)).max() <= 2
    assert fast.rgba[30, 60, 3] == 255 and fast.rgba[5, 5, 3] == 255  # filled, opaque

    # a line as thick as the float painter's; a clipped shape stays inside its clip
    lid = bezier((10.0, 30.0), (20.0, 18.0), (40.0, 18.0), (50.0, 30.0), n=30)
    ref.stroke(lid, 2.5, (10.0, 10.0, 10.0))
    fast.stroke(lid, 2.5, (10.0, 10.0, 10.0))
    dark_ref = int((ref.rgb.mean(axis=2) < 40).sum())
    dark_fast = int((fast.rgba[..., :3].mean(axis=2) < 40).sum())
    assert dark_ref > 50 and abs(dark_fast - dark_ref) <= 0.1 * dark_ref
    before = fast.rgba.copy()
    fast.fill(ellipse(50, 25, 20, 20), (0.0, 255.0, 0.0), clip=fast.mask(ellipse(30, 25, 18, 12)))
    _, xs = np.nonzero(np.any(fast.rgba != before, axis=2))
    assert len(xs) > 100 and xs.min() >= 2 * 30 - 2 and xs.max() <= 2 * (30 + 18) + 2
