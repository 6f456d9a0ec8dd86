"""Time to first audio: streaming vs whole reply, and avatarkit vs Pipecat, from one run.

The scenario (``_latency_scenario.py``): a chat model whose first token comes after 200 ms and
then one token every 33 ms (words with their leading space, punctuation as separate tokens),
three sentences; a voice that answers each request after 150 ms with
``avatarkit.testing.fake_speech``. The ideal first audio is the arrival of the first sentence's
last token plus 150 ms: nothing can speak a sentence before it is complete.

Prints, each over 20 turns (medians):

1. streaming (``bot.stream``) vs whole reply (``bot.respond``): time to first audio;
2. how long the sentence splitter holds a finished sentence (its full stop to SentenceReady);
3. avatarkit's first audio above the ideal (must be under 5 ms);
4. Pipecat 1.14's overhead above the same ideal (``pipecat_baseline.py`` run with
   ``--pipecat-python``, default ``/tmp/pcvenv/bin/python``; skipped with a message when it is
   absent) and the ratio;
5. the per-turn framework cost with zero-latency fakes (a whole three-sentence turn) and the
   startup cost, for both.

    python benchmarks/streaming_latency.py [--pipecat-python /tmp/pcvenv/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _latency_scenario import (
    FIRST_SENTENCE_END,
    RUNS,
    VOICE_LATENCY,
    TokenClock,
    summary,
)

from avatarkit import AvatarBot
from avatarkit.ports import ChatCapabilities, VoiceCapabilities
from avatarkit.streaming import AudioSegment, SentenceReady, TurnComplete
from avatarkit.testing import fake_speech
from avatarkit.types import ChatMessage, VoiceOutput

BUDGET = 0.005  # streaming must start speaking within the ideal + 5 ms


class ScenarioChat:
    """A chat model replaying the scenario's tokens with their fixed latencies."""

    def __init__(self, clock: TokenClock) -> None:
        self.clock = clock

    @property
    def capabilities(self) -> ChatCapabilities:
        return ChatCapabilities(streaming=True, offline=True)

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        return await self.clock.whole()

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        async for token in self.clock.tokens():
            yield token


@functools.lru_cache(maxsize=16)
def speech(text: str) -> VoiceOutput:
    """fake_speech, made once per sentence: the fake's own CPU time is not framework overhead."""
    return fake_speech(text)


class ScenarioVoice:
    """A voice that answers after a fixed latency with fake_speech."""

    def __init__(self, latency: float) -> None:
        self.latency = latency

    @property
    def capabilities(self) -> VoiceCapabilities:
        return VoiceCapabilities(
            word_timings=True, phoneme_timings=True, formats=("wav",), offline=True
        )

    async def synthesize(self, text: str) -> VoiceOutput:
        if self.latency:
            await asyncio.sleep(self.latency)
        return speech(text)


def make_bot(clock: TokenClock, voice_latency: float) -> AvatarBot:
    return AvatarBot(
        chat=ScenarioChat(clock),
        voice=ScenarioVoice(voice_latency),
        renderer=None,
        preprocessor=None,
        intent=None,
        sentiment=None,
        expression=None,
    )


async def streaming_turn(bot: AvatarBot, clock: TokenClock, session: str) -> dict[str, float]:
    t0 = time.perf_counter()
    out: dict[str, float] = {}
    async for event in bot.stream("Plan my weekend trip.", session_id=session):
        now = time.perf_counter()
        if isinstance(event, SentenceReady) and event.index == 0:
            out["release"] = now - clock.stamps[FIRST_SENTENCE_END]
        elif isinstance(event, AudioSegment) and event.index == 0:
            out["first_audio"] = now - t0
            out["overhead"] = now - clock.ideal_first_audio
        elif isinstance(event, TurnComplete):
            out["turn"] = now - t0
    return out


