"""The local renderer end to end: decode the MP4 it writes and check sync, motion and cleanup."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from avatarkit.animation.face_state import FaceState
from avatarkit.audio import encode_wav
from avatarkit.errors import CancelledByUser, InputValidationError
from avatarkit.ports import Renderer
from avatarkit.render.encode import ffmpeg_exe
from avatarkit.render.face import ProceduralFace
from avatarkit.render.local import LocalRenderer
from avatarkit.render.procedural import generate_procedural, params_from_image
from avatarkit.types import AvatarImage, Timeline, VisemeCue, VoiceOutput

SR = 16000
FPS = 25
SIZE = 192


def _speech(duration: float, bursts: list[tuple[float, float]]) -> tuple[VoiceOutput, Timeline]:
    """A tone that is loud during ``bursts`` and silent between, with visemes while loud."""
    t = np.arange(int(SR * duration)) / SR
    env = np.zeros_like(t)
    for a, b in bursts:
        env[(t >= a) & (t < b)] = 1.0
    audio = (0.4 * np.sin(2 * np.pi * 180 * t) * env).astype(np.float32)
    voice = VoiceOutput(audio=encode_wav(audio, SR), sample_rate=SR, duration=duration)
    shapes = ["aa", "E", "oh", "ih", "aa", "ou", "E", "aa"]
    cues: list[VisemeCue] = []
    for a, b in bursts:
        edges = np.linspace(a, b, 5)
        for i in range(4):
            cues.append(VisemeCue(viseme=shapes[(len(cues)) % len(shapes)], start=float(edges[i]),
                                  end=float(edges[i + 1])))  # fmt: skip
    return voice, Timeline(duration=duration, visemes=cues)


def _decode(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Video frames (n, h, w, 3) and mono 16 kHz audio samples of a media file."""
    exe = ffmpeg_exe()
    video = subprocess.run(
        [exe, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    audio = subprocess.run(
        [exe, "-v", "error", "-i", str(path), "-vn", "-f", "s16le", "-ac", "1", "-ar", str(SR),
         "-"], capture_output=True, check=True,
    ).stdout  # fmt: skip
    frames = np.frombuffer(video, np.uint8).reshape(-1, size, size, 3)
    return frames, np.frombuffer(audio, "<i2").astype(np.float32) / 32768


@pytest.fixture(scope="module")
def avatar() -> AvatarImage:
    return generate_procedural(21, size=SIZE, skin="#f7d0af")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, avatar: AvatarImage) -> dict[str, object]:
    bursts = [(0.4, 1.0), (1.6, 2.2)]
    voice, timeline = _speech(2.6, bursts)
    out = tmp_path_factory.mktemp("video") / "talk.mp4"
    seen: list[tuple[int, int]] = []
    video = LocalRenderer(fps=FPS, idle_blinks=False).render_sync(
        avatar, voice, timeline, output=out, progress=lambda d, n: seen.append((d, n))
    )
    return {"video": video, "out": out, "bursts": bursts, "progress": seen, "voice": voice}


def test_renderer_satisfies_the_port() -> None:
    r = LocalRenderer()
    assert isinstance(r, Renderer)
    caps = r.capabilities
    assert set(caps.image_kinds) == {"procedural", "photo"}
    assert set(caps.formats) >= {"mp4", "webm", "gif", "png"}
    assert caps.offline and caps.expressions


def test_mp4_video_and_audio_durations_agree(rendered: dict[str, object]) -> None:
    video = rendered["video"]
    out = rendered["out"]
    assert isinstance(out, Path) and out.exists()
    frames, audio = _decode(out, SIZE)
    video_s = len(frames) / FPS
    audio_s = len(audio) / SR
    assert abs(video_s - 2.6) <= 1 / FPS
    assert abs(audio_s - video_s) <= 1 / FPS
    assert video.frame_count == len(frames)  # type: ignore[attr-defined]
    assert video.has_audio and video.format == "mp4"  # type: ignore[attr-defined]
    # the muxed audio is the voice: loud in the bursts, silent between
    assert np.abs(audio[int(0.5 * SR) : int(0.9 * SR)]).max() > 0.2
    assert np.abs(audio[int(1.2 * SR) : int(1.4 * SR)]).max() < 0.02


def test_mouth_moves_with_loud_speech_and_rests_in_pauses(
    rendered: dict[str, object], avatar: AvatarImage
) -> None:
    frames, audio = _decode(rendered["out"], SIZE)  # type: ignore[arg-type]
    face = ProceduralFace(params_from_image(avatar), SIZE)
    x, y, w, h = face.mouth_box
    mouth = frames[:, y : y + h, x : x + w].astype(np.float32)
    hop = SR // FPS
    env = np.array([np.sqrt(np.mean(audio[i * hop : (i + 1) * hop] ** 2) + 1e-12)
                    for i in range(len(frames))])  # fmt: skip
    loud = env > 0.1
    quiet = env < 0.01
    assert loud.sum() > 20 and quiet.sum() > 20
    # the resting mouth: the typical look of the mouth region during the pauses
    rest = np.median(mouth[quiet], axis=0)
    activity = np.abs(mouth - rest).mean(axis=(1, 2, 3))
    # in pauses the mouth rests (only codec noise); while speech is loud it clearly moves
    assert np.percentile(activity[quiet], 90) < 3.0
    assert np.median(activity[loud]) > 3 * np.percentile(activity[quiet], 90)
    assert np.corrcoef(activity, env)[0, 1] > 0.6


def test_progress_is_reported_per_frame(rendered: dict[str, object]) -> None:
    seen = rendered["progress"]
    assert isinstance(seen, list)
    assert seen[-1] == (65, 65)
    assert [d for d, _ in seen] == list(range(1, 66))


def test_cancellation_leaves_no_partial_file(tmp_path: Path, avatar: AvatarImage) -> None:
    voice, timeline = _speech(4.0, [(0.2, 3.8)])
    cancel = threading.Event()
    out = tmp_path / "cancelled.mp4"

    def progress(done: int, total: int) -> None:
        if done == 10:
            cancel.set()

    with pytest.raises(CancelledByUser):
        LocalRenderer(fps=FPS).render_sync(avatar, voice, timeline, output=out,
                                           progress=progress, cancel=cancel)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_a_cancelled_render_without_an_output_leaves_no_temporary_folder(
    tmp_path: Path, avatar: AvatarImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp puts its folders
    voice, timeline = _speech(4.0, [(0.2, 3.8)])
    cancel = threading.Event()

    def progress(done: int, total: int) -> None:
        if done == 10:
            cancel.set()

    with pytest.raises(CancelledByUser):
        LocalRenderer(fps=FPS).render_sync(avatar, voice, timeline, progress=progress,
                                           cancel=cancel)  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_async_task_cancellation_stops_the_render(tmp_path: Path, avatar: AvatarImage) -> None:
    voice, timeline = _speech(30.0, [(0.2, 29.0)])
    out = tmp_path / "long.mp4"
    started = threading.Event()

    async def main() -> None:
        task = asyncio.create_task(
            LocalRenderer(fps=FPS).render(
                avatar, voice, timeline, output=out, progress=lambda d, n: started.set()
            )
        )
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert list(tmp_path.iterdir()) == []


def test_a_render_that_finishes_as_it_is_cancelled_leaves_no_temporary_video(
    tmp_path: Path, avatar: AvatarImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    voice, timeline = _speech(0.4, [(0.1, 0.3)])
    renderer = LocalRenderer(fps=FPS, size=64)
    real = renderer.render_sync
    entered, release = threading.Event(), threading.Event()

    def finishing_anyway(*args: object, **kw: object):  # type: ignore[no-untyped-def]
        entered.set()
        release.wait(5)
        kw["cancel"] = None  # too late to stop: the clip is done
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(renderer, "render_sync", finishing_anyway)

    async def main() -> None:
        task = asyncio.create_task(renderer.render(avatar, voice, timeline))
        while not entered.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.01)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert list(tmp_path.iterdir()) == []  # nobody receives that clip: it is not kept


def test_other_formats(tmp_path: Path, avatar: AvatarImage) -> None:
    voice, timeline = _speech(0.8, [(0.1, 0.7)])
    r = LocalRenderer(fps=10)
    webm = r.render_sync(avatar, voice, timeline, output=tmp_path / "a.webm")
    frames, audio = _decode(webm.path, SIZE)
    assert len(frames) == 8 and abs(len(audio) / SR - 0.8) <= 0.1
    gif = r.render_sync(avatar, voice, timeline, output=tmp_path / "a.gif")
    assert gif.path.read_bytes()[:6] in (b"GIF89a", b"GIF87a") and not gif.has_audio
    png = r.render_sync(avatar, voice, timeline, output=tmp_path / "frames")
    names = sorted(p.name for p in png.path.iterdir())
    assert names[0] == "audio.wav" and len(names) == 9
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_fixed_format_refuses_an_output_named_for_another(
    tmp_path: Path, avatar: AvatarImage
) -> None:
    voice, timeline = _speech(0.4, [(0.1, 0.3)])
    r = LocalRenderer(fps=10, format="webm")
    assert r.capabilities.formats == ("webm",)  # so a bot refuses x.mp4 before the voice
    with pytest.raises(InputValidationError, match=r"x\.mp4.*webm"):
        r.render_sync(avatar, voice, timeline, output=tmp_path / "x.mp4")
    with pytest.raises(InputValidationError, match=r"x\.gif.*webm"):
        asyncio.run(r.idle(avatar, 1.0, output=tmp_path / "x.gif"))
    assert list(tmp_path.iterdir()) == []  # nothing written under the wrong name
    video = r.render_sync(avatar, voice, timeline, output=tmp_path / "x.webm")
    assert video.format == "webm" and video.path.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"


def test_default_output_is_a_temporary_file(avatar: AvatarImage) -> None:
    voice, timeline = _speech(0.4, [(0.1, 0.3)])
    video = asyncio.run(LocalRenderer(fps=10).render(avatar, voice, timeline))
    assert video.path.exists() and video.path.suffix == ".mp4"
    shutil.rmtree(video.path.parent)


def test_bad_inputs_are_typed_errors(tmp_path: Path, avatar: AvatarImage) -> None:
    voice, timeline = _speech(0.4, [(0.1, 0.3)])
    with pytest.raises(InputValidationError, match="fps"):
        LocalRenderer(fps=0)
    with pytest.raises(InputValidationError, match="size"):
        LocalRenderer(size=10_000)
    silent = VoiceOutput(audio=encode_wav(np.zeros(0, np.float32), SR), sample_rate=SR,
                         duration=0.0)  # fmt: skip
    with pytest.raises(InputValidationError, match="zero-length"):
        LocalRenderer().render_sync(avatar, silent, Timeline(), output=tmp_path / "x.mp4")
    unset = voice.model_copy(update={"duration": 0.0})  # duration not filled in: measured
    measured = LocalRenderer(fps=10).render_sync(avatar, unset, timeline, output=tmp_path / "m.mp4")
    assert measured.frame_count == 4
    measured.path.unlink()
    odd = AvatarImage.model_construct(**{**avatar.model_dump(), "kind": "cartoon"})
    with pytest.raises(InputValidationError, match="image kind"):
        LocalRenderer().render_sync(odd, voice, timeline, output=tmp_path / "y.mp4")
    with pytest.raises(InputValidationError, match="format"):
        LocalRenderer().render_sync(avatar, voice, timeline, output=tmp_path / "z.avi")
    assert list(tmp_path.iterdir()) == []


class _StandInRig:
    """A minimal photo rig: a dark mouth bar whose height follows the jaw."""

    def __init__(self, image: AvatarImage, *, size: int = 512) -> None:
        self.size = size

    def draw(self, state: FaceState) -> np.ndarray:
        w = h = self.size
        frame = np.full((h, w, 3), 200, np.uint8)
        bar = int(2 + state.jaw_open * h * 0.2)
        frame[h // 2 : h // 2 + bar, w // 3 : 2 * w // 3] = 40
        return frame


def test_photo_images_go_to_the_photo_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("avatarkit.render.photo")
    module.PhotoRig = _StandInRig  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "avatarkit.render.photo", module)
    photo = AvatarImage(data=b"\x89PNG", width=SIZE, height=SIZE, kind="photo")
    voice, timeline = _speech(1.2, [(0.4, 0.8)])
    video = LocalRenderer(fps=FPS, size=SIZE).render_sync(
        photo, voice, timeline, output=tmp_path / "p.mp4"
    )
    frames, _ = _decode(video.path, SIZE)
    dark = (frames[:, SIZE // 2 :, :, 0] < 100).sum(axis=(1, 2))
    assert dark[int(0.6 * FPS)] > dark[int(0.2 * FPS)] * 2


def _x264_settings(path: Path) -> str:
    """The settings x264 records in the stream (its SEI), e.g. ``... rc=cqp ... qp=14 ...``."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    return data[start : data.index(b"\x00", start)].decode()


def test_mp4s_use_a_constant_quantiser_unless_a_crf_is_asked_for(
    rendered: dict[str, object],
    tmp_path: Path,
    avatar: AvatarImage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # procedural faces: QP 14 (CRF 20's look on flat art, without x264's rate-control pass)
    procedural = _x264_settings(rendered["out"])  # type: ignore[arg-type]
    assert " rc=cqp " in procedural and " qp=14 " in procedural
    voice, timeline = _speech(0.6, [(0.1, 0.5)])
    asked = LocalRenderer(fps=FPS, crf=26).render_sync(
        avatar, voice, timeline, output=tmp_path / "crf.mp4"
    )
    assert " rc=crf " in _x264_settings(asked.path) and " crf=26.0 " in _x264_settings(asked.path)
    # photos: QP 19, CRF 20's quality on textured portraits
    module = types.ModuleType("avatarkit.render.photo")
    module.PhotoRig = _StandInRig  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "avatarkit.render.photo", module)
    photo = AvatarImage(data=b"\x89PNG", width=SIZE, height=SIZE, kind="photo")
    clip = LocalRenderer(fps=FPS, size=SIZE).render_sync(
        photo, voice, timeline, output=tmp_path / "p.mp4"
    )
    assert " rc=cqp " in _x264_settings(clip.path) and " qp=19 " in _x264_settings(clip.path)


PORTRAIT = Path(__file__).parent / "data" / "portrait.jpg"


@pytest.mark.skipif(not PORTRAIT.exists(), reason="no test portrait")
def test_photo_mode_talks_with_the_real_rig(tmp_path: Path) -> None:
    pytest.importorskip("avatarkit.render.photo")
    photo = AvatarImage(data=PORTRAIT.read_bytes(), format="jpeg", width=320, height=300,
                        kind="photo")  # fmt: skip
    voice, timeline = _speech(1.6, [(0.5, 1.1)])
    video = LocalRenderer(fps=FPS, size=SIZE, idle_blinks=False).render_sync(
        photo, voice, timeline, output=tmp_path / "photo.mp4"
    )
    frames, audio = _decode(video.path, SIZE)
    assert abs(len(frames) / FPS - len(audio) / SR) <= 1 / FPS
    lower = frames[:, SIZE // 2 :].astype(np.float32)
    rest = np.median(lower[: int(0.4 * FPS)], axis=0)
    change = np.abs(lower - rest).mean(axis=(1, 2, 3))
    assert change[int(0.8 * FPS)] > 3 * max(change[int(0.2 * FPS)], 0.3)


def test_concurrent_renders_of_one_avatar_do_not_mix(tmp_path: Path, avatar: AvatarImage) -> None:
    r = LocalRenderer(fps=FPS, idle_blinks=False)
    a = _speech(0.8, [(0.1, 0.7)])
    b = _speech(0.8, [(0.3, 0.5)])
    solo = [r.render_sync(avatar, *x, output=tmp_path / f"solo{i}") for i, x in enumerate((a, b))]
    results: dict[int, Path] = {}

    def job(i: int, x: tuple[VoiceOutput, Timeline]) -> None:
        results[i] = r.render_sync(avatar, *x, output=tmp_path / f"both{i}").path

    threads = [threading.Thread(target=job, args=(i, x)) for i, x in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        for frame in sorted(solo[i].path.glob("frame_*.png")):
            assert frame.read_bytes() == (results[i] / frame.name).read_bytes()


def test_prepare_paints_the_shapes_a_reply_needs(tmp_path: Path) -> None:
    from avatarkit.render.face import borrow_face, clear_pool, return_face
    from avatarkit.render.local import _warmup_states

    clear_pool()
    image = generate_procedural(33, size=SIZE)
    clear_pool()  # as in a new process: nothing painted yet
    renderer = LocalRenderer(fps=FPS)
    renderer.prepare_sync(image)
    face = borrow_face(params_from_image(image), SIZE)  # the pooled face prepare painted
    try:
        painted = face.sprites_painted
        assert painted > 40  # its mouth and eye shapes, not just its layers
        for state in _warmup_states():  # the states prepare covers: all drawn, none painted
            face.draw(state)
        assert face.sprites_painted == painted
    finally:
        return_face(face)


@pytest.mark.parametrize(
    ("options", "field"),
    [({"size": "256"}, "size"), ({"size": 100.5}, "size"), ({"size": (64,)}, "size"),
     ({"fps": "25"}, "fps"), ({"fps": 0}, "fps")],
)  # fmt: skip
def test_bad_renderer_options_get_a_typed_error(options: dict[str, object], field: str) -> None:
    with pytest.raises(InputValidationError) as info:
        LocalRenderer(**options)  # type: ignore[arg-type]
    assert info.value.field == field
