"""Reply cache: a repeated reply's latency (hit) vs its first time (miss), and provider calls.

    python benchmarks/cache_bench.py            # 12 replies, eSpeak voice, 256 px clips
    python benchmarks/cache_bench.py --size 512

Runs ``AvatarBot.say`` (speech, lip sync, render) with the offline backends — eSpeak NG and the
local renderer with the procedural avatar — on a fresh disk cache. Each reply is said once
(miss: voiced and rendered, then stored) and then again (hit), in one run. Prints the median
and p95 latency of both, their ratio, and the provider calls each made (target: a hit under
5 ms with zero provider calls; p95 shows how much a busy machine adds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time

from avatarkit import AvatarBot
from avatarkit.cache import ReplyCache
from avatarkit.render.local import LocalRenderer
from avatarkit.render.procedural import generate_procedural

REPLIES = [
    "Hello! I'm glad you're here.",
    "Welcome back, it's good to see you again.",
    "Our opening hours are nine to five, Monday to Friday.",
    "You can reset your password from the account page.",
    "Shipping usually takes two to three working days.",
    "I'm sorry, I didn't catch that. Could you say it again?",
    "Thanks for your patience.",
    "Is there anything else I can help you with?",
    "Returns are free within thirty days.",
    "Goodbye, and have a lovely day!",
    "Let me check that for you.",
    "That's a great question.",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(size: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        bot = AvatarBot(
            chat=None, preprocessor=None, intent=None, sentiment=None,
            voice="espeak:en-us", renderer=LocalRenderer(size=size, fps=25),
            avatar=generate_procedural(7, size), cache=ReplyCache(folder),
        )  # fmt: skip
        await bot.say("Warm-up.")  # imports, eSpeak start-up, the avatar's painted layers
        miss, hit = [], []
        miss_calls, hit_calls = [], []
        for text in REPLIES:
            t0 = time.perf_counter()
            first = await bot.say(text)
            miss.append(time.perf_counter() - t0)
            miss_calls.append(sum(first.metrics.provider_calls.values()))
            assert first.metrics.cache_misses == 3, first.metrics  # speech, face plan, clip
            for _ in range(rounds):
                t0 = time.perf_counter()
                again = await bot.say(text)
                hit.append(time.perf_counter() - t0)
                hit_calls.append(sum(again.metrics.provider_calls.values()))
                assert again.metrics.cache_hits == 3 and again.video is not None
                again.video.path.unlink()
            first.video.path.unlink()  # type: ignore[union-attr]
        stats = bot.cache.stats if bot.cache else None

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; eSpeak NG voice, local renderer {size}px @25 fps"
    )
    print(f"{len(REPLIES)} replies, each said once (miss) then {rounds}x again (hit)")
    print(f"{'':<6}{'median ms':>10}{'p95 ms':>10}{'provider calls/turn':>22}")
    for name, values, calls in (("miss", miss, miss_calls), ("hit", hit, hit_calls)):
        print(
            f"{name:<6}{statistics.median(values) * 1e3:>10.2f}{pct(values, 0.95) * 1e3:>10.2f}"
            f"{statistics.mean(calls):>22.1f}"
        )
    ratio = statistics.median(miss) / statistics.median(hit)
    print(f"hit is {ratio:.0f}x faster than miss (median); cache stats: {stats}")
    ok = statistics.median(hit) < 0.005 and max(hit_calls) == 0
    print(
        f"target (hit median < 5 ms, zero provider calls on every hit): {'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.size, args.rounds))
