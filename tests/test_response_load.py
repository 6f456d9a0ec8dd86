"""Response.load reads back the folder Response.save wrote; ``animate --reply`` renders it again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from avatarkit.errors import InputValidationError
from avatarkit.testing import fake_speech
from avatarkit.types import (
    RESPONSE_VERSION,
    TIMELINE_VERSION,
    AvatarImage,
    DialogueResponse,
    Response,
    Timeline,
    UserInput,
    VoiceOutput,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Response, Path]:
    """A real offline reply (local chat, espeak, procedural face, local renderer), saved."""
    import avatarkit as ak
    from avatarkit._files import discard_temporary_video

    bot = ak.AvatarBot()
    reply = bot.respond_sync("Hello there")
    folder = tmp_path_factory.mktemp("reply") / "out"
    try:
        reply.save(folder)
    finally:
        assert reply.video is not None
        discard_temporary_video(reply.video)
    return reply, folder


def _copy(saved: tuple[Response, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(saved[1], folder)
    return folder


def test_a_saved_reply_loads_back_as_it_was(saved: tuple[Response, Path]) -> None:
    reply, folder = saved
    loaded = Response.load(folder)

    assert loaded.version == RESPONSE_VERSION and loaded.id == reply.id
    assert loaded.text == reply.text and loaded.text
    assert loaded.input == reply.input
    assert loaded.dialogue == reply.dialogue
    assert loaded.intent == reply.intent and loaded.sentiment == reply.sentiment
    # the voice: the very audio, with what the WAV says of its rate and length
    assert loaded.voice is not None and reply.voice is not None
    assert loaded.voice.audio == reply.voice.audio
    assert loaded.voice.sample_rate == reply.voice.sample_rate
    assert loaded.voice.duration == pytest.approx(reply.voice.duration, abs=1e-3)
    assert loaded.voice.words == reply.voice.words
    assert loaded.voice.phonemes == reply.voice.phonemes
    assert loaded.voice.voice == reply.voice.voice
    # the timeline, from timeline.json
    assert loaded.timeline is not None and loaded.timeline == reply.timeline
    # the avatar: its picture, kind and face box (the renderer redraws it from them)
    assert loaded.image == reply.image
    # the video: the copy in the folder
    assert loaded.video is not None and reply.video is not None
    assert loaded.video.path == folder / "video.mp4" and loaded.video.path.is_file()
    assert loaded.video.model_dump(exclude={"path"}) == reply.video.model_dump(exclude={"path"})
    assert loaded.metrics == reply.metrics


def test_a_loaded_reply_saves_again_to_the_same_files(
    saved: tuple[Response, Path], tmp_path: Path
) -> None:
    _, folder = saved
    again = tmp_path / "again"
    Response.load(folder).save(again)
    for name in ("speech.wav", "avatar.png", "video.mp4", "timeline.json", "response.json"):
        assert (again / name).read_bytes() == (folder / name).read_bytes(), name


def test_an_edited_timeline_json_is_the_one_loaded(
    saved: tuple[Response, Path], tmp_path: Path
) -> None:
    folder = _copy(saved, tmp_path)
    timeline = json.loads((folder / "timeline.json").read_text())
    timeline["expressions"] = [{"time": 0.0, "emotion": "surprised", "intensity": 0.9}]
    (folder / "timeline.json").write_text(json.dumps(timeline))
    loaded = Response.load(folder)
    assert loaded.timeline is not None
    assert [(e.emotion, e.intensity) for e in loaded.timeline.expressions] == [("surprised", 0.9)]


def test_a_saved_speech_only_reply_loads_without_image_or_video(tmp_path: Path) -> None:
    voice = fake_speech("Hi there")
    reply = Response(
        input=UserInput(text="Hi there"),
        dialogue=DialogueResponse(text="Hi there", handled_by="say"),
        voice=voice,
        timeline=Timeline(duration=voice.duration, words=voice.words, phonemes=voice.phonemes),
    )
    reply.save(tmp_path)
    loaded = Response.load(str(tmp_path))
    assert loaded.image is None and loaded.video is None
    assert loaded.voice is not None and loaded.voice.audio == voice.audio
    assert loaded.timeline is not None and loaded.timeline.words == voice.words


def test_headerless_speech_loads_with_its_recorded_rate(tmp_path: Path) -> None:
    from avatarkit.audio import decode_audio

    tone = fake_speech("Hello")
    samples, rate = decode_audio(tone.audio)
    pcm = (samples * 32767).astype("<i2").tobytes()
    voice = VoiceOutput(audio=pcm, format="pcm_s16le", sample_rate=rate, duration=tone.duration)
    Response(input=UserInput(text="Hello"), voice=voice).save(tmp_path)
    loaded = Response.load(tmp_path)
    assert loaded.voice is not None and loaded.voice.audio == pcm
    assert loaded.voice.format == "pcm_s16le" and loaded.voice.sample_rate == rate
    assert loaded.voice.duration == pytest.approx(tone.duration, abs=1e-3)


def test_the_wav_says_the_rate_and_length(tmp_path: Path) -> None:
    """A speech.wav replaced after saving (cleaned up, resampled) is read for what it is."""
    Response(input=UserInput(text="hi"), voice=fake_speech("Hi there")).save(tmp_path)
    longer = fake_speech("Hi there my friend", sample_rate=22_050)
    (tmp_path / "speech.wav").write_bytes(longer.audio)
    loaded = Response.load(tmp_path)
    assert loaded.voice is not None
    assert loaded.voice.sample_rate == 22_050
    assert loaded.voice.duration == pytest.approx(longer.duration, abs=1e-3)


def test_a_folder_that_is_not_a_saved_reply_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match=r"nowhere does not exist") as info:
        Response.load(tmp_path / "nowhere")
    assert info.value.field == "folder"
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputValidationError, match=r"notes\.txt is a file, not a folder"):
        Response.load(tmp_path / "notes.txt")
    with pytest.raises(InputValidationError, match=r"no response\.json: not a saved reply"):
        Response.load(tmp_path)
    (tmp_path / "response.json").write_text("{not json")
    with pytest.raises(InputValidationError, match=r"response\.json is not JSON"):
        Response.load(tmp_path)
    (tmp_path / "response.json").write_text('{"a": 1}')  # some other program's response.json
    with pytest.raises(InputValidationError, match=r"not a summary that Response\.save wrote"):
        Response.load(tmp_path)


def test_a_newer_layout_is_refused_before_its_files_are_read(
    saved: tuple[Response, Path], tmp_path: Path
) -> None:
    folder = _copy(saved, tmp_path)
    summary = json.loads((folder / "response.json").read_text())
    newer = {**summary, "version": RESPONSE_VERSION + 1, "gestures": []}
    newer["files"] = {**summary["files"], "audio": "speech.opus"}  # a later layout's file
    (folder / "response.json").write_text(json.dumps(newer))
    with pytest.raises(
        InputValidationError,
        match=rf"response.json: response version {RESPONSE_VERSION + 1} is newer",
    ):
        Response.load(folder)
    # a newer timeline.json beside a current response.json
    (folder / "response.json").write_text(json.dumps(summary))
    timeline = json.loads((folder / "timeline.json").read_text())
    timeline["version"] = TIMELINE_VERSION + 1
    (folder / "timeline.json").write_text(json.dumps(timeline))
    with pytest.raises(InputValidationError, match=rf"timeline version {TIMELINE_VERSION + 1}"):
        Response.load(folder)


@pytest.mark.parametrize("name", ["speech.wav", "avatar.png", "timeline.json", "video.mp4"])
def test_a_missing_file_is_named(name: str, saved: tuple[Response, Path], tmp_path: Path) -> None:
    folder = _copy(saved, tmp_path)
    (folder / name).unlink()
    with pytest.raises(InputValidationError, match=rf"copy/{name} is missing"):
        Response.load(folder)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("speech.wav", r"cannot decode it as wav audio"),
        ("avatar.png", r"not a readable image"),
        ("timeline.json", r"not a valid avatarkit timeline"),
    ],
)
def test_a_corrupt_file_is_named(
    name: str, why: str, saved: tuple[Response, Path], tmp_path: Path
) -> None:
    folder = _copy(saved, tmp_path)
    (folder / name).write_bytes(b"RIFF\x00\x00garbage" if name.endswith("wav") else b"garbage")
    with pytest.raises(InputValidationError, match=rf"copy/{name}.*{why}"):
        Response.load(folder)


def test_a_summary_that_names_a_file_outside_its_folder_is_refused(
    saved: tuple[Response, Path], tmp_path: Path
) -> None:
    folder = _copy(saved, tmp_path)
    (tmp_path / "secret.wav").write_bytes((folder / "speech.wav").read_bytes())
    summary = json.loads((folder / "response.json").read_text())
    summary["files"]["audio"] = "../secret.wav"
    (folder / "response.json").write_text(json.dumps(summary))
    with pytest.raises(InputValidationError, match=r"'\.\./secret\.wav' is not a file name"):
        Response.load(folder)


def test_a_summary_without_the_voice_its_audio_needs_is_refused(tmp_path: Path) -> None:
    Response(input=UserInput(text="hi"), voice=fake_speech("Hi there")).save(tmp_path)
    summary = json.loads((tmp_path / "response.json").read_text())
    summary["voice"] = None
    (tmp_path / "response.json").write_text(json.dumps(summary))
    with pytest.raises(InputValidationError, match=r"lists speech\.wav but no voice"):
        Response.load(tmp_path)


def test_an_image_loaded_back_keeps_a_photos_face_box(tmp_path: Path) -> None:
    photo = AvatarImage.load(Path(__file__).parent / "data" / "portrait.jpg")
    photo = photo.model_copy(update={"face_box": (10, 20, 30, 40)})
    Response(input=UserInput(text="hi"), image=photo).save(tmp_path)
    loaded = Response.load(tmp_path)
    assert loaded.image is not None
    assert (tmp_path / "avatar.jpg").is_file()
    assert loaded.image.face_box == (10, 20, 30, 40) and loaded.image.data == photo.data
    assert loaded.image.kind == "photo" and loaded.image.format == "jpeg"


# --------------------------------------------------------------------------- animate --reply


def _tone_reply(folder: Path, *, voiced: bool = True) -> Response:
    """A reply spoken by the fake voice (tones: no real voice makes this audio), saved."""
    from avatarkit import AvatarBot
    from avatarkit.testing import FakeVoice

    bot = AvatarBot(
        chat=None, voice=FakeVoice() if voiced else None, renderer=None,
        preprocessor=None, intent=None, sentiment=None,
    )  # fmt: skip
    reply = bot.say_sync("Hello there, friend.")
    reply.save(folder)
    return reply


@pytest.fixture
def no_voice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any speech synthesis fails the test: a saved reply is rendered without a voice call."""
    from avatarkit.providers.espeak import EspeakVoice

    async def synthesize(self: object, text: str) -> VoiceOutput:
        raise AssertionError(f"the voice was called for {text!r}")

    monkeypatch.setattr(EspeakVoice, "synthesize", synthesize)


