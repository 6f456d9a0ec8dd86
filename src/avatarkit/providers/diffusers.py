"""Stable Diffusion avatars made locally with Hugging Face diffusers (spec ``diffusers:<model>``).

SD 1.x/2.x and SDXL from a hub id, a local diffusers folder or one ``.safetensors``/``.ckpt``
checkpoint; the web UI's prompt syntax, textual-inversion embeddings, LoRAs, seeds, and a
renderer-ready check that retries with the next seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

try:
    import diffusers
    import torch
    import transformers  # noqa: F401  (diffusers' SD pipelines need it)
except ImportError as _exc:  # pragma: no cover - exercised by simulating a missing import
    from avatarkit.errors import MissingExtraError

    raise MissingExtraError("Stable Diffusion", "diffusers", missing=_exc.name) from _exc

from avatarkit._image import decode_picture
from avatarkit.config import get_logger
from avatarkit.errors import (
    AvatarKitError,
    CancelledByUser,
    ConfigurationError,
    InputValidationError,
    ProviderError,
)
from avatarkit.imaging.portrait import NotRendererReadyError, check_portrait, portrait_crop
from avatarkit.imaging.prompt import ParsedPrompt, chunk_tokens, parse_prompt
from avatarkit.imaging.provenance import infotext_from_provenance, png_with_provenance
from avatarkit.ports import ImageCapabilities, ProgressCallback
from avatarkit.registry import Provider
from avatarkit.types import AvatarImage, AvatarPrompt

__all__ = ["SCHEDULERS", "DiffusersImageGenerator", "provider"]

_log = get_logger("avatarkit.providers.diffusers")

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
"""Used by a bare ``diffusers`` spec (downloaded once from the Hugging Face hub)."""

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".pth")
EMBEDDING_SUFFIXES = (".pt", ".safetensors", ".bin")

SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", {"use_karras_sigmas": True}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    "DPM++ SDE": ("DPMSolverSinglestepScheduler", {}),
    "DPM++ SDE Karras": ("DPMSolverSinglestepScheduler", {"use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "PLMS": ("PNDMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "LCM": ("LCMScheduler", {}),
}
"""The web UI's sampler names → diffusers scheduler class and options. A diffusers class
name (``"EulerDiscreteScheduler"``) is accepted too."""

_DTYPE_KWARG = (
    "dtype"
    if tuple(int(p) for p in re.findall(r"\d+", diffusers.__version__)[:2]) >= (0, 42)
    else "torch_dtype"
)  # diffusers 0.42 renamed torch_dtype to dtype

Device = Literal["auto", "cuda", "mps", "cpu"]
DType = Literal["auto", "float16", "bfloat16", "float32"]
Offload = Literal["none", "model", "sequential"]


@dataclass
class _Encoded:
    """Prompt and negative prompt embeddings ready for the pipeline."""

    kwargs: dict[str, Any]
    loras: list[tuple[str, float]] = field(default_factory=list)
    clip_skip: int = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _looks_like_path(model: str) -> bool:
    return (
        model.startswith((".", "/", "~"))
        or "\\" in model
        or model.lower().endswith(CHECKPOINT_SUFFIXES)
        or model.count("/") > 1
        or Path(model).expanduser().exists()
    )


class DiffusersImageGenerator:
    """Stable Diffusion 1.x/2.x/XL avatar pictures, run locally with diffusers.

    Example::

        gen = DiffusersImageGenerator("models/bennycheung.safetensors",
                                      embeddings=["embeddings/bennycheung.pt"])
        image = await gen.generate(AvatarPrompt("bennycheung person, (portrait:1.2)", seed=1))

    Args:
        model: A local diffusers folder, a single checkpoint file (``.safetensors``,
            ``.ckpt``: what DreamBooth training gives), or a hub id such as
            ``"stable-diffusion-v1-5/stable-diffusion-v1-5"`` (downloaded when online).
        pipeline: ``"sd"`` (1.x/2.x), ``"sdxl"``, or ``"auto"`` (read from the model).
        config: For a checkpoint file: a local diffusers folder (or hub id) whose component
            configs and tokenizer describe it; needed offline, see ``docs/avatars.md``.
        original_config: For a checkpoint file: the original ``v1-inference.yaml``-style file.
        device: ``"cuda"``, ``"mps"``, ``"cpu"`` or ``"auto"`` (the best one present).
        dtype: ``"float16"``/``"bfloat16"``/``"float32"``; ``"auto"`` is float16 on CUDA
            and float32 elsewhere.
        scheduler: A web UI sampler name (``"DPM++ 2M Karras"``, ``"Euler a"``, see
            :data:`SCHEDULERS`) or a diffusers scheduler class name; the model's own when None.
        embeddings: Textual-inversion files (web UI ``.pt``/``.safetensors`` or diffusers
            ``learned_embeds``), each bound to its file name as trigger token, or a mapping
            ``{token: path}``.
        embeddings_dir: A folder of embeddings loaded the same way (unloadable ones skipped,
            as the web UI does).
        lora: A LoRA file applied to every picture, with ``lora_scale``.
        lora_scale: Strength of ``lora``.
        lora_dir: Where ``<lora:name:weight>`` prompt tags look for ``name.safetensors``.
        clip_skip: The web UI's "Clip skip": 1 uses the text encoder's last layer, 2 the
            one before it.
        attention_slicing: Compute attention in slices: less memory, a little slower.
        vae_tiling: Decode the image in tiles (large sizes on small GPUs).
        offload: ``"model"`` or ``"sequential"`` CPU offload (CUDA, needs accelerate).
        renderer_check: Retry with the next seed until the picture suits talking-head
            rendering (one frontal face, big enough, mouth visible).
        max_attempts: Most seeds tried when ``renderer_check`` is on.
        crop: When set, return the centred square portrait crop of this size.
        safety_checker: Keep the model's NSFW checker (when it has one).
        progress_bar: Show diffusers' tqdm bar over the denoising steps.
        local_files_only: Never download (the default when ``model`` is a local path).
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        pipeline: Literal["auto", "sd", "sdxl"] = "auto",
        config: str | Path | None = None,
        original_config: str | Path | None = None,
        device: Device = "auto",
        dtype: DType = "auto",
        scheduler: str | None = None,
        embeddings: Sequence[str | Path] | Mapping[str, str | Path] = (),
        embeddings_dir: str | Path | None = None,
        lora: str | Path | None = None,
        lora_scale: float = 1.0,
        lora_dir: str | Path | None = None,
        clip_skip: int = 1,
        attention_slicing: bool = False,
        vae_tiling: bool = False,
        offload: Offload = "none",
        renderer_check: bool = True,
        max_attempts: int = 4,
        crop: int | None = None,
        safety_checker: bool = False,
        progress_bar: bool = False,
        local_files_only: bool | None = None,
    ) -> None:
        model = str(model) if model is not None else DEFAULT_MODEL
        if not model.strip():
            raise InputValidationError("the model must not be empty", field="model")
        self._path: Path | None = None
        if _looks_like_path(model):
            path = Path(model).expanduser()
            if not path.exists():
                raise InputValidationError(f"model {path} does not exist", field="model")
            if path.is_file() and not path.name.lower().endswith(CHECKPOINT_SUFFIXES):
                raise InputValidationError(
                    f"model file {path.name} is not a checkpoint "
                    f"({', '.join(CHECKPOINT_SUFFIXES)})",
                    field="model",
                )
            if path.is_dir() and not (path / "model_index.json").exists():
                raise InputValidationError(
                    f"{path} is not a diffusers model folder (no model_index.json)", field="model"
                )
            self._path = path
        if scheduler is not None:
            _scheduler_spec(scheduler)  # fail early on a typo
        if clip_skip < 1:
            raise InputValidationError("clip_skip must be 1 or more", field="clip_skip")
        if max_attempts < 1:
            raise InputValidationError("max_attempts must be 1 or more", field="max_attempts")
        if crop is not None and crop < 64:
            raise InputValidationError("crop must be at least 64 px", field="crop")
        if device not in ("auto", "cuda", "mps", "cpu"):
            raise InputValidationError(f"unknown device {device!r}", field="device")
        if dtype not in ("auto", "float16", "bfloat16", "float32"):
            raise InputValidationError(f"unknown dtype {dtype!r}", field="dtype")
        if offload not in ("none", "model", "sequential"):
            raise InputValidationError(f"unknown offload {offload!r}", field="offload")
        self.model = model
        self._pipeline_kind = pipeline
        self._config = config
        self._original_config = original_config
        self._device_choice = device
        self._dtype_choice = dtype
        self._scheduler = scheduler
        self._embeddings = self._embedding_files(embeddings)
        self._embeddings_dir = Path(embeddings_dir).expanduser() if embeddings_dir else None
        if self._embeddings_dir is not None and not self._embeddings_dir.is_dir():
            raise InputValidationError(
                f"embeddings folder {self._embeddings_dir} does not exist", field="embeddings_dir"
            )
        self._lora = Path(lora).expanduser() if lora else None
        if self._lora is not None and not self._lora.exists():
            raise InputValidationError(f"LoRA file {self._lora} does not exist", field="lora")
        self._lora_scale = float(lora_scale)
        self._lora_dir = Path(lora_dir).expanduser() if lora_dir else None
        self.clip_skip = clip_skip
        self._attention_slicing = attention_slicing
        self._vae_tiling = vae_tiling
        self._offload = offload
        self.renderer_check = renderer_check
        self.max_attempts = max_attempts
        self.crop = crop
        self._safety_checker = safety_checker
        self._progress_bar = progress_bar
        self._local_only = self._path is not None if local_files_only is None else local_files_only
        self._pipe: Any = None
        self._base_scheduler: Any = None
        self._active_sampler: str | None = None
        self._kind: Literal["sd", "sdxl"] = "sd"
        self._model_hash: str | None = None
        self._tokens: dict[str, str] = {}  # trigger token -> embedding file name
        self._loras_loaded: set[str] = set()
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._cancel = threading.Event()

    @classmethod
    def from_pipeline(
        cls, pipe: Any, *, name: str = "in-memory pipeline", **options: Any
    ) -> DiffusersImageGenerator:
        """Wrap a diffusers pipeline you already built or loaded (kept on its device).

        ``options`` are the constructor's (embeddings, scheduler, renderer_check…).
        """
        options.setdefault("local_files_only", True)
        gen = cls(name, **options)
        gen.model = name
        device = str(getattr(pipe, "device", "cpu")).split(":")[0]
        with gen._load_lock:
            gen._pipe = gen._setup(pipe, device)
        return gen

    # ------------------------------------------------------------------ public API

    @property
    def capabilities(self) -> ImageCapabilities:
        """Photo-style pictures, negative prompts, reproducible seeds; offline with local models."""
        return ImageCapabilities(
            kinds=("photo",), negative_prompt=True, seed=True, offline=self._path is not None
        )

    @property
    def device(self) -> str:
        """The torch device the pipeline runs on."""
        return _pick_device(self._device_choice)

    @property
    def embedding_tokens(self) -> dict[str, str]:
        """Loaded textual-inversion trigger tokens → their file names (after :meth:`load`)."""
        return dict(self._tokens)

    def __repr__(self) -> str:
        return f"DiffusersImageGenerator(model={self.model!r}, device={self.device!r})"

    def load(self) -> None:
        """Load the pipeline now (otherwise the first picture does it)."""
        with self._load_lock:
            if self._pipe is None:
                self._pipe = self._load_pipeline()

    def cancel(self) -> None:
        """Stop the picture being made after its current denoising step (CancelledByUser)."""
        self._cancel.set()

    async def generate(
        self,
        prompt: AvatarPrompt,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> AvatarImage:
        """Make one avatar picture.

        With ``renderer_check`` on, a picture that does not suit talking-head rendering is
        made again with the next seed, up to ``max_attempts`` seeds; the seeds tried are in
        ``provenance["seeds_tried"]``.

        Args:
            prompt: The prompt in the web UI's syntax, negative prompt, seed, size, steps and
                guidance; ``prompt.style`` may set ``sampler``, ``clip_skip``,
                ``renderer_check`` and ``max_attempts`` for this call.
            progress: Called as ``progress(step, steps)`` after each denoising step.
            cancel: Set it (from any thread) to stop after the current step.

        Raises:
            InputValidationError: bad size, unknown LoRA or sampler (before any work).
            NotRendererReadyError: no seed gave a renderer-ready picture.
            CancelledByUser: cancelled through ``cancel``, :meth:`cancel` or the task.
        """
        image: AvatarImage = await self._in_thread(
            lambda ev: self._generate(prompt, progress, ev), cancel
        )
        return image

    async def generate_many(
        self,
        prompt: AvatarPrompt,
        count: int,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[AvatarImage]:
        """Make ``count`` pictures in one batch, seeds ``seed``, ``seed + 1``… (no retries).

        Each picture's ``provenance["renderer_ready"]`` tells whether it passed the check.
        """
        if not 1 <= count <= 64:
            raise InputValidationError("count must be between 1 and 64", field="count")
        images: list[AvatarImage] = await self._in_thread(
            lambda ev: self._generate_batch(prompt, count, progress, ev), cancel
        )
        return images

    # ------------------------------------------------------------------ threads, cancellation

    async def _in_thread(self, work: Callable[[_Stop], Any], cancel: threading.Event | None) -> Any:
        stop = threading.Event()
        self._cancel.clear()

        def watched() -> Any:
            return work(_AnyEvent(stop, self._cancel, cancel))

        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, watched)
        try:
            result: Any = await asyncio.shield(fut)
        except asyncio.CancelledError:
            stop.set()  # the pipeline stops at its next step; wait so the GPU is free
            with contextlib.suppress(BaseException):  # the cancellation is what we report
                await fut
            raise
        return result

    # ------------------------------------------------------------------ loading

    def _embedding_files(
        self, embeddings: Sequence[str | Path] | Mapping[str, str | Path]
    ) -> dict[str, Path]:
        pairs: list[tuple[str, Path]]
        if isinstance(embeddings, Mapping):
            pairs = [(str(k), Path(v).expanduser()) for k, v in embeddings.items()]
        elif isinstance(embeddings, (str, Path)):
            p = Path(embeddings).expanduser()
            pairs = [(p.stem, p)]
        else:
            pairs = [(Path(e).stem, Path(e).expanduser()) for e in embeddings]
        out: dict[str, Path] = {}
        for token, path in pairs:
            if not path.exists():
                raise InputValidationError(f"embedding {path} does not exist", field="embeddings")
            if not token or re.search(r"\s", token):
                raise InputValidationError(
                    f"embedding trigger token {token!r} must be one word", field="embeddings"
                )
            out[token] = path
        return out

    def _dtype(self, device: str) -> Any:
        choice = self._dtype_choice
        if choice == "auto":
            choice = "float16" if device == "cuda" else "float32"
        try:
            return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[
                choice
            ]
        except KeyError:
            raise InputValidationError(f"unknown dtype {choice!r}", field="dtype") from None

    def _single_file_kind(self, path: Path) -> Literal["sd", "sdxl"]:
        keys: set[str]
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                keys = set(fh.keys())
        else:
            try:
                state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
            except Exception as exc:  # an old pickle format: assume SD 1.x, say so
                _log.warning("could not read %s to tell SD from SDXL (%s); assuming SD", path, exc)
                return "sd"
            state = state.get("state_dict", state)
            keys = set(state)
        if any(k.startswith("conditioner.embedders.1.") for k in keys) or any(
            k.startswith("conditioner.embedders.0.model.") for k in keys
        ):
            return "sdxl"
        return "sd"

    def _has_safety_checker(self) -> bool:
        """Whether the model may bring an NSFW checker (SD 1.x/2.x folders and hub ids)."""
        if self._path is None:
            return "xl" not in self.model.lower()
        try:
            index = json.loads((self._path / "model_index.json").read_text())
        except (OSError, ValueError):
            return False
        return "safety_checker" in index

    def _load_pipeline(self) -> Any:
        device = self.device
        dtype = self._dtype(device)
        kind = self._pipeline_kind
        kw: dict[str, Any] = {_DTYPE_KWARG: dtype}
        if self._local_only:
            kw["local_files_only"] = True
        try:
            if self._path is not None and self._path.is_file():
                if kind == "auto":
                    kind = self._single_file_kind(self._path)
                cls = (
                    diffusers.StableDiffusionXLPipeline
                    if kind == "sdxl"
                    else diffusers.StableDiffusionPipeline
                )
                if self._config is not None:
                    kw["config"] = str(self._config)
                if self._original_config is not None:
                    kw["original_config"] = str(self._original_config)
                if kind == "sd" and not self._safety_checker:
                    kw.update(safety_checker=None, requires_safety_checker=False)
                pipe = cls.from_single_file(str(self._path), **kw)
                self._model_hash = _sha256(self._path)[:10]
            else:
                if not self._safety_checker and self._has_safety_checker():
                    kw.update(safety_checker=None, requires_safety_checker=False)
                pipe = diffusers.DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
                    str(self._path or self.model), **kw
                )
        except AvatarKitError:
            raise
        except Exception as exc:  # diffusers raises many kinds; all mean "cannot load this"
            where = self._path or self.model
            if self._path is not None and self._path.is_file():
                hint = (
                    " For a checkpoint file offline, pass config= a local diffusers folder of the "
                    "same architecture (see docs/avatars.md)."
                )
            elif self._path is None:  # "models/sd15" reads as a Hub id: say so
                hint = (
                    f" It was read as a Hugging Face Hub id; no local folder ./{self.model} "
                    "exists (write ./ before a local path)."
                )
            else:
                hint = ""
            raise ConfigurationError(f"could not load model {where}: {exc}.{hint}") from exc
        return self._setup(pipe, device)

    def _setup(self, pipe: Any, device: str) -> Any:
        names = type(pipe).__name__
        if not hasattr(pipe, "text_encoder") or not hasattr(pipe, "unet"):
            raise ConfigurationError(
                f"{self.model} is a {names}, not a Stable Diffusion text-to-image pipeline"
            )
        self._kind = "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"
        self._base_scheduler = pipe.scheduler  # the model's own; samplers derive from it
        self._active_sampler = None
        self._use_sampler(pipe, self._scheduler)
        if self._attention_slicing:
            pipe.enable_attention_slicing()
        if self._vae_tiling:
            pipe.vae.enable_tiling()
        if self._offload == "model":
            pipe.enable_model_cpu_offload()
        elif self._offload == "sequential":
            pipe.enable_sequential_cpu_offload()
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=not self._progress_bar)
        for token, path in self._embeddings.items():
            self._load_embedding(pipe, token, path, strict=True)
        if self._embeddings_dir is not None:
            for path in sorted(self._embeddings_dir.iterdir()):
                if path.suffix.lower() in EMBEDDING_SUFFIXES and path.stem not in self._tokens:
                    self._load_embedding(pipe, path.stem, path, strict=False)
        if self._lora is not None:
            self._load_lora(pipe, "__personal__", self._lora)
        _log.info("ready: %s (%s) on %s", self.model, names, device)
        return pipe

    def _load_embedding(self, pipe: Any, token: str, path: Path, *, strict: bool) -> None:
        try:
            if self._kind == "sdxl":
                from safetensors.torch import load_file

                state = (
                    load_file(str(path))
                    if path.suffix == ".safetensors"
                    else torch.load(str(path), map_location="cpu", weights_only=True)
                )
                if "clip_l" not in state or "clip_g" not in state:
                    raise ValueError("an SDXL embedding needs 'clip_l' and 'clip_g' tensors")
                pipe.load_textual_inversion(
                    state["clip_l"], token=token, text_encoder=pipe.text_encoder,
                    tokenizer=pipe.tokenizer,
                )  # fmt: skip
                pipe.load_textual_inversion(
                    state["clip_g"], token=token, text_encoder=pipe.text_encoder_2,
                    tokenizer=pipe.tokenizer_2,
                )  # fmt: skip
            else:
                pipe.load_textual_inversion(str(path), token=token, local_files_only=True)
        except (ValueError, RuntimeError, OSError, KeyError) as exc:
            if strict:
                raise InputValidationError(
                    f"embedding {path.name} cannot be used with {self.model}: {exc}",
                    field="embeddings",
                ) from exc
            _log.warning("skipped embedding %s: %s", path.name, exc)
            return
        self._tokens[token] = path.name

    def _load_lora(self, pipe: Any, name: str, path: Path) -> None:
        if name in self._loras_loaded:
            return
        try:
            pipe.load_lora_weights(str(path), adapter_name=_adapter(name))
        except ImportError as exc:
            from avatarkit.errors import MissingExtraError

            raise MissingExtraError("LoRA weights", "diffusers", missing="peft") from exc
        except (ValueError, RuntimeError, OSError, KeyError) as exc:
            raise InputValidationError(
                f"LoRA {path.name} cannot be used with {self.model}: {exc}", field="lora"
            ) from exc
        self._loras_loaded.add(name)

    # ------------------------------------------------------------------ prompts → embeddings

    def _loras_for(self, parsed: ParsedPrompt) -> list[tuple[str, float, Path]]:
        out: list[tuple[str, float, Path]] = []
        if self._lora is not None:
            out.append(("__personal__", self._lora_scale, self._lora))
        for req in parsed.loras:
            path = None
            if self._lora_dir is not None:
                for suffix in (".safetensors", ".pt", ".bin", ".ckpt"):
                    cand = self._lora_dir / f"{req.name}{suffix}"
                    if cand.exists():
                        path = cand
                        break
            if path is None:
                where = f" in {self._lora_dir}" if self._lora_dir else " (no lora_dir given)"
                raise InputValidationError(
                    f"<lora:{req.name}:...>: no LoRA file named {req.name}{where}",
                    field="prompt",
                )
            out.append((req.name, req.weight, path))
        for other in parsed.other_networks:
            _log.warning("ignored %s: only <lora:...> tags are supported", other)
        return out

    def _encode_one(
        self, pipe: Any, parsed: ParsedPrompt, tokenizer: Any, encoder: Any, sdxl: bool
    ) -> tuple[Any, Any]:
        """Chunk, encode and weight one prompt with one text encoder → (z, pooled|None)."""
        vocab = tokenizer.get_vocab()
        segs = [
            s._replace(text=pipe.maybe_convert_prompt(s.text, tokenizer)) if s.text else s
            for s in parsed.segments
        ]
        chunks = chunk_tokens(
            segs,
            lambda t: list(  # no truncation, no "longer than 77" warning: we chunk
                tokenizer(t, add_special_tokens=False, truncation=False, max_length=1 << 20)[
                    "input_ids"
                ]
            ),
            bos=tokenizer.bos_token_id,
            eos=tokenizer.eos_token_id,
            pad=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else None,
            comma=vocab.get(",</w>"),
        )
        return self._encode_chunks(chunks, encoder, sdxl)

    def _encode_chunks(self, chunks: Sequence[Any], encoder: Any, sdxl: bool) -> tuple[Any, Any]:
        device = encoder.device
        zs = []
        pooled = None
        for i, chunk in enumerate(chunks):
            ids = torch.tensor([chunk.tokens], device=device)
            out = encoder(ids, output_hidden_states=True)
            if sdxl:
                # SDXL: the penultimate layer (or earlier with clip skip), no final norm.
                z = out.hidden_states[-(self.clip_skip + 1)]
                if i == 0:
                    pooled = out[0]
            elif self.clip_skip > 1:
                # transformers 4 nests the layers in .text_model; 5 does not.
                norm = getattr(encoder, "text_model", encoder).final_layer_norm
                z = norm(out.hidden_states[-self.clip_skip])
            else:
                z = out[0]
            if any(w != 1.0 for w in chunk.weights):
                # The web UI's "Original" emphasis: scale each token's vectors by its weight,
                # then restore the chunk's mean so strong weights do not blow up the
                # conditioning (skipped when the mean is ~0, where it would divide by zero).
                weights = torch.tensor(chunk.weights, device=device, dtype=z.dtype)
                mean_before = z.float().mean()
                z = z * weights.reshape(1, -1, 1)
                mean_after = z.float().mean()
                if mean_after.abs() > 1e-8:
                    z = z * (mean_before / mean_after).to(z.dtype)
            zs.append(z)
        return torch.cat(zs, dim=1), pooled

    def _encode(self, prompt: str, negative: str) -> _Encoded:
        pipe = self._pipe
        pos, neg = parse_prompt(prompt), parse_prompt(negative)
        loras = self._loras_for(pos)
        encoders = [(pipe.tokenizer, pipe.text_encoder)]
        if self._kind == "sdxl":
            encoders.append((pipe.tokenizer_2, pipe.text_encoder_2))
        sdxl = self._kind == "sdxl"
        pos_z, neg_z = [], []
        pos_pooled = neg_pooled = None
        with torch.no_grad():
            for tok, enc in encoders:
                pz, pp = self._encode_one(pipe, pos, tok, enc, sdxl)
                nz, npool = self._encode_one(pipe, neg, tok, enc, sdxl)
                pz, nz = self._same_length(pz, nz, tok, enc, sdxl)
                pos_z.append(pz)
                neg_z.append(nz)
                pos_pooled, neg_pooled = pp, npool
        prompt_embeds = torch.cat(pos_z, dim=-1)
        negative_embeds = torch.cat(neg_z, dim=-1)
        dtype = pipe.unet.dtype
        kwargs: dict[str, Any] = {
            "prompt_embeds": prompt_embeds.to(dtype),
            "negative_prompt_embeds": negative_embeds.to(dtype),
        }
        if sdxl:
            assert pos_pooled is not None and neg_pooled is not None
            if not negative.strip() and pipe.config.get("force_zeros_for_empty_prompt", False):
                kwargs["negative_prompt_embeds"] = torch.zeros_like(kwargs["prompt_embeds"])
                neg_pooled = torch.zeros_like(neg_pooled)
            kwargs["pooled_prompt_embeds"] = pos_pooled.to(dtype)
            kwargs["negative_pooled_prompt_embeds"] = neg_pooled.to(dtype)
        return _Encoded(kwargs, [(n, w) for n, w, _ in loras])

    def _same_length(self, a: Any, b: Any, tok: Any, enc: Any, sdxl: bool) -> tuple[Any, Any]:
        """Pad the shorter of prompt / negative with encoded empty chunks (web UI's way)."""
        if a.shape[1] == b.shape[1]:
            return a, b
        empty_tokens = [tok.bos_token_id, tok.eos_token_id] + [
            tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ] * 75
        from avatarkit.imaging.prompt import TokenChunk

        empty, _ = self._encode_chunks([TokenChunk(empty_tokens, [1.0] * 77)], enc, sdxl)
        while a.shape[1] < b.shape[1]:
            a = torch.cat([a, empty], dim=1)
        while b.shape[1] < a.shape[1]:
            b = torch.cat([b, empty], dim=1)
        return a, b

    # ------------------------------------------------------------------ generation

    def _validate(self, prompt: AvatarPrompt) -> None:
        for side in ("width", "height"):
            value = getattr(prompt, side)
            if value % 8:
                raise InputValidationError(
                    f"{side} must be a multiple of 8, got {value}", field=side
                )
        if not prompt.prompt.strip():
            raise InputValidationError("the prompt must not be empty", field="prompt")
        sampler = prompt.style.get("sampler")
        if sampler is not None:
            _scheduler_spec(str(sampler))
        for lora in parse_prompt(prompt.prompt).loras:
            if self._lora_dir is None or not any(
                (self._lora_dir / f"{lora.name}{s}").exists()
                for s in (".safetensors", ".pt", ".bin", ".ckpt")
            ):
                raise InputValidationError(
                    f"<lora:{lora.name}:...>: no such LoRA file in "
                    f"{self._lora_dir or '(no lora_dir given)'}",
                    field="prompt",
                )

    def _use_sampler(self, pipe: Any, sampler: str | None) -> None:
        """Switch the pipeline to ``sampler`` (None: the model's own), if not already."""
        if sampler == self._active_sampler:
            return
        if sampler is None:
            pipe.scheduler = self._base_scheduler
        else:
            cls_name, opts = _scheduler_spec(sampler)
            base = self._base_scheduler.config
            pipe.scheduler = getattr(diffusers, cls_name).from_config(base, **opts)
        self._active_sampler = sampler

    def _prepare(self, prompt: AvatarPrompt) -> tuple[_Encoded, str]:
        self._validate(prompt)
        self.load()
        pipe = self._pipe
        style = prompt.style
        sampler = str(style["sampler"]) if style.get("sampler") else self._scheduler
        self._use_sampler(pipe, sampler)
        sampler_name = sampler or type(pipe.scheduler).__name__
        clip_skip = self.clip_skip
        if "clip_skip" in style:  # for this picture only
            self.clip_skip = max(1, int(style["clip_skip"]))
        try:
            encoded = self._encode(prompt.prompt, prompt.negative)
            encoded.clip_skip = self.clip_skip
        finally:
            self.clip_skip = clip_skip
        # LoRA adapters: load what the prompt names, activate exactly those.
        pos = parse_prompt(prompt.prompt)
        for name, _w, path in self._loras_for(pos):
            self._load_lora(pipe, name, path)
        if self._loras_loaded:
            if encoded.loras:
                pipe.enable_lora()
                pipe.set_adapters(
                    [_adapter(n) for n, _ in encoded.loras], [w for _, w in encoded.loras]
                )
            else:
                pipe.disable_lora()
        return encoded, sampler_name

    def _run(
        self,
        prompt: AvatarPrompt,
        encoded: _Encoded,
        seeds: list[int],
        progress: ProgressCallback | None,
        cancel: _Stop,
    ) -> list[Any]:
        steps = prompt.steps

        def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if progress is not None:
                progress(step + 1, steps)
            if cancel.is_set():
                raise CancelledByUser(f"diffusion cancelled after step {step + 1} of {steps}")
            return kwargs

        if cancel.is_set():
            raise CancelledByUser("diffusion cancelled before it started")
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        try:
            out = self._pipe(
                **encoded.kwargs,
                num_inference_steps=steps,
                guidance_scale=prompt.guidance,
                width=prompt.width,
                height=prompt.height,
                num_images_per_prompt=len(seeds),
                generator=generators,
                callback_on_step_end=on_step,
                output_type="pil",
            )
        except CancelledByUser:
            raise
        except torch.cuda.OutOfMemoryError as exc:
            raise ProviderError(
                "out of GPU memory: try attention_slicing=True, offload='model', "
                "dtype='float16' or a smaller size",
                provider="diffusers",
                code="out_of_memory",
            ) from exc
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(f"generation failed: {exc}", provider="diffusers") from exc
        return list(out.images)

    def _provenance(
        self, prompt: AvatarPrompt, seed: int, sampler: str, encoded: _Encoded
    ) -> dict[str, Any]:
        text = f"{prompt.prompt}\n{prompt.negative}"
        used = [
            name
            for token, name in self._tokens.items()
            if re.search(rf"(?<![\w]){re.escape(token)}(?![\w])", text)
        ]
        prov: dict[str, Any] = {
            "backend": "diffusers",
            "model": self.model,
            "model_hash": self._model_hash,
            "pipeline": self._kind,
            "prompt": prompt.prompt,
            "negative_prompt": prompt.negative,
            "seed": seed,
            "steps": prompt.steps,
            "sampler": sampler,
            "guidance": prompt.guidance,
            "width": prompt.width,
            "height": prompt.height,
            "clip_skip": encoded.clip_skip,
            "embeddings": used,
            "loras": [
                {"name": n if n != "__personal__" else str(self._lora), "weight": w}
                for n, w in encoded.loras
            ],
        }
        if prompt.style.get("preset"):
            prov["preset"] = prompt.style["preset"]
        return prov

    def _to_image(self, pil: Any, prov: dict[str, Any]) -> AvatarImage:
        prov["parameters"] = infotext_from_provenance(prov).format()
        data = png_with_provenance(pil, prov)
        return AvatarImage(
            data=data, format="png", width=pil.width, height=pil.height, provenance=prov
        )

    def _finish(self, image: AvatarImage, face: tuple[int, int, int, int] | None) -> AvatarImage:
        if face is not None:
            image = image.model_copy(update={"face_box": face})
        if self.crop is not None and face is not None:
            image = portrait_crop(image, face, size=self.crop)  # the face box in the crop's pixels
            made = self._to_image(decode_picture(image.data), dict(image.provenance))
            image = made.model_copy(update={"face_box": image.face_box})
        return image

    def _generate(
        self, prompt: AvatarPrompt, progress: ProgressCallback | None, cancel: _Stop
    ) -> AvatarImage:
        with self._run_lock:
            encoded, sampler = self._prepare(prompt)
            check = bool(prompt.style.get("renderer_check", self.renderer_check))
            attempts = int(prompt.style.get("max_attempts", self.max_attempts)) if check else 1
            first = prompt.seed if prompt.seed is not None else secrets.randbelow(2**32)
            tried: list[int] = []
            reasons: dict[int, list[str]] = {}
            for attempt in range(attempts):
                seed = (first + attempt) % 2**32
                tried.append(seed)
                (pil,) = self._run(prompt, encoded, [seed], progress, cancel)
                prov = self._provenance(prompt, seed, sampler, encoded)
                prov["seeds_tried"] = list(tried)
                if not check:
                    return self._finish(self._to_image(pil, prov), None)
                verdict = check_portrait(pil)
                prov["renderer_ready"] = verdict.ok
                if verdict.ok:
                    return self._finish(self._to_image(pil, prov), verdict.face_box)
                reasons[seed] = verdict.reasons
                _log.info("seed %d not renderer-ready: %s", seed, "; ".join(verdict.reasons))
            raise NotRendererReadyError("diffusers", tried, reasons)

    def _generate_batch(
        self,
        prompt: AvatarPrompt,
        count: int,
        progress: ProgressCallback | None,
        cancel: _Stop,
    ) -> list[AvatarImage]:
        with self._run_lock:
            encoded, sampler = self._prepare(prompt)
            first = prompt.seed if prompt.seed is not None else secrets.randbelow(2**32)
            seeds = [(first + i) % 2**32 for i in range(count)]
            images = self._run(prompt, encoded, seeds, progress, cancel)
            out = []
            for seed, pil in zip(seeds, images, strict=True):
                prov = self._provenance(prompt, seed, sampler, encoded)
                prov["seeds_tried"] = [seed]
                face = None
                if self.renderer_check:
                    verdict = check_portrait(pil)
                    prov["renderer_ready"] = verdict.ok
                    face = verdict.face_box if verdict.ok else None
                out.append(self._finish(self._to_image(pil, prov), face))
            return out


