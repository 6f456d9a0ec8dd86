"""Streaming video encoding through the ffmpeg binary that ``imageio-ffmpeg`` ships.

Frames are piped into ffmpeg's stdin one by one, so memory stays flat however long the clip.
Output goes to a temporary file beside the target and is renamed into place when ffmpeg
succeeds; a failure or a cancellation kills ffmpeg and removes the partial file.

Formats:

- ``mp4``: H.264 (libx264, yuv420p, ``+faststart``) with AAC audio: plays in every browser.
- ``webm``: VP9 (libvpx-vp9, realtime deadline) with Opus audio.
- ``gif``: animated GIF with a palette made from sample frames (no audio).
- ``png``: a folder of numbered PNG frames plus ``audio.wav``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import numpy.typing as npt

from avatarkit.config import get_logger
from avatarkit.errors import (
    CancelledByUser,
    ConfigurationError,
    InputValidationError,
    ProviderError,
)
from avatarkit.types import video_format_of

__all__ = [
    "VIDEO_FORMATS",
    "FrameEncoder",
    "VideoFormat",
    "concat_videos",
    "ffmpeg_exe",
    "format_for_path",
]

if TYPE_CHECKING:
    from avatarkit.types import AvatarVideo

VideoFormat = Literal["mp4", "webm", "gif", "png"]
VIDEO_FORMATS: tuple[VideoFormat, ...] = ("mp4", "webm", "gif", "png")

Frame = npt.NDArray[np.uint8]
_log = get_logger("avatarkit.render.encode")
_PIPE_BYTES = 1 << 20

_fcntl: ModuleType | None
try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows
    _fcntl = None


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by ``imageio-ffmpeg`` (or ``IMAGEIO_FFMPEG_EXE``).

    Raises:
        ConfigurationError: no ffmpeg binary can be found.
    """
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ConfigurationError(
            "imageio-ffmpeg is not installed: pip install imageio-ffmpeg"
        ) from exc
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:  # pragma: no cover - broken wheel
        raise ConfigurationError(f"no ffmpeg binary found: {exc}") from exc


