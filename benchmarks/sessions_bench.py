"""Many sessions in one process: 50 conversations at once vs the same turns one by one.

    python benchmarks/sessions_bench.py                 # 50 sessions; render off, then on
    python benchmarks/sessions_bench.py --sessions 20 --turns 2 --size 256

Every mode runs in a fresh subprocess (so imports and earlier runs don't skew its memory),
with the offline backends: local NLP, the local dialogue manager, the eSpeak NG voice, and,
with rendering on, the local renderer at ``--size`` px with the procedural avatar. Each of
``--sessions`` sessions says ``--turns`` lines; ``concurrent`` runs all sessions at once
(one event loop, per-role limits ``voice=2, renderer=2``, fair FIFO queues), ``serial`` runs
the same turns one after another. Printed side by side: throughput (turns/s), p50/p95 turn
latency, the CPU time the event loop's own thread spent per turn (work that blocks every
other session; worker threads excluded), the longest event-loop stall (a ticker measures how
late it wakes; on a shared machine it includes time the OS did not schedule us), memory per
session (RSS growth after the sessions ran / sessions), and the concurrent/serial ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time

LINES = ["Hello!", "What can you do?", "Tell me about yourself.", "Thanks, bye!"]


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def run_mode(mode: str, sessions: int, turns: int, size: int, render: bool) -> dict:
    from avatarkit import AvatarBot
    from avatarkit.render.local import LocalRenderer
    from avatarkit.render.procedural import generate_procedural

    bot = AvatarBot(
        renderer=LocalRenderer(size=size) if render else None,
        avatar=generate_procedural(3, size) if render else None,
        limits={"voice": 2, "renderer": 2},
        max_waiting=10_000,
    )
    await bot.respond("Warm-up.", session_id="warm-up")  # imports, models, painted layers
    base_rss = rss_mb()

    stall = 0.0
    running = True

    async def ticker() -> None:
        nonlocal stall
        while running:
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            stall = max(stall, time.perf_counter() - t0 - 0.005)

    latencies: list[float] = []
    rejected = 0
    folder = f"/tmp/avatarkit-sessions-{os.getpid()}"
    os.makedirs(folder, exist_ok=True)

    async def session(n: int) -> None:
        nonlocal rejected
        for t in range(turns):
            t0 = time.perf_counter()
            reply = await bot.respond(
                LINES[(n + t) % len(LINES)], session_id=f"user-{n}",
                output=f"{folder}/{n}-{t}.mp4" if render else None,
            )  # fmt: skip
            latencies.append(time.perf_counter() - t0)
            if reply.video is not None:
                reply.video.path.unlink(missing_ok=True)

    tick = asyncio.create_task(ticker())
    cpu0 = time.thread_time()  # CPU time of this (the event loop's) thread only
    t0 = time.perf_counter()
    if mode == "serial":
        for n in range(sessions):
            await session(n)
    else:
        await asyncio.gather(*(session(n) for n in range(sessions)))
    wall = time.perf_counter() - t0
    loop_cpu = time.thread_time() - cpu0
    running = False
    await tick
    os.rmdir(folder)
    ordered = sorted(latencies)
    return {
        "turns": len(latencies),
        "rejected": rejected,
        "wall": wall,
        "throughput": len(latencies) / wall,
        "p50": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "stall": stall,
        "loop_cpu": loop_cpu / len(latencies),
        "mb_per_session": (rss_mb() - base_rss) / sessions,
    }


def child(args: argparse.Namespace) -> None:
    result = asyncio.run(run_mode(args.mode, args.sessions, args.turns, args.size, args.render))
    print(json.dumps(result))


def measure(mode: str, args: argparse.Namespace, render: bool, turns: int) -> dict:
    cmd = [
        sys.executable, __file__, "--child", "--mode", mode, "--sessions", str(args.sessions),
        "--turns", str(turns), "--size", str(args.size),
    ] + (["--render"] if render else [])  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; local NLP + dialogue, eSpeak NG voice"
    )
    header = (
        f"{'mode':<22}{'turns':>6}{'turns/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'loop CPU ms/turn':>17}{'max stall ms':>13}{'MB/session':>12}"
    )
    for render, turns, label in (
        (False, args.turns, "render off"),
        (True, args.render_turns, f"render on, {args.size}px"),
    ):
        print(f"\n{args.sessions} sessions x {turns} turns, {label}")
        print(header)
        rows = {mode: measure(mode, args, render, turns) for mode in ("serial", "concurrent")}
        for mode, r in rows.items():
            print(
                f"{mode:<22}{r['turns']:>6}{r['throughput']:>9.1f}{r['p50'] * 1e3:>9.0f}"
                f"{r['p95'] * 1e3:>9.0f}{r['loop_cpu'] * 1e3:>17.1f}{r['stall'] * 1e3:>13.0f}"
                f"{r['mb_per_session']:>12.3f}"
            )
        ratio = rows["concurrent"]["throughput"] / rows["serial"]["throughput"]
        print(f"concurrent / serial throughput: {ratio:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--turns", type=int, default=4, help="turns per session, render off")
    parser.add_argument("--render-turns", type=int, default=1, help="turns per session, render on")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="concurrent", help=argparse.SUPPRESS)
    parser.add_argument("--render", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    child(ns) if ns.child else main(ns)
