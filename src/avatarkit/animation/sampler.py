"""Sample a Timeline into per-frame FaceStates: visemes crossfaded, expressions eased, poses smooth.

``sample(timeline, t)`` answers one instant; :class:`TimelineSampler` precomputes the tracks once
and samples many instants with NumPy (``frames(fps)`` for a whole clip), which is what renderers
use. Every track is a pure function of the timeline, so a replayed timeline draws the same face.

- **Visemes**: consecutive cues crossfade over ``blend`` seconds (60 ms by default, shortened
  for cues shorter than that) with a smoothstep ramp, so shapes blend and never pop; gaps
  between cues are silence. A cue's ``weight`` sends the rest of its share to ``sil``.
- **Mouth**: ``jaw_open``, ``mouth_width`` and ``lips_closed`` are the blend-weighted means of a
  per-viseme table (:data:`VISEME_MOUTH`).
- **Expressions**: each keyframe eases (smoothstep) from whatever was showing at its time
  towards its emotion at its intensity, over its ``transition`` seconds.
- **Pose**: yaw, pitch, roll and gaze follow a monotone cubic (PCHIP) through the keyframes
  (smooth, no overshoot); ``blink`` is interpolated linearly so short blinks keep their shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from avatarkit.animation.face_state import OCULUS_VISEMES, FaceState
from avatarkit.types import Emotion, Timeline

__all__ = ["VISEME_MOUTH", "TimelineSampler", "sample"]

FloatArray = npt.NDArray[np.float64]

VISEME_MOUTH: dict[str, tuple[float, float, float]] = {
    # viseme: (jaw_open 0..1, mouth_width -1..1, lips_closed 0..1)
    "sil": (0.0, 0.0, 1.0),
    "PP": (0.0, -0.05, 1.0),
    "FF": (0.12, 0.1, 0.35),
    "TH": (0.2, 0.1, 0.0),
    "DD": (0.26, 0.2, 0.0),
    "kk": (0.32, 0.15, 0.0),
    "CH": (0.24, -0.5, 0.0),
    "SS": (0.12, 0.45, 0.0),
    "nn": (0.2, 0.1, 0.0),
    "RR": (0.26, -0.45, 0.0),
    "aa": (0.9, 0.15, 0.0),
    "E": (0.55, 0.5, 0.0),
    "ih": (0.38, 0.6, 0.0),
    "oh": (0.62, -0.6, 0.0),
    "ou": (0.34, -0.9, 0.0),
}
"""Mouth geometry each Oculus viseme drives, blended by the viseme weights."""

_VIS_INDEX = {v: i for i, v in enumerate(OCULUS_VISEMES)}
_MOUTH_TABLE = np.array([VISEME_MOUTH[v] for v in OCULUS_VISEMES], dtype=np.float64)
_EMOTIONS: tuple[Emotion, ...] = tuple(Emotion)
_EMO_INDEX = {e: i for i, e in enumerate(_EMOTIONS)}
_POSE_FIELDS = ("yaw", "pitch", "roll", "gaze_x", "gaze_y")


def _smoothstep(x: FloatArray) -> FloatArray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _pchip_slopes(x: FloatArray, y: FloatArray) -> FloatArray:
    """Fritsch–Carlson slopes: a monotone, overshoot-free cubic through (x, y)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    m = np.zeros_like(y)
    if len(x) == 2:
        m[:] = delta[0]
        return m
    same_sign = delta[:-1] * delta[1:] > 0
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    m[1:-1] = np.where(same_sign, harmonic, 0.0)
    m[0] = delta[0]
    m[-1] = delta[-1]
    return m