class _Stop(Protocol):
    def is_set(self) -> bool: ...


class _AnyEvent:
    """Set when any of several events is set (task cancelled, cancel(), caller's event)."""

    def __init__(self, *events: threading.Event | None) -> None:
        self._events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


def _adapter(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _pick_device(choice: str) -> str:
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError("device 'cuda' asked for, but torch sees no CUDA GPU")
    if choice == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigurationError("device 'mps' asked for, but Apple MPS is not available")
    if choice not in ("cuda", "mps", "cpu"):
        raise InputValidationError(f"unknown device {choice!r}", field="device")
    return choice


def _scheduler_spec(name: str) -> tuple[str, dict[str, Any]]:
    if name in SCHEDULERS:
        return SCHEDULERS[name]
    if name.endswith("Scheduler") and hasattr(diffusers, name):
        return name, {}
    import difflib

    close = difflib.get_close_matches(name, list(SCHEDULERS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise InputValidationError(
        f"unknown sampler {name!r}.{hint} Known: {', '.join(SCHEDULERS)}", field="sampler"
    )


def _factory(name: str | None, **options: Any) -> DiffusersImageGenerator:
    return DiffusersImageGenerator(name, **options)


provider = Provider(
    "diffusers",
    image=_factory,
    description="Stable Diffusion 1.x/2.x/XL on this machine (Hugging Face diffusers)",
    extra="diffusers",
    requires=("torch", "diffusers", "transformers"),
    offline=True,
    default_roles=("image",),
)
