"""Head and eye motion for one utterance: idle sway, emphasis nods, gaze and blinks.

``plan_pose`` turns the voice's word and phoneme timings into ``AvatarPose`` keyframes on the
audio's clock. Everything random comes from one seeded generator, so the same seed gives the
same motion and another seed a different one.

Conventions (shared with the frame drawers through ``FaceState``): angles in degrees; ``yaw``
positive turns the head to the avatar's left (the viewer's right), ``pitch`` positive nods down,
``roll`` positive tilts clockwise as seen by the viewer; ``gaze_x`` positive looks to the
viewer's right and ``gaze_y`` positive looks down, both in [-1, 1]; ``blink`` is eyelid closure
0 (open) … 1 (closed). Between keyframes, channels are meant to be interpolated linearly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avatarkit.types import AvatarPose, Emotion, FacialExpression, PhonemeTiming, WordTiming

__all__ = ["Blink", "Nod", "PoseStyle", "blink_schedule", "emphasis_nods", "plan_pose"]

_STOP_WORDS = frozenset(
    """
    a an the and or but if of to in on at by for with from as is am are was were be been
    being it its this that these those i you he she we they me him her us them my your his
    our their do does did have has had not no so than then there here what which who whom
    when where why how all any can could will would shall should may might must just very
    too also into about over under again once only own same such some more most other out up
    down off
    """.split()  # noqa: SIM905 - a word list reads better as text
)


@dataclass(frozen=True)
class PoseStyle:
    """How lively the head is. Amplitudes in degrees, times in seconds.

    Attributes:
        sway: Idle head motion amplitude (yaw, pitch, roll).
        nod: Emphasis nod depth for the strongest word.
        nod_gap: Shortest time between two nods.
        blink_interval: Median time between blinks.
        blink_duration: Range of one blink's length (closing + opening).
        step: Spacing of the idle-motion keyframes.
    """

    sway: tuple[float, float, float] = (1.6, 1.0, 0.8)
    nod: float = 3.2
    nod_gap: float = 1.5
    blink_interval: float = 3.4
    blink_duration: tuple[float, float] = (0.10, 0.15)
    step: float = 0.2


@dataclass(frozen=True)
class Blink:
    """One blink: eyelids close from ``start``, shut at ``closed``, open again by ``end``."""

    start: float
    closed: float
    end: float


@dataclass(frozen=True)
class Nod:
    """One emphasis nod: pitch dips from ``start``, deepest at ``peak``, back by ``end``."""

    start: float
    peak: float
    end: float
    depth: float
    word_index: int


def _pauses(words: Sequence[WordTiming], duration: float) -> list[tuple[float, float]]:
    """Spans with no word: before the first, between words, after the last."""
    spans: list[tuple[float, float]] = []
    t = 0.0
    for w in sorted(words, key=lambda w: w.start):
        if w.start > t:
            spans.append((t, w.start))
        t = max(t, w.end)
    if duration > t:
        spans.append((t, duration))
    return spans


def blink_schedule(
    words: Sequence[WordTiming],
    duration: float,
    *,
    rng: np.random.Generator,
    style: PoseStyle = PoseStyle(),
) -> list[Blink]:
    """Plan blinks at natural intervals, moved into pauses between words where possible.

    Intervals follow a log-normal distribution around ``style.blink_interval`` (clipped to
    1.5–7 s); about one blink in eight is a double blink. Each planned blink may move up to
    1.2 s to land in a pause (or, failing that, to be shut in the gap between two words); only
    when neither is near does it fall inside a word.

    Args:
        words: Word timings of the utterance.
        duration: Length of the audio in seconds.
        rng: The seeded generator to draw from.
        style: Timing parameters.

    Returns:
        Blinks sorted by time, none overlapping, all within ``[0, duration]``.
    """
    pauses = _pauses(words, duration)
    blinks: list[Blink] = []
    t = float(rng.uniform(0.4, 2.2))
    while True:
        length = float(rng.uniform(*style.blink_duration))
        if t + length > duration:
            break
        start = _place(t, length, pauses)
        if blinks and start < blinks[-1].end + 0.25:
            start = blinks[-1].end + 0.25
        if start + length > duration:
            break
        blinks.append(_blink(start, length))
        if rng.random() < 0.12:  # double blink
            second = start + length + float(rng.uniform(0.15, 0.3))
            if second + length <= duration:
                blinks.append(_blink(second, length))
        gap = float(np.clip(rng.lognormal(math.log(style.blink_interval), 0.35), 1.5, 7.0))
        t = blinks[-1].end + gap
    return blinks


def _blink(start: float, length: float) -> Blink:
    return Blink(round(start, 3), round(start + 0.4 * length, 3), round(start + length, 3))


def _place(t: float, length: float, pauses: list[tuple[float, float]], reach: float = 1.2) -> float:
    """Start time near ``t`` for a blink of ``length``.

    In a pause that holds it if one is within ``reach``, else shut at the nearest gap between
    two words, else ``t`` itself.
    """
    best: float | None = None
    for a, b in pauses:
        if b - a < length:
            continue
        # the start in [a, b - length] nearest to t, centred a little into the pause when roomy
        lo, hi = a + min(0.05, (b - a - length) / 2), b - length - min(0.05, (b - a - length) / 2)
        start = min(max(t, lo), hi)
        if abs(start - t) <= reach and (best is None or abs(start - t) < abs(best - t)):
            best = start
    if best is None:  # no pause near: at least be shut between two words
        for a, b in pauses:
            start = (a + b) / 2 - 0.4 * length
            if abs(start - t) <= reach and (best is None or abs(start - t) < abs(best - t)):
                best = start
    return t if best is None else max(0.0, best)


def emphasis_nods(
    words: Sequence[WordTiming],
    phonemes: Sequence[PhonemeTiming],
    *,
    rng: np.random.Generator,
    loudness: Sequence[float] | None = None,
    style: PoseStyle = PoseStyle(),
) -> list[Nod]:
    """Choose the words worth a nod and time the nods to their stressed syllables.

    A word qualifies when it is a content word (four letters or more, not a function word)
    carrying primary stress (``PhonemeTiming.stress == 1``; when the voice gave no phonemes,
    long content words qualify), or when ``loudness`` marks it clearly louder than the median.
    The strongest candidates win, at most one nod per ``style.nod_gap`` seconds.

    Args:
        words: Word timings.
        phonemes: Phoneme timings with ``word_index`` and ``stress`` where the voice has them.
        rng: The seeded generator (small variations of depth and timing).
        loudness: Optional loudness per word (any linear or dB scale; compared to the median).
        style: Depth and spacing.

    Returns:
        Nods sorted by time.
    """
    if not words:
        return []
    stress_onset: dict[int, float] = {}
    has_stress_info = any(p.word_index is not None for p in phonemes)
    for p in phonemes:
        if p.word_index is not None and p.stress == 1 and p.word_index not in stress_onset:
            stress_onset[p.word_index] = p.start
    loud_z = np.zeros(len(words))
    if loudness is not None and len(loudness) == len(words) and len(words) > 2:
        arr = np.asarray(loudness, dtype=float)
        spread = float(np.std(arr)) or 1.0
        loud_z = (arr - float(np.median(arr))) / spread
    candidates: list[tuple[float, int, float]] = []  # (score, index, onset)
    for i, w in enumerate(words):
        letters = "".join(c for c in w.text.lower() if c.isalpha())
        content = len(letters) >= 4 and letters not in _STOP_WORDS
        dur = max(w.end - w.start, 0.0)
        stressed = i in stress_onset if has_stress_info else dur >= 0.3
        loud = loud_z[i] > 1.0
        if not ((content and stressed) or loud) or dur < 0.12:
            continue
        score = dur * (1.0 + 0.3 * max(float(loud_z[i]), 0.0)) * (1.0 if content else 0.6)
        onset = stress_onset.get(i, w.start)
        candidates.append((score, i, onset))
    if not candidates:
        return []
    top = max(c[0] for c in candidates)
    chosen: list[tuple[float, int, float]] = []
    for cand in sorted(candidates, key=lambda c: -c[0]):
        if all(abs(cand[2] - c[2]) >= style.nod_gap for c in chosen):
            chosen.append(cand)
    nods: list[Nod] = []
    for score, i, onset in sorted(chosen, key=lambda c: c[2]):
        depth = style.nod * (0.55 + 0.45 * score / top) * float(rng.uniform(0.85, 1.1))
        peak = onset + 0.08
        nods.append(Nod(max(0.0, peak - 0.18), peak, peak + 0.32, depth, i))
    return nods


def _nod_curve(t: np.ndarray, nods: Sequence[Nod]) -> np.ndarray:
    out = np.zeros_like(t)
    for n in nods:
        rise = (t >= n.start) & (t < n.peak)
        fall = (t >= n.peak) & (t <= n.end)
        out[rise] += n.depth * 0.5 * (1 - np.cos(np.pi * (t[rise] - n.start) / (n.peak - n.start)))
        x = (t[fall] - n.peak) / (n.end - n.peak)
        out[fall] += n.depth * 0.5 * (1 + np.cos(np.pi * x))
    return out


def _gaze_keys(
    duration: float,
    expressions: Sequence[FacialExpression] | None,
    rng: np.random.Generator,
) -> list[tuple[float, float, float]]:
    """Piecewise-linear gaze: micro-saccades near the camera, glances away while thinking."""
    thinking: list[tuple[float, float]] = []
    if expressions:
        ordered = sorted(expressions, key=lambda e: e.time)
        for k, e in enumerate(ordered):
            if e.emotion is Emotion.THINKING and e.intensity >= 0.3:
                end = ordered[k + 1].time if k + 1 < len(ordered) else duration
                if end > e.time:
                    thinking.append((e.time, min(end, duration)))
    keys: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
    gx = gy = 0.0
    t = float(rng.uniform(0.8, 2.0))
    side = 1.0 if rng.random() < 0.5 else -1.0
    while t < duration - 0.1:
        in_thought = next((span for span in thinking if span[0] <= t < span[1]), None)
        if in_thought is not None and in_thought[1] - t > 0.5:
            # glance up and aside, hold, come back
            hold = float(min(rng.uniform(0.6, 1.2), in_thought[1] - t - 0.2))
            tx, ty = side * float(rng.uniform(0.45, 0.65)), -float(rng.uniform(0.3, 0.5))
            keys += [(t, gx, gy), (t + 0.06, tx, ty), (t + 0.06 + hold, tx, ty)]
            t += 0.06 + hold
            gx, gy = float(rng.normal(0, 0.05)), float(rng.normal(0, 0.04))
            keys.append((t + 0.06, gx, gy))
            side = -side if rng.random() < 0.4 else side
            t += 0.06 + float(rng.uniform(1.0, 2.0))
            continue
        nx, ny = float(rng.normal(0, 0.06)), float(rng.normal(0, 0.04))
        keys += [(t, gx, gy), (t + 0.04, nx, ny)]
        gx, gy = nx, ny
        t += 0.04 + float(rng.uniform(1.2, 3.5))
    return [(min(max(a, 0.0), duration), x, y) for a, x, y in keys]


def plan_pose(
    words: Sequence[WordTiming],
    phonemes: Sequence[PhonemeTiming],
    duration: float,
    *,
    seed: int = 0,
    expressions: Sequence[FacialExpression] | None = None,
    loudness: Sequence[float] | None = None,
    style: PoseStyle | None = None,
) -> list[AvatarPose]:
    """Plan head, gaze and blink keyframes for an utterance.

    Idle sway is a sum of slow sinusoids with seeded frequencies and phases (livelier while
    speaking); emphasis nods dip the head on stressed content words (see ``emphasis_nods``);
    the gaze rests on the camera with small saccades and glances up and aside while the
    expression track shows ``thinking``; blinks follow ``blink_schedule``. Each blink is three
    keyframes: open at its start, closed near its middle, open at its end.

    Args:
        words: Word timings of the utterance.
        phonemes: Phoneme timings (``stress`` and ``word_index`` used when present).
        duration: Length of the audio in seconds.
        seed: Seed for every random choice; the same seed gives the same keyframes.
        expressions: Expression keyframes with times set (``resolve_times``), for gaze.
        loudness: Optional loudness per word, to nod on louder words too.
        style: Amplitudes and timings (``PoseStyle()`` by default).

    Returns:
        Keyframes sorted by time, all within ``[0, duration]``.
    """
    style = style or PoseStyle()
    if duration <= 0:
        return [AvatarPose(time=0.0)]
    rng = np.random.default_rng(seed)
    blinks = blink_schedule(words, duration, rng=rng, style=style)
    nods = emphasis_nods(words, phonemes, rng=rng, loudness=loudness, style=style)
    gaze = _gaze_keys(duration, expressions, rng)

    times = [*np.arange(0.0, duration, style.step).tolist(), duration]
    for b in blinks:
        times += [b.start, b.closed, b.end]
    for n in nods:
        times += [n.start, (n.start + n.peak) / 2, n.peak, (n.peak + n.end) / 2, n.end]
    times += [g[0] for g in gaze]
    t = np.unique(
        np.minimum(np.round(np.clip(np.asarray(times, dtype=float), 0, duration), 3), duration)
    )

    # idle sway: three sinusoids per axis, plus a quicker component gated by speech
    speaking = np.zeros_like(t)
    for w in words:
        speaking[(t >= w.start - 0.1) & (t <= w.end + 0.1)] = 1.0
    angles = []
    for amp in style.sway:
        freqs = rng.uniform(0.04, 0.3, 3)
        phases = rng.uniform(0, 2 * np.pi, 3)
        weights = rng.dirichlet(np.ones(3))
        slow = sum(
            wgt * np.sin(2 * np.pi * f * t + ph)
            for wgt, f, ph in zip(weights, freqs, phases, strict=True)
        )
        quick = np.sin(2 * np.pi * float(rng.uniform(0.5, 0.9)) * t + float(rng.uniform(0, 6)))
        angles.append(amp * (slow + 0.25 * speaking * quick))
    yaw, pitch, roll = angles
    pitch = pitch + _nod_curve(t, nods)

    gk = np.asarray(gaze, dtype=float)
    gaze_x = np.interp(t, gk[:, 0], gk[:, 1])
    gaze_y = np.interp(t, gk[:, 0], gk[:, 2])
    yaw = yaw + 3.0 * gaze_x  # the head follows a glance a little

    blink = np.zeros_like(t)
    if blinks:
        bt = np.array([[b.start, b.closed, b.end] for b in blinks]).ravel()
        bv = np.tile([0.0, 1.0, 0.0], len(blinks))
        blink = np.interp(t, bt, bv, left=0.0, right=0.0)

    # Clipped and rounded as whole arrays (a per-keyframe np.clip cost most of this function).
    gaze_x, gaze_y = np.clip(gaze_x, -1, 1), np.clip(gaze_y, -1, 1)
    blink = np.clip(blink, 0, 1)
    return [
        AvatarPose(
            time=time,
            yaw=round(y, 3),
            pitch=round(p, 3),
            roll=round(r, 3),
            gaze_x=round(gx, 3),
            gaze_y=round(gy, 3),
            blink=round(b, 3),
        )
        for time, y, p, r, gx, gy, b in zip(
            t.tolist(),
            yaw.tolist(),
            pitch.tolist(),
            roll.tolist(),
            gaze_x.tolist(),
            gaze_y.tolist(),
            blink.tolist(),
            strict=True,
        )
    ]