async def ours() -> dict[str, Any]:
    clock = TokenClock()
    bot = make_bot(clock, VOICE_LATENCY)
    await streaming_turn(bot, clock, "warm-up")  # imports, first-call caches
    await bot.respond("Plan my weekend trip.", session_id="warm-up")
    streamed = [await streaming_turn(bot, clock, f"s{i}") for i in range(RUNS)]
    whole = []
    for i in range(RUNS):
        t0 = time.perf_counter()
        await bot.respond("Plan my weekend trip.", session_id=f"w{i}")
        whole.append(time.perf_counter() - t0)

    zero_clock = TokenClock(first=0.0, gap=0.0)
    startups = []
    for _ in range(5):
        t0 = time.perf_counter()
        zero = make_bot(zero_clock, 0.0)
        startups.append(time.perf_counter() - t0)
    await streaming_turn(zero, zero_clock, "warm-up")
    turns, cpu = [], []
    for i in range(RUNS):
        c0 = time.process_time()
        turns.append((await streaming_turn(zero, zero_clock, f"z{i}"))["turn"])
        cpu.append(time.process_time() - c0)
    return {
        "framework": "avatarkit",
        "first_audio_streaming": summary([s["first_audio"] for s in streamed]),
        "first_audio_whole": summary(whole),
        "release": summary([s["release"] for s in streamed]),
        "overhead": summary([s["overhead"] for s in streamed]),
        "turn_cost": summary(turns),
        "turn_cpu": summary(cpu),
        "startup": summary(startups),
    }


def pipecat(python: str) -> dict[str, Any] | None:
    if not Path(python).exists():
        print(f"\nPipecat: skipped ({python} not found). Set it up with:")
        print("  python3 -m venv /tmp/pcvenv && /tmp/pcvenv/bin/pip install pipecat-ai==1.14.0")
        return None
    script = Path(__file__).resolve().parent / "pipecat_baseline.py"
    done = subprocess.run([python, str(script)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"\nPipecat: failed ({done.stderr.strip()[-400:]})")
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipecat-python", default="/tmp/pcvenv/bin/python")
    args = parser.parse_args()

    a = asyncio.run(ours())
    med = {k: v["median_ms"] for k, v in a.items() if isinstance(v, dict)}
    print(f"Scenario: first token 200 ms, then 1 token / 33 ms, 3 sentences; voice "
          f"{VOICE_LATENCY * 1000:.0f} ms per request. Medians of {RUNS} turns.\n")  # fmt: skip
    print("avatarkit, time to first audio from the user's message:")
    print(f"  streaming (bot.stream)     {med['first_audio_streaming']:8.1f} ms")
    print(f"  whole reply (bot.respond)  {med['first_audio_whole']:8.1f} ms   "
          f"({med['first_audio_whole'] / med['first_audio_streaming']:.2f}x later)")  # fmt: skip
    print(f"  sentence held after its full stop: {med['release']:.2f} ms "
          f"(released on the '.' token, not on the next one)")  # fmt: skip
    ok = med["overhead"] <= BUDGET * 1000
    print(f"  first audio above the ideal: {med['overhead']:.2f} ms "
          f"(budget {BUDGET * 1000:.0f} ms: {'PASS' if ok else 'FAIL'}; "
          f"min {a['overhead']['min_ms']:.2f}, max {a['overhead']['max_ms']:.2f})")  # fmt: skip

    p = pipecat(args.pipecat_python)
    if p is None:
        print(f"\nPer-turn cost, zero-latency fakes: {med['turn_cost']:.1f} ms "
              f"(CPU {med['turn_cpu']:.1f} ms); startup {med['startup']:.2f} ms")  # fmt: skip
        return
    po, pt, ps = (p[k]["median_ms"] for k in ("overhead", "turn_cost", "startup"))
    print(f"\nSide by side with {p['framework']} (same tokens, same latencies):")
    print(f"{'':34}{'avatarkit':>12}{'pipecat':>12}{'ratio':>10}")
    rows = [
        ("first audio above the ideal", med["overhead"], po),
        ("turn cost, zero-latency fakes", med["turn_cost"], pt),
        ("  of which CPU time", med["turn_cpu"], p["turn_cpu"]["median_ms"]),
        ("startup (bot / pipeline)", med["startup"], ps),
    ]
    for name, ours_ms, theirs in rows:
        ratio = theirs / ours_ms if ours_ms > 0 else float("inf")
        print(f"  {name:32}{ours_ms:10.2f} ms{theirs:9.2f} ms{ratio:9.1f}x")
    lower = med["overhead"] < po and med["turn_cost"] < pt
    print(f"  avatarkit lower on latency and per-turn cost: {'PASS' if lower else 'FAIL'}")
    print("\nJSON:", json.dumps({"avatarkit": a, "pipecat": p}))
    if statistics.median([med["overhead"]]) > BUDGET * 1000 or not lower:
        sys.exit(1)


if __name__ == "__main__":
    main()
