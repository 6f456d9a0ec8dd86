"""Lip sync: Oculus viseme cues for any voice, from the best information the voice gives.

Sources, best first (each cue is tagged with the one it came from):

1. ``"phonemes"``: the voice's own phoneme timings (eSpeak reports them);
2. ``"words"``: word timings only (ElevenLabs alignment, OpenAI, any provider): each word's
   phonemes come from eSpeak's grapheme-to-phoneme and are spread over the word's span with a
   duration model (vowels longer than stops, long vowels and diphthongs longer still);
3. ``"audio"``: the waveform alone (any WAV/MP3/PCM, no text): a frame-by-frame estimate of
   how open the mouth is and which shape it makes, from energy and spectral band ratios, with
   lip closures (p/b/m, pauses) detected by a small logistic model over those features.

All sources go through the same clean-up: coarticulation (lip-neutral consonants such as
k/g/n/t take on the shape of the vowel beside them, lip rounding starts during the consonants
before a rounded vowel), a minimum hold so the mouth does not flicker (p/b/m closures are kept
and lengthened, never dropped), and rest (``sil``) at pauses. The result is sorted,
non-overlapping, and covers exactly ``[0, duration]`` of the audio.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from avatarkit.animation.viseme import (
    VOWEL_VISEMES,
    UnknownPhonemeError,
    is_pause,
    is_vowel,
    phoneme_visemes,
)
from avatarkit.audio import decode_audio
from avatarkit.config import get_logger
from avatarkit.errors import InputValidationError
from avatarkit.types import (
    AvatarPose,
    FacialExpression,
    LipSync,
    PhonemeTiming,
    Timeline,
    VisemeCue,
    VisemeSource,
    VoiceOutput,
    WordTiming,
)

__all__ = [
    "MouthTrack",
    "lipsync",
    "lipsync_from_audio",
    "lipsync_from_phonemes",
    "lipsync_from_words",
    "mouth_track",
    "timeline_from",
    "word_phonemes",
    "words_from_characters",
]

_log = get_logger(__name__)

FloatArray = npt.NDArray[np.float64]

MIN_HOLD = 0.05
"""Shortest time (s) a mouth shape is shown; shorter cues are absorbed by a neighbour."""
MIN_PAUSE = 0.1
"""Shortest silence (s) that rests the mouth; shorter gaps are bridged."""

# Lips are free during these consonants: they show the neighbouring vowel's shape.
_LIP_NEUTRAL = frozenset({"kk", "DD", "nn"})
_ROUNDED = frozenset({"oh", "ou"})
# Glottal sounds: the mouth already shows the next vowel (placeholder resolved later).
_TRANSPARENT = frozenset({"h", "ɦ", "ʔ"})
_SEE_NEXT = "~"
_WARNED: set[str] = set()
_LANG_VOICE = {"en": "en-us", "pt": "pt", "zh": "cmn"}


@dataclass
class _Seg:
    viseme: str
    start: float
    end: float
    weight: float

    @property
    def dur(self) -> float:
        return self.end - self.start


# --------------------------------------------------------------------------- helpers


def _weight(viseme: str, phoneme: str, stress: int) -> float:
    if viseme == "sil":
        return 1.0
    if viseme in VOWEL_VISEMES and is_vowel(phoneme):
        return 1.0 if stress else 0.85
    if viseme == "PP":
        return 0.6 if phoneme.startswith(("β", "ɸ")) else 1.0
    if viseme in ("FF", "CH", "TH"):
        return 0.9
    return 0.7


def _visemes_of(phoneme: str, strict: bool, unknown: set[str]) -> tuple[str, ...]:
    try:
        return phoneme_visemes(phoneme)
    except UnknownPhonemeError:
        if strict:
            raise
        if phoneme not in unknown and phoneme not in _WARNED:
            unknown.add(phoneme)
            _WARNED.add(phoneme)
            _log.warning("no viseme for phoneme %r: shown as a half-open mouth", phoneme)
        return ("E",) if is_vowel(phoneme) else ("DD",)


def _split(
    phoneme: str, start: float, end: float, stress: int, strict: bool, unknown: set[str]
) -> list[_Seg]:
    """One phoneme span → one segment per viseme (diphthongs: 60 % first shape)."""
    vis = _visemes_of(phoneme, strict, unknown)
    if phoneme.strip("ːˈˌ") in _TRANSPARENT:
        return [_Seg(_SEE_NEXT, start, end, 0.5)]
    if len(vis) == 1:
        return [_Seg(vis[0], start, end, _weight(vis[0], phoneme, stress))]
    dur = end - start
    first = 0.6 * dur
    rest = (dur - first) / (len(vis) - 1)
    out: list[_Seg] = []
    t = start
    for k, v in enumerate(vis):
        t2 = t + (first if k == 0 else rest)
        w = _weight(v, phoneme, stress) * (1.0 if k == 0 else 0.8)
        out.append(_Seg(v, t, end if k == len(vis) - 1 else t2, w))
        t = t2
    return out


def _merge_same(segs: list[_Seg]) -> list[_Seg]:
    out: list[_Seg] = []
    for s in segs:
        if out and out[-1].viseme == s.viseme and abs(out[-1].end - s.start) < 1e-9:
            prev = out[-1]
            total = prev.dur + s.dur
            if total > 0:
                prev.weight = (prev.weight * prev.dur + s.weight * s.dur) / total
            prev.end = s.end
        else:
            out.append(_Seg(s.viseme, s.start, s.end, s.weight))
    return out


def _fill(segs: list[_Seg], duration: float) -> list[_Seg]:
    """Sort, clip to [0, duration], resolve overlaps, fill gaps with rest."""
    segs = sorted((s for s in segs if s.end > s.start), key=lambda s: (s.start, s.end))
    out: list[_Seg] = []
    t = 0.0
    for s in segs:
        start = max(s.start, t, 0.0)
        end = min(s.end, duration)
        if end - start <= 1e-6:
            continue
        if start - t > 1e-6:
            out.append(_Seg("sil", t, start, 1.0))
        out.append(_Seg(s.viseme, start, end, s.weight))
        t = end
    if duration - t > 1e-6:
        out.append(_Seg("sil", t, duration, 1.0))
    return _merge_same(out)


def _coarticulate(segs: list[_Seg], min_pause: float) -> list[_Seg]:
    """Neighbouring shapes influence each other (see module docstring)."""
    n = len(segs)
    for i in range(n - 1, -1, -1):
        s = segs[i]
        if s.viseme == _SEE_NEXT:
            nv = segs[i + 1].viseme if i + 1 < n else "sil"
            s.viseme = nv if nv in VOWEL_VISEMES or nv in _LIP_NEUTRAL else "kk"
    # Short pauses inside speech are bridged by the shapes around them.
    for i in range(1, n - 1):
        s = segs[i]
        if s.viseme == "sil" and s.dur < min_pause:
            prev, nxt = segs[i - 1], segs[i + 1]
            s.viseme = nxt.viseme if nxt.viseme in VOWEL_VISEMES else prev.viseme
            s.weight = 0.5 * min(prev.weight, nxt.weight)
    for i, s in enumerate(segs):
        if s.viseme not in _LIP_NEUTRAL:
            continue
        after = segs[i + 1] if i + 1 < n else None
        before = segs[i - 1] if i > 0 else None
        # Lip rounding is anticipated: a lip-neutral consonant before a rounded vowel rounds.
        if (after is not None and after.viseme in _ROUNDED) or (
            s.dur < 0.08
            and before is not None
            and after is not None
            and before.viseme in VOWEL_VISEMES
            and after.viseme in VOWEL_VISEMES
        ):
            s.viseme, s.weight = after.viseme, 0.6 * after.weight
    return _merge_same(segs)


def _enforce_hold(segs: list[_Seg], min_hold: float) -> list[_Seg]:
    """Merge cues shorter than ``min_hold`` into a neighbour; closures (PP) are lengthened.

    The shortest cue goes first. It joins a neighbour that is short too when there is one
    (two short shapes become one long enough), else the shorter neighbour; the joined cue
    shows the shape that held longer. Rest at the very start and end is kept.
    """
    n = len(segs)
    if min_hold <= 0 or n < 2:
        return segs
    for i, s in enumerate(segs):
        if s.viseme != "PP" or s.dur >= min_hold:
            continue
        need = min_hold - s.dur
        for j in (i - 1, i + 1):
            if not 0 <= j < n or need <= 1e-9:
                continue
            nb = segs[j]
            give = min(need / 2 if j == i - 1 else need, max(0.0, nb.dur - min_hold))
            if j == i - 1:
                nb.end -= give
                s.start -= give
            else:
                nb.start += give
                s.end += give
            need -= give
    prev = list(range(-1, n - 1))
    nxt = [*range(1, n), -1]
    alive = [True] * n
    longest = [s.dur for s in segs]  # duration of the shape each merged cue shows

    def protected(i: int) -> bool:
        s = segs[i]
        return s.viseme == "PP" or (s.viseme == "sil" and (prev[i] == -1 or nxt[i] == -1))

    heap = [(s.dur, i) for i, s in enumerate(segs) if s.dur < min_hold and not protected(i)]
    heapq.heapify(heap)
    while heap:
        dur, i = heapq.heappop(heap)
        if not alive[i] or abs(segs[i].dur - dur) > 1e-12 or segs[i].dur >= min_hold:
            continue
        if protected(i):
            continue
        cands = [j for j in (prev[i], nxt[i]) if j != -1]
        if not cands:
            break
        short = [j for j in cands if segs[j].dur < min_hold and not protected(j)]
        pool = short or [j for j in cands if not protected(j)] or cands
        j = min(pool, key=lambda k: segs[k].dur)
        a, b = (j, i) if j == prev[i] else (i, j)
        keep, drop = (a, b) if longest[a] >= longest[b] else (b, a)
        if segs[keep].viseme == "PP" or (segs[drop].viseme == "PP"):
            keep, drop = (a, b) if segs[a].viseme == "PP" else (b, a)
        sa, sb = segs[a], segs[b]
        total = sa.dur + sb.dur
        weight = (sa.weight * sa.dur + sb.weight * sb.dur) / total if total > 0 else 1.0
        merged = _Seg(segs[keep].viseme, sa.start, sb.end, weight)
        if merged.viseme in ("PP", "sil"):
            merged.weight = segs[keep].weight
        longest[a] = max(longest[a], longest[b]) if keep == a else longest[b]
        segs[a] = merged
        alive[b] = False
        nxt[a] = nxt[b]
        if nxt[b] != -1:
            prev[nxt[b]] = a
        if merged.dur < min_hold and not protected(a):
            heapq.heappush(heap, (merged.dur, a))
    return _merge_same([s for k, s in enumerate(segs) if alive[k]])


def _finish(
    segs: list[_Seg],
    duration: float,
    source: VisemeSource,
    min_hold: float,
    min_pause: float,
    coarticulate: bool = True,
) -> LipSync:
    segs = _fill(segs, duration)
    if coarticulate:
        segs = _coarticulate(segs, min_pause)
    segs = _enforce_hold(segs, min_hold)
    cues = [
        VisemeCue(
            viseme=s.viseme,
            start=max(0.0, s.start),
            end=min(duration, s.end),
            weight=float(min(1.0, max(0.0, s.weight))),
            source=source,
        )
        for s in segs
        if s.end - s.start > 1e-6
    ]
    for a, b in itertools.pairwise(cues):
        a.end = b.start  # a dropped sliver must not leave a gap
    if cues:
        cues[-1].end = duration
    return LipSync(cues=cues, source=source, duration=duration)


def _check_duration(duration: float) -> None:
    if not math.isfinite(duration) or duration < 0:
        raise InputValidationError(
            f"duration must be a finite number ≥ 0, not {duration}", field="duration"
        )


# --------------------------------------------------------------------------- source 1


def lipsync_from_phonemes(
    phonemes: Sequence[PhonemeTiming],
    duration: float,
    *,
    min_hold: float = MIN_HOLD,
    min_pause: float = MIN_PAUSE,
    strict: bool = False,
    source: VisemeSource = "phonemes",
) -> LipSync:
    """Viseme cues from timed IPA phonemes (source 1).

    Args:
        phonemes: Timed phonemes, e.g. ``VoiceOutput.phonemes``.
        duration: Length of the audio (s); cues cover exactly ``[0, duration]``.
        min_hold: Shortest cue (s); shorter ones merge into a neighbour.
        min_pause: Shortest silence (s) that rests the mouth.
        strict: Raise on a phoneme the table does not know (default: log and show a
            neutral shape).
        source: Tag for the cues.

    Raises:
        UnknownPhonemeError: ``strict`` and a phoneme is not in the table.
        InputValidationError: a negative or non-finite duration.
    """
    _check_duration(duration)
    unknown: set[str] = set()
    segs: list[_Seg] = []
    for p in phonemes:
        if p.end <= p.start:
            continue
        if is_pause(p.phoneme):
            segs.append(_Seg("sil", p.start, p.end, 1.0))
            continue
        segs.extend(_split(p.phoneme, p.start, p.end, p.stress, strict, unknown))
    return _finish(segs, duration, source, min_hold, min_pause)


# --------------------------------------------------------------------------- source 2

# Relative durations by phoneme kind, fitted to eSpeak's own timings on the training
# sentences of benchmarks/lipsync_bench.py (mean duration of each kind / mean of short vowels).
_DUR_VOWEL = 1.0
_DUR_LONG = 1.6  # ː
_DUR_DIPHTHONG = 1.64
_DUR_BY_VISEME = {
    "PP": 0.92,
    "FF": 0.95,
    "TH": 0.73,
    "DD": 0.86,
    "kk": 1.07,
    "CH": 0.9,
    "SS": 1.06,
    "nn": 1.0,
    "RR": 0.76,
    "ih": 0.8,
    "ou": 0.9,
}


def _intrinsic(phoneme: str, vis: tuple[str, ...]) -> float:
    if is_vowel(phoneme):
        if len(vis) > 1:
            return _DUR_DIPHTHONG
        return _DUR_LONG if "ː" in phoneme else _DUR_VOWEL
    base = _DUR_BY_VISEME.get(vis[0], 0.8)
    return base * (1.3 if "ː" in phoneme else 1.0)


def _voice_for(language: str) -> str:
    lang = language.strip() or "en"
    return _LANG_VOICE.get(lang.lower(), lang)


def word_phonemes(
    words: Sequence[WordTiming], language: str = "en", *, strict: bool = False
) -> list[PhonemeTiming]:
    """Phoneme timings estimated from word timings (source 2's first step).

    Each word's phonemes come from eSpeak's grapheme-to-phoneme and share the word's span in
    proportion to a duration model fitted to eSpeak's timings: short vowels 1, long vowels
    1.6, diphthongs 1.64, consonants 0.73 (θ ð) to 1.07 (k g).

    Args:
        words: Timed words (any provider).
        language: Language code (``"en"``, ``"de"``...) or an eSpeak voice name.
        strict: Raise on phonemes the viseme table does not know.
    """
    from avatarkit import _espeak

    voice = _voice_for(language)
    # One G2P call over the whole utterance, so each word is pronounced in context ("a" is
    # /ɐ/, not /eɪ/); each timed word then takes the phonemes of the spans it covers.
    joined: list[str] = []
    ranges: list[tuple[int, int]] = []
    pos = 0
    for w in words:
        piece = w.text.strip()
        ranges.append((pos, pos + len(piece)))
        joined.append(piece)
        pos += len(piece) + 1
    text = " ".join(joined)
    if not text.strip():
        return []
    spans = _espeak.word_spans(_espeak.clean_text(text))
    ipa = _espeak.text_to_ipa(text, voice)
    per_word: list[list[str]] = [[] for _ in words]
    k = 0
    for (a, b), phs in zip(spans, ipa, strict=False):
        while k < len(ranges) and ranges[k][1] <= a:
            k += 1
        if k < len(ranges) and ranges[k][0] < b:
            per_word[k].extend(phs)
    out: list[PhonemeTiming] = []
    unknown: set[str] = set()
    for wi, w in enumerate(words):
        phs = [p for p in per_word[wi] if not is_pause(p)]
        if w.end <= w.start or not phs:
            continue
        weights = [_intrinsic(p, _visemes_of(p, strict, unknown)) for p in phs]
        total = sum(weights)
        t = w.start
        span = w.end - w.start
        for j, (p, wt) in enumerate(zip(phs, weights, strict=True)):
            t2 = w.end if j == len(phs) - 1 else t + span * wt / total
            out.append(PhonemeTiming(phoneme=p, start=t, end=t2, word_index=wi))
            t = t2
    return out


def words_from_characters(
    characters: Sequence[str], starts: Sequence[float], ends: Sequence[float]
) -> list[WordTiming]:
    """Word timings from per-character timings (e.g. ElevenLabs' ``alignment``).

    Words are runs of non-space characters; each spans its first character's start to its
    last character's end, with character offsets into ``"".join(characters)``.

    Raises:
        InputValidationError: the three lists differ in length, or a time is negative,
            not finite, or ends before it starts.
    """
    if not len(characters) == len(starts) == len(ends):
        raise InputValidationError(
            f"characters, starts and ends differ in length "
            f"({len(characters)}, {len(starts)}, {len(ends)})",
            field="alignment",
        )
    words: list[WordTiming] = []
    text = "".join(characters)
    offset = 0
    current: list[int] = []  # indices of the characters of the word being read
    offsets: list[int] = []
    for i, ch in enumerate([*characters, " "]):
        if i < len(characters):
            a, b = float(starts[i]), float(ends[i])
            if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b < a:
                raise InputValidationError(
                    f"character {i} ({ch!r}) has bad times {a}..{b}", field="alignment"
                )
        if ch.strip():
            current.append(i)
            offsets.append(offset)
        elif current:
            first, last = current[0], current[-1]
            char_start, char_end = offsets[0], offsets[-1] + len(characters[last])
            words.append(
                WordTiming(
                    text=text[char_start:char_end],
                    start=float(starts[first]),
                    end=max(float(ends[last]), float(starts[first])),
                    char_start=char_start,
                    char_end=char_end,
                )
            )
            current, offsets = [], []
        offset += len(ch)
    return words


def lipsync_from_words(
    words: Sequence[WordTiming],
    duration: float,
    *,
    language: str = "en",
    min_hold: float = MIN_HOLD,
    min_pause: float = MIN_PAUSE,
    strict: bool = False,
) -> LipSync:
    """Viseme cues from word timings alone (source 2); see :func:`word_phonemes`."""
    _check_duration(duration)
    phonemes = word_phonemes(words, language, strict=strict)
    return lipsync_from_phonemes(
        phonemes,
        duration,
        min_hold=min_hold,
        min_pause=min_pause,
        strict=strict,
        source="words",
    )


# --------------------------------------------------------------------------- source 3

_RATE = 16000
_HOP = 160  # 10 ms
_WIN = 400  # 25 ms
# Band edges (Hz) of the log band energies.
_EDGES = (0, 150, 300, 500, 800, 1200, 1800, 2600, 3600, 5000, 8000)
# Frames of context (10 ms each) stacked around each frame.
_CONTEXT = (-6, -4, -2, -1, 0, 1, 2, 4, 6)
_FLOOR_DB = 70.0
_QUIET_DBFS = -55.0
# Offset between a frame's summed Hann-windowed power spectrum (dB) and its RMS level (dBFS).
_POWER_TO_DBFS = 10.0 * math.log10(_WIN**2 * 0.1875)
_MODEL_FILE = "mouth_model.json"
_CLOSED_THRESHOLD = 0.5
_MIN_CLOSED_FRAMES = 2  # a lone 10 ms "closed" frame is noise, not a closure


@dataclass
class MouthTrack:
    """Frame-by-frame mouth estimate from audio (10 ms frames, centred on ``times``).

    Attributes:
        times: Frame centres (s).
        opening: How open the mouth is, 0–1.
        closed: Probability that the lips are closed (p/b/m or rest), 0–1.
        shape: Oculus viseme per frame.
    """

    times: FloatArray
    opening: FloatArray
    closed: FloatArray
    shape: list[str]


@dataclass
class _Frames:
    times: FloatArray
    level: FloatArray  # total level, 1 = loud (95th percentile), 0 = 70 dB below
    bands: FloatArray  # (n, 10) band levels on the same scale
    zcr: FloatArray  # zero-crossing rate per sample


def _analyse(samples: npt.NDArray[np.float32], rate: int) -> _Frames:
    from avatarkit.audio import resample

    x = resample(np.asarray(samples, dtype=np.float32), rate, _RATE)
    if len(x) == 0:
        empty = np.zeros(0)
        return _Frames(empty, empty, np.zeros((0, len(_EDGES) - 1)), empty)
    x = x - np.float32(np.mean(x))
    pad = _WIN // 2
    xp = np.pad(x, (pad, pad + _HOP))
    n = max(1, (len(x) + _HOP - 1) // _HOP)
    idx = np.arange(_WIN)[None, :] + _HOP * np.arange(n)[:, None]
    fr = xp[idx]
    spec = np.abs(np.fft.rfft(fr * np.hanning(_WIN).astype(np.float32), axis=1)) ** 2
    freqs = np.fft.rfftfreq(_WIN, 1.0 / _RATE)
    bands = (
        np.stack(
            [
                spec[:, (freqs >= lo) & (freqs < hi)].sum(axis=1)
                for lo, hi in itertools.pairwise(_EDGES)
            ],
            axis=1,
        ).astype(np.float64)
        + 1e-10
    )
    band_db = 10.0 * np.log10(bands)
    total_db = 10.0 * np.log10(bands.sum(axis=1))
    # Levels are relative to the loud part of the utterance, but never to a reference below
    # _QUIET_DBFS: digital silence or faint noise must not be blown up into "speech".
    ref = max(float(np.percentile(total_db, 95)), _QUIET_DBFS + _POWER_TO_DBFS)
    level = np.maximum(total_db - ref, -_FLOOR_DB) / _FLOOR_DB + 1.0
    band_level = np.maximum(band_db - ref, -_FLOOR_DB) / _FLOOR_DB + 1.0
    signs = np.signbit(fr)
    zcr = np.mean(signs[:, 1:] != signs[:, :-1], axis=1).astype(np.float64)
    times = (np.arange(n) * (_HOP / _RATE)).astype(np.float64)
    return _Frames(times, level.astype(np.float64), band_level.astype(np.float64), zcr)


def _features(frames: _Frames) -> FloatArray:
    """Frame features with context: (level, 10 band levels, zcr) at each offset of _CONTEXT."""
    base = np.column_stack([frames.level, frames.bands, frames.zcr])
    n = len(base)
    m = max(abs(d) for d in _CONTEXT)
    padded = np.pad(base, ((m, m), (0, 0)), mode="edge")
    return np.concatenate([padded[m + d : m + d + n] for d in _CONTEXT], axis=1)


@lru_cache(maxsize=1)
def _model() -> dict[str, FloatArray]:
    from importlib.resources import files

    raw = json.loads(files("avatarkit.animation").joinpath(_MODEL_FILE).read_text("utf-8"))
    return {k: np.asarray(v, dtype=np.float64) for k, v in raw.items() if k != "info"}


def _closed_probability(feats: FloatArray) -> FloatArray:
    """The fitted network (one hidden ReLU layer, logistic output): P(lips closed)."""
    m = _model()
    z = (feats - m["mean"]) / m["scale"]
    h = np.maximum(z @ m["w1"] + m["b1"], 0.0)
    out = (h @ m["w2"] + m["b2"]).ravel()
    return 1.0 / (1.0 + np.exp(-np.clip(out, -50.0, 50.0)))


def _runs_at_least(mask: npt.NDArray[np.bool_], frames: int) -> npt.NDArray[np.bool_]:
    """``mask`` with its True runs shorter than ``frames`` set to False."""
    out = mask.copy()
    if frames <= 1 or not len(mask):
        return out
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if end - start < frames:
            out[start:end] = False
    return out


def mouth_track(samples: npt.NDArray[np.float32], sample_rate: int) -> MouthTrack:
    """Estimate the mouth frame by frame from a waveform (the core of source 3).

    Args:
        samples: Mono float samples in [-1, 1].
        sample_rate: Their rate (Hz).

    Raises:
        InputValidationError: a non-positive sample rate.
    """
    if sample_rate <= 0:
        raise InputValidationError("sample_rate must be positive", field="sample_rate")
    frames = _analyse(samples, sample_rate)
    times = frames.times
    if len(times) == 0:
        return MouthTrack(times, np.zeros(0), np.zeros(0), [])
    closed = _closed_probability(_features(frames))
    level = frames.level
    bands = frames.bands
    # Spectral balance: energy at F2 heights (1.2–2.6 kHz) against F1 heights (0.3–0.8 kHz)
    # sorts rounded (low F2) from spread (high F2) vowels; sibilants live above 3.6 kHz.
    f1 = np.maximum(bands[:, 2], bands[:, 3])
    f2 = np.maximum(bands[:, 5], bands[:, 6])
    hiss = np.maximum(bands[:, 8], bands[:, 9])
    opening = np.clip((level - 0.55) / 0.4, 0.0, 1.0) * (1.0 - closed)
    is_closed = _runs_at_least(closed >= _CLOSED_THRESHOLD, _MIN_CLOSED_FRAMES)
    long_closed = _runs_at_least(is_closed, round(MIN_PAUSE * _RATE / _HOP))
    conditions = [
        long_closed,  # rest
        is_closed,  # lips pressed: p b m
        (hiss > f1 + 0.05) | (frames.zcr > 0.35),  # frication: teeth together, lips apart
        opening < 0.3,
        (f2 < f1 - 0.25) & (opening < 0.6),  # weak F2 region: rounded
        f2 < f1 - 0.25,
        (f2 > f1 - 0.08) & (opening < 0.6),  # strong F2 region: spread
        f2 > f1 - 0.08,
    ]
    names = np.array(["sil", "PP", "SS", "DD", "ou", "oh", "ih", "E", "aa"])
    choice = np.select(conditions, list(range(len(conditions))), default=len(conditions))
    shape = names[choice].tolist()
    return MouthTrack(times=times, opening=opening, closed=closed, shape=shape)


def lipsync_from_audio(
    audio: bytes | npt.NDArray[np.float32],
    *,
    format: str | None = None,
    sample_rate: int | None = None,
    min_hold: float = MIN_HOLD,
    min_pause: float = MIN_PAUSE,
) -> LipSync:
    """Viseme cues from the waveform alone (source 3): any voice, any language, no text.

    Args:
        audio: Encoded audio bytes (WAV, MP3, FLAC, OGG; headerless PCM with ``format`` and
            ``sample_rate``) or mono float samples (then ``sample_rate`` is required).
        format: Encoding of ``audio`` bytes (guessed when None).
        sample_rate: Rate of float samples or headerless PCM.
        min_hold: Shortest cue (s).
        min_pause: Shortest silence (s) that rests the mouth.

    Raises:
        InputValidationError: undecodable audio, or samples without a sample rate.
    """
    if isinstance(audio, bytes | bytearray | memoryview):
        samples, rate = decode_audio(bytes(audio), format, sample_rate=sample_rate)
    else:
        if not sample_rate:
            raise InputValidationError("float samples need sample_rate", field="sample_rate")
        samples, rate = np.asarray(audio, dtype=np.float32), sample_rate
        if samples.ndim != 1:
            samples = samples.reshape(len(samples), -1).mean(axis=1).astype(np.float32)
    duration = len(samples) / rate
    track = mouth_track(samples, rate)
    segs: list[_Seg] = []
    step = _HOP / _RATE
    shapes = track.shape
    n = len(shapes)
    k = 0
    while k < n:  # one segment per run of equal frames
        j = k + 1
        while j < n and shapes[j] == shapes[k]:
            j += 1
        v = shapes[k]
        start = max(0.0, float(track.times[k]) - step / 2)
        end = min(duration, float(track.times[j - 1]) + step / 2)
        weight = 1.0 if v in ("sil", "PP") else 0.4 + 0.6 * float(np.mean(track.opening[k:j]))
        segs.append(_Seg(v, start, end, weight))
        k = j
    return _finish(segs, duration, "audio", min_hold, min_pause, coarticulate=False)


# --------------------------------------------------------------------------- entry points


def _has_speech(phonemes: Iterable[PhonemeTiming]) -> bool:
    return any(not is_pause(p.phoneme) for p in phonemes)


def lipsync(
    voice: VoiceOutput,
    *,
    text: str | None = None,
    language: str = "en",
    min_hold: float = MIN_HOLD,
    strict: bool = False,
) -> LipSync:
    """Viseme cues for a voice's audio, from the best source it offers.

    Phoneme timings if the voice has them, else word timings (with ``language`` for the
    grapheme-to-phoneme step), else the audio itself. ``text`` fills in word texts when the
    voice's words carry only character offsets.

    Args:
        voice: The synthesised speech.
        text: The spoken text, when ``voice.text`` is empty.
        language: Language code or eSpeak voice name for source 2.
        min_hold: Shortest cue (s).
        strict: Raise on unknown phonemes instead of logging them.

    Raises:
        InputValidationError: the audio cannot be decoded (source 3) or bad timings.
    """
    duration = voice.duration
    if _has_speech(voice.phonemes):
        return lipsync_from_phonemes(voice.phonemes, duration, min_hold=min_hold, strict=strict)
    words = list(voice.words)
    source_text = voice.text or text or ""
    if words and source_text:
        words = [
            w.model_copy(update={"text": source_text[w.char_start : w.char_end]})
            if not w.text and 0 <= w.char_start < w.char_end <= len(source_text)
            else w
            for w in words
        ]
    if any(w.text.strip() and w.end > w.start for w in words):
        return lipsync_from_words(
            words, duration, language=language, min_hold=min_hold, strict=strict
        )
    result = lipsync_from_audio(
        voice.audio, format=voice.format, sample_rate=voice.sample_rate, min_hold=min_hold
    )
    if duration and abs(result.duration - duration) > 1e-6:
        return _finish(
            [_Seg(c.viseme, c.start, c.end, c.weight) for c in result.cues],
            duration,
            "audio",
            min_hold,
            MIN_PAUSE,
            coarticulate=False,
        )
    return result


_best_lipsync = lipsync


def _expression_time(expr: FacialExpression, words: Sequence[WordTiming], duration: float) -> float:
    if expr.char_offset is None or not words:
        return min(expr.time, duration)
    for w in words:
        if w.char_end > expr.char_offset or w.char_end < 0:
            return min(w.start, duration)
    return min(words[-1].start, duration)


def timeline_from(
    voice: VoiceOutput,
    lipsync: LipSync | None = None,
    expressions: Sequence[FacialExpression] = (),
    poses: Sequence[AvatarPose] = (),
) -> Timeline:
    """Assemble the utterance's Timeline: words, phonemes, visemes, expressions, poses.

    Expressions placed by ``char_offset`` get their ``time`` from the word at that offset.

    Args:
        voice: The speech the timeline belongs to.
        lipsync: Its viseme cues (computed with :func:`lipsync` when None).
        expressions: Expression keyframes.
        poses: Head/eye keyframes.
    """
    ls = lipsync if lipsync is not None else _best_lipsync(voice)
    duration = voice.duration
    exprs = sorted(
        (
            e.model_copy(update={"time": _expression_time(e, voice.words, duration)})
            for e in expressions
        ),
        key=lambda e: e.time,
    )
    return Timeline(
        text=voice.text,
        duration=duration,
        words=list(voice.words),
        phonemes=list(voice.phonemes),
        visemes=list(ls.cues),
        viseme_source=ls.source,
        expressions=exprs,
        poses=sorted((p.model_copy() for p in poses), key=lambda p: p.time),
    )
