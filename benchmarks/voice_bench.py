"""Local voice speed: eSpeak NG synthesis of a 40-word sentence as a multiple of real time.

Run: ``python benchmarks/voice_bench.py``. Prints, from one run side by side: the raw engine
(`avatarkit._espeak.synthesize`), the full provider (`EspeakVoice`, WAV encoded, timings as
pydantic models) and the G2P helper, each as the median of several repeats.
"""

from __future__ import annotations

import platform
import statistics
import time

from avatarkit import _espeak
from avatarkit._sync import run
from avatarkit.providers.espeak import EspeakVoice

SENTENCE = (
    "The quick brown fox jumps over the lazy dog while seven happy children play music in "
    "the warm summer park, and their parents watch them from a wooden bench near the old "
    "fountain beside the tall green trees every day."
)
REPEATS = 15


def _median_seconds(fn: object, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    words = len(SENTENCE.split())
    _espeak.synthesize("Warm up.")  # library load and first voice
    audio = _espeak.synthesize(SENTENCE)
    duration = audio.duration
    voice = EspeakVoice()
    engine = _median_seconds(lambda: _espeak.synthesize(SENTENCE))
    provider = _median_seconds(lambda: run(voice.synthesize(SENTENCE)))
    g2p = _median_seconds(lambda: _espeak.text_to_ipa(SENTENCE))
    print(f"eSpeak NG {_espeak.library_version()} on {platform.processor() or platform.machine()}")
    print(f"sentence: {words} words, {duration:.2f} s of speech, {len(audio.phonemes)} phonemes")
    print(f"{'stage':<34}{'ms':>8}{'x real time':>14}")
    for name, secs in (
        ("_espeak.synthesize (engine)", engine),
        ("EspeakVoice.synthesize (WAV)", provider),
        ("_espeak.text_to_ipa (G2P)", g2p),
    ):
        print(f"{name:<34}{secs * 1000:>8.1f}{duration / secs:>13.0f}x")


if __name__ == "__main__":
    main()
