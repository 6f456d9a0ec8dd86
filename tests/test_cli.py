from __future__ import annotations

import subprocess
import sys

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
