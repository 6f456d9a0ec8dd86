"""Local voice speed: eSpeak NG synthesis of a 40-word sentence as a multiple of real time.

Run: ``python benchmarks/voice_bench.py``. Prints, from one run side by side: the raw engine
(`avatarkit._espeak.synthesize`), the full provider (`EspeakVoice`, WAV encoded, timings as
pydantic models) and the G2P helper, each as the median of several repeats.
"""

from __future__ import annotations

import os
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


def _median_seconds(fn: object, repeats: int = REPEATS) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``fn()`` (CPU time ignores other processes)."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()  # type: ignore[operator]
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


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
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} (wall-clock figures suffer from load)")
    print(f"{'stage':<32}{'wall ms':>9}{'x real time':>13}{'CPU ms':>9}{'x real time':>13}")
    for name, (wall, cpu) in (
        ("_espeak.synthesize (engine)", engine),
        ("EspeakVoice.synthesize (WAV)", provider),
        ("_espeak.text_to_ipa (G2P)", g2p),
    ):
        print(
            f"{name:<32}{wall * 1000:>9.1f}{duration / wall:>12.0f}x"
            f"{cpu * 1000:>9.1f}{duration / max(cpu, 1e-9):>12.0f}x"
        )


if __name__ == "__main__":
    main()