def _x264_threads() -> int:
    """x264 worker threads: one per core left over by the drawing thread, at most two.

    Frames are drawn by one Python thread at about the speed one x264 thread encodes them, so
    more encoder threads cannot go faster; on a 2-core machine x264's default frame threads
    only add contention (measured whole 10 s renders: 0.45–0.46 s against 0.48–0.51 s, and
    6 % less CPU).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 2
    return max(1, min(2, cores - 1))


def _widen_pipe(fd: int) -> None:
    """Grow a pipe's kernel buffer from 64 KiB to 1 MiB (Linux; elsewhere a no-op).

    A 512×512 frame is 384 KiB: through the default buffer every frame wakes ffmpeg and the
    writer several times. The wide pipe halves the context switches of a 10 s render (Python
    about 2,500 → 1,000, ffmpeg 5,200 → 3,800); its wall time was 0.87–1.06 of the narrow
    pipe's over nine interleaved sets (median 0.96), within this 2-core VM's noise.
    """
    setpipe = getattr(_fcntl, "F_SETPIPE_SZ", None)
    if _fcntl is not None and setpipe is not None:
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
            _fcntl.fcntl(fd, setpipe, _PIPE_BYTES)


def format_for_path(path: Path) -> VideoFormat:
    """The video format a file name asks for: its suffix, or ``png`` for a folder name.

    Raises:
        InputValidationError: the suffix names no supported format.
    """
    fmt = video_format_of(path)
    if fmt in ("mp4", "webm", "gif", "png"):
        return fmt  # type: ignore[return-value]
    raise InputValidationError(
        f"cannot tell the video format from {path.name!r}: use .mp4, .webm, .gif or a folder "
        "name (PNG sequence)",
        field="output",
    )


class FrameEncoder:
    """Encode RGB frames into a video file as they are drawn.

    Use as a context manager: ``write()`` each ``HxWx3`` uint8 RGB frame, and leaving the block
    without an error finishes the file and renames it into place. An exception (including
    :class:`~avatarkit.errors.CancelledByUser`) inside the block kills ffmpeg and removes the
    partial output.

    Frames are handed to a writer thread through a small bounded queue, so drawing the next
    frame overlaps with ffmpeg reading the last one.

    Args:
        path: Target file (``.mp4``/``.webm``/``.gif``) or folder (PNG sequence).
        width: Frame width in pixels (even for mp4/webm).
        height: Frame height in pixels (even for mp4/webm).
        fps: Frames per second.
        audio: A WAV/MP3/FLAC/OGG file to mux in (mp4, webm; copied beside PNG frames).
        format: Output format; guessed from ``path`` when None.
        crf: Constant-rate quality (lower is better; mp4 default 20, webm default 34).
        qp: A constant quantiser for mp4 instead of ``crf`` (lower is better), for callers that
            know their content: it skips x264's per-frame rate-control analysis (on flat
            illustrations QP 14 looks like CRF 20 and encodes with 17 % fewer instructions).
        preset: x264 preset; ``ultrafast`` favours speed, ``veryfast`` halves the file size.
        tune: x264 tuning (``animation`` makes flat illustrations about 25 % smaller at the
            same speed; None for photographic content).
        palette_frames: Sample frames to build the GIF palette from (GIF only).
        cancel: When set, the next ``write()`` raises CancelledByUser.
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: float,
        audio: Path | None = None,
        format: VideoFormat | None = None,
        crf: int | None = None,
        qp: int | None = None,
        preset: str = "ultrafast",
        tune: str | None = None,
        palette_frames: Sequence[Frame] = (),
        cancel: threading.Event | None = None,
    ) -> None:
        self.path = Path(path)
        self.format: VideoFormat = format or format_for_path(self.path)
        if self.format not in VIDEO_FORMATS:
            raise InputValidationError(f"unknown video format {self.format!r}", field="format")
        if width <= 0 or height <= 0:
            raise InputValidationError(f"bad frame size {width}x{height}", field="size")
        if self.format in ("mp4", "webm") and (width % 2 or height % 2):
            raise InputValidationError(
                f"{self.format} needs even frame sizes, got {width}x{height}", field="size"
            )
        if not 0 < fps <= 240:
            raise InputValidationError(f"fps must be in (0, 240], got {fps}", field="fps")
        if self.format == "png" and self.path.exists():
            ours = self.path.is_dir() and all(
                p.name == "audio.wav" or (p.name.startswith("frame_") and p.suffix == ".png")
                for p in self.path.iterdir()
            )
            if not ours:  # never delete a folder of the user's files to make room for frames
                raise InputValidationError(
                    f"{self.path} exists and is not a folder of frames from an earlier render: "
                    "give a new folder name for the PNG sequence",
                    field="output",
                )
        if self.format != "png" and self.path.is_dir():
            raise InputValidationError(f"{self.path} is a folder, not a video file name",
                                       field="output")  # fmt: skip
        self.width, self.height, self.fps = width, height, fps
        self.audio = audio
        if qp is not None and crf is not None:
            raise InputValidationError("give crf or qp, not both", field="qp")
        if qp is not None and (self.format != "mp4" or not 0 <= qp <= 51):
            raise InputValidationError(f"qp is an mp4 setting in [0, 51], got {qp} for "
                                       f"{self.format}", field="qp")  # fmt: skip
        self.crf = crf
        self.qp = qp
        self.preset = preset
        self.tune = tune
        self.palette_frames = list(palette_frames)
        self.cancel = cancel or threading.Event()
        self.frames_written = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._workdir: Path | None = None
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=6)
        self._writer: threading.Thread | None = None
        self._writer_error: BaseException | None = None
        self._yuv = self.format in ("mp4", "webm")

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FrameEncoder:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        """Start ffmpeg writing into a temporary file beside the target."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._workdir = Path(tempfile.mkdtemp(prefix=".avatarkit-", dir=self.path.parent))
        try:
            self._start()
        except BaseException:  # ffmpeg did not start: leave nothing in the user's folder
            self.abort()
            raise

    def _start(self) -> None:
        assert self._workdir is not None
        if self.format == "png":
            self._tmp = self._workdir / "frames"
            self._tmp.mkdir()
        else:
            self._tmp = self._workdir / f"out.{self.format}"
        cmd = self._command()
        _log.debug("ffmpeg: %s", " ".join(cmd))
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert self._proc.stdin is not None
        _widen_pipe(self._proc.stdin.fileno())
        self._stderr: list[bytes] = []
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()
        self._writer = threading.Thread(
            target=self._write_loop, name="avatarkit-encode", daemon=True
        )
        self._writer.start()

    def write(self, frame: Frame) -> None:
        """Queue one ``HxWx3`` uint8 RGB frame for encoding.

        Raises:
            CancelledByUser: the cancel event is set (the partial output is removed on exit).
            ProviderError: ffmpeg stopped with an error.

        An error converting an earlier frame in the writer thread (out of memory, say) is
        raised again here or by :meth:`close`; the clip is never finished short.
        """
        if self.cancel.is_set():
            raise CancelledByUser("render cancelled")
        self._raise_writer_error()
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise InputValidationError(
                f"frame must be {self.height}x{self.width}x3 uint8, got {frame.shape} {frame.dtype}"
            )
        data = np.ascontiguousarray(frame)  # converted and written by the writer thread
        while True:
            try:
                self._queue.put(data, timeout=0.1)
                break
            except queue.Full:
                if self.cancel.is_set():
                    raise CancelledByUser("render cancelled") from None
                self._raise_writer_error()
        self.frames_written += 1

    def _raise_writer_error(self) -> None:
        if (failure := self._writer_failure()) is not None:
            raise failure from None

    def _writer_failure(self) -> BaseException | None:
        """The error for what stopped the writer thread, or None while it runs.

        A broken pipe means ffmpeg stopped: its own failure. Anything else is the frame
        conversion's error, raised as it is.
        """
        err = self._writer_error
        if err is None:
            return None
        return self._ffmpeg_failed() if isinstance(err, OSError) else err

    def close(self) -> Path:
        """Finish the file and move it into place; returns the final path."""
        assert self._proc is not None and self._tmp is not None and self._workdir is not None
        while self._writer is not None and self._writer.is_alive():
            try:  # a writer stopped by a broken pipe no longer empties the queue
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        if self._writer is not None:
            self._writer.join()
        rc = self._proc.wait()
        self._stderr_reader.join(timeout=5)
        if self._proc.stderr is not None and not self._stderr_reader.is_alive():
            self._proc.stderr.close()  # read to its end: close it (no ResourceWarning)
        if self.cancel.is_set():
            self.abort()
            raise CancelledByUser("render cancelled")
        failure = self._writer_failure() or (self._ffmpeg_failed() if rc != 0 else None)
        if failure is not None:
            self.abort()
            raise failure
        try:
            if self.format == "png":
                if self.audio is not None:
                    shutil.copyfile(self.audio, self._tmp / "audio.wav")
                if self.path.exists():
                    shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
            os.replace(self._tmp, self.path)
        finally:
            shutil.rmtree(self._workdir, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Kill ffmpeg and remove every partial output."""
        self.cancel.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        # Unblock the writer thread (it may be waiting on a full queue or a full pipe).
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._queue.put(None)
        if self._writer is not None:
            self._writer.join(timeout=5)
        if proc is not None:
            proc.wait()
            if proc.stdin is not None and not proc.stdin.closed:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            reader = getattr(self, "_stderr_reader", None)
            if reader is not None:
                reader.join(timeout=5)
            if proc.stderr is not None and (reader is None or not reader.is_alive()):
                proc.stderr.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    # ------------------------------------------------------------------ internals

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)
            del self._stderr[:-30]

    def _write_loop(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        stdin = self._proc.stdin
        try:
            while True:
                data = self._queue.get()
                if data is None or self.cancel.is_set():
                    break
                # cv2 releases the GIL, so converting here overlaps the next frame's drawing
                raw = cv2.cvtColor(data, cv2.COLOR_RGB2YUV_I420) if self._yuv else data
                stdin.write(np.ascontiguousarray(raw, np.uint8).data)
        except Exception as exc:  # a broken pipe (ffmpeg stopped), or a conversion that failed
            if not self.cancel.is_set():
                self._writer_error = exc
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _ffmpeg_failed(self) -> ProviderError:
        tail = b"".join(self._stderr[-10:]).decode(errors="replace").strip()
        return ProviderError(
            f"ffmpeg failed to encode {self.format}: {tail or 'no output'}", provider="ffmpeg"
        )

    def _palette(self) -> Path:
        """Build a GIF palette from the sample frames (ffmpeg palettegen)."""
        assert self._workdir is not None
        palette = self._workdir / "palette.png"
        frames = self.palette_frames or [np.zeros((self.height, self.width, 3), np.uint8)]
        raw = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
            "-i", "-", "-vf", "palettegen=max_colors=128:stats_mode=full", str(palette),
        ]  # fmt: skip
        done = subprocess.run(cmd, input=raw, capture_output=True, check=False)
        if done.returncode != 0:
            raise ProviderError(
                f"ffmpeg palettegen failed: {done.stderr.decode(errors='replace')[-300:]}",
                provider="ffmpeg",
            )
        return palette

    def _command(self) -> list[str]:
        assert self._tmp is not None
        pix = "yuv420p" if self._yuv else "rgb24"
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "rawvideo", "-pix_fmt", pix, "-s", f"{self.width}x{self.height}",
            "-framerate", f"{self.fps:g}", "-i", "pipe:0",
        ]  # fmt: skip
        # -nostdin stops ffmpeg reading keys from the terminal; pipe:0 still feeds frames.
        audio = self.audio if self.format in ("mp4", "webm") else None
        if audio is not None:
            if audio.suffix.lower() == ".wav":
                # a WAV header names its codec and layout; probing 5 MB of the samples besides
                # costs ffmpeg about 80 M instructions a render (5 % of a 10 s clip's encode)
                cmd += ["-probesize", "32"]
            cmd += ["-i", str(audio)]
        if self.format == "mp4":
            crf = self.crf if self.crf is not None else 20
            rate = ["-qp", str(self.qp)] if self.qp is not None else ["-crf", str(crf)]
            cmd += [
                "-map", "0:v:0", "-c:v", "libx264", "-threads", str(_x264_threads()),
                "-preset", self.preset, *rate, "-pix_fmt", "yuv420p", "-movflags", "+faststart",
            ]  # fmt: skip
            if self.tune:
                cmd += ["-tune", self.tune]
            if audio is not None:
                # the "fast" AAC coder halves audio encoding time, and 96 kb/s (transparent for
                # speech) takes 40 % less than 128 kb/s: 0.045 s against 0.075 s per 10 s
                cmd += ["-map", "1:a:0", "-c:a", "aac", "-aac_coder", "fast", "-b:a", "96k"]
        elif self.format == "webm":
            cmd += [
                "-map", "0:v:0", "-c:v", "libvpx-vp9", "-deadline", "realtime",
                "-cpu-used", "8", "-row-mt", "1", "-b:v", "0",
                "-crf", str(self.crf if self.crf is not None else 34), "-pix_fmt", "yuv420p",
            ]  # fmt: skip
            if audio is not None:
                cmd += ["-map", "1:a:0", "-c:a", "libopus", "-b:a", "96k"]
        elif self.format == "gif":
            palette = self._palette()
            cmd += [
                "-i", str(palette), "-lavfi", "[0:v][1:v]paletteuse=dither=bayer:bayer_scale=4",
                "-loop", "0",
            ]  # fmt: skip
        else:  # png sequence
            cmd += ["-c:v", "png", "-f", "image2", "-start_number", "0"]
            return [*cmd, str(self._tmp / "frame_%05d.png")]
        return [*cmd, str(self._tmp)]


