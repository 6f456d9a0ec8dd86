"""Timeline exports (avatarkit JSON, Rhubarb, TalkingHead) and the timeline plot."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from avatarkit.animation.export import (
    TALKINGHEAD_VISEMES,
    from_json,
    save_json,
    to_json,
    to_rhubarb,
    to_talkinghead,
)
from avatarkit.animation.lipsync import lipsync, timeline_from
from avatarkit.animation.plot import plot_timeline
from avatarkit.animation.viseme import RHUBARB_SHAPES
from avatarkit.errors import InputValidationError, MissingExtraError
from avatarkit.providers.espeak import EspeakVoice
from avatarkit.types import (
    TIMELINE_VERSION,
    Emotion,
    FacialExpression,
    Timeline,
    VisemeCue,
    VoiceOutput,
)

TEXT = "Maybe we should stop by the museum before the rain begins."


@pytest.fixture(scope="module")
def voice() -> VoiceOutput:
    return EspeakVoice("en-us").synthesize_sync(TEXT)


@pytest.fixture(scope="module")
def timeline(voice: VoiceOutput) -> Timeline:
    return timeline_from(
        voice, lipsync(voice), [FacialExpression(char_offset=0, emotion=Emotion.HAPPY)]
    )


def test_avatarkit_json_round_trip(timeline: Timeline, tmp_path: Path) -> None:
    assert from_json(to_json(timeline)) == timeline
    path = save_json(tmp_path / "timeline.json", timeline)
    assert from_json(path.read_bytes()) == timeline
    assert not list(tmp_path.glob("*.part"))  # atomic write left no temporary file
    with pytest.raises(InputValidationError):
        from_json('{"visemes": [{"viseme": "aa", "start": -1, "end": 0}]}')


def test_rhubarb_export(timeline: Timeline, voice: VoiceOutput, tmp_path: Path) -> None:
    data = to_rhubarb(timeline, sound_file="speech.wav")
    assert data["metadata"] == {"soundFile": "speech.wav", "duration": round(voice.duration, 3)}
    cues = data["mouthCues"]
    assert cues[0]["start"] == 0.0
    assert cues[-1]["value"] == "X"
    assert cues[-1]["end"] == pytest.approx(voice.duration, abs=1e-3)
    for a, b in itertools.pairwise(cues):
        assert a["end"] == pytest.approx(b["start"], abs=1e-3)
        assert a["value"] != b["value"]
    assert {c["value"] for c in cues} <= set(RHUBARB_SHAPES)
    assert {"A", "X", "D"} <= {c["value"] for c in cues}  # closures, rest, open vowels
    basic = to_rhubarb(timeline, extended=False)
    assert {c["value"] for c in basic["mouthCues"]} <= set("ABCDEF")
    assert basic["mouthCues"][-1]["value"] == "A"
    path = save_json(tmp_path / "rhubarb.json", data)
    assert json.loads(path.read_text()) == data


def test_rhubarb_export_ends_on_rest_even_without_trailing_silence() -> None:
    t = Timeline(
        duration=0.5,
        visemes=[
            VisemeCue(viseme="aa", start=0.1, end=0.5),
        ],
    )
    cues = to_rhubarb(t)["mouthCues"]
    assert [c["value"] for c in cues] == ["X", "D", "X"]
    assert cues[0] == {"start": 0.0, "end": 0.1, "value": "X"}
    assert cues[-1]["start"] == cues[-1]["end"] == 0.5


def test_talkinghead_export(timeline: Timeline) -> None:
    data = to_talkinghead(timeline)
    assert len(data["words"]) == len(data["wtimes"]) == len(data["wdurations"]) > 5
    assert len(data["visemes"]) == len(data["vtimes"]) == len(data["vdurations"]) > 10
    assert data["words"][0] == "Maybe"
    assert all(isinstance(t, int) for t in data["wtimes"] + data["vtimes"] + data["vdurations"])
    assert data["vtimes"] == sorted(data["vtimes"])
    assert set(data["visemes"]) <= set(TALKINGHEAD_VISEMES.values()) - {"sil"}
    first = timeline.words[0]
    assert data["wtimes"][0] == round(first.start * 1000)
    assert data["wdurations"][0] == round(first.end * 1000) - round(first.start * 1000)
    with_rest = to_talkinghead(timeline, include_silence=True)
    assert "sil" in with_rest["visemes"]
    assert len(with_rest["visemes"]) == len(with_rest["vtimes"])


def test_exports_reject_inconsistent_timelines() -> None:
    bad = Timeline(
        duration=1.0,
        visemes=[
            VisemeCue(viseme="aa", start=0.5, end=0.7),
            VisemeCue(viseme="PP", start=0.2, end=0.3),  # unsorted
        ],
    )
    with pytest.raises(InputValidationError):
        to_rhubarb(bad)
    with pytest.raises(InputValidationError):
        to_talkinghead(bad)


@pytest.mark.parametrize("include_silence", [False, True])
def test_exports_name_an_unknown_viseme(include_silence: bool) -> None:
    bad = Timeline(
        duration=1.0,
        visemes=[
            VisemeCue(viseme="sil", start=0.0, end=0.1),
            VisemeCue(viseme="PP", start=0.1, end=0.3),
        ],
    )
    bad.visemes[1].viseme = "pp"  # renamed after the timeline checked its cues
    with pytest.raises(InputValidationError, match=r"unknown viseme 'pp' in visemes\[1\]"):
        to_talkinghead(bad, include_silence=include_silence)
    with pytest.raises(InputValidationError, match=r"unknown viseme 'pp' in visemes\[1\]"):
        to_rhubarb(bad)


def test_from_json_refuses_a_newer_timeline_version() -> None:
    assert from_json(json.dumps({"version": TIMELINE_VERSION, "duration": 1})).duration == 1.0
    newer = {"version": TIMELINE_VERSION + 98, "duration": 1, "gestures": []}  # unknown field too
    with pytest.raises(InputValidationError, match=r"version 99 .*newer.*upgrade avatarkit"):
        from_json(json.dumps(newer))
    with pytest.raises(InputValidationError, match="version 0"):
        from_json(b'{"version": 0, "duration": 1}')
    with pytest.raises(InputValidationError, match="not a valid avatarkit timeline"):
        from_json("[1, 2]")


def test_plot_timeline(timeline: Timeline, voice: VoiceOutput, tmp_path: Path) -> None:
    fig = plot_timeline(timeline, voice)
    assert len(fig.axes) == 4  # waveform, words, visemes, expressions
    assert fig.axes[-1].get_xlim() == pytest.approx((0.0, voice.duration))
    out = tmp_path / "t.png"
    fig.savefig(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(plot_timeline(timeline.model_copy(update={"expressions": []})).axes) == 2


def test_plot_without_matplotlib(timeline: Timeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingExtraError, match=r"avatarkit\[plot\]"):
        plot_timeline(timeline)
