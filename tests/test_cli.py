from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avatarkit.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command", ["create", "chat", "avatar", "script", "speak", "animate", "batch", "providers"]
)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_providers_lists_builtins_with_usability() -> None:
    result = runner.invoke(app, ["providers"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:] if line.strip()}
    assert "test" in lines and " yes " in lines["test"]
    assert "local" in lines


def test_unknown_spec_gives_a_clear_error_and_exit_code() -> None:
    result = runner.invoke(app, ["speak", "hello", "--voice", "nosuchvoice"])
    assert result.exit_code == 2
    assert "Unknown provider 'nosuchvoice'" in result.output


def test_import_avatarkit_pulls_in_no_heavy_stack() -> None:
    code = (
        "import sys, avatarkit; avatarkit.AvatarBot; "
        "print(','.join(m for m in ('torch','diffusers','transformers','openai','cv2','sklearn')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_avatar_command_writes_a_procedural_face(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "face.png"
    result = runner.invoke(app, ["avatar", "--style", "procedural", "--seed", "7", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"
    again = tmp_path / "again.png"
    runner.invoke(app, ["avatar", "--seed", "7", "-o", str(again)])
    assert again.read_bytes() == out.read_bytes()  # same seed, same face


def test_avatar_command_refuses_bad_settings_before_generating(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "x.png"
    for bad in (["--steps", "0"], ["--size", "10"]):  # a clear message, not a traceback
        result = runner.invoke(app, ["avatar", "--backend", "test", *bad, "-o", str(out)])
        assert result.exit_code == 2 and not out.exists(), result.output
        assert "error" in result.output.lower() and "Traceback" not in result.output
    result = runner.invoke(app, ["avatar", "--preset", "nope", "-o", str(out)])
    assert result.exit_code == 2 and "fantasy-portrait" in result.output


@pytest.mark.parametrize("command", [["create", "hi"], ["animate", "hi"], ["avatar"]])
def test_a_negative_seed_is_refused_before_any_work(command: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / ("a.png" if command == ["avatar"] else "out")
    result = runner.invoke(app, [*command, "--seed", "-1", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "--seed" in result.output and "greater than or equal to 0" in result.output
    assert not out.exists()


@pytest.fixture
def readonly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder nothing can be written into; as root (where chmod does not stop writes) the
    file system's refusal is simulated: making a file in it raises EROFS."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:
        real = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kwargs):  # type: ignore[no-untyped-def]
            if dir is not None and Path(dir).resolve().is_relative_to(folder):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    yield folder
    folder.chmod(0o700)


@pytest.mark.parametrize(
    ("command", "target"),
    [
        (["speak", "hi"], "out"),
        (["animate", "hi"], "out"),
        (["create", "hi"], "out"),
        (["chat"], "out"),
        (["avatar"], "face.png"),
        (["script", "hi", "--chat", "test"], "script.txt"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(
    command: list[str], target: str, readonly: Path
) -> None:
    out = readonly / target
    result = runner.invoke(app, [*command, "-o", str(out)], input="hello\n")
    assert result.exit_code == 2, result.output
    assert f"error: cannot write {out}: " in result.output
    assert ("Read-only" in result.output) or ("Permission denied" in result.output)
    assert "Traceback" not in result.output and "rendering" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("command", "target"),
    [
        (["speak", "hi"], "out"),
        (["chat"], "out"),
        (["avatar", "--backend", "test"], "face.png"),
        (["script", "hi", "--chat", "test"], "script.txt"),
    ],
)
def test_a_full_disk_while_saving_is_a_clear_error(
    command: list[str], target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import avatarkit._files

    def full(path: Path, writer: object) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(avatarkit._files, "write_atomic", full)
    out = tmp_path / target
    result = runner.invoke(app, [*command, "-o", str(out)], input="hello\n")
    assert result.exit_code == 2, result.output
    shown = out / "turn-001" if command == ["chat"] else out
    assert f"error: cannot write {shown}: No space left on device" in result.output


@pytest.mark.parametrize(
    "command", [["script", "hi", "--chat", "test"], ["avatar", "--backend", "test"]]
)
def test_a_folder_given_as_the_output_file_is_refused_before_any_work(
    command: list[str], tmp_path: Path
) -> None:
    folder = tmp_path / "somedir"
    folder.mkdir()
    result = runner.invoke(app, [*command, "-o", str(folder)])
    assert result.exit_code == 2, result.output
    assert f"error: {folder} is a folder; give a file name" in result.output
    assert list(tmp_path.iterdir()) == [folder] and list(folder.iterdir()) == []
    result = runner.invoke(app, ["avatar", "-o", "/"])
    assert result.exit_code == 2 and "error: / is a folder" in result.output


def test_a_file_given_as_the_output_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    afile = tmp_path / "afile.txt"
    afile.write_text("keep me")
    for command in (["speak", "hi"], ["create", "hi"], ["chat"]):
        result = runner.invoke(app, [*command, "-o", str(afile)], input="hello\n")
        assert result.exit_code == 2, result.output
        assert f"error: {afile} exists and is not a folder" in result.output
        assert "avatar>" not in result.output and "rendering" not in result.output
    result = runner.invoke(app, ["speak", "hi", "-o", str(afile / "out")])
    assert result.exit_code == 2 and f"{afile} is a file, not a folder" in result.output
    assert afile.read_text() == "keep me"


@pytest.mark.parametrize(
    "command",
    [
        ["animate", "hi"],
        ["create", "hi", "--renderer", "test"],
        ["chat", "--render", "--renderer", "test"],
    ],
)
def test_a_rendered_reply_leaves_no_video_in_the_temporary_folder(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    out = tmp_path / "out"
    result = runner.invoke(app, [*command, "-o", str(out)], input="hello\nagain\n")
    assert result.exit_code == 0, result.output
    videos = sorted(p.relative_to(out).as_posix() for p in out.rglob("video.*"))
    assert videos == (
        ["turn-001/video.gif", "turn-002/video.gif"] if command[0] == "chat"
        else ["video.gif" if "test" in command else "video.mp4"]
    )  # fmt: skip
    assert [p.name for p in temp.iterdir()] == []  # no avatarkit-video-*, no avatarkit-*.gif


@pytest.mark.parametrize("preset", ["fantasy-portrait", "studio-portrait"])
def test_a_preset_works_with_the_local_backend(preset: str, tmp_path: Path) -> None:
    from avatarkit.types import AvatarImage

    out = tmp_path / "a.png"
    result = runner.invoke(app, ["avatar", "--preset", preset, "--seed", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "only its prompt" in result.output  # the user is told what the preset did
    image = AvatarImage.load(out)
    assert image.kind == "procedural" and image.provenance["seed"] == 3


def test_avatar_refuses_size_0_and_an_unknown_style(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    result = runner.invoke(app, ["avatar", "--size", "0", "-o", str(out)])
    assert result.exit_code == 2 and "--size" in result.output and not out.exists()
    result = runner.invoke(app, ["avatar", "--style", "bogus", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "unknown style 'bogus'" in result.output and "procedural, photo" in result.output
    assert not out.exists()


@pytest.mark.parametrize("command", [["animate", "hi"], ["create", "hi"]])
def test_a_folder_given_as_the_avatar_is_named_as_a_folder(
    command: list[str], tmp_path: Path
) -> None:
    result = runner.invoke(app, [*command, "--avatar", str(tmp_path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert f"error: --avatar {tmp_path} is a folder; give a picture file" in result.output


def test_chat_continues_the_turn_numbers_of_an_earlier_session(tmp_path: Path) -> None:
    out = tmp_path / "chat"
    for _ in range(2):
        result = runner.invoke(app, ["chat", "--chat", "test", "-o", str(out)], input="hi\nyo\n")
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [f"turn-00{n}" for n in (1, 2, 3, 4)]
    said = [json.loads((out / f"turn-00{n}" / "response.json").read_text()) for n in (1, 3)]
    assert [s["input"]["text"] for s in said] == ["hi", "hi"]


def test_chat_reports_a_reply_it_cannot_save_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avatarkit.errors import InputValidationError
    from avatarkit.types import Response

    calls: list[Path] = []

    def save(self: Response, folder: Path) -> dict[str, Path]:
        calls.append(folder)
        raise InputValidationError("the reply's video no longer exists")

    monkeypatch.setattr(Response, "save", save)
    args = ["chat", "--chat", "test", "-o", str(tmp_path / "c")]
    result = runner.invoke(app, args, input="hi\nyo\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("error: the reply's video no longer exists") == 2
    assert [p.name for p in calls] == ["turn-001", "turn-002"]


def test_the_command_shows_the_librarys_warnings_and_more_with_verbose() -> None:
    import logging

    from avatarkit.config import get_logger

    logger = logging.getLogger("avatarkit")
    try:
        result = runner.invoke(app, ["providers"])
        assert result.exit_code == 0
        assert logger.level == logging.WARNING
        shown = [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]
        assert len(shown) == 1
        runner.invoke(app, ["-v", "providers"])
        assert logger.level == logging.INFO
        assert shown == [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]
        get_logger("avatarkit.test").warning("something to see")  # reaches the console handler
    finally:
        for h in [h for h in logger.handlers if not isinstance(h, logging.NullHandler)]:
            logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)


def test_speak_into_a_folder_of_an_earlier_reply_replaces_it_and_keeps_other_files(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    backends = ["--chat", "test", "--voice", "test", "--renderer", "test"]
    result = runner.invoke(
        app, ["create", "hi", *backends, "--image-backend", "test", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "video.gif").is_file() and (out / "avatar.png").is_file()
    (out / "notes.txt").write_text("mine")

    result = runner.invoke(app, ["speak", "Just this.", "--voice", "test", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "notes.txt", "response.json", "speech.wav", "timeline.json"
    ]  # fmt: skip
    assert (out / "notes.txt").read_text() == "mine"


def test_batch_refuses_an_output_it_cannot_write_before_any_work(
    tmp_path: Path, readonly: Path
) -> None:
    scripts = tmp_path / "scripts.csv"
    scripts.write_text("text,id\nHello.,a\n")
    afile = tmp_path / "afile.txt"
    afile.write_text("keep me")
    specs = ["--voice", "test", "--renderer", "test", "--image-backend", "test"]
    for out, message in (
        (afile, f"error: {afile} exists and is not a folder"),
        (readonly / "out", f"error: cannot write {readonly / 'out'}: "),
    ):
        result = runner.invoke(app, ["batch", str(scripts), "-o", str(out), *specs])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert not (readonly / "out").exists()
    assert afile.read_text() == "keep me"


@pytest.mark.parametrize("session", ["", " ", "x" * 300, "a\tb"])
def test_chat_refuses_a_bad_session_id_before_the_first_turn(session: str, tmp_path: Path) -> None:
    out = tmp_path / "chat"
    args = ["chat", "--chat", "test", "--session", session, "-o", str(out)]
    result = runner.invoke(app, args, input="hi\nyo\n")
    assert result.exit_code == 2, result.output
    assert result.output.count("error: a session id") == 1
    assert "you>" not in result.output and not out.exists()


@pytest.mark.parametrize("box", ["400,400,200,200", "0,0,8,8"])
@pytest.mark.parametrize("command", [["animate", "hi"], ["create", "hi", "--chat", "test"]])
def test_a_face_box_that_does_not_fit_the_avatar_is_refused_before_any_work(
    command: list[str], box: str, tmp_path: Path
) -> None:
    face = tmp_path / "face.png"
    assert runner.invoke(app, ["avatar", "--size", "512", "-o", str(face)]).exit_code == 0
    out = tmp_path / "out"
    args = [*command, "--avatar", str(face), "--face-box", box, "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"face box '{box}'" in result.output and "512x512" in result.output
    assert "stage" not in result.output and not out.exists()  # no voice call, nothing saved


@pytest.mark.parametrize(("style", "backend"), [("photo", "local"), ("procedural", "test")])
def test_a_style_the_backend_does_not_draw_is_refused(
    style: str, backend: str, tmp_path: Path
) -> None:
    out = tmp_path / "a.png"
    result = runner.invoke(app, ["avatar", "--style", style, "--backend", backend, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert f"--style {style}" in result.output and f"--backend {backend}" in result.output
    assert not out.exists()


def test_the_backend_alone_picks_the_style(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    result = runner.invoke(app, ["avatar", "--backend", "test", "-o", str(out)])
    assert result.exit_code == 0 and "photo" in result.output, result.output
    result = runner.invoke(app, ["avatar", "--style", "photo", "--backend", "test", "-o", str(out)])
    assert result.exit_code == 0 and "photo" in result.output, result.output


def test_animate_refuses_a_voice_beside_a_recording(tmp_path: Path) -> None:
    take = tmp_path / "take.wav"
    said = runner.invoke(app, ["speak", "Hello there.", "--voice", "test", "-o", str(tmp_path)])
    assert said.exit_code == 0, said.output
    (tmp_path / "speech.wav").rename(take)
    out = tmp_path / "out"
    args = ["animate", "hi", "--audio", str(take), "--voice", "espeak:en-us+f3", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error: --voice and --audio" in result.output and not out.exists()


def test_a_token_without_a_preset_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    result = runner.invoke(app, ["avatar", "--token", "bennycheung", "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "--token" in result.output and "--preset" in result.output and not out.exists()


def test_python_dash_m_avatarkit_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "avatarkit", "speak", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: avatarkit speak" in result.stdout  # named as the command, not __main__.py


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_render_stopped_by_a_signal_leaves_nothing_behind(
    signum: signal.Signals, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    out = tmp_path / "out"
    text = " ".join(f"This is sentence {n} of a long speech." for n in range(60))
    command = [sys.executable, "-m", "avatarkit", "animate", text, "-o", str(out)]
    process = subprocess.Popen(
        command, env={**os.environ, "TMPDIR": str(temp)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not any(temp.glob("avatarkit-render-*")):  # the render has started
            assert process.poll() is None and time.monotonic() < deadline, "no render started"
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signum)  # Ctrl-C, or kill / timeout / a service manager
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, err.decode()
    assert not out.exists()  # no half-written reply
    assert list(temp.iterdir()) == []  # nor the render's temporary speech and partial video
