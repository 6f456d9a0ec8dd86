"""Response.save refuses what it cannot write before writing anything."""

from __future__ import annotations

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
