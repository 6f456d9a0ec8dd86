"""Response.save refuses what it cannot write before writing anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avatarkit.errors import InputValidationError
from avatarkit.testing import fake_speech
from avatarkit.types import AvatarVideo, Response, Timeline, UserInput


def _response(video: Path | None = None) -> Response:
    voice = fake_speech("Hi there")
    return Response(
        input=UserInput(text="hi"),
        voice=voice,
        timeline=Timeline(duration=voice.duration, words=voice.words),
        video=AvatarVideo(
            path=video, width=8, height=8, fps=25, duration=voice.duration, frame_count=22
        )
        if video
        else None,
    )


def test_a_folder_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputValidationError, match=r"notes\.txt is a file"):
        _response().save(tmp_path / "notes.txt" / "out")


def test_a_video_that_is_gone_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    response = _response(tmp_path / "deleted.mp4")
    with pytest.raises(InputValidationError, match=r"deleted\.mp4.*no longer exists"):
        response.save(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_reply_saved_over_an_earlier_one_replaces_its_files_and_keeps_the_users(
    tmp_path: Path,
) -> None:
    clip = tmp_path / "clip.gif"
    clip.write_bytes(b"GIF89a")
    out = tmp_path / "out"
    _response(clip).save(out)
    (out / "notes.txt").write_text("mine")
    (out / "speech.mp3").write_bytes(b"an earlier reply's mp3")  # listed below as its audio
    summary = json.loads((out / "response.json").read_text())
    summary["files"]["audio"] = "speech.mp3"
    summary["files"]["extra"] = "notes.txt"  # a name Response.save never writes: not ours
    (out / "response.json").write_text(json.dumps(summary))

    written = _response().save(out)  # speech and timeline only

    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(p.name for p in written.values()), "notes.txt"]
    )
    assert (out / "notes.txt").read_text() == "mine"
    loaded = Response.load(out)
    assert loaded.video is None and loaded.voice is not None


def test_frames_of_an_earlier_reply_go_when_a_reply_without_video_is_saved(
    tmp_path: Path,
) -> None:
    frames = tmp_path / "render"
    frames.mkdir()
    (frames / "000001.png").write_bytes(b"png")
    out = tmp_path / "out"
    assert _response(frames).save(out)["video"] == out / "frames"
    _response().save(out)
    assert not (out / "frames").exists()
