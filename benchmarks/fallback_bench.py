"""Fallback: what a dead first backend costs a turn, with and without the cooldown.

    python benchmarks/fallback_bench.py             # 8 turns per setup
    python benchmarks/fallback_bench.py --turns 4

Each setup answers the same turns with ``AvatarBot(voice=[cloud, "espeak:en-us"], renderer=None)``:

- **healthy**: eSpeak NG alone (what the stand-in itself costs);
- **dead, cooldown 30 s** (the default): the cloud voice is the real ``ElevenLabsVoice`` aimed
  at a port on 127.0.0.1 where nothing listens, with avatarkit's default retry policy (3
  retries, backoff from 0.5 s): the first turn pays for its failure, the later ones skip it;
- **dead, cooldown 0**: the same, but the dead voice is tried first on every turn.

Prints the first turn and the median of the later turns per setup, as ratios to healthy, and
the fallbacks each setup's turns reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import time

from avatarkit import AvatarBot
from avatarkit.fallback import fallback
from avatarkit.providers.elevenlabs import ElevenLabsVoice
from avatarkit.testing import FakeChatModel

TEXTS = ["Hello!", "How are you?", "What can you do?", "Tell me more.", "Thanks!", "Bye."]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nobody listens there


async def run(voice: object, turns: int) -> tuple[list[float], int]:
    bot = AvatarBot(
        chat=FakeChatModel("Glad to help. Is there anything else?"),
        voice=voice,
        renderer=None,
    )
    times: list[float] = []
    stand_ins = 0
    try:
        for i in range(turns):
            t0 = time.perf_counter()
            reply = await bot.respond(TEXTS[i % len(TEXTS)])
            times.append(time.perf_counter() - t0)
            stand_ins += reply.metrics.fallbacks.get("voice", 0)
    finally:
        await bot.aclose()
    return times, stand_ins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=8)
    args = parser.parse_args()
    turns = max(2, args.turns)
    port = closed_port()

    def dead(cooldown: float) -> object:
        cloud = ElevenLabsVoice(api_key="el-bench-not-a-key", base_url=f"http://127.0.0.1:{port}")
        return fallback("voice", cloud, "espeak:en-us", cooldown=cooldown)

    setups = {
        "healthy (eSpeak NG alone)": lambda: "espeak:en-us",
        "dead first voice, cooldown 30 s": lambda: dead(30.0),
        "dead first voice, cooldown 0": lambda: dead(0.0),
    }
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    print(
        f"{turns} turns per setup; the dead voice: ElevenLabsVoice at 127.0.0.1:{port} (closed)\n"
    )
    asyncio.run(run("espeak:en-us", 2))  # warm up eSpeak NG, so no setup pays for its start
    results = {name: asyncio.run(run(make(), turns)) for name, make in setups.items()}
    base_first = results["healthy (eSpeak NG alone)"][0][0]
    base_later = statistics.median(results["healthy (eSpeak NG alone)"][0][1:])
    head = f"{'first turn s':>13} {'× healthy':>10} {'later turns s':>14} {'× healthy':>10}"
    print(f"{'setup':34} {head}  stand-ins")
    for name, (times, stand_ins) in results.items():
        later = statistics.median(times[1:])
        print(
            f"{name:34} {times[0]:13.3f} {times[0] / base_first:10.1f} {later:14.4f} "
            f"{later / base_later:10.2f}  {stand_ins}/{turns}"
        )


if __name__ == "__main__":
    main()
