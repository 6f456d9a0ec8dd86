"""Instructions a render executes, counted by Valgrind: a speed gauge that does not drift.

    python benchmarks/render_instructions.py              # 10 s at 512x512, 25 fps
    python benchmarks/render_instructions.py --seconds 4  # quicker

On a shared machine the same work runs at speeds up to 1.7x apart from minute to minute, so a
wall-clock A/B cannot see a change under about 10 %. Valgrind's cachegrind counts the
instructions a process executes, the same on every run: use this to judge a change to the
renderer exactly, then confirm it on the clock with ``render_bench.py``. Prints:

- ffmpeg: the renderer's exact command for the clip (procedural face: constant QP 14), reading
  the clip's frames pre-drawn to a file, and the same with CRF 20 for comparison;
- Python: the render itself, for a never-painted avatar and after ``prepare``, as the counts of
  whole child processes with and without the render (everything else alike) subtracted.

Counts are of Valgrind's simulated CPU (no AVX-512, so OpenCV and x264 take their AVX2 paths):
compare them with each other, not with a native clock. Needs ``valgrind`` on PATH (Debian and
Ubuntu: ``apt install valgrind``). Takes a few minutes: Valgrind runs code about 50x slower.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from render_bench import EncoderFloor

from avatarkit.render.procedural import generate_procedural

CHILD = """
import sys, tempfile
from pathlib import Path
sys.path.insert(0, {bench!r})
from render_bench import utterance
from avatarkit.render.face import clear_pool
from avatarkit.render.local import LocalRenderer, _warmup_states
from avatarkit.render.procedural import generate_procedural

r = LocalRenderer(fps={fps})
voice, timeline = utterance({seconds}, 1)
_warmup_states()
image = generate_procedural(123, size={size})
clear_pool()  # painted by generate_procedural: forget it, as a new process would not have it
if {prepare}:
    r.prepare_sync(image)
if {render}:
    with tempfile.TemporaryDirectory() as d:
        r.render_sync(image, voice, timeline, output=Path(d) / "clip.mp4")
"""


def instructions(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Instructions executed by ``cmd`` (its own process; children are not followed)."""
    done = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         *cmd], capture_output=True, text=True, env=env,
    )  # fmt: skip
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"valgrind failed on {cmd[0]}: {done.stderr[-600:]}")
    return int(found.group(1).replace(",", ""))


def python_side(seconds: float, size: int, fps: float, *, prepare: bool, render: bool) -> int:
    code = CHILD.format(bench=str(Path(__file__).parent), seconds=seconds, size=size, fps=fps,
                        prepare=prepare, render=render)  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict orders, the same work
    return instructions([sys.executable, "-c", code], env=env)


def row(label: str, count: int, frames: int = 0) -> None:
    per_frame = f"  ({count / frames / 1e6:.2f} a frame)" if frames else ""
    print(f"{label:<42}{count / 1e6:>9,.0f}{per_frame}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--fps", type=float, default=25.0)
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian/Ubuntu: apt install valgrind)")
    frames = round(args.seconds * args.fps)
    print(f"clip: {args.seconds:g} s at {args.size}x{args.size}, {args.fps:g} fps "
          f"({frames} frames); millions of instructions\n")  # fmt: skip

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        floor = EncoderFloor(generate_procedural(7, size=args.size), args.seconds, args.fps, work)
        row("ffmpeg, the renderer's command", instructions(floor.cmd), frames)
        row("ffmpeg, the same with CRF 20", instructions(floor.command(crf=20)), frames)

    base = python_side(args.seconds, args.size, args.fps, prepare=False, render=False)
    cold = python_side(args.seconds, args.size, args.fps, prepare=False, render=True) - base
    prepared = python_side(args.seconds, args.size, args.fps, prepare=True, render=False)
    warm = python_side(args.seconds, args.size, args.fps, prepare=True, render=True) - prepared
    row("python, a never-painted avatar's render", cold, frames)
    row("python, a render after prepare", warm, frames)
    row("python, prepare", prepared - base)


if __name__ == "__main__":
    main()
