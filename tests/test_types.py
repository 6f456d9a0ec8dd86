from __future__ import annotations

import json
from pathlib import Path

import pytest

from avatarkit.testing import fake_speech
from avatarkit.types import (
    AvatarImage,
    DialogueResponse,
    LipSync,
    PhonemeTiming,
    Response,
    Timeline,
    UserInput,
    VisemeCue,
    WordTiming,
)


def test_response_json_round_trip_keeps_audio_bytes() -> None:
    voice = fake_speech("Hello big world")
    resp = Response(
        input=UserInput(text="hi"), dialogue=DialogueResponse(text="Hello big world"), voice=voice
    )
    again = Response.model_validate_json(resp.model_dump_json())
    assert again.voice is not None
    assert again.voice.audio == voice.audio
    assert again.voice.words == voice.words
    assert again.text == "Hello big world"


def test_timeline_problems_flags_unsorted_and_out_of_audio_cues() -> None:
    ok = Timeline(
        duration=1.0,
        visemes=[
            VisemeCue(viseme="PP", start=0.0, end=0.2),
            VisemeCue(viseme="aa", start=0.2, end=0.5),
        ],
    )
    assert ok.problems() == []
    bad = Timeline(
        duration=1.0,
        words=[WordTiming(text="b", start=0.5, end=0.6), WordTiming(text="a", start=0.1, end=1.4)],
    )
    problems = bad.problems()
    assert any("starts before" in p for p in problems)
    assert any("after the audio" in p for p in problems)
    backwards = Timeline(duration=1.0, phonemes=[PhonemeTiming(phoneme="a", start=0.4, end=0.3)])
    assert any("ends" in p for p in backwards.problems())


def test_viseme_at_returns_silence_outside_cues() -> None:
    tl = Timeline(duration=1.0, visemes=[VisemeCue(viseme="aa", start=0.2, end=0.4)])
    assert tl.viseme_at(0.3) == "aa"
    assert tl.viseme_at(0.1) == "sil"
    assert tl.viseme_at(0.4) == "sil"


def test_fake_speech_words_index_the_text() -> None:
    text = "Pack my box, please!"
    voice = fake_speech(text)
    assert [text[w.char_start : w.char_end] for w in voice.words] == [w.text for w in voice.words]
    assert (
        Timeline(duration=voice.duration, words=voice.words, phonemes=voice.phonemes).problems()
        == []
    )


def test_save_writes_every_part_atomically(tmp_path: Path) -> None:
    voice = fake_speech("Hi there")
    image = AvatarImage(data=b"\x89PNG fake", width=8, height=8)
    resp = Response(
        input=UserInput(text="hi"),
        voice=voice,
        image=image,
        timeline=Timeline(duration=voice.duration, words=voice.words),
    )
    paths = resp.save(tmp_path / "out")
    assert {p.name for p in paths.values()} == {
        "speech.wav",
        "avatar.png",
        "timeline.json",
        "response.json",
    }
    assert (tmp_path / "out" / "speech.wav").read_bytes() == voice.audio
    timeline = json.loads((tmp_path / "out" / "timeline.json").read_text())
    assert timeline["audio_ref"] == "speech.wav"
    summary = json.loads((tmp_path / "out" / "response.json").read_text())
    assert summary["files"]["audio"] == "speech.wav"
    assert "audio" not in summary["voice"]  # media stay in their own files
    assert not list((tmp_path / "out").glob("*.part"))


