"""The streaming encoder: formats, validation, atomic output and abort."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from avatarkit.errors import CancelledByUser, InputValidationError, ProviderError
from avatarkit.render.encode import FrameEncoder, ffmpeg_exe, format_for_path


def _frames(n: int, w: int = 64, h: int = 48) -> list[np.ndarray]:
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, : (i * 7) % w] = (200, 80, 40)
        out.append(f)
    return out


def _count_frames(path: Path) -> int:
    done = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    )  # fmt: skip
    return len(done.stdout) // (64 * 48 * 3)


def test_format_from_path() -> None:
    assert format_for_path(Path("a.MP4")) == "mp4"
    assert format_for_path(Path("clip.webm")) == "webm"
    assert format_for_path(Path("frames")) == "png"
    with pytest.raises(InputValidationError):
        format_for_path(Path("a.avi"))


@pytest.mark.parametrize("suffix", ["mp4", "webm", "gif"])
def test_each_format_round_trips_every_frame(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"v.{suffix}"
    frames = _frames(12)
    with FrameEncoder(out, width=64, height=48, fps=12, palette_frames=frames[:3]) as enc:
        for f in frames:
            enc.write(f)
    assert out.exists()
    assert _count_frames(out) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp files left


def test_bad_frames_and_sizes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match="even"):
        FrameEncoder(tmp_path / "odd.mp4", width=63, height=48, fps=10)
    with pytest.raises(InputValidationError, match="fps"):
        FrameEncoder(tmp_path / "a.mp4", width=64, height=48, fps=0)
    with (
        pytest.raises(InputValidationError, match="frame must be"),
        FrameEncoder(tmp_path / "a.mp4", width=64, height=48, fps=10) as enc,
    ):
        enc.write(np.zeros((10, 10, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_cancel_removes_partial_output(tmp_path: Path) -> None:
    cancel = threading.Event()
    out = tmp_path / "v.mp4"
    with (
        pytest.raises(CancelledByUser),
        FrameEncoder(out, width=64, height=48, fps=10, cancel=cancel) as enc,
    ):
        for i, f in enumerate(_frames(50)):
            if i == 5:
                cancel.set()
            enc.write(f)
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_dying_after_the_last_frame_fails_close_without_hanging(tmp_path: Path) -> None:
    # ffmpeg stops (a full disk, say) while frames still wait in the queue: close() must
    # report it, not wait forever to hand the end-of-stream marker to a writer that is gone
    out = tmp_path / "v.mp4"
    enc = FrameEncoder(out, width=64, height=48, fps=10)
    enc.open()
    assert enc._proc is not None and enc._writer is not None
    enc._proc.kill()
    enc._proc.wait()
    frames = _frames(1 + enc._queue.maxsize)
    enc.write(frames[0])
    enc._writer.join(timeout=10)  # it stops at the broken pipe
    assert not enc._writer.is_alive()
    for f in frames[1:]:  # queued before the failure was seen: the queue is full
        enc._queue.put_nowait(f)
    result: list[BaseException] = []
    closing = threading.Thread(target=lambda: _capture(enc.close, result), daemon=True)
    closing.start()
    closing.join(timeout=20)
    assert not closing.is_alive(), "close() hung"
    assert len(result) == 1 and isinstance(result[0], ProviderError)
    assert list(tmp_path.iterdir()) == []


def test_a_frame_the_writer_cannot_convert_fails_the_video_instead_of_truncating_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import avatarkit.render.encode as encode

    real = encode.cv2.cvtColor
    calls = {"n": 0}

    def flaky(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise MemoryError("no room for the converted frame")
        return real(*args, **kwargs)

    monkeypatch.setattr(encode.cv2, "cvtColor", flaky)
    out = tmp_path / "v.mp4"
    with (  # raised by a later write or by close: the clip must not be finished short
        pytest.raises(MemoryError, match="no room"),
        FrameEncoder(out, width=64, height=48, fps=10) as enc,
    ):
        for f in _frames(12):
            enc.write(f)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", ["mp4", "gif"])
def test_ffmpeg_failing_to_start_leaves_nothing_beside_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    import avatarkit.render.encode as encode

    monkeypatch.setattr(encode, "ffmpeg_exe", lambda: str(tmp_path / "no-such-ffmpeg"))
    with (
        pytest.raises(OSError),
        FrameEncoder(tmp_path / f"v.{suffix}", width=64, height=48, fps=10) as enc,
    ):
        enc.write(_frames(1)[0])
    assert list(tmp_path.iterdir()) == []  # no hidden work folder left in the user's folder


def _capture(call: Callable[[], object], into: list[BaseException]) -> None:
    try:
        call()
    except BaseException as exc:  # handed to the test's thread
        into.append(exc)


def test_existing_file_is_replaced_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "v.mp4"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), FrameEncoder(out, width=64, height=48, fps=10) as enc:
        enc.write(_frames(1)[0])
        raise RuntimeError("boom")
    assert out.read_bytes() == b"old"


def test_concat_videos_joins_segments(tmp_path: Path) -> None:
    from avatarkit.audio import encode_wav
    from avatarkit.render.encode import concat_videos
    from avatarkit.types import AvatarVideo

    clips = []
    for i, n in enumerate((10, 15)):
        audio = tmp_path / f"a{i}.wav"
        audio.write_bytes(encode_wav(np.zeros(16000 * n // 10, np.float32), 16000))
        out = tmp_path / f"c{i}.mp4"
        with FrameEncoder(out, width=64, height=48, fps=10, audio=audio) as enc:
            for f in _frames(n):
                enc.write(f)
        clips.append(AvatarVideo(path=out, width=64, height=48, fps=10, frame_count=n,
                                 duration=n / 10, has_audio=True))  # fmt: skip
    joined = concat_videos(clips, tmp_path / "all.mp4")
    assert joined.frame_count == 25 and joined.duration == pytest.approx(2.5)
    assert _count_frames(joined.path) == 25
    pcm = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(joined.path), "-vn", "-f", "s16le", "-ac", "1",
         "-ar", "16000", "-"], capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert abs(len(pcm) / 2 / 16000 - 2.5) <= 0.1  # audio and video agree within a frame
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(InputValidationError):
        concat_videos([], tmp_path / "none.mp4")


def test_png_sequence_never_replaces_a_folder_of_other_files(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputValidationError, match="exists"):
        FrameEncoder(mine, width=64, height=48, fps=10)
    assert (mine / "notes.txt").read_text() == "keep me"
    frames = tmp_path / "frames"
    for _ in range(2):  # an earlier render's frames are replaced
        with FrameEncoder(frames, width=64, height=48, fps=10) as enc:
            for f in _frames(3):
                enc.write(f)
    assert sorted(p.name for p in frames.iterdir()) == [f"frame_{i:05d}.png" for i in range(3)]


def test_frames_go_through_a_wide_pipe(tmp_path: Path) -> None:
    # a 512x512 frame is 384 KiB: the default 64 KiB pipe wakes ffmpeg several times a frame
    fcntl = pytest.importorskip("fcntl")
    limit = Path("/proc/sys/fs/pipe-max-size")
    if not hasattr(fcntl, "F_GETPIPE_SZ") or int(limit.read_text()) < 1 << 20:
        pytest.skip("needs Linux pipes that may grow to 1 MiB")
    with FrameEncoder(tmp_path / "v.mp4", width=64, height=48, fps=10) as enc:
        assert enc._proc is not None and enc._proc.stdin is not None
        assert fcntl.fcntl(enc._proc.stdin.fileno(), fcntl.F_GETPIPE_SZ) == 1 << 20
        for f in _frames(3):
            enc.write(f)
    assert _count_frames(tmp_path / "v.mp4") == 3


def test_rate_control_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match="crf or qp"):
        FrameEncoder(tmp_path / "a.mp4", width=64, height=48, fps=10, crf=20, qp=14)
    with pytest.raises(InputValidationError, match="qp"):
        FrameEncoder(tmp_path / "a.mp4", width=64, height=48, fps=10, qp=52)
    with pytest.raises(InputValidationError, match="mp4"):
        FrameEncoder(tmp_path / "a.webm", width=64, height=48, fps=10, qp=14)
