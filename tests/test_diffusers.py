"""The diffusers backend on a tiny random Stable Diffusion pipeline built in the test."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from avatarkit.errors import (  # noqa: E402
    CancelledByUser,
    ConfigurationError,
    InputValidationError,
    MissingExtraError,
)
from avatarkit.imaging.portrait import NotRendererReadyError  # noqa: E402
from avatarkit.imaging.provenance import read_parameters, read_provenance  # noqa: E402
from avatarkit.types import AvatarPrompt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _tiny_sd import build_tiny_sd, write_ldm_checkpoint  # noqa: E402
from avatarkit.providers.diffusers import DiffusersImageGenerator  # noqa: E402

HIDDEN = 16  # the tiny text encoder's width


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def gen(model_dir: Path) -> DiffusersImageGenerator:
    g = DiffusersImageGenerator(model_dir, renderer_check=False, device="cpu")
    g.load()
    return g


def P(text: str = "a portrait of a man", **kw: object) -> AvatarPrompt:
    kw.setdefault("seed", 1)
    kw.setdefault("steps", 2)
    kw.setdefault("width", 64)
    kw.setdefault("height", 64)
    return AvatarPrompt(text, **kw)


def pixels(image) -> np.ndarray:
    return np.asarray(Image.open(__import__("io").BytesIO(image.data)).convert("RGB"))


def run(coro):
    return asyncio.run(coro)


def test_generate_with_negative_prompt_and_provenance(gen: DiffusersImageGenerator) -> None:
    img = run(gen.generate(P("a (portrait:1.2) of a man", negative="blurry, red hat")))
    assert (img.width, img.height, img.format) == (64, 64, "png")
    prov = img.provenance
    assert prov["prompt"] == "a (portrait:1.2) of a man"
    assert prov["negative_prompt"] == "blurry, red hat"
    assert prov["seed"] == 1 and prov["seeds_tried"] == [1] and prov["steps"] == 2
    text = read_parameters(img.data)
    assert text.startswith("a (portrait:1.2) of a man\nNegative prompt: blurry, red hat\n")
    assert "Seed: 1" in text and "Size: 64x64" in text and "Model: tiny-sd" in text
    assert read_provenance(img.data)["seed"] == 1
    assert gen.capabilities.seed and gen.capabilities.negative_prompt


def test_same_seed_same_pixels_other_seed_other_pixels(gen: DiffusersImageGenerator) -> None:
    a = pixels(run(gen.generate(P(seed=5))))
    b = pixels(run(gen.generate(P(seed=5))))
    c = pixels(run(gen.generate(P(seed=6))))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_negative_prompt_changes_the_picture(gen: DiffusersImageGenerator) -> None:
    a = pixels(run(gen.generate(P(negative=""))))
    b = pixels(run(gen.generate(P(negative="blurry"))))
    assert not np.array_equal(a, b)


def test_plain_prompt_embeddings_equal_diffusers_own(gen: DiffusersImageGenerator) -> None:
    pipe = gen._pipe
    enc = gen._encode("a portrait of a man", "blurry")
    ours = enc.kwargs["prompt_embeds"]
    theirs, neg = pipe.encode_prompt("a portrait of a man", "cpu", 1, True, "blurry")
    assert ours.shape == theirs.shape == (1, 77, HIDDEN)
    assert torch.equal(ours, theirs)  # bit for bit
    assert torch.equal(enc.kwargs["negative_prompt_embeds"], neg)


def test_weights_scale_tokens_and_keep_the_mean(gen: DiffusersImageGenerator) -> None:
    plain = gen._encode("a portrait of a man", "").kwargs["prompt_embeds"]
    unit = gen._encode("a (portrait:1.0) of a man", "").kwargs["prompt_embeds"]
    strong = gen._encode("a (portrait:1.5) of a man", "").kwargs["prompt_embeds"]
    torch.testing.assert_close(unit, plain)  # weight 1.0 is the plain prompt
    assert not torch.allclose(strong, plain)
    torch.testing.assert_close(strong.mean(), plain.mean())  # the web UI's mean restoring
    # "portrait" is one token (position 2 after <start> and "a"); it is scaled most.
    ratio = (strong / plain)[0, :, 0]
    assert ratio[2] == pytest.approx(1.5 * ratio[1].item(), rel=1e-4)
    a = pixels(run(gen.generate(P("a portrait of a man"))))
    b = pixels(run(gen.generate(P("a (portrait:1.5) of a man"))))
    assert not np.array_equal(a, b)


def test_clip_skip_uses_an_earlier_layer(gen: DiffusersImageGenerator) -> None:
    last = gen._encode("a portrait of a man", "").kwargs["prompt_embeds"]
    gen.clip_skip = 2
    try:
        skip2 = gen._encode("a portrait of a man", "").kwargs["prompt_embeds"]
    finally:
        gen.clip_skip = 1
    # The web UI's "Clip skip: 2": the layer before the last, through the final norm.
    te, tok = gen._pipe.text_encoder, gen._pipe.tokenizer
    ids = tok("a portrait of a man", padding="max_length", max_length=77, return_tensors="pt")
    hidden = te(ids.input_ids, output_hidden_states=True).hidden_states[-2]
    want = getattr(te, "text_model", te).final_layer_norm(hidden)
    torch.testing.assert_close(skip2, want)
    assert not torch.allclose(skip2, last)


def test_long_prompts_and_break_are_chunked(gen: DiffusersImageGenerator) -> None:
    long = ", ".join(["a red hat"] * 30)  # > 75 tokens
    enc = gen._encode(long, "blurry")
    assert enc.kwargs["prompt_embeds"].shape == (1, 154, HIDDEN)
    assert enc.kwargs["negative_prompt_embeds"].shape == (1, 154, HIDDEN)  # padded to match
    assert torch.isfinite(enc.kwargs["prompt_embeds"]).all()
    weighted = gen._encode("(" + long + ":1.2)", "").kwargs["prompt_embeds"]
    assert torch.isfinite(weighted).all() and not torch.allclose(
        weighted, enc.kwargs["prompt_embeds"]
    )
    broken = gen._encode("a man BREAK red hat", "").kwargs["prompt_embeds"]
    assert broken.shape == (1, 154, HIDDEN)
    img = run(gen.generate(P(long)))
    assert img.width == 64


def write_embedding(path: Path, vectors: int, seed: int) -> Path:
    g = torch.Generator().manual_seed(seed)
    tensor = torch.randn(vectors, HIDDEN, generator=g)
    if path.suffix == ".pt":
        # The web UI's layout (what its Train tab writes).
        torch.save(
            {"string_to_token": {"*": 265}, "string_to_param": {"*": tensor}, "name": path.stem,
             "step": 100, "sd_checkpoint": None, "sd_checkpoint_name": None},
            path,
        )  # fmt: skip
    else:
        from safetensors.torch import save_file

        save_file({"emb_params": tensor}, str(path))
    return path


@pytest.mark.parametrize("suffix,vectors", [(".pt", 1), (".safetensors", 2)])
def test_textual_inversion_embedding_bound_to_its_token(
    model_dir: Path, tmp_path: Path, suffix: str, vectors: int
) -> None:
    emb = write_embedding(tmp_path / f"bennycheung{suffix}", vectors, seed=3)
    g = DiffusersImageGenerator(model_dir, embeddings=[emb], renderer_check=False)
    g.load()
    assert g.embedding_tokens == {"bennycheung": emb.name}
    with_token = run(g.generate(P("a portrait of bennycheung person")))
    without = run(g.generate(P("a portrait of person")))
    assert with_token.provenance["embeddings"] == [emb.name]
    assert without.provenance["embeddings"] == []
    assert not np.array_equal(pixels(with_token), pixels(without))
    # The trigger token's input vectors are the embedding's own.
    tok, te = g._pipe.tokenizer, g._pipe.text_encoder
    ids = tok.convert_tokens_to_ids(
        ["bennycheung"] + [f"bennycheung_{i}" for i in range(1, vectors)]
    )
    table = te.get_input_embeddings().weight
    expect = torch.randn(vectors, HIDDEN, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(table[ids].detach(), expect)
    # Weighted and the web UI's own trigger syntax together.
    weighted = run(g.generate(P("a portrait of (bennycheung:1.3) person")))
    assert weighted.provenance["embeddings"] == [emb.name]
    assert "TI: " + emb.name in read_parameters(weighted.data)


def test_embedding_for_another_model_is_a_clear_error(model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "wide.safetensors"
    from safetensors.torch import save_file

    save_file({"emb_params": torch.zeros(1, 768)}, str(bad))
    g = DiffusersImageGenerator(model_dir, embeddings=[bad], renderer_check=False)
    with pytest.raises(InputValidationError, match=r"wide\.safetensors"):
        g.load()


def test_progress_and_cancellation(gen: DiffusersImageGenerator) -> None:
    calls: list[tuple[int, int]] = []
    run(gen.generate(P(steps=3), progress=lambda d, t: calls.append((d, t))))
    assert calls == [(1, 3), (2, 3), (3, 3)]

    stop = threading.Event()

    def cancel_after_first(done: int, total: int) -> None:
        stop.set()

    with pytest.raises(CancelledByUser, match="after step 1 of 3"):
        run(gen.generate(P(steps=3), progress=cancel_after_first, cancel=stop))


def test_task_cancellation_stops_the_pipeline(gen: DiffusersImageGenerator) -> None:
    started = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(gen.generate(P(steps=50), progress=lambda d, t: started.set()))
        while not started.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())
    assert not gen._run_lock.locked()  # the worker thread has let go


def test_renderer_check_retries_next_seeds_and_reports_them(gen: DiffusersImageGenerator) -> None:
    # Random weights never draw a face: every seed is refused.
    with pytest.raises(NotRendererReadyError) as info:
        run(gen.generate(P(seed=10, style={"renderer_check": True, "max_attempts": 3})))
    assert info.value.seeds_tried == [10, 11, 12]
    assert "no frontal face" in str(info.value)


def test_generate_many_uses_consecutive_seeds(gen: DiffusersImageGenerator) -> None:
    images = run(gen.generate_many(P(seed=20), 2))
    assert [i.provenance["seed"] for i in images] == [20, 21]
    single = pixels(run(gen.generate(P(seed=21))))
    assert np.abs(pixels(images[1]).astype(int) - single.astype(int)).max() <= 2


def test_the_crop_keeps_the_face_box_in_its_own_coordinates(
    gen: DiffusersImageGenerator, model_dir: Path
) -> None:
    from avatarkit._image import encode_png
    from avatarkit.types import AvatarImage

    made = run(gen.generate(P(seed=3)))
    picture = np.full((128, 128, 3), 128, np.uint8)
    face = (40, 30, 20, 24)  # left, top, width, height
    picture[30:54, 40:60] = (255, 0, 0)  # the "face", in red
    image = AvatarImage(data=encode_png(picture), width=128, height=128, provenance=made.provenance)
    cropper = DiffusersImageGenerator(model_dir, crop=64, renderer_check=False, device="cpu")

    cropped = cropper._finish(image, face)

    assert (cropped.width, cropped.height) == (64, 64)
    assert cropped.face_box is not None
    left, top, width, height = cropped.face_box
    red = np.argwhere((pixels(cropped)[..., 0] > 200) & (pixels(cropped)[..., 1] < 60))
    (y0, x0), (y1, x1) = red.min(axis=0), red.max(axis=0)
    assert abs(x0 - left) <= 1 and abs(y0 - top) <= 1  # the box sits on the face
    assert abs(x1 + 1 - (left + width)) <= 1 and abs(y1 + 1 - (top + height)) <= 1
    assert cropped.provenance["crop"]["size"] == 64


def test_a_missing_folder_read_as_a_hub_id_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # "models/sd15" has one slash: a Hub id, by its shape
    gen = DiffusersImageGenerator("models/sd15", local_files_only=True)
    with pytest.raises(ConfigurationError, match=r"Hub id; no local folder \./models/sd15"):
        gen.load()


def test_bad_input_is_refused_before_any_work(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match="does not exist"):
        DiffusersImageGenerator(tmp_path / "missing")
    with pytest.raises(InputValidationError, match=r"model_index\.json"):
        DiffusersImageGenerator(tmp_path)
    with pytest.raises(InputValidationError, match="Did you mean 'Euler a'"):
        DiffusersImageGenerator(model_dir, scheduler="Euler A")
    with pytest.raises(InputValidationError, match="unknown device"):
        DiffusersImageGenerator(model_dir, device="tpu")  # type: ignore[arg-type]
    with pytest.raises(InputValidationError, match="unknown dtype"):
        DiffusersImageGenerator(model_dir, dtype="int8")  # type: ignore[arg-type]
    g = DiffusersImageGenerator(model_dir, renderer_check=False)
    with pytest.raises(InputValidationError, match="multiple of 8"):
        run(g.generate(P(width=100)))
    with pytest.raises(InputValidationError, match="no such LoRA"):
        run(g.generate(P("a man <lora:nothing:0.5>")))
    assert g._pipe is None  # nothing was loaded for refused input


def test_scheduler_choice_by_webui_name(model_dir: Path) -> None:
    g = DiffusersImageGenerator(model_dir, scheduler="DPM++ 2M Karras", renderer_check=False)
    img = run(g.generate(P()))
    assert type(g._pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert g._pipe.scheduler.config.use_karras_sigmas
    assert "Sampler: DPM++ 2M Karras" in read_parameters(img.data)


def test_single_file_checkpoint_loads_offline(model_dir: Path, tmp_path: Path) -> None:
    # A DreamBooth-style checkpoint: one original-layout .safetensors file.
    ckpt = write_ldm_checkpoint(model_dir, tmp_path / "benny-dreambooth.safetensors")
    # Offline, diffusers needs the component configs and tokenizer of the same architecture:
    # a folder holding only those (no weights) is enough.
    configs = tmp_path / "sd15-configs"
    for f in model_dir.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".txt"):
            (configs / f.relative_to(model_dir)).parent.mkdir(parents=True, exist_ok=True)
            (configs / f.relative_to(model_dir)).write_bytes(f.read_bytes())
    assert not list(configs.rglob("*.safetensors"))
    single = DiffusersImageGenerator(ckpt, config=configs, renderer_check=False)
    folder = DiffusersImageGenerator(model_dir, renderer_check=False)
    a = run(single.generate(P(seed=3)))
    b = run(folder.generate(P(seed=3)))
    assert np.array_equal(pixels(a), pixels(b))  # the same weights, the same picture
    assert type(single._pipe).__name__ == "StableDiffusionPipeline"
    assert len(a.provenance["model_hash"]) == 10  # the web UI's short sha256
    assert "Model: benny-dreambooth" in read_parameters(a.data)
    # Without config= and offline it fails with a message saying what to do.
    bare = DiffusersImageGenerator(ckpt, renderer_check=False)
    with pytest.raises(ConfigurationError, match=r"config="):
        bare.load()


def write_lora(model_dir: Path, folder: Path, name: str) -> Path:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    torch.manual_seed(4)
    unet.add_adapter(
        LoraConfig(r=2, lora_alpha=2, init_lora_weights=False,
                   target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )  # fmt: skip
    StableDiffusionPipeline.save_lora_weights(
        str(folder), unet_lora_layers=get_peft_model_state_dict(unet),
        weight_name=f"{name}.safetensors",
    )  # fmt: skip
    return folder / f"{name}.safetensors"


def test_lora_from_prompt_tags_and_personal_lora(model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    lora = write_lora(model_dir, tmp_path, "pixel")
    g = DiffusersImageGenerator(model_dir, lora_dir=tmp_path, renderer_check=False)
    base = pixels(run(g.generate(P("a portrait of a man"))))
    tagged = run(g.generate(P("a portrait of a man <lora:pixel:1>")))
    assert tagged.provenance["loras"] == [{"name": "pixel", "weight": 1.0}]
    assert not np.array_equal(pixels(tagged), base)
    off = pixels(run(g.generate(P("a portrait of a man <lora:pixel:0>"))))
    assert np.array_equal(off, base)  # weight 0: no effect
    assert np.array_equal(pixels(run(g.generate(P("a portrait of a man")))), base)  # unloaded
    personal = DiffusersImageGenerator(model_dir, lora=lora, lora_scale=1.0, renderer_check=False)
    assert np.array_equal(pixels(run(personal.generate(P("a portrait of a man")))), pixels(tagged))


def test_per_picture_sampler_and_clip_skip_do_not_stick(gen: DiffusersImageGenerator) -> None:
    one = run(gen.generate(P(style={"sampler": "Euler a", "clip_skip": 2})))
    assert "Sampler: Euler a" in read_parameters(one.data)
    assert one.provenance["clip_skip"] == 2
    assert type(gen._pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    two = run(gen.generate(P()))
    assert type(gen._pipe.scheduler).__name__ == "EulerDiscreteScheduler"  # the model's own
    assert two.provenance["clip_skip"] == 1 and gen.clip_skip == 1
    assert two.provenance["sampler"] == "EulerDiscreteScheduler"


def test_from_pipeline_wraps_a_loaded_pipeline(
    model_dir: Path, gen: DiffusersImageGenerator
) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir), local_files_only=True)
    wrapped = DiffusersImageGenerator.from_pipeline(pipe, name="mine", renderer_check=False)
    img = run(wrapped.generate(P(seed=2)))
    assert img.provenance["model"] == "mine"
    assert np.array_equal(pixels(img), pixels(run(gen.generate(P(seed=2)))))


def test_registry_spec_builds_the_backend(model_dir: Path) -> None:
    from avatarkit.registry import create

    g = create("image", f"diffusers:{model_dir}", renderer_check=False)
    assert isinstance(g, DiffusersImageGenerator) and g.model == str(model_dir)


def test_generate_avatar_writes_a_png_with_its_parameters(model_dir: Path, tmp_path: Path) -> None:
    from avatarkit.imaging.avatar import generate_avatar

    steps: list[int] = []
    out = generate_avatar(
        model_dir,
        "a (portrait:1.2) of a man",
        negative="blurry",
        seed=9,
        steps=2,
        size=64,
        output=tmp_path / "avatar.png",
        options={"renderer_check": False},
        progress=lambda d, t: steps.append(d),
    )
    assert steps == [1, 2]
    prov = read_provenance(out)
    assert (prov["prompt"], prov["negative_prompt"], prov["seed"]) == (
        "a (portrait:1.2) of a man",
        "blurry",
        9,
    )
    with pytest.raises(InputValidationError, match="PNG"):
        generate_avatar(model_dir, "x", output=tmp_path / "avatar.jpg")
    # A preset with a trigger token.
    out = generate_avatar(
        model_dir, preset="fantasy-portrait", token="bennycheung", seed=1, steps=1, size=64,
        output=tmp_path / "preset.png", options={"renderer_check": False},
    )  # fmt: skip
    prov = read_provenance(out)
    assert prov["prompt"].startswith("portrait of bennycheung person")
    assert prov["preset"] == "fantasy-portrait" and "watermark" in prov["negative_prompt"]


def test_missing_torch_is_a_clear_missing_extra_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" now fails
    monkeypatch.delitem(sys.modules, "avatarkit.providers.diffusers")
    with pytest.raises(MissingExtraError) as info:
        importlib.import_module("avatarkit.providers.diffusers")
    assert info.value.extra == "diffusers" and info.value.missing == "torch"
    assert 'pip install "avatarkit[diffusers]"' in str(info.value)


def test_import_avatarkit_stays_light() -> None:
    code = (
        "import sys, avatarkit, avatarkit.imaging.prompt, avatarkit.imaging.portrait, "
        "avatarkit.imaging.provenance, avatarkit.imaging.preset, avatarkit.registry;"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- SDXL -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory: pytest.TempPathFactory) -> DiffusersImageGenerator:
    from _tiny_sd import build_tiny_sdxl

    folder = build_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl")
    g = DiffusersImageGenerator(folder, renderer_check=False)
    g.load()
    return g


def test_sdxl_embeddings_match_diffusers_and_generate(sdxl: DiffusersImageGenerator) -> None:
    assert type(sdxl._pipe).__name__ == "StableDiffusionXLPipeline"
    enc = sdxl._encode("a portrait of a man", "blurry").kwargs
    pe, ne, pp, npool = sdxl._pipe.encode_prompt(
        "a portrait of a man", negative_prompt="blurry", device="cpu"
    )
    assert enc["prompt_embeds"].shape == (1, 77, 32)  # both encoders side by side
    assert torch.equal(enc["prompt_embeds"], pe)  # bit for bit
    assert torch.equal(enc["negative_prompt_embeds"], ne)
    assert torch.equal(enc["pooled_prompt_embeds"], pp)
    assert torch.equal(enc["negative_pooled_prompt_embeds"], npool)
    long = sdxl._encode(", ".join(["a red hat"] * 30), "").kwargs
    assert long["prompt_embeds"].shape == (1, 154, 32)
    assert long["pooled_prompt_embeds"].shape == (1, 16)
    assert not long["negative_prompt_embeds"].any()  # SDXL: empty negative -> zeros
    assert not long["negative_pooled_prompt_embeds"].any()
    a = pixels(run(sdxl.generate(P("a (portrait:1.3) of a man", negative="blurry"))))
    b = pixels(run(sdxl.generate(P("a (portrait:1.3) of a man", negative="blurry"))))
    assert np.array_equal(a, b) and a.shape == (64, 64, 3)
    assert run(sdxl.generate(P())).provenance["pipeline"] == "sdxl"


def test_sdxl_embedding_with_both_encoders(sdxl: DiffusersImageGenerator, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    emb = tmp_path / "bennycheung.safetensors"
    save_file({"clip_l": torch.randn(1, HIDDEN), "clip_g": torch.randn(1, HIDDEN)}, str(emb))
    g = DiffusersImageGenerator(sdxl.model, embeddings=[emb], renderer_check=False)
    img = run(g.generate(P("a portrait of bennycheung person")))
    assert img.provenance["embeddings"] == [emb.name]
    for tok in (g._pipe.tokenizer, g._pipe.tokenizer_2):
        assert "bennycheung" in tok.get_vocab()