def test_save_failure_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import avatarkit._files as files

    voice = fake_speech("Hi there")
    resp = Response(input=UserInput(text="hi"), voice=voice)

    def boom(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        resp.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def _big_timeline(n: int = 2000) -> Timeline:
    step = 0.01
    return Timeline(
        text="word " * n,
        duration=n * step,
        words=[WordTiming(text="word", start=i * step, end=(i + 1) * step) for i in range(n)],
        phonemes=[PhonemeTiming(phoneme="a", start=i * step, end=(i + 1) * step) for i in range(n)],
        visemes=[VisemeCue(viseme="aa", start=i * step, end=(i + 1) * step) for i in range(n)],
        viseme_source="phonemes",
    )


def test_str_of_models_with_bytes_or_long_tracks_is_as_short_as_repr() -> None:
    voice = fake_speech("Hello big world")
    voice = voice.model_copy(update={"audio": voice.audio + b"\0" * 70_000})
    image = AvatarImage(data=b"\x89PNG" + b"\0" * 90_000, width=512, height=512)
    timeline = _big_timeline()
    response = Response(
        input=UserInput(text="hi"),
        dialogue=DialogueResponse(text="Hello big world"),
        voice=voice,
        timeline=timeline,
        image=image,
    )
    for model in (voice, image, timeline):
        assert str(model) == repr(model) == f"{model}"
        assert len(str(model)) < 300, str(model)
    assert f"<{len(voice.audio)} bytes>" in str(voice)
    assert f"<{len(image.data)} bytes>" in str(image)
    assert "visemes=2000" in str(timeline) and "phonemes=2000" in str(timeline)
    for text in (str(response), repr(response), f"{response}"):
        assert len(text) < 2000, text[:3000]
        assert f"<{len(voice.audio)} bytes>" in text


def test_a_timeline_refuses_a_viseme_no_set_knows() -> None:
    from pydantic import ValidationError

    from avatarkit.types import OCULUS_VISEMES

    cues = [
        VisemeCue(viseme="sil", start=0.0, end=0.1),
        VisemeCue(viseme="zz", start=0.1, end=0.2),
        VisemeCue(viseme="pp", start=0.2, end=0.3),
    ]
    with pytest.raises(ValidationError) as info:
        Timeline(duration=1.0, visemes=cues)
    message = str(info.value)
    assert "unknown viseme 'zz' in visemes[1] and 1 more" in message
    assert ", ".join(OCULUS_VISEMES) in message
    with pytest.raises(ValidationError, match=r"unknown viseme 'pp' in cues\[0\] \(did you mean"):
        LipSync(cues=cues[2:])
    # every name of the set is accepted, built or loaded
    known = [
        VisemeCue(viseme=v, start=i / 10, end=(i + 1) / 10) for i, v in enumerate(OCULUS_VISEMES)
    ]
    timeline = Timeline(duration=1.5, visemes=known)
    assert Timeline.model_validate_json(timeline.model_dump_json()) == timeline


def test_loading_a_timeline_with_an_unknown_viseme_names_the_cue() -> None:
    from avatarkit.animation.export import from_json
    from avatarkit.errors import InputValidationError

    data = {"duration": 1.0, "visemes": [{"viseme": "aa", "start": 0, "end": 0.5},
                                         {"viseme": "zz", "start": 0.5, "end": 1}]}  # fmt: skip
    with pytest.raises(InputValidationError, match=r"^unknown viseme 'zz' in visemes\[1\]; "
                       r"expected one of sil, PP, .*, ou$"):  # fmt: skip
        from_json(json.dumps(data))


def test_loading_a_response_refuses_a_newer_version() -> None:
    from pydantic import ValidationError

    from avatarkit.errors import InputValidationError
    from avatarkit.types import RESPONSE_VERSION, TIMELINE_VERSION

    voice = fake_speech("Hi there")
    resp = Response(
        input=UserInput(text="hi"),
        voice=voice,
        timeline=Timeline(duration=voice.duration, words=voice.words),
    )
    data = json.loads(resp.model_dump_json())
    assert data["version"] == RESPONSE_VERSION
    assert Response.from_json(json.dumps(data)) == resp
    newer = {**data, "version": RESPONSE_VERSION + 1, "gestures": []}  # a later layout's field
    message = (
        rf"^response version {RESPONSE_VERSION + 1} is newer than this avatarkit reads "
        rf"\(up to {RESPONSE_VERSION}\); upgrade avatarkit to read it$"
    )
    with pytest.raises(InputValidationError, match=message):
        Response.from_json(json.dumps(newer))
    with pytest.raises(ValidationError, match="newer than this avatarkit reads"):
        Response.model_validate_json(json.dumps(newer))
    inner = {**data, "timeline": {**data["timeline"], "version": TIMELINE_VERSION + 1}}
    with pytest.raises(InputValidationError, match=rf"^timeline version {TIMELINE_VERSION + 1} "):
        Response.from_json(json.dumps(inner).encode())
    with pytest.raises(InputValidationError, match="response version 0 does not exist"):
        Response.from_json(json.dumps({**data, "version": 0}))
    with pytest.raises(InputValidationError, match=r"^not a valid avatarkit response: "):
        Response.from_json("[1, 2]")
    # a Response written before it carried a version reads as the first one
    del data["version"]
    assert Response.from_json(json.dumps(data)).version == 1


def test_response_json_on_disk_carries_its_version(tmp_path: Path) -> None:
    from avatarkit.types import RESPONSE_VERSION

    Response(input=UserInput(text="hi")).save(tmp_path)
    assert json.loads((tmp_path / "response.json").read_text())["version"] == RESPONSE_VERSION
