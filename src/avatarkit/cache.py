"""A content-addressed cache for speech and renders: a repeated reply costs no provider call.

Keys hash the normalised text, the backend and its settings, the voice, and the avatarkit
version. Storage is `diskcache` (SQLite-indexed files): size-bounded with least-recently-used
eviction, safe across threads and processes. Wrap any voice or renderer::

    cache = ReplyCache("~/.cache/avatarkit")
    voice = cache.voice(create("voice", "elevenlabs:<voice_id>"))
    bot = AvatarBot(voice=voice, renderer=cache.renderer(create("renderer", "local")))
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import os
import shutil
import tempfile
import threading
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Generic, TypeVar

from avatarkit._aio import cancel_requested
from avatarkit._files import TEMP_VIDEO_PREFIX, discard_temporary_video
from avatarkit.errors import ConfigurationError
from avatarkit.fallback import Fallback, watch_stand_ins
from avatarkit.metrics import count
from avatarkit.ports import ProgressCallback, RendererCapabilities, VoiceCapabilities, unwrap
from avatarkit.types import AvatarImage, AvatarVideo, Timeline, VoiceOutput

__all__ = ["CacheStats", "CachedRenderer", "CachedVoice", "ReplyCache", "backend_fingerprint"]

_SIMPLE = (str, int, float, bool, type(None))
T = TypeVar("T")
R = TypeVar("R")
_SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "auth", "credential", "cookie")
_NOT_OUTPUT = frozenset({"max_concurrency", "max_chars", "progress_bar", "calls", "delay"})
"""Attributes that never change what a backend produces (limits, bookkeeping)."""


def normalize_text(text: str) -> str:
    """The text as the cache sees it: NFKC, whitespace collapsed (case and punctuation kept)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _plain(value: Any) -> Any:
    """``value`` as JSON-able settings, or ``_SKIP`` when it is not a setting (or may be secret)."""
    from pydantic import BaseModel, SecretBytes, SecretStr

    if isinstance(value, (SecretStr, SecretBytes)):
        return _SKIP
    if isinstance(value, _SIMPLE):
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, BaseModel):
        return _plain(value.model_dump(mode="python"))
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else items
    if isinstance(value, dict):
        return {
            str(k): v
            for k, v in (
                (k, _plain(v)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
            )
            if v is not _SKIP and not _secret_name(str(k))
        }
    return _SKIP


_SKIP = object()


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def backend_fingerprint(backend: Any) -> str:
    """A stable description of a backend and its settings, for cache keys.

    Uses ``backend.cache_key()`` when the backend defines it; otherwise its class and its public
    settings: attributes holding strings, numbers, booleans, enums, paths, pydantic models
    (``voice_settings``) and lists or tuples of those (``size=(256, 256)``). Left out: private
    attributes, per-call state (``last_*``), limits that do not change the output, anything
    whose name suggests a secret (``api_key``, ``token``...) and ``SecretStr`` values; the
    result also passes through :func:`avatarkit.config.redact`. avatarkit's wrappers
    (:func:`avatarkit.limits.limited`, the cached wrappers) are looked through.
    """
    from avatarkit.config import redact

    backend = unwrap(backend)
    if isinstance(backend, Fallback):  # only its first backend's work is stored
        return backend_fingerprint(backend.primary)
    name = f"{type(backend).__module__}.{type(backend).__qualname__}"
    custom = getattr(backend, "cache_key", None)
    if callable(custom):
        return redact(f"{name}:{custom()}")
    attrs = {}
    for attr, value in sorted(vars(backend).items()):
        if attr.startswith(("_", "last_")) or attr in _NOT_OUTPUT or _secret_name(attr):
            continue
        plain = _plain(value)
        if plain is not _SKIP:
            attrs[attr] = plain
    return redact(f"{name}:{json.dumps(attrs, sort_keys=True, default=str)}")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("avatarkit")
    except PackageNotFoundError:  # pragma: no cover
        return "0"


@dataclass
class CacheStats:
    """Hit and miss counts since the cache object was made (this process)."""

    hits: int = 0
    misses: int = 0

    @property
    def hit_rate(self) -> float:
        """Share of lookups served from the cache."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class ReplyCache:
    """A size-bounded disk cache of voice outputs and rendered clips.

    Args:
        directory: Where the cache lives (created if missing); a temporary folder when None.
        size_limit: Bytes kept before least-recently-used entries are evicted (default 2 GiB).

    Raises:
        ConfigurationError: the folder cannot be made or written (a file in the way...).
    """

    def __init__(self, directory: str | Path | None = None, *, size_limit: int = 2 << 30) -> None:
        import sqlite3

        import diskcache

        folder = Path(directory).expanduser() if directory else Path(tempfile.mkdtemp())
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._videos = folder / "videos"
            self._videos.mkdir(exist_ok=True)
            self._store = diskcache.Cache(
                str(folder / "index"), size_limit=size_limit, eviction_policy="least-recently-used"
            )
        except (OSError, sqlite3.Error) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigurationError(f"the reply cache cannot use {folder}: {reason}") from exc
        self.directory = folder
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._version = _version()

    def key(self, kind: str, *parts: str) -> str:
        """The content address of an entry."""
        h = hashlib.sha256(kind.encode())
        for part in (self._version, *parts):
            h.update(b"\0" + part.encode())
        return h.hexdigest()

    def _count(self, hit: bool) -> None:
        count("cache.hits" if hit else "cache.misses")
        with self._lock:
            if hit:
                self.stats.hits += 1
            else:
                self.stats.misses += 1

    def get_voice(self, key: str) -> VoiceOutput | None:
        """A cached VoiceOutput, or None."""
        raw = self._store.get(key)
        self._count(raw is not None)
        return VoiceOutput.model_validate_json(raw) if raw is not None else None

    def put_voice(self, key: str, voice: VoiceOutput) -> None:
        """Store a VoiceOutput."""
        self._store.set(key, voice.model_dump_json())

    def get_timeline(self, key: str) -> tuple[str, Timeline] | None:
        """A cached Timeline and the SHA-256 of the audio it was made for, or None.

        Not counted: the caller checks the audio and calls :meth:`record`.
        """
        raw = self._store.get(key)
        if raw is None:
            return None
        digest, _, body = raw.partition("\n")
        return digest, Timeline.model_validate_json(body)

    def record(self, hit: bool) -> None:
        """Count one lookup (in ``stats`` and the current turn's metrics)."""
        self._count(hit)

    def put_timeline(self, key: str, audio: bytes, timeline: Timeline) -> None:
        """Store the Timeline animated for ``audio``."""
        digest = hashlib.sha256(audio).hexdigest()
        self._store.set(key, f"{digest}\n{timeline.model_dump_json()}")

    def get_video(self, key: str) -> AvatarVideo | None:
        """A cached clip whose file still exists, or None."""
        raw = self._store.get(key)
        video = AvatarVideo.model_validate_json(raw) if raw is not None else None
        if video is not None and not video.path.exists():
            video = None
        self._count(video is not None)
        return video

    def put_video(self, key: str, video: AvatarVideo) -> AvatarVideo:
        """Copy the clip into the cache and store its description; returns the cached copy."""
        from avatarkit._files import copy_atomic

        target = self._videos / f"{key}.{video.format}"
        copy_atomic(video.path, target)
        cached = video.model_copy(update={"path": target})
        self._store.set(key, cached.model_dump_json())
        return cached

    def clear(self) -> None:
        """Drop every entry."""
        self._store.clear()
        for f in self._videos.iterdir():
            if f.is_dir():  # PNG frames
                shutil.rmtree(f, ignore_errors=True)
            else:
                f.unlink(missing_ok=True)

    def voice(self, backend: Any) -> CachedVoice:
        """Wrap a voice so repeated texts are served from this cache."""
        return CachedVoice(backend, self)

    def renderer(self, backend: Any) -> CachedRenderer:
        """Wrap a renderer so repeated clips are served from this cache."""
        return CachedRenderer(backend, self)

    def close(self) -> None:
        """Close the index (other processes may keep using the folder)."""
        self._store.close()


class _Cached:
    """Shared parts of the cached wrappers: forwarding, fingerprint, tracing."""

    _avatarkit_wrapper = True
    _role = "backend"

    def __init__(self, inner: Any, cache: ReplyCache) -> None:
        self.inner = inner
        self.cache = cache
        self._fingerprint = backend_fingerprint(inner)
        self._backend_name = type(unwrap(inner)).__name__

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy/pickle): avoid recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def cache_key(self) -> str:
        """Fingerprint of the wrapped backend (so caches of caches stay consistent)."""
        return self._fingerprint

    def _lookup_span(self) -> contextlib.AbstractContextManager[Any]:
        from avatarkit.metrics import span

        return span(
            f"avatarkit.cache.{self._role}",
            {"avatarkit.role": self._role, "avatarkit.backend": self._backend_name},
        )


class _InFlight(Generic[T]):
    """Work in progress by key, so concurrent callers asking for the same thing share one call."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[T]] = {}

    async def follow(self, key: str) -> T | None:
        """The result of the call running for ``key``, or None when none is running.

        A leader that fails passes its error on; one that was cancelled by its own caller, not
        this one, leaves this caller to ask again (and lead, or follow whoever leads first).
        """
        while (pending := self._pending.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if cancel_requested():
                    raise
        return None

    async def lead(self, key: str, work: Callable[[], Awaitable[tuple[R, T]]]) -> R:
        """Run ``work`` for ``key``: its caller gets the first value, followers the second."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            mine, shared = await work()
            future.set_result(shared)
            return mine
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: followers re-raise it themselves
            raise
        finally:
            self._pending.pop(key, None)


class CachedVoice(_Cached):
    """A voice that answers repeated texts from a ReplyCache; its capabilities are its child's."""

    _role = "voice"

    def __init__(self, inner: Any, cache: ReplyCache) -> None:
        super().__init__(inner, cache)
        self._inflight: _InFlight[VoiceOutput] = _InFlight()

    @property
    def capabilities(self) -> VoiceCapabilities:
        """The wrapped voice's capabilities."""
        caps: VoiceCapabilities = self.inner.capabilities
        return caps

    async def synthesize(self, text: str) -> VoiceOutput:
        """Serve ``text`` from the cache, or synthesise it once and store it.

        Concurrent requests for the same text share one provider call. A hit for a text that
        differs only in spacing gets its words' character offsets re-aligned to ``text``.
        """
        key = self.cache.key("voice", self._fingerprint, normalize_text(text))
        with self._lookup_span() as sp:
            # A lookup is one SQLite read (well under a millisecond): done inline, since a
            # thread hop would queue behind CPU-bound work in a busy server's thread pool.
            hit = self.cache.get_voice(key)
            _set(sp, "avatarkit.cache.hit", hit is not None)
        if hit is not None:
            return _realign(hit, text) if hit.text != text else hit
        if (shared := await self._inflight.follow(key)) is not None:
            return shared

        async def synthesize_once() -> tuple[VoiceOutput, VoiceOutput]:
            with watch_stand_ins() as stand_ins:
                out: VoiceOutput = await self.inner.synthesize(text)
            if not stand_ins:  # a fallback's stand-in answered: not what the key names
                await asyncio.to_thread(self.cache.put_voice, key, out)
            return out, out

        return await self._inflight.lead(key, synthesize_once)

    async def prerender(self, texts: Iterable[str]) -> int:
        """Synthesise every text not yet cached; returns how many were new."""
        before = self.cache.stats.misses
        for text in texts:
            await self.synthesize(text)
        return self.cache.stats.misses - before


class CachedRenderer(_Cached):
    """A renderer that serves repeated clips (same image, audio, timeline, settings) from cache.

    Concurrent requests for the same clip share one render; each caller gets its own copy.
    """

    _role = "renderer"

    def __init__(self, inner: Any, cache: ReplyCache) -> None:
        super().__init__(inner, cache)
        # None for a clip a fallback's stand-in made: followers then render their own
        self._inflight: _InFlight[AvatarVideo | None] = _InFlight()

    async def _render_once(
        self,
        key: str,
        image: AvatarImage,
        voice: VoiceOutput,
        timeline: Timeline,
        output: Path | None,
        progress: ProgressCallback | None,
    ) -> tuple[AvatarVideo, AvatarVideo | None]:
        """Render the clip, store it, and hand the stored copy to whoever waits for ``key``.

        A clip a fallback's stand-in made is not stored, and not shared (its file is the
        caller's to move): whoever waits renders for itself.
        """
        with watch_stand_ins() as stand_ins:
            video: AvatarVideo = await self.inner.render(
                image, voice, timeline, output=output, progress=progress
            )
        if stand_ins:  # a fallback's stand-in rendered it: not what the key names
            return video, None
        try:
            stored = await asyncio.to_thread(self.cache.put_video, key, video)
        except asyncio.CancelledError:
            if output is None:  # nobody will receive this temporary clip
                discard_temporary_video(video)
            raise
        return video, stored

    @property
    def capabilities(self) -> RendererCapabilities:
        """The wrapped renderer's capabilities."""
        caps: RendererCapabilities = self.inner.capabilities
        return caps

    async def render(
        self,
        image: AvatarImage,
        voice: VoiceOutput,
        timeline: Timeline,
        *,
        output: Path | None = None,
        progress: ProgressCallback | None = None,
    ) -> AvatarVideo:
        """Serve the clip from the cache, or render it once and store it.

        A hit is copied to ``output`` (or to a new temporary file), so callers can move or
        delete what they get without harming the cache.
        """
        key = self.cache.key(
            "render",
            self._fingerprint,
            hashlib.sha256(image.data).hexdigest(),
            hashlib.sha256(voice.audio).hexdigest(),
            timeline.model_dump_json(exclude={"audio_ref"}),
            Path(output).suffix.lower() if output is not None else "",
        )
        with self._lookup_span() as sp:
            cached = self.cache.get_video(key)
            _set(sp, "avatarkit.cache.hit", cached is not None)
        if cached is None:  # the same clip may be rendering now: then take a copy of it
            cached = await self._inflight.follow(key)
        if cached is None:
            return await self._inflight.lead(
                key, lambda: self._render_once(key, image, voice, timeline, output, progress)
            )
        if output is None:  # a temporary folder of its own, as the renderer makes
            name = "frames" if cached.path.is_dir() else f"video{cached.path.suffix}"
            output = Path(tempfile.mkdtemp(prefix=TEMP_VIDEO_PREFIX)) / name
        _deliver(cached.path, Path(output))
        if progress is not None:
            progress(1, 1)
        return cached.model_copy(update={"path": Path(output)})


def _deliver(src: Path, dst: Path) -> None:
    """Put the cached file ``src`` at ``dst`` atomically.

    A hard link (instant) where possible, else a copy. Deleting or replacing ``dst`` never
    touches the cache's file.
    """
    from avatarkit._files import copy_atomic

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.link")
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:  # another file system, or links not allowed: copy
        tmp.unlink(missing_ok=True)
        copy_atomic(src, dst)


def _set(span: Any, key: str, value: Any) -> None:
    if span is not None:
        span.set_attribute(key, value)


def _realign(hit: VoiceOutput, text: str) -> VoiceOutput:
    """``hit`` for ``text``: the same audio, word offsets found again in ``text``."""
    words = []
    pos = 0
    for w in hit.words:
        at = text.find(w.text, pos)
        if at < 0:
            words.append(w.model_copy(update={"char_start": -1, "char_end": -1}))
            continue
        words.append(w.model_copy(update={"char_start": at, "char_end": at + len(w.text)}))
        pos = at + len(w.text)
    return hit.model_copy(update={"text": text, "words": words})


def default_cache_dir() -> Path:
    """``$AVATARKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/avatarkit``, else ``~/.cache/avatarkit``."""
    env = os.environ.get("AVATARKIT_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "avatarkit"
