"""The ``local`` renderer: a talking-face video from an avatar image, speech and its timeline.

Offline, no GPU, no key. Procedural avatars are redrawn from their parameters by
:class:`~avatarkit.render.face.ProceduralFace`; any other portrait goes to the photo rig
(:class:`avatarkit.render.photo.PhotoRig`). Frames are sampled from the timeline, drawn, and
streamed straight into ffmpeg (:class:`~avatarkit.render.encode.FrameEncoder`), so memory stays
flat however long the clip.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import numpy.typing as npt

from avatarkit._files import TEMP_VIDEO_PREFIX, discard_temporary_video
from avatarkit.animation.face_state import FaceState
from avatarkit.animation.sampler import TimelineSampler
from avatarkit.audio import decode_audio, encode_wav
from avatarkit.config import get_logger
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.ports import ProgressCallback, RendererCapabilities
from avatarkit.render.encode import FrameEncoder, VideoFormat, format_for_path
from avatarkit.types import AvatarImage, AvatarPose, AvatarVideo, Timeline, VoiceOutput

__all__ = ["FrameDrawer", "LocalRenderer", "PreparedFrameDrawer", "idle_timeline"]

_log = get_logger("avatarkit.render.local")
Frame = npt.NDArray[np.uint8]

MIN_SIZE, MAX_SIZE = 64, 2048
MIN_FPS, MAX_FPS = 1.0, 120.0
_CHUNK = 250  # frames sampled at a time: bounded memory on long clips
# x264 constant quantisers with CRF 20's quality (see LocalRenderer's crf), by image kind
_QP = {"procedural": 14, "photo": 19}


_cv_lock = threading.Lock()
_cv_users = 0
_cv_saved = 0


@contextlib.contextmanager
def _opencv_single_threaded() -> Iterator[None]:
    """Run OpenCV single-threaded while renders are in flight, then restore its setting.

    Drawing and encoding already keep two cores busy in parallel; OpenCV's own worker threads
    on the small per-frame images only add contention (measured: 0.92 vs 1.05 ms of CPU and
    0.94 vs 1.53 ms of wall time per frame on 2 busy cores).
    """
    global _cv_users, _cv_saved
    with _cv_lock:
        if _cv_users == 0:
            _cv_saved = cv2.getNumThreads()
            cv2.setNumThreads(1)
        _cv_users += 1
    try:
        yield
    finally:
        with _cv_lock:
            _cv_users -= 1
            if _cv_users == 0:
                cv2.setNumThreads(_cv_saved)


class FrameDrawer(Protocol):
    """Anything that draws a frame for a FaceState (ProceduralFace, PhotoRig)."""

    def draw(self, state: FaceState) -> Frame:
        """An ``HxWx3`` uint8 RGB frame."""
        ...


@runtime_checkable
class PreparedFrameDrawer(FrameDrawer, Protocol):
    """A drawer that can build what frames for some states need without drawing them.

    :meth:`LocalRenderer.prepare` calls ``prepare``; a drawer without it is warmed up by
    drawing the states' frames and dropping them.
    """

    def prepare(self, states: Iterable[FaceState]) -> None:
        """Build (and keep) what drawing ``states`` needs."""
        ...


@functools.cache
def _warmup_states() -> tuple[FaceState, ...]:
    """Face states of a short, phonetically rich utterance with a few expressions (25 fps)."""
    from avatarkit._espeak import synthesize
    from avatarkit.animation.lipsync import lipsync, timeline_from
    from avatarkit.types import Emotion, FacialExpression

    text = (
        "Hello! The quick brown fox jumps over the lazy dog. How are you today? "
        "I'm thinking about it, and I would love to help you with that."
    )
    syn = synthesize(text)
    voice = VoiceOutput(
        audio=encode_wav(syn.samples, syn.sample_rate), sample_rate=syn.sample_rate,
        duration=syn.duration, text=text, words=syn.words, phonemes=syn.phonemes,
    )  # fmt: skip
    third = voice.duration / 3
    expressions = [
        FacialExpression(time=0.0, emotion=Emotion.HAPPY, intensity=0.7),
        FacialExpression(time=third, emotion=Emotion.NEUTRAL, intensity=0.5),
        FacialExpression(time=2 * third, emotion=Emotion.THINKING, intensity=0.6),
    ]
    timeline = timeline_from(voice, lipsync(voice, text=text), expressions=expressions)
    return tuple(TimelineSampler(timeline, auto_blink=True).frames(25))


class LocalRenderer:
    """Render talking-avatar videos on the CPU.

    Args:
        fps: Frames per second (1–120).
        size: Output frame size: a side, ``(width, height)``, or None for the image's size.
        format: ``mp4``, ``webm``, ``gif`` or ``png``; None picks from the output's suffix
            (``mp4`` when there is no output path).
        crf: Encoder quality: x264 or VP9 CRF (lower is better). None picks by format and
            avatar: for mp4 a constant quantiser, which spares x264 its per-frame rate-control
            analysis (14–18 % fewer encoder instructions) at the quality CRF 20 gives: 14 for
            flat procedural faces, 19 for photos; CRF 34 for webm.
        preset: x264 preset for mp4 (``ultrafast`` renders fastest; ``veryfast`` makes files
            about four times smaller for about twice the encode time).
        tune: x264 tune for mp4, e.g. ``"animation"``: files about a quarter smaller for flat
            procedural faces, but 10–20 % slower to encode; None (default) for speed.
        progress_bar: Show a tqdm progress bar while rendering.
        blend: Viseme crossfade, seconds.
        lead: Show mouth shapes this many seconds ahead of the sound.
        idle_blinks: Blink naturally when the timeline's poses carry no blinks.
    """

    def __init__(
        self,
        *,
        fps: float = 25.0,
        size: int | tuple[int, int] | None = None,
        format: VideoFormat | None = None,
        crf: int | None = None,
        preset: str = "ultrafast",
        tune: str | None = None,
        progress_bar: bool = False,
        blend: float = 0.06,
        lead: float = 0.02,
        idle_blinks: bool = True,
    ) -> None:
        if (
            not isinstance(fps, (int, float))
            or isinstance(fps, bool)
            or not MIN_FPS <= fps <= MAX_FPS
        ):
            raise InputValidationError(f"fps must be a number in [{MIN_FPS:g}, {MAX_FPS:g}], "
                                       f"got {fps!r}", field="fps")  # fmt: skip
        if size is not None:
            sides = (size, size) if isinstance(size, int) else size
            if (
                not isinstance(sides, (tuple, list))
                or len(sides) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in sides)
            ):
                raise InputValidationError(
                    f"size must be a whole number of pixels or (width, height), got {size!r}",
                    field="size",
                )
            self._check_size(*sides)
        if format is not None and format not in ("mp4", "webm", "gif", "png"):
            raise InputValidationError(f"unknown format {format!r}", field="format")
        self.fps = float(fps)
        self.size = size
        self.format = format
        self.crf = crf
        self.preset = preset
        self.tune = tune
        self.progress_bar = progress_bar
        self.blend = blend
        self.lead = lead
        self.idle_blinks = idle_blinks
        # Idle drawers by avatar: a drawer keeps per-clip state, so each render takes one out
        # and puts it back; the same avatar's next utterance reuses its painted layers.
        self._pool: OrderedDict[str, list[FrameDrawer]] = OrderedDict()
        self._pool_lock = threading.Lock()
        self._idle_clips: dict[tuple[Any, ...], AvatarVideo] = {}

    @property
    def capabilities(self) -> RendererCapabilities:
        """Procedural and photo avatars; mp4, webm, gif, png (``format`` alone when set)."""
        return RendererCapabilities(
            image_kinds=("procedural", "photo"),
            formats=(self.format,) if self.format else ("mp4", "webm", "gif", "png"),
            streaming=False,
            expressions=True,
            offline=True,
        )

    async def render(
        self,
        image: AvatarImage,
        voice: VoiceOutput,
        timeline: Timeline,
        *,
        output: Path | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> AvatarVideo:
        """Render the clip in a worker thread; see :meth:`render_sync`.

        Cancelling the awaiting task stops the render, kills ffmpeg and removes the partial
        file before the cancellation propagates.
        """
        token = cancel or threading.Event()
        loop = asyncio.get_running_loop()
        job = functools.partial(
            self.render_sync, image, voice, timeline, output=output, progress=progress,
            cancel=token,
        )  # fmt: skip
        fut = loop.run_in_executor(None, job)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            token.set()
            with contextlib.suppress(BaseException):
                done = await fut  # it may have finished before it saw the token
                if output is None:  # a temporary clip that nobody will receive
                    discard_temporary_video(done)
            raise

    async def prepare(self, image: AvatarImage) -> None:
        """Get ready to animate ``image``: paint its layers and its common mouth and eye shapes.

        Optional; the first render does it otherwise. ``AvatarBot`` calls it as soon as the
        avatar picture exists, while the reply is still being written and spoken, so the first
        clip renders as fast as later ones.
        """
        await asyncio.to_thread(self.prepare_sync, image)

    def prepare_sync(self, image: AvatarImage) -> None:
        """Blocking :meth:`prepare`."""
        fmt: VideoFormat = self.format or "mp4"
        width, height = self._frame_size(image, fmt)
        key, drawer = self._acquire(image, width, height)
        try:
            with _opencv_single_threaded():
                if isinstance(drawer, PreparedFrameDrawer):  # its shapes, without frames
                    drawer.prepare(_warmup_states())
                else:
                    for state in _warmup_states():
                        self._draw(drawer, state, width, height)
        finally:
            self._release(key, drawer)

    def render_sync(
        self,
        image: AvatarImage,
        voice: VoiceOutput,
        timeline: Timeline,
        *,
        output: Path | str | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> AvatarVideo:
        """Render the clip in this thread.

        Args:
            image: The avatar (``kind="procedural"`` or ``"photo"``).
            voice: The speech; its audio is muxed into mp4/webm (copied beside PNG frames).
            timeline: Visemes, expressions and poses on the audio's clock.
            output: Where to write; a temporary file when None. A folder for PNG frames.
            progress: Called as ``progress(done, total)`` from the rendering thread.
            cancel: Set it to stop: ffmpeg is killed, the partial file removed, and
                :class:`~avatarkit.errors.CancelledByUser` raised.

        Raises:
            InputValidationError: unknown image kind, zero-length audio, bad size or fps.
            CancelledByUser: ``cancel`` was set.
            ProviderError: ffmpeg failed.
        """
        out_path = Path(output) if output is not None else None
        fmt = self._format_for(out_path)
        width, height = self._frame_size(image, fmt)
        duration = self._duration(voice, timeline)
        key, drawer = self._acquire(image, width, height)
        try:
            with _opencv_single_threaded():
                return self._render(
                    image, voice, timeline, drawer, fmt, width, height, duration, out_path,
                    progress, cancel,
                )  # fmt: skip
        finally:
            self._release(key, drawer)

    def _render(
        self,
        image: AvatarImage,
        voice: VoiceOutput,
        timeline: Timeline,
        drawer: FrameDrawer,
        fmt: VideoFormat,
        width: int,
        height: int,
        duration: float,
        out_path: Path | None,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> AvatarVideo:
        if timeline.duration <= 0:
            timeline = timeline.model_copy(update={"duration": duration})
        n = max(1, round(duration * self.fps))
        seed = image.provenance.get("seed") if isinstance(image.provenance.get("seed"), int) else 0
        sampler = TimelineSampler(timeline, blend=self.blend, lead=self.lead,
                                  auto_blink=self.idle_blinks, seed=int(seed or 0))  # fmt: skip
        cancel = cancel or threading.Event()

        made: Path | None = None  # a folder this call made for the video, kept on success
        if out_path is None:
            made = Path(tempfile.mkdtemp(prefix=TEMP_VIDEO_PREFIX))
            out_path = made / ("frames" if fmt == "png" else f"video.{fmt}")
        workdir = Path(tempfile.mkdtemp(prefix="avatarkit-render-"))
        try:
            audio = self._audio_file(voice, workdir)
            palette: list[Frame] = []
            if fmt == "gif":
                times = np.linspace(0, max(duration - 1e-3, 0), 8)
                palette = [self._draw(drawer, s, width, height) for s in sampler.sample_many(times)]
            bar = self._bar(n)
            try:
                with FrameEncoder(
                    out_path, width=width, height=height, fps=self.fps, audio=audio, format=fmt,
                    crf=self.crf, preset=self.preset, palette_frames=palette, cancel=cancel,
                    tune=self.tune, qp=self._qp(image, fmt),
                ) as enc:  # fmt: skip
                    for start in range(0, n, _CHUNK):
                        times = np.arange(start, min(start + _CHUNK, n)) / self.fps
                        for state in sampler.sample_many(times):
                            enc.write(self._draw(drawer, state, width, height))
                            done = enc.frames_written
                            if bar is not None:
                                bar.update(1)
                            if progress is not None:
                                progress(done, n)
            finally:
                if bar is not None:
                    bar.close()
        except BaseException:  # cancelled or failed: no empty folder left behind either
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return AvatarVideo(
            path=out_path, format=fmt, width=width, height=height, fps=self.fps, frame_count=n,
            duration=n / self.fps, has_audio=fmt in ("mp4", "webm", "png"), renderer="local",
        )  # fmt: skip

    async def idle(
        self, image: AvatarImage, seconds: float = 3.0, *, output: Path | None = None
    ) -> AvatarVideo:
        """A seamless loop of the avatar at rest: slow breathing sway and one blink, silent.

        The first and last frames show the rest pose (head straight, eyes open, mouth closed,
        neutral face), the pose every streamed segment starts and ends in, so a player can loop
        it while it waits for the next segment and switch at any loop boundary without a jump.
        Clips are kept per avatar and settings: asking again costs nothing.

        Args:
            image: The avatar.
            seconds: Length of the loop (0.5–30 s), rounded to whole frames.
            output: Where to write (a temporary file when None; the kept clip is copied there).

        Raises:
            InputValidationError: ``seconds`` out of range, or a bad image.
        """
        if not 0.5 <= seconds <= 30:
            raise InputValidationError(
                f"an idle loop lasts 0.5–30 s, got {seconds}", field="seconds"
            )
        fmt = self._format_for(Path(output) if output else None)
        frames = max(2, round(seconds * self.fps))
        key = (hashlib.sha1(image.data).hexdigest(), frames, self.fps, self.size, fmt, self.crf)
        cached = self._idle_clips.get(key)
        if cached is None or not cached.path.exists():
            voice, timeline = idle_timeline(frames / self.fps)
            cached = await self.render(image, voice, timeline, output=output)
            self._idle_clips[key] = cached
            return cached
        if output is not None and Path(output).resolve() != cached.path.resolve():
            from avatarkit._files import copy_atomic

            copy_atomic(cached.path, Path(output))
            return cached.model_copy(update={"path": Path(output)})
        return cached

    # ------------------------------------------------------------------ checks

    def _format_for(self, output: Path | None) -> VideoFormat:
        """The format to write: ``format`` or the output's suffix, which must agree.

        Raises:
            InputValidationError: the output names another format than ``format`` (WebM
                written into ``x.mp4`` would not play as its name says).
        """
        named = format_for_path(output) if output is not None else None
        if self.format and named and named != self.format:
            raise InputValidationError(
                f"cannot write {output}: this renderer writes {self.format} "
                f"(LocalRenderer(format={self.format!r})); name the output .{self.format}"
                if self.format != "png"
                else f"cannot write {output}: this renderer writes PNG frames into a folder",
                field="output",
            )
        return self.format or named or "mp4"

    @staticmethod
    def _check_size(w: int, h: int) -> None:
        if not (MIN_SIZE <= w <= MAX_SIZE and MIN_SIZE <= h <= MAX_SIZE):
            raise InputValidationError(
                f"frame size {w}x{h} is out of range ({MIN_SIZE}–{MAX_SIZE} pixels a side)",
                field="size",
            )

    def _frame_size(self, image: AvatarImage, fmt: VideoFormat) -> tuple[int, int]:
        if image.kind == "photo":  # the photo rig frames the face in a square of its own
            if self.size is None:
                side = 512
            else:
                side = self.size if isinstance(self.size, int) else min(self.size)
            side -= side % 2
            self._check_size(side, side)
            return side, side
        if self.size is None:
            w, h = image.width, image.height
            if max(w, h) > MAX_SIZE:  # scale big portraits down to fit
                f = MAX_SIZE / max(w, h)
                w, h = int(w * f), int(h * f)
        else:
            w, h = (self.size, self.size) if isinstance(self.size, int) else self.size
        if fmt in ("mp4", "webm"):
            w, h = w - w % 2, h - h % 2  # yuv420p needs even sides
        self._check_size(w, h)
        return w, h

    @staticmethod
    def _duration(voice: VoiceOutput, timeline: Timeline) -> float:
        if not voice.audio:
            raise InputValidationError("the voice has no audio to render", field="voice")
        duration = voice.duration
        if duration <= 0:  # not filled in: measure the audio itself
            samples, rate = decode_audio(voice.audio, voice.format, sample_rate=voice.sample_rate)
            duration = len(samples) / rate
        if duration <= 0:
            raise InputValidationError(
                "the voice's audio is zero-length: nothing to render", field="voice"
            )
        if duration > 3600:
            raise InputValidationError(f"a {duration:.0f} s clip is over the 1 h limit",
                                       field="voice")  # fmt: skip
        return float(duration)

    # ------------------------------------------------------------------ helpers

    def _acquire(self, image: AvatarImage, width: int, height: int) -> tuple[str, FrameDrawer]:
        """An idle drawer for this avatar and size, or a new one."""
        if image.kind == "procedural":  # procedural faces live in a process-wide pool
            from avatarkit.render.face import borrow_face
            from avatarkit.render.procedural import params_from_image

            return "", borrow_face(params_from_image(image), (width, height))
        ident = hashlib.sha1(image.data).hexdigest() + repr(image.face_box)
        key = f"{image.kind}:{width}x{height}:{ident}"
        with self._pool_lock:
            idle = self._pool.get(key)
            if idle:
                return key, idle.pop()
        return key, self._drawer(image, width, height)

    def _release(self, key: str, drawer: FrameDrawer) -> None:
        from avatarkit.render.face import ProceduralFace, return_face

        if isinstance(drawer, ProceduralFace):
            return_face(drawer)
            return
        with self._pool_lock:
            idle = self._pool.setdefault(key, [])
            self._pool.move_to_end(key)
            if len(idle) < 2:
                idle.append(drawer)
            while len(self._pool) > 4:
                self._pool.popitem(last=False)

    def _drawer(self, image: AvatarImage, width: int, height: int) -> FrameDrawer:
        if image.kind == "procedural":
            from avatarkit.render.face import ProceduralFace
            from avatarkit.render.procedural import params_from_image

            return ProceduralFace(params_from_image(image), (width, height))
        if image.kind == "photo":
            try:
                from avatarkit.render.photo import (  # type: ignore[import-not-found,unused-ignore]
                    PhotoRig,
                )
            except ImportError as exc:
                raise ConfigurationError(
                    "photo mode needs avatarkit.render.photo, which this installation lacks"
                ) from exc
            rig: FrameDrawer = PhotoRig(image, size=width)
            return rig
        raise InputValidationError(
            f"unknown image kind {image.kind!r}: the local renderer draws 'procedural' and "
            "'photo' avatars",
            field="image",
        )

    @staticmethod
    def _draw(drawer: FrameDrawer, state: FaceState, width: int, height: int) -> Frame:
        frame = drawer.draw(state)
        if frame.shape[0] != height or frame.shape[1] != width:
            frame = np.asarray(
                cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA), np.uint8
            )
        if frame.ndim == 3 and frame.shape[2] == 4:
            frame = np.ascontiguousarray(frame[..., :3])
        return frame

    def _qp(self, image: AvatarImage, fmt: VideoFormat) -> int | None:
        """The x264 constant quantiser for this avatar (mp4 without a ``crf``), else None."""
        return _QP.get(image.kind) if fmt == "mp4" and self.crf is None else None

    @staticmethod
    def _audio_file(voice: VoiceOutput, folder: Path) -> Path:
        """The voice's audio as a file ffmpeg reads (headerless PCM/µ-law become WAV)."""
        if voice.format in ("wav", "mp3", "flac", "ogg", "opus", "aac"):
            path = folder / f"speech.{voice.format}"
            path.write_bytes(voice.audio)
            return path
        samples, rate = decode_audio(voice.audio, voice.format, sample_rate=voice.sample_rate)
        path = folder / "speech.wav"
        path.write_bytes(encode_wav(samples, rate))
        return path

    def _bar(self, total: int) -> Any:
        if not self.progress_bar:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="frame", desc="rendering", leave=False)


