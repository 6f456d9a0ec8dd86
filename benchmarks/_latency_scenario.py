"""The fixed-latency chat/voice scenario both streaming benchmarks replay (no avatarkit import).

``streaming_latency.py`` (avatarkit) and ``pipecat_baseline.py`` (Pipecat, in its own venv)
import this file, so both frameworks see exactly the same tokens and the same timings:

- the chat model's first token arrives 200 ms after the request, then one token every 33 ms;
  tokens look like an LLM tokenizer's: words with their leading space, punctuation on its own;
- the voice answers each sentence 150 ms after it is asked (its audio is made once per
  sentence and kept, so the fake's own CPU time is not counted as framework overhead).

Token times are scheduled on an absolute clock (request time + 200 ms + i x 33 ms), so a slow
event loop never stretches the scenario; each token's real arrival time is recorded.
"""

from __future__ import annotations

import asyncio
import functools
import re
import statistics
import time
from collections.abc import AsyncIterator

import numpy as np

REPLY = (
    "Hello there, it is good to see you again. "
    "I can help you plan the trip to the coast this weekend. "
    "Would you like to start with the train times?"
)
FIRST_TOKEN = 0.200
TOKEN_GAP = 0.033
VOICE_LATENCY = 0.150
RUNS = 20

TOKENS: list[str] = re.findall(r" ?\w+|[^\w\s]", REPLY)
"""``["Hello", " there", ",", " it", ...]``: what a streaming LLM sends."""
FIRST_SENTENCE_END = next(i for i, t in enumerate(TOKENS) if t == ".")
"""Index of the token that completes the first sentence."""

assert "".join(TOKENS) == REPLY


class TokenClock:
    """Replays TOKENS with the fixed latencies and records when each one was handed over."""

    def __init__(self, *, first: float = FIRST_TOKEN, gap: float = TOKEN_GAP) -> None:
        self.first = first
        self.gap = gap
        self.stamps: list[float] = []

    async def tokens(self) -> AsyncIterator[str]:
        """Yield the tokens at request time + first + i x gap."""
        self.stamps = []
        start = time.perf_counter()
        for i, token in enumerate(TOKENS):
            delay = start + self.first + i * self.gap - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.stamps.append(time.perf_counter())
            yield token

    async def whole(self) -> str:
        """The whole reply, returned when its last token would have arrived."""
        await asyncio.sleep(self.first + (len(TOKENS) - 1) * self.gap)
        return REPLY

    @property
    def ideal_first_audio(self) -> float:
        """When the first sentence could at best be heard: its last token + voice latency."""
        return self.stamps[FIRST_SENTENCE_END] + VOICE_LATENCY


@functools.lru_cache(maxsize=16)
def tone_pcm(text: str, sample_rate: int = 16_000) -> bytes:
    """16-bit mono PCM of one 220 Hz tone per word (like avatarkit.testing.fake_speech)."""
    words = max(1, len(text.split()))
    n = int(0.32 * sample_rate)
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / sample_rate)
    gap = np.zeros(int(0.08 * sample_rate))
    samples = np.concatenate([gap, *([tone, gap] * words)])
    return (samples * 32767).astype(np.int16).tobytes()


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max in milliseconds."""
    ms = [v * 1000 for v in values]
    return {
        "median_ms": round(statistics.median(ms), 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
    }
