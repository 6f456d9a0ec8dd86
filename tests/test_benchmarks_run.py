"""The benchmark scripts still run (tiny settings), so a change to what they call breaks a test.

Several benchmarks measure internals on purpose (the renderer's exact ffmpeg command, the lip
sync analyser, the local chat model's fallback); without this, renaming one of those would only
surface the next time someone measured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.slow

CASES = {
    "render_bench": (
        ["--seconds", "1", "--repeat", "1", "--long", "1", "--size", "128"],
        ["new avatar, no prepare", "encoder alone (floor)", "CPU time per frame", "peak RSS"],
    ),
    "dialogue_bench": ([], ["LocalChatModel", "right entry"]),
    "lipsync_bench": ([], ["voice + lip sync"]),
    "voice_bench": ([], ["_espeak.synthesize (engine)"]),
    "cloud_overhead": ([], ["HttpClient", "ElevenLabs client side"]),
    "fallback_bench": (["--turns", "2"], ["dead first voice, cooldown 30 s", "stand-ins"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs(name: str, tmp_path: Path) -> None:
    args, expected = CASES[name]
    env = {**os.environ, "PYTHONPATH": str(BENCH)}
    env = {k: v for k, v in env.items() if not k.endswith("_API_KEY")}  # never a live call
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for text in expected:
        assert text in done.stdout, f"{name}: {text!r} missing from its output"
