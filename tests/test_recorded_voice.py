"""Animating a recording you already have: the recorded voice and ``avatarkit animate --audio``."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from avatarkit.audio import decode_audio
from avatarkit.cli import app
from avatarkit.errors import InputValidationError
from avatarkit.providers.recorded import RecordedVoice

runner = CliRunner()


def _speechlike(path: Path, seconds: float = 2.0, rate: int = 22_050, fmt: str = "WAV") -> None:
    """Bursts of a tone with pauses, written in ``fmt``."""
    t = np.arange(int(seconds * rate)) / rate
    bursts = (np.sin(2 * np.pi * 3.0 * t) > 0.2) & (t > 0.3) & (t < seconds - 0.3)
    audio = 0.3 * np.sin(2 * np.pi * 150 * t) * bursts
    buf = io.BytesIO()
    sf.write(buf, audio.astype(np.float32), rate, format=fmt)
    path.write_bytes(buf.getvalue())


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_the_recording_is_the_voice_whatever_its_format(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"take.{fmt.lower()}"
    _speechlike(path, 1.5, fmt=fmt)
    voice = RecordedVoice(path)

    out = asyncio.run(voice.synthesize("Hello there."))

    samples, rate = decode_audio(out.audio)
    assert out.format == "wav" and rate == out.sample_rate == 22_050
    assert out.duration == pytest.approx(1.5, abs=0.01)
    assert len(samples) / rate == pytest.approx(1.5, abs=0.01)
    assert out.text == "Hello there." and out.words == [] and out.phonemes == []


def test_a_missing_or_unreadable_recording_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match="does not exist"):
        RecordedVoice(tmp_path / "nothing.wav")
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(InputValidationError, match="cannot decode"):
        RecordedVoice(bad)


def test_a_folder_or_a_text_file_as_the_recording_is_named_plainly(tmp_path: Path) -> None:
    with pytest.raises(InputValidationError, match="is a folder, not an audio file"):
        RecordedVoice(tmp_path)
    notes = tmp_path / "afile.txt"
    notes.write_text("some notes, not a recording\n")
    with pytest.raises(InputValidationError) as caught:
        RecordedVoice(notes)
    message = str(caught.value)
    assert f"recording {notes}: cannot decode it as audio" in message
    assert "BytesIO" not in message and "<" not in message and "Format not recognised" in message
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(InputValidationError, match=r"empty\.wav is empty"):
        RecordedVoice(tmp_path / "empty.wav")
    for args in (["--audio", str(tmp_path)], ["--audio", str(notes)]):
        result = runner.invoke(app, ["animate", "hi", *args, "-o", str(tmp_path / "out")])
        assert result.exit_code == 2 and "BytesIO" not in result.output, result.output
        assert "does not exist" not in result.output


def test_animate_with_audio_lip_syncs_the_recording(tmp_path: Path) -> None:
    from avatarkit.providers.espeak import EspeakVoice

    # a recording from elsewhere: another voice's speech, after half a second of silence
    speech = asyncio.run(EspeakVoice("en-us+m3").synthesize("Welcome to the show, everyone."))
    samples, rate = decode_audio(speech.audio)
    take = tmp_path / "take.flac"
    sf.write(take, np.concatenate([np.zeros(rate // 2, np.float32), samples]), rate)
    out = tmp_path / "clip"

    result = runner.invoke(
        app, ["animate", "Welcome to the show.", "--audio", str(take), "-o", str(out)]
    )

    assert result.exit_code == 0, result.output
    timeline = json.loads((out / "timeline.json").read_text())
    assert timeline["duration"] == pytest.approx(speech.duration + 0.5, abs=0.05)
    assert {cue["source"] for cue in timeline["visemes"]} == {"audio"}
    spoken = [cue for cue in timeline["visemes"] if cue["viseme"] != "sil"]
    assert spoken and spoken[0]["start"] >= 0.4  # the mouth waits for the speech
    assert (out / "video.mp4").stat().st_size > 0


def test_the_recorded_voice_is_a_provider_spec(tmp_path: Path) -> None:
    from avatarkit.errors import ConfigurationError
    from avatarkit.registry import create

    take = tmp_path / "take.wav"
    _speechlike(take, 0.5)
    voice = create("voice", f"recorded:{take}")
    assert isinstance(voice, RecordedVoice) and voice.duration == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ConfigurationError, match="recorded:<path"):
        create("voice", "recorded")
    listed = runner.invoke(app, ["providers"])
    assert "recorded" in listed.output
