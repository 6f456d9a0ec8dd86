"""Batch rendering: 100 short scripts, process pool vs serial, and a killed batch resumed.

    python benchmarks/batch_bench.py                    # 100 scripts, 256 px, 2 workers
    python benchmarks/batch_bench.py --items 40 --size 256 --workers 2

All local: eSpeak NG voice, the local renderer and procedural avatars (five faces). In one run:

1. ``run_batch(executor="serial")`` and ``run_batch(executor="process")`` on the same scripts
   into fresh folders: seconds for each and the pool's speed-up.
2. ``avatarkit batch`` started as a subprocess, killed (SIGKILL, with its workers) once some
   items have finished; then the same command run again. Checks that the rerun skips exactly
   the items finished before the kill, leaves their files untouched, and that every item ends
   up rendered once and only once in the two runs put together.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from avatarkit.batch import run_batch

OPENINGS = ["Hello", "Welcome", "Good morning", "Hi there", "Thanks for waiting"]
TOPICS = ["your order", "the weather", "our new course", "the meeting", "your account"]


def write_scripts(path: Path, n: int) -> Path:
    rows = [
        {"id": f"s{i:03d}", "seed": i % 5,
         "text": f"{OPENINGS[i % 5]}! Here is an update on {TOPICS[i // 5 % 5]}."}
        for i in range(n)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def finished(out: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/response.json")}


def kill_and_resume(scripts: Path, out: Path, args: argparse.Namespace) -> None:
    cmd = [
        sys.executable, "-m", "avatarkit.cli", "batch", str(scripts), "-o", str(out),
        "--size", str(args.size), "--workers", str(args.workers),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    target = args.items * 3 // 10
    while len(finished(out)) < target and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its pool workers, mid-item
    proc.wait()
    before = finished(out)
    started = time.perf_counter()
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    report = json.loads((out / "batch-report.json").read_text())
    after = finished(out)
    untouched = all(after[k] == v for k, v in before.items())
    print(f"\nkilled after {len(before)} of {args.items} items had finished; rerun (exit "
          f"{rerun.returncode}, {seconds:.1f}s): done {len(report['done'])}, skipped "
          f"{len(report['skipped'])}, failed {len(report['failed'])}")  # fmt: skip
    print(f"  rerun's progress line: {rerun.stdout.strip().splitlines()[-1]}")
    print(f"  skipped == finished before the kill: {sorted(report['skipped']) == sorted(before)}")
    print(f"  finished items' files untouched by the rerun: {untouched}")
    once = sorted(before) + sorted(report["done"])
    print(f"  rendered once in all: {len(once)} items, {len(set(once))} distinct, "
          f"all present: {len(after) == args.items}")  # fmt: skip


def main(args: argparse.Namespace) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; eSpeak NG voice, local renderer {args.size}px mp4"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scripts = write_scripts(root / "scripts.jsonl", args.items)
        times = {}
        for executor in ("serial", "process"):
            report = run_batch(
                scripts, root / executor, executor=executor,  # type: ignore[arg-type]
                workers=args.workers, size=args.size,
            )  # fmt: skip
            assert len(report.done) == args.items and not report.failed, report.failed
            times[executor] = report.seconds
        audio = sum(
            json.loads(p.read_text())["voice"]["duration"]
            for p in (root / "serial").glob("*/response.json")
        )
        print(f"{args.items} scripts ({audio:.0f} s of speech in all)")
        for executor, seconds in times.items():
            label = f"{executor} ({args.workers} workers)" if executor == "process" else executor
            print(f"  {label:<22}{seconds:>7.1f} s  {args.items / seconds:>5.1f} items/s")
        print(f"process pool speed-up over serial: {times['serial'] / times['process']:.2f}x")
        kill_and_resume(scripts, root / "killed", args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    main(parser.parse_args())
