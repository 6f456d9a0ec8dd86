"""A1111ImageGenerator against the AUTOMATIC1111 web UI API, through httpx.MockTransport."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path

import httpx
import pytest

from _cloud_helpers import FAST, Recorder, b64, png_bytes
from avatarkit.errors import (
    AuthenticationError,
    InputValidationError,
    ProviderStatusError,
)
from avatarkit.providers.automatic1111 import (
    A1111ImageGenerator,
    Img2ImgRequest,
    Txt2ImgRequest,
    provider,
)
from avatarkit.registry import Registry
from avatarkit.types import AvatarImage, AvatarPrompt, Response, UserInput

# unclosed sockets or files are errors here, not warnings left to the garbage collector
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

PARAMS = (
    "portrait of a friendly woman\nNegative prompt: blurry\nSteps: 4, Sampler: DPM++ 2M, "
    "CFG scale: 6, Seed: 1234567, Size: 64x80, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly"
)


CKPT = "v1-5-pruned-emaonly.safetensors [6ce0161689]"


def generation_answer(request: httpx.Request, *, seed: int = 1234567) -> httpx.Response:
    body = json.loads(request.content)
    info = {
        "prompt": body["prompt"], "all_prompts": [body["prompt"]],
        "negative_prompt": body.get("negative_prompt", ""), "seed": seed, "all_seeds": [seed],
        "subseed": 42, "width": 64, "height": 80, "sampler_name": body.get("sampler_name", "Euler"),
        "cfg_scale": body["cfg_scale"], "steps": body["steps"], "batch_size": 1,
        "sd_model_name": "v1-5-pruned-emaonly", "sd_model_hash": "6ce0161689",
        "index_of_first_image": 0, "infotexts": [PARAMS], "job_timestamp": "20260101000000",
        "extra_generation_params": {}, "clip_skip": 1,
    }  # fmt: skip
    return httpx.Response(
        200,
        json={
            "images": [b64(png_bytes(64, 80, PARAMS))],
            "parameters": body,
            "info": json.dumps(info),
        },
        headers={"x-process-time": "0.5"},
    )


def gen(rec: Recorder, **kw: object) -> A1111ImageGenerator:
    kw.setdefault("poll_interval", 0.01)
    return A1111ImageGenerator(transport=rec.transport, options=FAST, **kw)  # type: ignore[arg-type]


async def test_txt2img_request_and_provenance() -> None:
    rec = Recorder(generation_answer)
    g = gen(rec, sampler="DPM++ 2M", model=CKPT)
    prompt = AvatarPrompt(
        "portrait of a friendly woman", negative="blurry", seed=None, width=64, height=80, steps=4,
        guidance=6.0, style={"restore_faces": True, "procedural_hair": "ignored by this backend"},
    )  # fmt: skip
    image = await g.generate(prompt)
    (req,) = [r for r in rec.requests if r.url.path != "/sdapi/v1/progress"]
    assert req.method == "POST" and req.url.path == "/sdapi/v1/txt2img"
    assert str(req.url).startswith("http://127.0.0.1:7860/")
    assert "authorization" not in req.headers
    assert json.loads(req.content) == {
        "prompt": "portrait of a friendly woman", "negative_prompt": "blurry", "seed": -1,
        "sampler_name": "DPM++ 2M", "batch_size": 1, "n_iter": 1, "steps": 4, "cfg_scale": 6.0,
        "width": 64, "height": 80, "restore_faces": True,
        "override_settings": {"sd_model_checkpoint": CKPT},
        "send_images": True, "save_images": False,
    }  # fmt: skip
    assert (image.format, image.width, image.height, image.kind) == ("png", 64, 80, "photo")
    assert image.provenance["seed"] == 1234567  # the seed actually used, not -1
    assert image.provenance["model"] == "v1-5-pruned-emaonly"
    assert image.provenance["model_hash"] == "6ce0161689"
    assert image.provenance["prompt"] == "portrait of a friendly woman"
    assert image.provenance["negative_prompt"] == "blurry"
    assert image.provenance["parameters"] == PARAMS  # the PNG's text chunk kept


async def test_img2img_with_mask() -> None:
    rec = Recorder(generation_answer)
    init = AvatarImage(data=png_bytes(), width=64, height=80)
    mask = png_bytes(64, 80)
    prompt = AvatarPrompt(
        "same face, smiling", seed=99, steps=3,
        style={"init_image": init, "mask": mask, "denoising_strength": 0.4, "inpainting_fill": 1},
    )  # fmt: skip
    image = await gen(rec).generate(prompt)
    req = next(r for r in rec.requests if r.url.path == "/sdapi/v1/img2img")
    body = json.loads(req.content)
    assert base64.b64decode(body["init_images"][0]) == init.data
    assert base64.b64decode(body["mask"]) == mask
    assert (body["denoising_strength"], body["inpainting_fill"], body["seed"]) == (0.4, 1, 99)
    assert image.provenance["mode"] == "img2img"


async def test_progress_is_polled_while_generating() -> None:
    steps = iter(range(1, 100))
    release = asyncio.Event()

    async def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path == "/sdapi/v1/progress":
            assert r.method == "GET" and r.url.params["skip_current_image"] == "true"
            n = next(steps)
            if n >= 3:
                release.set()
            return httpx.Response(200, json={
                "progress": n / 10, "eta_relative": 1.0, "current_image": None, "textinfo": None,
                "state": {"skipped": False, "interrupted": False, "job": "", "job_count": 1,
                          "job_timestamp": "0", "job_no": 0, "sampling_step": n,
                          "sampling_steps": 10},
            })  # fmt: skip
        await release.wait()
        return generation_answer(r)

    seen: list[tuple[int, int]] = []
    await gen(Recorder(handler), show_progress=True).generate(
        AvatarPrompt("a face", steps=10), progress=lambda d, t: seen.append((d, t))
    )
    assert seen[:3] == [(1, 10), (2, 10), (3, 10)]
    assert seen[-1] == (10, 10)


async def test_models_and_embeddings() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path == "/sdapi/v1/sd-models":
            return httpx.Response(200, json=[{
                "title": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
                "model_name": "v1-5-pruned-emaonly", "hash": "6ce0161689",
                "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
                "filename": "/sd/models/Stable-diffusion/v1-5-pruned-emaonly.safetensors",
                "config": None,
            }])  # fmt: skip
        return httpx.Response(200, json={
            "loaded": {"easynegative": {"step": None, "sd_checkpoint": None,
                                        "sd_checkpoint_name": None, "shape": 768, "vectors": 8}},
            "skipped": {"sdxl-only": {"step": 100, "sd_checkpoint": "abc",
                                      "sd_checkpoint_name": "xl", "shape": 1280, "vectors": 1}},
        })  # fmt: skip

    rec = Recorder(handler)
    g = gen(rec)
    (model,) = await g.models()
    emb = await g.embeddings()
    assert model.title.endswith("[6ce0161689]") and model.model_name == "v1-5-pruned-emaonly"
    assert list(emb.loaded) == ["easynegative"] and emb.loaded["easynegative"].vectors == 8
    assert "sdxl-only" in emb.skipped
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("GET", "/sdapi/v1/sd-models"),
        ("GET", "/sdapi/v1/embeddings"),
    ]


async def test_api_auth_basic_and_401(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        expected = "Basic " + base64.b64encode(b"artist:s3cret-pass").decode()
        if r.headers.get("authorization") != expected:
            return httpx.Response(
                401,
                json={"detail": "Incorrect username or password"},
                headers={"WWW-Authenticate": "Basic"},
            )
        return httpx.Response(200, json=[])

    assert await gen(Recorder(handler), api_auth="artist:s3cret-pass").models() == []
    monkeypatch.setenv("A1111_API_AUTH", "artist:s3cret-pass")
    assert await gen(Recorder(handler)).models() == []
    with pytest.raises(AuthenticationError, match="Incorrect username"):
        await gen(Recorder(handler), api_auth="artist:wrong-pass").models()
    with pytest.raises(InputValidationError, match="user:password"):
        A1111ImageGenerator(api_auth="no-colon-here")


async def test_key_never_in_repr_logs_errors_or_files(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    rec = Recorder(lambda r: httpx.Response(401, json={"detail": "bad login for s3cret-pass"}))
    g = gen(rec, api_auth="artist:s3cret-pass")
    with pytest.raises(AuthenticationError) as info:
        await g.models()
    assert "s3cret-pass" not in str(info.value)
    assert "s3cret-pass" not in repr(g) and "s3cret-pass" not in caplog.text
    image = await gen(Recorder(generation_answer), api_auth="artist:s3cret-pass").generate(
        AvatarPrompt("a face")
    )
    Response(input=UserInput(text="x"), image=image).save(tmp_path)
    for f in tmp_path.iterdir():
        assert b"s3cret-pass" not in f.read_bytes()


async def test_server_errors_use_detail() -> None:
    body = {"error": "HTTPException", "detail": "Sampler not found", "body": "", "errors": ""}
    rec = Recorder(lambda r: httpx.Response(404, json=body))
    with pytest.raises(ProviderStatusError, match="Sampler not found") as info:
        await gen(rec).generate(AvatarPrompt("a face", style={"sampler": "Nope"}))
    assert info.value.code == "HTTPException" and info.value.status == 404


async def test_exception_inside_the_web_ui_is_not_retried() -> None:
    body = {"error": "OutOfMemoryError", "detail": "CUDA out of memory", "body": "", "errors": ""}
    rec = Recorder(lambda r: httpx.Response(500, json=body))
    with pytest.raises(ProviderStatusError, match="CUDA out of memory") as info:
        await gen(rec).txt2img(Txt2ImgRequest(prompt="a face"))
    assert not info.value.retryable and len(rec.requests) == 1


async def test_bad_answers_are_typed() -> None:
    def no_images(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"images": [], "parameters": {}, "info": "{}"})

    with pytest.raises(ProviderStatusError, match="no image"):
        await gen(Recorder(no_images)).generate(AvatarPrompt("a face"))

    def garbage(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"images": ["!!notbase64"], "parameters": {}, "info": "{}"})

    with pytest.raises(ProviderStatusError, match="cannot be decoded"):
        await gen(Recorder(garbage)).generate(AvatarPrompt("a face"))


async def test_preflight() -> None:
    rec = Recorder(generation_answer)
    g = gen(rec)
    with pytest.raises(InputValidationError, match="empty"):
        await g.generate(AvatarPrompt("  "))
    with pytest.raises(InputValidationError, match="init_image"):
        await g.generate(AvatarPrompt("a face", style={"mask": b"xx"}))
    with pytest.raises(InputValidationError):
        await g.generate(
            AvatarPrompt("a face", style={"init_image": b"x", "denoising_strength": 3})
        )
    with pytest.raises(InputValidationError, match="http"):
        A1111ImageGenerator("localhost:7860")
    assert rec.requests == []
    assert isinstance(
        g.build_request(AvatarPrompt("a", style={"init_image": png_bytes(64, 80)})), Img2ImgRequest
    )


def test_registry_spec() -> None:
    reg = Registry(group="avatarkit.none")
    reg.register(provider)
    assert reg.create("image", "automatic1111").base_url == "http://127.0.0.1:7860"
    g = reg.create("image", "automatic1111:http://gpu-box:7861/")
    assert isinstance(g, A1111ImageGenerator) and g.base_url == "http://gpu-box:7861"
    assert g.capabilities.negative_prompt and g.capabilities.seed


@pytest.mark.parametrize(
    ("style", "field"),
    [
        ({"width": 100_000}, "width"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_iter": -3}, "n_iter"),
        ({"cfg_scale": -50}, "cfg_scale"),
        ({"init_image": b"not an image"}, "init_image"),
        ({"init_image": png_bytes(64, 80), "mask": b"not a mask"}, "mask"),
    ],
)
async def test_bad_generation_options_are_refused_before_any_request(
    style: dict[str, object], field: str
) -> None:
    rec = Recorder(generation_answer)
    with pytest.raises(InputValidationError) as info:
        await gen(rec).generate(AvatarPrompt("a face", style=style))
    assert info.value.field == field
    assert rec.requests == []


async def test_a_seed_below_minus_one_is_refused() -> None:
    rec = Recorder(generation_answer)
    with pytest.raises(InputValidationError) as info:
        await gen(rec).generate(AvatarPrompt("a face", seed=-7))
    assert info.value.field == "seed" and rec.requests == []


def answer_with_info(info: object) -> Recorder:
    def answer(r: httpx.Request) -> httpx.Response:
        body = {"images": [b64(png_bytes(64, 80, PARAMS))], "parameters": {}, "info": info}
        return httpx.Response(200, json=body)

    return Recorder(answer)


async def test_info_as_an_object_is_read_like_the_json_string() -> None:
    info = {"seed": 5, "sd_model_name": "v1-5-pruned-emaonly", "sampler_name": "Euler a"}
    image = await gen(answer_with_info(info)).generate(AvatarPrompt("a face"))
    assert image.provenance["seed"] == 5 and image.provenance["model"] == "v1-5-pruned-emaonly"
    assert image.provenance["sampler"] == "Euler a"


@pytest.mark.parametrize(
    "info",
    ["Steps: 20, Sampler: Euler", "[1, 2]", None, 7, '{"seed": "not a number"}'],
    ids=["infotext", "json-list", "null", "number", "bad-seed"],
)
async def test_an_unreadable_info_keeps_the_image_without_its_seed(
    info: object, caplog: pytest.LogCaptureFixture
) -> None:
    rec = answer_with_info(info)
    with caplog.at_level(logging.WARNING, logger="avatarkit"):
        image = await gen(rec).generate(AvatarPrompt("a face", seed=None))
    assert image.data == png_bytes(64, 80, PARAMS) and image.kind == "photo"  # the GPU's work
    assert image.provenance["seed"] is None and image.provenance["model"] is None  # not -1
    assert image.provenance["parameters"] == PARAMS  # the PNG's own record is kept
    assert [q.url.path for q in rec.requests].count("/sdapi/v1/txt2img") == 1
    if info is not None:
        assert any("info" in r.message for r in caplog.records if r.levelno == logging.WARNING)


async def test_one_bad_field_of_info_does_not_lose_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    info = json.dumps({"seed": 77, "all_seeds": [77, None], "sd_model_name": "m"})
    with caplog.at_level(logging.WARNING, logger="avatarkit"):
        image = await gen(answer_with_info(info)).generate(AvatarPrompt("a face"))
    assert (image.provenance["seed"], image.provenance["model"]) == (77, "m")
    assert any("all_seeds" in r.message for r in caplog.records)
