from __future__ import annotations

import random

import numpy as np
import pytest

from avatarkit.animation.pose import blink_schedule, emphasis_nods, plan_pose
from avatarkit.types import Emotion, FacialExpression, PhonemeTiming, Timeline, WordTiming

_SENTENCE = (
    "well the weather tomorrow looks wonderful so we should definitely visit the mountains "
    "and maybe take a picnic with sandwiches lemonade and some fruit for everyone"
)
_TEXT = _SENTENCE.split()


def _utterance(
    seconds: float, *, pause_every: int = 5, seed: int = 0
) -> tuple[list[WordTiming], list[PhonemeTiming], float]:
    """Synthetic speech: words with realistic lengths, a pause every few words, stress marks."""
    rnd = random.Random(seed)
    words: list[WordTiming] = []
    phonemes: list[PhonemeTiming] = []
    t, i = 0.3, 0
    while t < seconds - 1.0:
        w = _TEXT[i % len(_TEXT)]
        d = 0.06 * len(w) + 0.08
        words.append(WordTiming(text=w, start=t, end=t + d))
        half = t + d / 2
        stress = 1 if len(w) >= 5 else 0
        phonemes.append(PhonemeTiming(phoneme="a", start=t, end=half, word_index=i, stress=0))
        phonemes.append(
            PhonemeTiming(phoneme="b", start=half, end=t + d, word_index=i, stress=stress)
        )
        t += d + (rnd.uniform(0.35, 0.7) if (i + 1) % pause_every == 0 else 0.02)
        i += 1
    return words, phonemes, t + 0.6


def test_same_seed_same_pose_other_seed_other_pose() -> None:
    words, phonemes, dur = _utterance(12)
    a = plan_pose(words, phonemes, dur, seed=7)
    b = plan_pose(words, phonemes, dur, seed=7)
    c = plan_pose(words, phonemes, dur, seed=8)
    assert a == b
    assert a != c


def test_keyframes_sorted_inside_the_clip_and_small() -> None:
    words, phonemes, dur = _utterance(20)
    poses = plan_pose(words, phonemes, dur, seed=1)
    assert Timeline(duration=dur, poses=poses).problems() == []
    assert poses[0].time == 0.0 and poses[-1].time == pytest.approx(dur)
    assert max(abs(p.yaw) for p in poses) < 6
    assert max(abs(p.roll) for p in poses) < 4
    assert max(abs(p.pitch) for p in poses) < 7
    # the head does move
    assert np.std([p.yaw for p in poses]) > 0.2


def test_blinks_at_natural_intervals_and_lengths() -> None:
    words, _, dur = _utterance(120)
    blinks = blink_schedule(words, dur, rng=np.random.default_rng(3))
    starts = np.array([b.start for b in blinks])
    gaps = np.diff(starts)
    singles = gaps[gaps > 0.8]  # leave out the second blink of a double blink
    assert 2.0 <= float(np.median(singles)) <= 6.0
    assert singles.min() >= 1.2 and singles.max() <= 8.0
    assert 15 <= len(blinks) <= 60
    lengths = [b.end - b.start for b in blinks]
    assert min(lengths) >= 0.1 - 1e-9 and max(lengths) <= 0.15 + 1e-9
    assert all(b.start < b.closed < b.end for b in blinks)


def test_blinks_prefer_pauses_over_words() -> None:
    words, _, dur = _utterance(120)
    mid_word = 0
    blinks = blink_schedule(words, dur, rng=np.random.default_rng(5))
    for b in blinks:
        if any(w.start < b.closed < w.end for w in words):
            mid_word += 1
    assert mid_word / len(blinks) <= 0.2
    # by chance alone (no placement), blinks would land in words most of the time
    speech = sum(w.end - w.start for w in words) / dur
    assert speech > 0.6


def test_blink_keyframes_open_closed_open() -> None:
    words, phonemes, dur = _utterance(15)
    poses = plan_pose(words, phonemes, dur, seed=2)
    closed = [i for i, p in enumerate(poses) if p.blink == 1.0]
    assert closed, "no blink in 15 s"
    for i in closed:
        j = max(k for k in range(i) if poses[k].blink == 0.0)
        k = min(k for k in range(i + 1, len(poses)) if poses[k].blink == 0.0)
        assert 0.09 <= poses[k].time - poses[j].time <= 0.16  # one blink ~100-150 ms
        rising = [p.blink for p in poses[j : i + 1]]
        falling = [p.blink for p in poses[i : k + 1]]
        assert rising == sorted(rising) and falling == sorted(falling, reverse=True)


def test_nods_fall_on_stressed_content_words() -> None:
    words, phonemes, _ = _utterance(30)
    nods = emphasis_nods(words, phonemes, rng=np.random.default_rng(0))
    assert len(nods) >= 5
    stressed = {p.word_index for p in phonemes if p.stress == 1}
    for n in nods:
        assert n.word_index in stressed
        w = words[n.word_index]
        assert w.start - 0.05 <= n.peak <= w.end + 0.15
    times = [n.peak for n in nods]
    assert min(np.diff(times)) >= 1.5


def test_pose_pitch_dips_at_nods() -> None:
    words, phonemes, dur = _utterance(20)
    poses = plan_pose(words, phonemes, dur, seed=4)
    nods = emphasis_nods(words, phonemes, rng=np.random.default_rng(0))
    t = np.array([p.time for p in poses])
    pitch = np.array([p.pitch for p in poses])
    for n in nods:
        at_peak = np.interp(n.peak, t, pitch)
        at_start = np.interp(n.start, t, pitch)
        assert at_peak - at_start > 1.0


def test_no_stress_no_nod_but_loud_word_nods() -> None:
    words, phonemes, _ = _utterance(10)
    flat = [p.model_copy(update={"stress": 0}) for p in phonemes]
    assert emphasis_nods(words, flat, rng=np.random.default_rng(0)) == []
    loudness = [1.0] * len(words)
    loudness[6] = 3.0
    nods = emphasis_nods(words, flat, rng=np.random.default_rng(0), loudness=loudness)
    assert [n.word_index for n in nods] == [6]


def test_gaze_glances_away_while_thinking_only() -> None:
    words, phonemes, dur = _utterance(16)
    expressions = [
        FacialExpression(time=0.0, emotion=Emotion.NEUTRAL, intensity=0.0),
        FacialExpression(time=5.0, emotion=Emotion.THINKING, intensity=0.6),
        FacialExpression(time=10.0, emotion=Emotion.NEUTRAL, intensity=0.0),
    ]
    poses = plan_pose(words, phonemes, dur, seed=3, expressions=expressions)
    inside = [abs(p.gaze_x) for p in poses if 5.0 <= p.time < 10.0]
    outside = [abs(p.gaze_x) for p in poses if p.time < 4.9 or p.time > 10.5]
    assert max(inside) >= 0.4
    assert max(outside) < 0.3
    plain = plan_pose(words, phonemes, dur, seed=3)
    assert max(abs(p.gaze_x) for p in plain) < 0.3


def test_zero_duration_gives_one_rest_pose() -> None:
    poses = plan_pose([], [], 0.0)
    assert len(poses) == 1 and poses[0].blink == 0.0
