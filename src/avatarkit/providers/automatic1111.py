"""AUTOMATIC1111 Stable Diffusion web UI (``--api``) as an ImageGenerator, over plain HTTP.

``/sdapi/v1/txt2img`` and ``/img2img`` make the picture while ``/sdapi/v1/progress`` is polled for
the progress bar; the base64 PNG is decoded and its ``info`` JSON (seed used, model) and PNG
``parameters`` text become the image's provenance. The picture is kept even when ``info`` cannot
be read (it was made, and paid for, already): its provenance then lacks the seed and model.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from avatarkit._http import ConnectOptions, HttpClient, error_for
from avatarkit._image import read_picture
from avatarkit._validation import build
from avatarkit.config import get_logger, redact, register_secret, resolve_key
from avatarkit.errors import InputValidationError, ProviderError, ProviderStatusError
from avatarkit.ports import ImageCapabilities, ProgressCallback
from avatarkit.registry import Provider
from avatarkit.types import AvatarImage, AvatarPrompt

__all__ = [
    "DEFAULT_URL",
    "A1111ImageGenerator",
    "EmbeddingsResponse",
    "GenerationInfo",
    "GenerationResponse",
    "Img2ImgRequest",
    "Progress",
    "SDModel",
    "Txt2ImgRequest",
    "provider",
]

DEFAULT_URL = "http://127.0.0.1:7860"
AUTH_ENV = "A1111_API_AUTH"
_log = get_logger("avatarkit.providers.automatic1111")

GENERATION_OPTIONS = ConnectOptions(timeout=600.0, deadline=1800.0, max_retries=2)
"""Generation on a slow GPU (or CPU) takes minutes: long per-attempt timeout and deadline."""
_PROGRESS_OPTIONS = ConnectOptions(timeout=5.0, connect_timeout=2.0, max_retries=0, deadline=5.0)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Txt2ImgRequest(BaseModel):
    """``POST /sdapi/v1/txt2img`` (fields left ``None`` take the server's defaults)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = Field(default=-1, ge=-1, le=2**32 - 1)
    """-1: random; the seed used comes back in ``info``."""
    subseed: int | None = None
    subseed_strength: float | None = None
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = Field(default=1, ge=1, le=64)
    n_iter: int = Field(default=1, ge=1, le=100)
    steps: int = Field(default=30, ge=1, le=1000)
    cfg_scale: float = Field(default=7.0, ge=0.0, le=100.0)
    width: int = Field(default=512, ge=64, le=8192)
    height: int = Field(default=512, ge=64, le=8192)
    restore_faces: bool | None = None
    tiling: bool | None = None
    enable_hr: bool | None = None
    hr_scale: float | None = None
    hr_upscaler: str | None = None
    denoising_strength: float | None = Field(default=None, ge=0.0, le=1.0)
    override_settings: dict[str, Any] | None = None
    """E.g. ``{"sd_model_checkpoint": "<title>"}`` to use another model for this call."""
    override_settings_restore_afterwards: bool | None = None
    send_images: bool = True
    save_images: bool = False


class Img2ImgRequest(Txt2ImgRequest):
    """``POST /sdapi/v1/img2img``: the txt2img fields plus the init image and mask."""

    init_images: list[str]
    """Base64 images (no ``data:`` prefix needed)."""
    denoising_strength: float | None = Field(default=0.75, ge=0.0, le=1.0)
    mask: str | None = None
    """Base64 mask; white is repainted."""
    mask_blur: int | None = None
    inpainting_fill: int | None = Field(default=None, ge=0, le=3)
    inpaint_full_res: bool | None = None
    inpaint_full_res_padding: int | None = None
    inpainting_mask_invert: int | None = Field(default=None, ge=0, le=1)
    resize_mode: int | None = Field(default=None, ge=0, le=3)
    include_init_images: bool | None = None


class GenerationResponse(_Wire):
    """Answer of txt2img/img2img."""

    images: list[str]
    parameters: dict[str, Any] = Field(default_factory=dict)
    info: Any = "{}"
    """A JSON string (an object from some forks and proxies): see :class:`GenerationInfo`."""

    def parsed_info(self) -> GenerationInfo:
        """``info`` decoded; what cannot be read is left out, with a warning logged.

        A JSON string or an object is read; a field of the wrong type is dropped (the others
        are kept); anything else (an infotext, a list) gives an empty :class:`GenerationInfo`.
        """
        raw = self.info
        if raw is None or raw == "":
            return GenerationInfo()
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except (ValueError, RecursionError):
                _log.warning(
                    "automatic1111: the answer's info is not JSON; the image is kept, without "
                    "the seed and model it was made with"
                )
                return GenerationInfo()
        if not isinstance(raw, dict):
            _log.warning(
                "automatic1111: the answer's info is a %s, not a JSON object; the image is kept, "
                "without the seed and model it was made with",
                type(raw).__name__,
            )
            return GenerationInfo()
        fields = dict(raw)
        while True:
            try:
                return GenerationInfo.model_validate(fields)
            except ValidationError as exc:
                bad = {e["loc"][0] for e in exc.errors() if e["loc"]} & set(fields)
            if not bad:  # nothing left to drop
                return GenerationInfo()
            # only the names: pydantic's message quotes the values, which may echo secrets
            _log.warning(
                "automatic1111: left out the info field(s) %s, which have the wrong type",
                ", ".join(sorted(map(str, bad))),
            )
            fields = {k: v for k, v in fields.items() if k not in bad}


class GenerationInfo(_Wire):
    """The ``info`` JSON: what the server actually did."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = None
    all_seeds: list[int] = Field(default_factory=list)
    width: int | None = None
    height: int | None = None
    sampler_name: str | None = None
    cfg_scale: float | None = None
    steps: int | None = None
    sd_model_name: str | None = None
    sd_model_hash: str | None = None
    index_of_first_image: int = 0
    infotexts: list[str] = Field(default_factory=list)


class SDModel(_Wire):
    """One checkpoint from ``GET /sdapi/v1/sd-models``."""

    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str | None = None
    config: str | None = None


class Embedding(_Wire):
    """One textual-inversion embedding."""

    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    shape: int | None = None
    vectors: int | None = None


class EmbeddingsResponse(_Wire):
    """``GET /sdapi/v1/embeddings``: write ``<name>`` in a prompt to use a loaded one."""

    loaded: dict[str, Embedding] = Field(default_factory=dict)
    skipped: dict[str, Embedding] = Field(default_factory=dict)
    """Embeddings incompatible with the loaded model's architecture."""


class ProgressState(_Wire):
    """``state`` of the progress answer."""

    job: str | None = None
    job_count: int = 0
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0
    interrupted: bool = False
    skipped: bool = False


class Progress(_Wire):
    """``GET /sdapi/v1/progress``."""

    progress: float = 0.0
    eta_relative: float = 0.0
    state: ProgressState = Field(default_factory=ProgressState)
    current_image: str | None = None
    textinfo: str | None = None


def _classify(response: httpx.Response, err: ProviderError) -> ProviderError:
    """A1111 errors are ``{error: ExcName, detail, body, errors}``: the detail is the message."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, httpx.ResponseNotRead):
        return err
    if isinstance(body, dict) and isinstance(body.get("error"), str) and body.get("detail"):
        detail = body["detail"]
        msg = detail if isinstance(detail, str) else json.dumps(detail)[:300]
        # An exception inside the web UI (500 by default: out of memory, a broken model) fails
        # the same way again; only gateway errors (502/503, no such body) are worth a retry.
        return error_for(
            "automatic1111",
            response,
            type(err),
            message=msg,
            code=body["error"],
            retryable=False,
        )
    return err


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class A1111ImageGenerator:
    """Avatar pictures from a running AUTOMATIC1111 web UI started with ``--api``.

    Args:
        base_url: Where the web UI listens (default ``http://127.0.0.1:7860``).
        api_auth: ``"user:password"`` when the server runs with ``--api-auth``; default:
            the ``A1111_API_AUTH`` environment variable, or no auth.
        sampler: Sampler name (``"DPM++ 2M"``...); default: the server's.
        scheduler: Scheduler (web UI 1.9+).
        model: Checkpoint title to use for every call (``override_settings``).
        show_progress: Show a tqdm bar while generating.
        poll_interval: Seconds between progress polls.
        transport: httpx transport (tests).
        options: Timeouts and retries of the generation requests.

    ``AvatarPrompt.style`` may set ``sampler``, ``scheduler``, ``model``, ``init_image``
    (bytes or AvatarImage: img2img), ``mask`` (bytes), ``denoising_strength`` and any other
    txt2img/img2img field by its API name.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_auth: str | SecretStr | None = None,
        sampler: str | None = None,
        scheduler: str | None = None,
        model: str | None = None,
        show_progress: bool = False,
        poll_interval: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
        options: ConnectOptions = GENERATION_OPTIONS,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise InputValidationError(
                f"base_url must start with http:// or https://, got {redact(base_url)!r}",
                field="base_url",
            )
        auth: httpx.BasicAuth | None = None
        if api_auth or os.environ.get(AUTH_ENV):
            secret = resolve_key("automatic1111", api_auth, AUTH_ENV).get_secret_value()
            user, sep, password = secret.partition(":")
            if not sep:
                raise InputValidationError(
                    "api_auth must be 'user:password' (as given to --api-auth)", field="api_auth"
                )
            register_secret(password)
            auth = httpx.BasicAuth(user, password)
        self.base_url = base_url.rstrip("/")  # its password is registered by HttpClient
        self.sampler = sampler
        self.scheduler = scheduler
        self.model = model
        self.show_progress = show_progress
        self.poll_interval = poll_interval
        self._http = HttpClient(
            "automatic1111",
            self.base_url,
            transport=transport,
            options=options,
            classify=_classify,
            auth=auth,
        )

    def __repr__(self) -> str:
        return f"A1111ImageGenerator(base_url={redact(self.base_url)!r}, model={self.model!r})"

    @property
    def capabilities(self) -> ImageCapabilities:
        """Photos, negative prompts, reproducible seeds."""
        return ImageCapabilities(kinds=("photo",), negative_prompt=True, seed=True)

    # ------------------------------------------------------------------ endpoints

    async def txt2img(self, request: Txt2ImgRequest) -> GenerationResponse:
        """``POST /sdapi/v1/txt2img``."""
        return await self._http.request_json(
            "POST",
            "/sdapi/v1/txt2img",
            GenerationResponse,
            json=request.model_dump(exclude_none=True),
        )

    async def img2img(self, request: Img2ImgRequest) -> GenerationResponse:
        """``POST /sdapi/v1/img2img``."""
        return await self._http.request_json(
            "POST",
            "/sdapi/v1/img2img",
            GenerationResponse,
            json=request.model_dump(exclude_none=True),
        )

    async def models(self) -> list[SDModel]:
        """``GET /sdapi/v1/sd-models``: checkpoints; pass a ``title`` as ``model``."""
        return await self._http.request_json(
            "GET", "/sdapi/v1/sd-models", list[SDModel], options=_PROGRESS_OPTIONS
        )

    async def embeddings(self) -> EmbeddingsResponse:
        """``GET /sdapi/v1/embeddings``: textual-inversion embeddings."""
        return await self._http.request_json(
            "GET", "/sdapi/v1/embeddings", EmbeddingsResponse, options=_PROGRESS_OPTIONS
        )

    async def get_progress(self) -> Progress:
        """``GET /sdapi/v1/progress`` (without the preview image)."""
        return await self._http.request_json(
            "GET",
            "/sdapi/v1/progress",
            Progress,
            params={"skip_current_image": "true"},
            options=_PROGRESS_OPTIONS,
        )

    # ------------------------------------------------------------------ ImageGenerator

    def build_request(self, prompt: AvatarPrompt) -> Txt2ImgRequest | Img2ImgRequest:
        """The request ``generate(prompt)`` sends (checked before anything is sent)."""
        if not prompt.prompt.strip():
            raise InputValidationError("the prompt is empty", field="prompt")
        style = dict(prompt.style)
        model = style.pop("model", None) or self.model
        init = style.pop("init_image", None)
        mask = style.pop("mask", None)
        fields: dict[str, Any] = {
            "prompt": prompt.prompt,
            "negative_prompt": prompt.negative,
            "seed": -1 if prompt.seed is None else prompt.seed,
            "steps": prompt.steps,
            "cfg_scale": prompt.guidance,
            "width": prompt.width,
            "height": prompt.height,
            "sampler_name": style.pop("sampler", None) or self.sampler,
            "scheduler": style.pop("scheduler", None) or self.scheduler,
        }
        override = dict(style.pop("override_settings", None) or {})
        if model:
            override["sd_model_checkpoint"] = model
        if override:
            fields["override_settings"] = override
        cls: type[Txt2ImgRequest] = Txt2ImgRequest
        if init is not None:
            raw = init.data if isinstance(init, AvatarImage) else init
            fields["init_images"] = [_b64(_image_bytes(raw, "init_image"))]
            if mask is not None:
                fields["mask"] = _b64(_image_bytes(mask, "mask"))
            cls = Img2ImgRequest
        elif mask is not None:
            raise InputValidationError("a mask needs an init_image", field="mask")
        allowed = set(cls.model_fields)
        for k, v in style.items():
            if k in allowed:
                fields[k] = v
            else:
                _log.debug("automatic1111: ignoring style option %r", k)
        return build(cls, "AUTOMATIC1111", **fields)

    async def generate(
        self, prompt: AvatarPrompt, *, progress: ProgressCallback | None = None
    ) -> AvatarImage:
        """Make one picture; ``progress(step, steps)`` is called while it is being made.

        Raises:
            InputValidationError: empty prompt or bad options (nothing sent).
            ProviderError: the server failed or could not be reached.
        """
        request = self.build_request(prompt)
        call = (
            self.img2img(request) if isinstance(request, Img2ImgRequest) else self.txt2img(request)
        )
        response = await self._with_progress(call, request.steps, progress)
        return self._to_image(response, request)

    async def _with_progress(
        self,
        call: Any,
        steps: int,
        progress: ProgressCallback | None,
    ) -> GenerationResponse:
        task: asyncio.Task[GenerationResponse] = asyncio.ensure_future(call)
        bar = None
        if self.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, desc="automatic1111", unit="step")
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.poll_interval)
                if done:
                    break
                try:
                    state = (await self.get_progress()).state
                except ProviderError:
                    continue  # progress is best effort; the generation call decides
                total = state.sampling_steps or steps
                step = min(state.sampling_step, total)
                if progress is not None:
                    progress(step, total)
                if bar is not None:
                    bar.total = total
                    bar.n = step
                    bar.refresh()
            result = task.result()
            if progress is not None:
                progress(steps, steps)
            if bar is not None:
                bar.n = bar.total or steps
                bar.refresh()
            return result
        finally:
            if not task.done():
                task.cancel()
            if bar is not None:
                bar.close()

    def _to_image(self, response: GenerationResponse, request: Txt2ImgRequest) -> AvatarImage:
        info = response.parsed_info()
        if not response.images:
            raise ProviderStatusError(
                "no image in the answer (send_images off?)", provider="automatic1111"
            )
        idx = min(max(info.index_of_first_image, 0), len(response.images) - 1)
        encoded = response.images[idx]
        if encoded.startswith("data:"):
            encoded = encoded.partition(",")[2]
        try:
            data = base64.b64decode(encoded, validate=True)
            picture = read_picture(data)
        except (binascii.Error, InputValidationError) as exc:
            raise ProviderStatusError(
                f"the image cannot be decoded: {exc}", provider="automatic1111"
            ) from exc
        fmt, parameters = picture.format, picture.text.get("parameters")
        if fmt not in ("png", "jpeg", "webp"):
            raise ProviderStatusError(f"unexpected image format {fmt}", provider="automatic1111")
        seed = info.seed if info.seed is not None else request.seed
        provenance: dict[str, Any] = {
            "backend": "automatic1111",
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": None if seed == -1 else seed,  # -1 asked for a random one, not known here
            "model": info.sd_model_name,
            "model_hash": info.sd_model_hash,
            "sampler": info.sampler_name or request.sampler_name,
            "steps": info.steps or request.steps,
            "cfg_scale": info.cfg_scale or request.cfg_scale,
            "mode": "img2img" if isinstance(request, Img2ImgRequest) else "txt2img",
        }
        if parameters:
            provenance["parameters"] = parameters
        elif info.infotexts:
            provenance["parameters"] = info.infotexts[0]
        return AvatarImage(
            data=data,
            format=fmt,
            width=picture.width,
            height=picture.height,
            kind="photo",
            provenance=provenance,
        )

    async def aclose(self) -> None:
        """Close the HTTP client of the running loop."""
        await self._http.aclose()


def _make_image(name: str | None, **options: Any) -> A1111ImageGenerator:
    return A1111ImageGenerator(name or options.pop("base_url", DEFAULT_URL), **options)


provider = Provider(
    "automatic1111",
    image=_make_image,
    description="Stable Diffusion through a running AUTOMATIC1111 web UI (--api)",
    default_roles=("image",),
)


def _image_bytes(value: object, field: str) -> bytes:
    """``value`` as the bytes of a picture PIL can open, or a typed error naming ``field``."""
    if not isinstance(value, bytes | bytearray) or not value:
        raise InputValidationError(f"{field} must be image bytes", field=field)
    try:
        read_picture(bytes(value), verify=True)
    except InputValidationError:
        pass
    else:
        return bytes(value)
    # raised outside the handler: nothing of the bytes chained to the error
    raise InputValidationError(f"{field} is not an image PIL can read", field=field)
