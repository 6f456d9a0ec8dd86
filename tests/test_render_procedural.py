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
    SKIN_TONES,
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


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("dark skin, buzz cut, hoodie",
         {"skin": SKIN_TONES[7], "hair_style": "buzz", "clothing": "hoodie"}),
        ("a pale-skinned, curly-haired woman", {"skin": SKIN_TONES[0], "hair_style": "curly"}),
        ("brown skin, curly black hair",
         {"skin": SKIN_TONES[5], "hair_style": "curly", "hair_color": "#231e20"}),
        ("an olive-skinned man in a t-shirt", {"skin": SKIN_TONES[3], "clothing": "tshirt"}),
        ("dark brown skin and a bun", {"skin": SKIN_TONES[6], "hair_style": "bun"}),
        ("a tan skinned surfer", {"skin": SKIN_TONES[4]}),
        ("a light-skinned person with silver hair in a v-neck",
         {"skin": SKIN_TONES[1], "hair_color": "#a9a9ae", "clothing": "vneck"}),
    ],
)  # fmt: skip
def test_plain_words_of_the_prompt_are_honoured(prompt: str, expected: dict[str, str]) -> None:
    img = asyncio.run(ProceduralImageGenerator().generate(AvatarPrompt(prompt, seed=1)))
    params = params_from_image(img).to_dict()
    assert {k: params[k] for k in expected} == expected


def test_words_inside_other_words_are_not_read_as_features() -> None:
    prompt = AvatarPrompt("a man in shorts walking along the shore holding a bunny", seed=1)
    img = asyncio.run(ProceduralImageGenerator().generate(prompt))
    assert params_from_image(img) == random_params(1)  # not "short", "long" or "bun" hair


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


def test_painter_composites_premultiplied_over() -> None:
    """Fills, translucent fills, soft fills, clips and strokes blend as "over" should."""
    from avatarkit.render._canvas import Painter, bezier, ellipse

    canvas = np.zeros((100, 120, 4), np.uint8)
    canvas[:50] = (40, 80, 120, 255)  # opaque top half; the bottom half is transparent
    pt = Painter(canvas, 2.0, (0.0, 0.0))

    pt.fill(ellipse(30, 25, 10, 10), (200.0, 60.0, 70.0))  # opaque, over the transparent edge
    assert tuple(canvas[50, 60]) == (200, 60, 70, 255)  # inside: the colour, now opaque
    assert tuple(canvas[75, 60]) == (0, 0, 0, 0)  # outside the circle: untouched
    rim = canvas[55:75, 60, 3]  # down through the circle's lower edge, on transparency
    assert ((rim > 0) & (rim < 255)).any()  # antialiased: partly covered pixels

    pt.fill(ellipse(50, 10, 4, 4), (240.0, 240.0, 240.0), alpha=0.6)  # translucent
    want = np.array([40, 80, 120]) + (np.array([240, 240, 240]) - [40, 80, 120]) * 0.6
    assert np.abs(canvas[20, 100, :3].astype(int) - want).max() <= 1 and canvas[20, 100, 3] == 255

    before = canvas.copy()
    pt.fill(ellipse(15, 40, 3, 3), (0.0, 0.0, 255.0), blur=2)  # soft: a smooth falloff
    ramp = canvas[80, 30:45, 2].astype(int) - before[80, 30:45, 2]
    assert ramp[-1] > 0 and np.all(np.diff(ramp[: int(np.argmax(ramp)) + 1]) >= 0)

    before = canvas.copy()
    with pt.clip(ellipse(40, 20, 5, 5)) as inside:  # drawn only inside the small circle
        inside.fill(ellipse(45, 20, 12, 12), (0.0, 255.0, 0.0))
    _, xs = np.nonzero(np.any(canvas != before, axis=2))
    assert len(xs) > 50 and xs.min() >= 2 * 35 - 2 and xs.max() <= 2 * 45 + 2  # inside the clip
    assert tuple(canvas[40, 80]) == (0, 255, 0, 255)  # the clip's centre: the colour itself
    before = canvas.copy()
    with pt.clip(ellipse(400, 400, 5, 5)) as inside:  # a clip off the canvas: nothing lands
        inside.cover((1.0, 2.0, 3.0))
        inside.fill(ellipse(400, 400, 9, 9), (0.0, 255.0, 0.0), alpha=0.5)
    assert np.array_equal(canvas, before)

    before = canvas.copy()
    pt.fill([ellipse(10, 5, 2, 2), ellipse(50, 5, 2, 2)], (9.0, 9.0, 9.0))  # two shapes, one call
    assert tuple(canvas[10, 20]) == tuple(canvas[10, 100]) == (9, 9, 9, 255)
    assert tuple(canvas[10, 60]) == tuple(before[10, 60])  # nothing between them

    line = bezier((5.0, 45.0), (20.0, 35.0), (40.0, 35.0), (55.0, 45.0), n=30)
    before = canvas.copy()
    pt.stroke(line, 2.5, (10.0, 10.0, 10.0))  # 5 px wide at this scale
    covered = canvas[:, 60, 3].astype(int) - before[:, 60, 3]  # on the transparent half
    assert 4 <= int((covered > 128).sum()) <= 7  # the solid core, the AA fringe aside


def test_content_box_finds_any_nonzero_channel() -> None:
    from avatarkit.render._canvas import content_box

    rgba = np.zeros((30, 40, 4), np.uint8)
    assert content_box(rgba) == (0, 0, 0, 0)
    rgba[5, 7, 2] = 1  # one channel of one pixel
    rgba[20, 33, 0] = 9
    assert content_box(rgba) == (7, 5, 34, 21)  # exclusive right and bottom edges
    gray = np.zeros((10, 10), np.uint8)
    gray[9, 0] = 255
    assert content_box(gray) == (0, 9, 1, 10)
    assert content_box(rgba[..., 2]) == (7, 5, 8, 6)  # a strided view: one channel