def test_animate_renders_a_saved_reply_again_with_another_avatar(
    tmp_path: Path, no_voice: None
) -> None:
    from typer.testing import CliRunner

    from avatarkit.cli import app
    from avatarkit.render.procedural import generate_procedural

    first = tmp_path / "first"
    _tone_reply(first)
    face = tmp_path / "face.png"
    face.write_bytes(generate_procedural(7, size=128).data)
    out = tmp_path / "again"

    result = CliRunner().invoke(
        app, ["animate", "--reply", str(first), "--avatar", str(face), "-o", str(out)]
    )

    assert result.exit_code == 0, result.output
    assert "Hello there, friend." in result.output
    assert (out / "speech.wav").read_bytes() == (first / "speech.wav").read_bytes()
    assert json.loads((out / "timeline.json").read_text()) == json.loads(
        (first / "timeline.json").read_text()
    )
    assert (out / "avatar.png").read_bytes() == face.read_bytes()
    again = Response.load(out)
    assert again.video is not None and again.video.path == out / "video.mp4"
    assert again.voice is not None
    assert again.video.duration == pytest.approx(again.voice.duration, abs=0.05)
    assert again.video.frame_count == round(again.voice.duration * 25)
    assert again.image is not None and again.image.kind == "procedural"


def test_animate_keeps_the_saved_avatar_unless_given_another(
    saved: tuple[Response, Path], tmp_path: Path, no_voice: None
) -> None:
    from typer.testing import CliRunner

    from avatarkit.cli import app

    _, first = saved
    out = tmp_path / "gif"
    result = CliRunner().invoke(
        app, ["animate", "--reply", str(first), "--renderer", "test", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "avatar.png").read_bytes() == (first / "avatar.png").read_bytes()
    assert (out / "speech.wav").read_bytes() == (first / "speech.wav").read_bytes()
    assert (out / "video.gif").is_file()
    again = Response.load(out)
    assert again.video is not None and again.video.renderer == "test"
    assert again.text == saved[0].text


def test_a_saved_procedural_face_goes_to_a_photo_only_renderer_as_a_photo(
    saved: tuple[Response, Path], tmp_path: Path, no_voice: None
) -> None:
    from typer.testing import CliRunner

    from avatarkit.cli import app
    from avatarkit.ports import RendererCapabilities
    from avatarkit.registry import Provider, default_registry
    from avatarkit.testing import FakeRenderer

    seen: list[str] = []

    class PhotoOnly(FakeRenderer):  # like D-ID: animates photos only
        @property
        def capabilities(self) -> RendererCapabilities:
            return RendererCapabilities(image_kinds=("photo",), formats=("gif",), offline=True)

        async def render(self, image, voice, timeline, **kw):  # type: ignore[no-untyped-def]
            seen.append(image.kind)
            return await super().render(image, voice, timeline, **kw)

    default_registry.register(Provider("photoonly", renderer=lambda name=None, **kw: PhotoOnly()))
    try:
        out = tmp_path / "photo"
        result = CliRunner().invoke(
            app, ["animate", "--reply", str(saved[1]), "--renderer", "photoonly", "-o", str(out)]
        )
    finally:
        default_registry.unregister("photoonly")
    assert result.exit_code == 0, result.output
    assert seen == ["photo"]


def test_animate_makes_an_avatar_for_a_saved_speech_only_reply(
    tmp_path: Path, no_voice: None
) -> None:
    from typer.testing import CliRunner

    from avatarkit.cli import app

    first = tmp_path / "speech"
    _tone_reply(first)
    assert not list(first.glob("avatar.*"))
    out = tmp_path / "clip"
    result = CliRunner().invoke(
        app, ["animate", "--reply", str(first), "--renderer", "test", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "avatar.png").is_file() and (out / "video.gif").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give TEXT to speak, or --reply FOLDER"),
        (["Hello", "--reply", "{first}"], "TEXT and --reply"),
        (["--reply", "{first}", "--audio", "{first}/speech.wav"], "--audio and --reply"),
        (["--reply", "{first}", "--voice", "espeak:en-us"], "--voice and --reply"),
        (["--reply", "{tmp}"], "holds no response.json"),
        (["--reply", "{silent}"], "holds no speech and timeline to animate"),
    ],
)
def test_animate_refuses_what_it_cannot_render_again_before_any_work(
    args: list[str], message: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from avatarkit.cli import app

    first, silent = tmp_path / "first", tmp_path / "silent"
    _tone_reply(first)
    Response(input=UserInput(text="hi"), dialogue=DialogueResponse(text="Hi.")).save(silent)
    names = {"first": first, "silent": silent, "tmp": tmp_path}
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["animate", *(a.format(**names) for a in args), "-o", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_a_cut_off_speech_file_is_refused_not_loaded_shorter(
    saved: tuple[Response, Path], tmp_path: Path
) -> None:
    folder = _copy(saved, tmp_path)
    wav = (folder / "speech.wav").read_bytes()
    (folder / "speech.wav").write_bytes(wav[: len(wav) // 2])
    with pytest.raises(InputValidationError, match=r"speech.wav: cannot decode .* cut off"):
        Response.load(folder)


def test_a_loaded_replys_video_path_survives_a_change_of_folder(
    saved: tuple[Response, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy(saved, tmp_path / "a")
    monkeypatch.chdir(folder.parent)
    loaded = Response.load(Path(folder.name))
    monkeypatch.chdir(tmp_path)
    loaded.save(tmp_path / "moved")
    assert (tmp_path / "moved" / "video.mp4").stat().st_size > 0