def _pchip(x: FloatArray, y: FloatArray, t: FloatArray) -> FloatArray:
    if len(x) == 0:
        return np.zeros_like(t)
    if len(x) == 1:
        return np.full_like(t, y[0])
    m = _pchip_slopes(x, y)
    tc = np.clip(t, x[0], x[-1])
    k = np.clip(np.searchsorted(x, tc, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    s = (tc - x[k]) / h
    s2, s3 = s * s, s * s * s
    h00 = 2 * s3 - 3 * s2 + 1
    h10 = s3 - 2 * s2 + s
    h01 = -2 * s3 + 3 * s2
    h11 = s3 - s2
    out: FloatArray = h00 * y[k] + h10 * h * m[k] + h01 * y[k + 1] + h11 * h * m[k + 1]
    return out


@dataclass(frozen=True)
class _Tracks:
    seg_start: FloatArray  # contiguous segments covering (-inf, inf), first starts at -inf
    seg_vis: npt.NDArray[np.int64]
    seg_weight: FloatArray
    seg_ramp: FloatArray  # crossfade width at each segment's start
    expr_time: FloatArray
    expr_dur: FloatArray
    expr_from: FloatArray  # (k, n_emotions) state when keyframe k starts
    expr_to: FloatArray
    pose_time: FloatArray
    pose_vals: FloatArray  # (k, 5)
    blink_time: FloatArray
    blink_vals: FloatArray


class TimelineSampler:
    """Precomputed tracks of one Timeline, sampled at any instants.

    Args:
        timeline: The utterance's timeline.
        blend: Viseme crossfade in seconds (about 40–80 ms looks natural).
        lead: Show mouth shapes this many seconds early (the eye reads lips slightly ahead).
        auto_blink: When the poses carry no blink, add a natural seeded blink every 2.5–5.5 s.
        seed: Seed of the automatic blinks.
    """

    def __init__(
        self,
        timeline: Timeline,
        *,
        blend: float = 0.06,
        lead: float = 0.02,
        auto_blink: bool = False,
        seed: int = 0,
    ) -> None:
        self.timeline = timeline
        self.blend = max(0.0, float(blend))
        self.lead = float(lead)
        self._tracks = self._build(timeline, auto_blink=auto_blink, seed=seed)

    # ------------------------------------------------------------------ public

    def at(self, t: float) -> FaceState:
        """The face at time ``t`` (seconds)."""
        return self.sample_many(np.array([t], dtype=np.float64))[0]

    def frames(self, fps: float, count: int | None = None) -> list[FaceState]:
        """One FaceState per video frame, frame ``i`` at ``i / fps``.

        Args:
            fps: Frames per second.
            count: Number of frames (default: enough to cover the timeline's duration).
        """
        if count is None:
            count = max(1, round(self.timeline.duration * fps))
        return self.sample_many(np.arange(count, dtype=np.float64) / fps)

    def sample_many(self, times: npt.ArrayLike) -> list[FaceState]:
        """FaceStates at each of ``times`` (vectorised over all of them)."""
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        vis = self.viseme_weights(t)
        mouth = vis @ _MOUTH_TABLE
        emo = self.emotion_weights(t)
        pose, blink = self.pose_values(t)
        states: list[FaceState] = []
        names = OCULUS_VISEMES
        for i in range(len(t)):
            row = vis[i]
            nz = np.flatnonzero(row > 1e-4)
            erow = emo[i]
            enz = np.flatnonzero(erow > 1e-3)
            states.append(
                FaceState(
                    visemes={names[j]: float(row[j]) for j in nz} or {"sil": 1.0},
                    jaw_open=float(mouth[i, 0]),
                    mouth_width=float(mouth[i, 1]),
                    lips_closed=float(mouth[i, 2]),
                    emotions={_EMOTIONS[j]: float(erow[j]) for j in enz},
                    yaw=float(pose[i, 0]),
                    pitch=float(pose[i, 1]),
                    roll=float(pose[i, 2]),
                    gaze_x=float(pose[i, 3]),
                    gaze_y=float(pose[i, 4]),
                    blink=float(blink[i]),
                )
            )
        return states

    def viseme_weights(self, times: npt.ArrayLike) -> FloatArray:
        """Blend weights, shape ``(len(times), 15)`` over OCULUS_VISEMES; rows sum to 1."""
        tr = self._tracks
        t = np.asarray(times, dtype=np.float64).reshape(-1) + self.lead
        n_seg = len(tr.seg_start)
        out = np.zeros((len(t), len(OCULUS_VISEMES)), dtype=np.float64)
        j = np.clip(np.searchsorted(tr.seg_start, t, side="right") - 1, 0, n_seg - 1)
        for off in (-1, 0, 1):
            k = j + off
            valid = (k >= 0) & (k < n_seg)
            kk = np.clip(k, 0, n_seg - 1)
            w = self._rise(tr, kk, t) * (1.0 - self._rise(tr, np.minimum(kk + 1, n_seg), t))
            w = np.where(valid, w, 0.0)
            rows = np.arange(len(t))
            # one (row, viseme) pair per row in each pass: plain fancy-index += is exact
            out[rows, tr.seg_vis[kk]] += w * tr.seg_weight[kk]
            out[:, 0] += w * (1.0 - tr.seg_weight[kk])
        total = out.sum(axis=1, keepdims=True)
        result: FloatArray = out / np.where(total > 0, total, 1.0)
        return result

    def emotion_weights(self, times: npt.ArrayLike) -> FloatArray:
        """Expression weights (intensity folded in), shape ``(len(times), len(Emotion))``."""
        tr = self._tracks
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        if len(tr.expr_time) == 0:
            return np.zeros((len(t), len(_EMOTIONS)))
        k = np.searchsorted(tr.expr_time, t, side="right") - 1
        before = k < 0
        kk = np.clip(k, 0, None)
        dur = tr.expr_dur[kk]
        a = np.where(
            dur > 0, _smoothstep((t - tr.expr_time[kk]) / np.where(dur > 0, dur, 1.0)), 1.0
        )
        out = tr.expr_from[kk] + (tr.expr_to[kk] - tr.expr_from[kk]) * a[:, None]
        out[before] = 0.0
        return out

    def pose_values(self, times: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """(yaw, pitch, roll, gaze_x, gaze_y) rows and the blink track at ``times``."""
        tr = self._tracks
        t = np.asarray(times, dtype=np.float64).reshape(-1)
        pose = np.stack([_pchip(tr.pose_time, tr.pose_vals[:, c], t) for c in range(5)], axis=1)
        pose[:, 3:5] = np.clip(pose[:, 3:5], -1.0, 1.0)
        if len(tr.blink_time):
            blink = np.interp(t, tr.blink_time, tr.blink_vals)
        else:
            blink = np.zeros_like(t)
        return pose, np.clip(blink, 0.0, 1.0)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _rise(tr: _Tracks, k: npt.NDArray[np.int64], t: FloatArray) -> FloatArray:
        """How far segment ``k`` has faded in at ``t`` (segment n_seg means 'never')."""
        n_seg = len(tr.seg_start)
        kk = np.minimum(k, n_seg - 1)
        start = np.where(k >= n_seg, np.inf, tr.seg_start[kk])
        ramp = tr.seg_ramp[kk]
        with np.errstate(invalid="ignore"):
            x = np.where(ramp > 0, (t - (start - ramp / 2)) / np.where(ramp > 0, ramp, 1.0), 0.0)
        step = (t >= start).astype(np.float64)
        return np.where(ramp > 0, _smoothstep(x), step)

    def _build(self, tl: Timeline, *, auto_blink: bool, seed: int) -> _Tracks:
        # Visemes → contiguous segments with silence filling the gaps.
        starts: list[float] = [-np.inf]
        vis: list[int] = [0]
        weights: list[float] = [1.0]
        cursor = -np.inf
        for cue in sorted(tl.visemes, key=lambda c: c.start):
            if cue.end <= cue.start:
                continue
            s = max(cue.start, cursor) if np.isfinite(cursor) else cue.start
            if s >= cue.end:
                continue
            if np.isfinite(cursor) and s > cursor + 1e-9:
                starts.append(cursor)
                vis.append(0)
                weights.append(1.0)
            elif not np.isfinite(cursor):
                pass
            starts.append(s)
            vis.append(_VIS_INDEX.get(cue.viseme, 0))
            weights.append(float(cue.weight))
            cursor = cue.end
        if np.isfinite(cursor):
            starts.append(cursor)
            vis.append(0)
            weights.append(1.0)
        seg_start = np.array(starts, dtype=np.float64)
        ends = np.append(seg_start[1:], np.inf)
        dur = ends - seg_start
        ramp = np.zeros_like(seg_start)
        for k in range(1, len(seg_start)):
            ramp[k] = min(self.blend, dur[k - 1], dur[k])

        # Expressions: state at each keyframe's start, computed forward once.
        exprs = sorted(tl.expressions, key=lambda e: e.time)
        n_e = len(_EMOTIONS)
        e_time = np.array([e.time for e in exprs], dtype=np.float64)
        e_dur = np.array([e.transition for e in exprs], dtype=np.float64)
        e_to = np.zeros((len(exprs), n_e))
        e_from = np.zeros((len(exprs), n_e))
        for i, e in enumerate(exprs):
            e_to[i, _EMO_INDEX[e.emotion]] = e.intensity
        for i in range(1, len(exprs)):
            el = e_time[i] - e_time[i - 1]
            d = e_dur[i - 1]
            a = 1.0 if d <= 0 else float(_smoothstep(np.array(el / d)))
            e_from[i] = e_from[i - 1] + (e_to[i - 1] - e_from[i - 1]) * a

        # Poses: one keyframe per distinct time (the last wins), sorted.
        by_time = {p.time: p for p in sorted(tl.poses, key=lambda p: p.time)}
        poses = [by_time[k] for k in sorted(by_time)]
        p_time = np.array([p.time for p in poses], dtype=np.float64)
        p_vals = np.array([[getattr(p, f) for f in _POSE_FIELDS] for p in poses], dtype=np.float64)
        p_vals = p_vals.reshape(len(poses), len(_POSE_FIELDS))
        b_time = p_time.copy()
        b_vals = np.array([p.blink for p in poses], dtype=np.float64)
        if auto_blink and not np.any(b_vals > 0):
            b_time, b_vals = _blink_schedule(tl.duration, seed)
        return _Tracks(
            seg_start, np.array(vis, dtype=np.int64), np.array(weights), ramp,
            e_time, e_dur, e_from, e_to, p_time, p_vals, b_time, b_vals,
        )  # fmt: skip


def _blink_schedule(duration: float, seed: int) -> tuple[FloatArray, FloatArray]:
    """A seeded natural blink track: a 150 ms blink every 2.5–5.5 s."""
    rng = np.random.default_rng(seed)
    times: list[float] = []
    vals: list[float] = []
    t = float(rng.uniform(0.8, 2.5))
    while t < duration:
        times += [t, t + 0.06, t + 0.09, t + 0.18]
        vals += [0.0, 1.0, 1.0, 0.0]
        t += float(rng.uniform(2.5, 5.5))
    return np.array(times), np.array(vals)


_cache: dict[int, tuple[tuple[object, ...], TimelineSampler]] = {}


def _fingerprint(tl: Timeline) -> tuple[object, ...]:
    def span(items: list[object], attr: str) -> tuple[object, ...]:
        if not items:
            return (0,)
        return (len(items), getattr(items[0], attr), getattr(items[-1], attr))

    return (
        tl.duration,
        span(list(tl.visemes), "start"),
        span(list(tl.expressions), "time"),
        span(list(tl.poses), "time"),
    )


def sample(timeline: Timeline, t: float) -> FaceState:
    """The face at time ``t`` of ``timeline``.

    The precomputed tracks of the last few timelines are cached, so calling this for every
    frame stays cheap; for a whole clip :meth:`TimelineSampler.frames` is faster still.
    """
    key = id(timeline)
    fp = _fingerprint(timeline)
    hit = _cache.get(key)
    if hit is None or hit[0] != fp or hit[1].timeline is not timeline:
        if len(_cache) > 8:
            _cache.clear()
        hit = (fp, TimelineSampler(timeline))
        _cache[key] = hit
    return hit[1].at(t)
