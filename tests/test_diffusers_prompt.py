"""The web UI prompt syntax, presets, provenance and renderer-ready check (no torch needed)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatarkit.errors import InputValidationError
from avatarkit.imaging.portrait import check_portrait, portrait_crop
from avatarkit.imaging.preset import PRESETS, get_preset
from avatarkit.imaging.prompt import (
    LoraRequest,
    chunk_tokens,
    parse_prompt,
    parse_prompt_attention,
)
from avatarkit.imaging.provenance import (
    Infotext,
    infotext_from_provenance,
    png_with_provenance,
    read_parameters,
    read_provenance,
    save_image,
)
from avatarkit.types import AvatarImage


def pairs(text: str) -> list[tuple[str, float]]:
    return [(s.text, s.weight) for s in parse_prompt_attention(text)]


# --- the web UI's documented examples -------------------------------------------------------


def test_nested_round_brackets_multiply_by_1_1_each() -> None:
    assert pairs("(x)") == [("x", pytest.approx(1.1))]
    assert pairs("((x))") == [("x", pytest.approx(1.21))]
    assert pairs("(((x)))") == [("x", pytest.approx(1.331))]


def test_square_brackets_divide_by_1_1() -> None:
    assert pairs("[x]") == [("x", pytest.approx(1 / 1.1))]
    assert pairs("[[x]]") == [("x", pytest.approx(1 / 1.21))]


def test_explicit_weight_multiplies_with_outer_brackets() -> None:
    assert pairs("(x:1.25)") == [("x", pytest.approx(1.25))]
    assert pairs("((x:1.3))") == [("x", pytest.approx(1.43))]
    assert pairs("(x:0.5)") == [("x", pytest.approx(0.5))]


def test_escapes_are_literal_brackets() -> None:
    assert pairs(r"\(literal\]") == [("(literal]", 1.0)]
    assert pairs(r"a \(b\) c \[d\]") == [("a (b) c [d]", 1.0)]
    assert pairs(r"back\\slash") == [("back\\slash", 1.0)]


def test_webui_docstring_examples() -> None:
    assert pairs("normal text") == [("normal text", 1.0)]
    assert pairs("an (important) word") == [
        ("an ", 1.0),
        ("important", pytest.approx(1.1)),
        (" word", 1.0),
    ]
    assert pairs("(unbalanced") == [("unbalanced", pytest.approx(1.1))]
    assert pairs("(unnecessary)(parens)") == [("unnecessaryparens", pytest.approx(1.1))]
    got = pairs("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")
    want = [
        ("a ", 1.0),
        ("house", 1.1 * 1.1 * 1.3),  # the outer "(" is never closed: it runs to the end
        (" ", 1.1),
        ("on", 1.0),
        (" a ", 1.1),
        ("hill", 0.55),
        (", sun, ", 1.1),
        ("sky", 1.4641),
        (".", 1.1),
    ]
    assert [t for t, _ in got] == [t for t, _ in want]
    assert [w for _, w in got] == pytest.approx([w for _, w in want])
    assert got[1][1] == 1.5730000000000004  # same float as the web UI, not just close


def test_unmatched_closers_and_colons_are_text() -> None:
    assert pairs("a) b] c:d") == [("a) b] c:d", 1.0)]
    assert pairs("time 12:30") == [("time 12:30", 1.0)]


def test_empty_prompt() -> None:
    assert pairs("") == [("", 1.0)]


def test_break_splits_chunks_and_is_not_merged() -> None:
    segs = parse_prompt_attention("a red hat BREAK (blue) coat")
    assert [(s.text, s.is_break) for s in segs] == [
        ("a red hat", False),
        ("BREAK", True),
        ("", False),
        ("blue", False),
        (" coat", False),
    ]
    assert sum(s.is_break for s in segs) == 1
    assert pairs("BREAKFAST") == [("BREAKFAST", 1.0)]  # whole word only


def test_bad_weight_is_a_clear_error() -> None:
    with pytest.raises(InputValidationError, match="not a number"):
        parse_prompt_attention("(x:1.2.3)")


def test_lora_tags_are_extracted() -> None:
    p = parse_prompt("portrait <lora:pixelart:0.7> of a man <lora:style> <hypernet:x:1>")
    assert p.loras == [LoraRequest("pixelart", 0.7), LoraRequest("style", 1.0)]
    assert p.other_networks == ["<hypernet:x:1>"]
    assert "lora" not in "".join(s.text for s in p.segments)
    with pytest.raises(InputValidationError):
        parse_prompt("<lora:x:strong>")


# --- chunking ------------------------------------------------------------------------------


def char_tokens(text: str) -> list[int]:
    return [ord(c) for c in text if c != " "]


def test_chunks_are_77_tokens_with_weights() -> None:
    (chunk,) = chunk_tokens(parse_prompt_attention("ab(c)"), char_tokens, bos=1, eos=2)
    assert len(chunk.tokens) == 77 and len(chunk.weights) == 77
    assert chunk.tokens[:5] == [1, 97, 98, 99, 2]
    assert chunk.weights[:5] == [1.0, 1.0, 1.0, pytest.approx(1.1), 1.0]


def test_long_prompt_is_chunked_and_sd2_padding_used() -> None:
    chunks = chunk_tokens(parse_prompt_attention("a" * 80), char_tokens, bos=1, eos=2, pad=0)
    assert len(chunks) == 2
    assert chunks[0].tokens == [1] + [97] * 75 + [2]
    assert chunks[1].tokens[:7] == [1, 97, 97, 97, 97, 97, 2] and chunks[1].tokens[7:] == [0] * 70


def test_break_and_comma_backtrack() -> None:
    chunks = chunk_tokens(parse_prompt_attention("ab BREAK cd"), char_tokens, bos=1, eos=2)
    assert [c.tokens[:4] for c in chunks] == [[1, 97, 98, 2], [1, 99, 100, 2]]
    text = "a" * 60 + "," + "b" * 20  # full at 75 tokens, comma 15 back: cut after it
    chunks = chunk_tokens(parse_prompt_attention(text), char_tokens, bos=1, eos=2, comma=ord(","))
    assert chunks[0].tokens[61:63] == [ord(","), 2]
    assert chunks[1].tokens[1:21] == [98] * 20


# --- presets, provenance --------------------------------------------------------------------


def test_fantasy_preset_fills_the_trigger_token() -> None:
    preset = get_preset("fantasy-portrait")
    prompt = preset.to_prompt("bennycheung", seed=7)
    assert prompt.prompt.startswith("portrait of bennycheung person")
    assert "{token}" not in prompt.prompt and prompt.seed == 7
    assert len(prompt.negative) > 300 and "watermark" in prompt.negative
    parse_prompt_attention(prompt.prompt)  # valid web UI syntax
    assert "fantasy-portrait" in PRESETS
    with pytest.raises(InputValidationError, match="Did you mean"):
        get_preset("fantasy-portriat")


def test_infotext_round_trip_like_the_webui() -> None:
    prov = {
        "prompt": "bennycheung person, (portrait:1.2)",
        "negative_prompt": "blurry, (worst quality:1.4)",
        "seed": 42,
        "steps": 30,
        "sampler": "DPM++ 2M Karras",
        "guidance": 7.0,
        "width": 512,
        "height": 768,
        "model": "/models/benny.safetensors",
        "model_hash": "6ce0161689",
        "embeddings": ["bennycheung.pt"],
    }
    text = infotext_from_provenance(prov).format()
    lines = text.split("\n")
    assert lines[0] == prov["prompt"]
    assert lines[1] == "Negative prompt: blurry, (worst quality:1.4)"
    assert lines[2].startswith(
        "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x768, "
        "Model hash: 6ce0161689, Model: benny"
    )
    back = Infotext.parse(text)
    assert back.prompt == prov["prompt"] and back.negative_prompt == prov["negative_prompt"]
    assert back.params["Seed"] == "42" and back.params["Size"] == "512x768"


def test_png_chunks_are_written_and_read(tmp_path: Path) -> None:
    img = Image.new("RGB", (64, 64), (10, 20, 30))
    prov = {"prompt": "a, b: c", "negative_prompt": "", "seed": 3, "steps": 2, "guidance": 5}
    data = png_with_provenance(img, prov)
    assert read_parameters(data).startswith("a, b: c\nSteps: 2")
    assert read_provenance(data) == prov
    (tmp_path / "face.png").write_bytes(data)  # a file, named by Path or by str
    assert read_provenance(tmp_path / "face.png") == read_provenance(str(tmp_path / "face.png"))
    assert read_parameters(str(tmp_path / "face.png")) == read_parameters(data)
    # A web UI PNG (parameters only) is read too.
    webui = Infotext("cat", "dog", {"Steps": "20", "Seed": "9", "Size": "64x64"}).format()
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", webui)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    got = read_provenance(buf.getvalue())
    assert got is not None
    assert (got["prompt"], got["negative_prompt"], got["seed"], got["width"]) == (
        "cat",
        "dog",
        9,
        64,
    )


def test_save_image_adds_the_chunk(tmp_path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="PNG")
    image = AvatarImage(data=buf.getvalue(), width=64, height=64, provenance={"prompt": "x"})
    path = save_image(image, tmp_path / "out" / "avatar.png")
    assert read_parameters(path.read_bytes()).startswith("x")


# --- renderer-ready check --------------------------------------------------------------------


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    cbook = pytest.importorskip("matplotlib.cbook")
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_frontal_portrait_passes(face: np.ndarray) -> None:
    verdict = check_portrait(face)
    assert verdict.ok, verdict.reasons
    x, _, w, _ = verdict.face_box
    assert 100 < x + w / 2 < 400 and w > 150  # her face, not a corner of the picture


def test_refusals_name_the_reason(face: np.ndarray) -> None:
    assert check_portrait(np.full((256, 256, 3), 128, np.uint8)).reasons == [
        "no frontal face found"
    ]
    two = check_portrait(np.hstack([face, face]))
    assert not two.ok and "2 faces" in two.reasons[0]
    small = np.full((face.shape[0] * 3, face.shape[1] * 3, 3), 128, np.uint8)
    small[: face.shape[0], : face.shape[1]] = face
    verdict = check_portrait(small)
    assert not verdict.ok and any("px wide" in r for r in verdict.reasons)
    covered = face.copy()
    x, y, w, h = check_portrait(face).face_box
    covered[y + h * 6 // 10 : y + h, x : x + w] = 128  # a mask over the mouth
    assert not check_portrait(covered).ok


def test_portrait_crop_centres_the_face(face: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(face).save(buf, format="PNG")
    image = AvatarImage(data=buf.getvalue(), width=face.shape[1], height=face.shape[0])
    crop = portrait_crop(image, size=256)
    assert (crop.width, crop.height) == (256, 256)
    x, y, w, h = crop.face_box
    assert abs((x + w / 2) - 128) < 20 and abs((y + h / 2) - 128) < 40
    assert check_portrait(crop).ok


def test_a_face_wider_than_the_picture_keeps_a_box_inside_the_crop() -> None:
    from avatarkit._image import encode_png

    wide = AvatarImage(data=encode_png(np.zeros((100, 200, 3), np.uint8)), width=200, height=100)
    crop = portrait_crop(wide, (10, 0, 150, 90), size=64)
    x, y, w, h = crop.face_box
    assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64 and w > 0 and h > 0
    assert (x, w) == (0, 64)  # the face spans the whole crop, cut at both sides


async def test_saving_the_avatar_does_not_hold_up_the_event_loop(tmp_path: Path) -> None:
    # a 1024 px PNG gaining its provenance chunks is decoded and re-encoded: 0.3 s on the loop
    import io

    import numpy as np
    from PIL import Image

    from _loop import largest_loop_gap
    from avatarkit.imaging.avatar import make_avatar
    from avatarkit.types import AvatarImage, AvatarPrompt

    noise = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    picture = AvatarImage(data=buf.getvalue(), format="png", width=1024, height=1024,
                          provenance={"prompt": "a face", "seed": 1})  # fmt: skip

    class Generator:
        async def generate(self, prompt: AvatarPrompt, *, progress: object = None) -> AvatarImage:
            return picture

    out = tmp_path / "avatar.png"
    _, gap = await largest_loop_gap(make_avatar(Generator(), AvatarPrompt("a face"), out))  # type: ignore[arg-type]
    assert out.exists()
    assert gap < 0.1