def concat_videos(
    videos: Sequence[AvatarVideo], output: Path, *, audio: Path | None = None
) -> AvatarVideo:
    """Join clips of one format and size end to end, without re-encoding (ffmpeg concat).

    Used to stitch sentence-by-sentence segments into one video. The result is written to a
    temporary file beside ``output`` and renamed into place.

    Args:
        videos: The clips, in order; all ``mp4`` or all ``webm``, of one size and frame rate.
        output: Where to write the joined clip.
        audio: A sound file to use as the joined clip's whole soundtrack (streaming turns pass
            the segments' joined speech, so the sound is sample-exact at every joint) instead
            of the clips' own tracks cut to their videos' lengths.

    Raises:
        InputValidationError: no clips, or clips that differ in format, size or frame rate.
        ProviderError: ffmpeg failed.
    """
    from avatarkit.types import AvatarVideo as _Video

    if not videos:
        raise InputValidationError("no videos to join", field="videos")
    first = videos[0]
    if first.format not in ("mp4", "webm"):
        raise InputValidationError(
            f"only mp4 and webm clips can be joined, not {first.format}", field="videos"
        )
    for v in videos[1:]:
        if (v.format, v.width, v.height, v.fps) != (
            first.format,
            first.width,
            first.height,
            first.fps,
        ):
            raise InputValidationError(
                "clips to join must share format, size and frame rate", field="videos"
            )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if len(videos) == 1 and audio is None:
        if first.path.resolve() != output.resolve():
            shutil.copyfile(first.path, output)
        return first.model_copy(update={"path": output})
    work = Path(tempfile.mkdtemp(prefix=".avatarkit-concat-", dir=output.parent))
    exe = ffmpeg_exe()
    base = [exe, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]

    def run(cmd: list[str], what: str) -> bytes:
        done = subprocess.run(cmd, capture_output=True, check=False)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace")[-300:]
            raise ProviderError(f"ffmpeg could not {what}: {tail}", provider="ffmpeg")
        return done.stdout

    try:
        # Video: stream copy, each clip placed at exactly the sum of the earlier durations.
        listing = work / "list.txt"
        lines = []
        for v in videos:
            escaped = str(Path(v.path).resolve()).replace("'", "'\\''")
            lines += [f"file '{escaped}'", f"duration {v.duration:.6f}"]
        listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
        video_only = work / f"video.{first.format}"
        run([*base, "-f", "concat", "-safe", "0", "-i", str(listing), "-map", "0:v:0",
             "-c", "copy", str(video_only)], "join the clips")  # fmt: skip
        tmp = work / f"joined.{first.format}"
        codec = (["-c:a", "aac", "-aac_coder", "fast", "-b:a", "96k"]
                 if first.format == "mp4" else ["-c:a", "libopus", "-b:a", "96k"])  # fmt: skip
        faststart = ["-movflags", "+faststart"] if first.format == "mp4" else []
        if audio is not None:
            run([*base, "-i", str(video_only), "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
                 "-c:v", "copy", *codec, *faststart, str(tmp)], "mux the soundtrack")  # fmt: skip
        elif all(v.has_audio for v in videos):
            # Audio: each clip's track cut or padded to its video's length, re-encoded once,
            # so sound and picture stay aligned at every joint.
            pcm = work / "audio.pcm"
            with pcm.open("wb") as fh:
                for v in videos:
                    fh.write(run([*base, "-i", str(v.path), "-vn", "-af", "apad", "-t",
                                  f"{v.duration:.6f}", "-f", "s16le", "-ac", "1", "-ar", "48000",
                                  "-"], "read a clip's audio"))  # fmt: skip
            cmd = [*base, "-i", str(video_only), "-f", "s16le", "-ac", "1", "-ar", "48000",
                   "-i", str(pcm), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                   *codec]  # fmt: skip
            if first.format == "mp4":
                cmd += ["-movflags", "+faststart"]
            run([*cmd, str(tmp)], "mux the joined audio")
        else:
            tmp = video_only
        os.replace(tmp, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _Video(
        path=output,
        format=first.format,
        width=first.width,
        height=first.height,
        fps=first.fps,
        frame_count=sum(v.frame_count for v in videos),
        duration=sum(v.duration for v in videos),
        has_audio=audio is not None or all(v.has_audio for v in videos),
        renderer=first.renderer,
    )