def idle_timeline(seconds: float, *, sample_rate: int = 16_000) -> tuple[VoiceOutput, Timeline]:
    """Silence and a rest-pose timeline for an idle loop of ``seconds``.

    The head sways with whole periods of the loop (a slow breath in pitch, a slower drift in
    yaw and roll), so the last frame leads back into the first; one 150 ms blink falls in the
    middle. Every track is zero at both ends: the rest pose.
    """
    n = round(seconds * sample_rate)
    voice = VoiceOutput(
        audio=encode_wav(np.zeros(n, np.float32), sample_rate),
        format="wav",
        sample_rate=sample_rate,
        duration=n / sample_rate,
        voice="silence",
    )
    duration = voice.duration
    mid = duration * 0.55
    blink_t, blink_v = [mid, mid + 0.06, mid + 0.15], [0.0, 1.0, 0.0]
    grid = np.linspace(0.0, duration, max(3, round(duration / 0.1) + 1))
    times = np.unique(np.concatenate([grid, blink_t]))
    phase = 2 * np.pi * times / duration
    breaths = max(1, round(duration / 3.0))  # about one breath every three seconds
    blink = np.interp(times, blink_t, blink_v, left=0.0, right=0.0)
    poses = [
        AvatarPose(
            time=float(t),
            pitch=round(0.6 * float(np.sin(breaths * ph)), 4),
            yaw=round(0.5 * float(np.sin(ph)), 4),
            roll=round(0.3 * float(np.sin(ph)) * float(np.sin(ph / 2)), 4),
            blink=float(b),
        )
        for t, ph, b in zip(times, phase, blink, strict=True)
    ]
    poses.sort(key=lambda p: p.time)
    timeline = Timeline(duration=duration, poses=poses, viseme_source="none")
    return voice, timeline
