"""The expression policy: which emotion the face shows, when, and how strongly.

``LocalExpressionPolicy`` reads the reply text (not the audio: it runs beside speech synthesis)
together with the user's sentiment and intent, and returns ``FacialExpression`` keyframes anchored
in the text by ``char_offset``. ``resolve_times`` later turns those offsets into times on the
audio's clock from the voice's word timings.

Signals, strongest first:

1. **Emotion tags** a chat model may emit (``[happy]``, ``*smiles*``): stripped from the spoken
   text by ``strip_emotion_tags``; they always win and hold until the next tag.
2. **Per-sentence cues** in the reply: a small emotion lexicon plus VADER polarity.
3. **The turn's mood**: the user's sentiment (mirrored with empathy: an angry user gets a
   concerned face, never an angry one) and the intent (a greeting smiles, a question thinks).
   It colours the start of the reply and decays.

Hysteresis keeps the face from flickering: a weak, short-lived cue does not switch the emotion;
weak cues must repeat in consecutive sentences, or a cue must be clearly stronger than what the
face shows. Intensity decays towards neutral with the amount of text spoken.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from avatarkit.types import (
    DialogueResponse,
    Emotion,
    FacialExpression,
    IntentPrediction,
    Sentiment,
    WordTiming,
)

__all__ = [
    "DEFAULT_CUES",
    "EMOTION_ALIASES",
    "STAGE_DIRECTIONS",
    "LocalExpressionPolicy",
    "resolve_times",
    "strip_emotion_tags",
    "without_emotion_tags",
]

EMOTION_ALIASES: dict[str, Emotion] = {
    **{e.value: e for e in Emotion},
    "calm": Emotion.NEUTRAL,
    "serious": Emotion.NEUTRAL,
    "relaxed": Emotion.NEUTRAL,
    "joy": Emotion.HAPPY,
    "joyful": Emotion.HAPPY,
    "glad": Emotion.HAPPY,
    "excited": Emotion.HAPPY,
    "cheerful": Emotion.HAPPY,
    "amused": Emotion.HAPPY,
    "smile": Emotion.HAPPY,
    "smiles": Emotion.HAPPY,
    "smiling": Emotion.HAPPY,
    "laugh": Emotion.HAPPY,
    "laughs": Emotion.HAPPY,
    "laughing": Emotion.HAPPY,
    "grins": Emotion.HAPPY,
    "grin": Emotion.HAPPY,
    "chuckles": Emotion.HAPPY,
    "giggles": Emotion.HAPPY,
    "winks": Emotion.HAPPY,
    "love": Emotion.HAPPY,
    "sorrow": Emotion.SAD,
    "unhappy": Emotion.SAD,
    "concerned": Emotion.SAD,
    "worried": Emotion.SAD,
    "sorry": Emotion.SAD,
    "empathetic": Emotion.SAD,
    "sympathetic": Emotion.SAD,
    "sighs": Emotion.SAD,
    "sigh": Emotion.SAD,
    "frowns": Emotion.SAD,
    "cries": Emotion.SAD,
    "disappointed": Emotion.SAD,
    "anger": Emotion.ANGRY,
    "mad": Emotion.ANGRY,
    "annoyed": Emotion.ANGRY,
    "frustrated": Emotion.ANGRY,
    "furious": Emotion.ANGRY,
    "irritated": Emotion.ANGRY,
    "surprise": Emotion.SURPRISED,
    "shocked": Emotion.SURPRISED,
    "amazed": Emotion.SURPRISED,
    "astonished": Emotion.SURPRISED,
    "gasps": Emotion.SURPRISED,
    "gasp": Emotion.SURPRISED,
    "wow": Emotion.SURPRISED,
    "think": Emotion.THINKING,
    "thinks": Emotion.THINKING,
    "thoughtful": Emotion.THINKING,
    "pondering": Emotion.THINKING,
    "ponders": Emotion.THINKING,
    "curious": Emotion.THINKING,
    "confused": Emotion.THINKING,
    "hmm": Emotion.THINKING,
    "considering": Emotion.THINKING,
    "fear": Emotion.FEARFUL,
    "afraid": Emotion.FEARFUL,
    "scared": Emotion.FEARFUL,
    "nervous": Emotion.FEARFUL,
    "anxious": Emotion.FEARFUL,
    "disgust": Emotion.DISGUSTED,
    "grossed out": Emotion.DISGUSTED,
}
"""Tag words (lowercase) and the emotion each stands for; the canonical names map to themselves."""

STAGE_DIRECTIONS: dict[str, Emotion] = {
    **{
        w: Emotion.HAPPY
        for w in (
            "smile",
            "smiles",
            "smiling",
            "laugh",
            "laughs",
            "laughing",
            "grin",
            "grins",
            "grinning",
            "chuckle",
            "chuckles",
            "giggle",
            "giggles",
            "wink",
            "winks",
            "beams",
        )
    },
    **{w: Emotion.SAD for w in ("sigh", "sighs", "sighing", "frowns", "frowning", "cries")},
    **{w: Emotion.SURPRISED for w in ("gasp", "gasps", "gasping")},
    **{w: Emotion.THINKING for w in ("ponders", "pondering", "thinks", "hmm", "tilts head")},
}
"""Action words recognised between asterisks (``*smiles*``): verbs, so that markdown emphasis
of an ordinary word (``*happy*``, ``**sorry**``) is never mistaken for a tag."""


def _alternation(words: Mapping[str, Emotion]) -> str:
    return "|".join(sorted((re.escape(k) for k in words), key=len, reverse=True))


# [happy], [Happy], [emotion: happy], [mood=sad]; *smiles*, *smiles warmly*
_TAG_RE = re.compile(
    r"\[\s*(?:(?:emotion|mood|expression|face)\s*[:=]\s*)?(?P<b>"
    + _alternation(EMOTION_ALIASES)
    + r")\s*\]"
    + r"|(?<!\*)\*\s*(?P<s>"
    + _alternation(STAGE_DIRECTIONS)
    + r")(?:\s+[a-z]+ly)?\s*\*(?!\*)",
    re.IGNORECASE,
)
_SPACES_RE = re.compile(r"[ \t]{2,}")


def strip_emotion_tags(text: str) -> tuple[str, list[tuple[int, str]]]:
    """Remove emotion tags from ``text`` and say where each one was.

    Recognised tags name a known emotion or an alias of one in square brackets (see
    ``EMOTION_ALIASES``): ``[happy]``, ``[Joyful]``, ``[emotion: sad]``; or are stage
    directions between single asterisks (see ``STAGE_DIRECTIONS``): ``*smiles*``,
    ``*sighs softly*``. Anything else in brackets or asterisks (``[1]``, ``*really*``,
    ``**happy**``) is ordinary text and stays, and so do angle brackets (``<thinking>`` is
    reasoning markup, not a face). Whitespace left behind by a removed tag is tidied up.

    Args:
        text: The chat model's reply, possibly with tags.

    Returns:
        The text to speak, and ``(char_offset, emotion)`` per tag in order, where
        ``char_offset`` is the position in the cleaned text from which the tag applies and
        ``emotion`` is the canonical ``Emotion`` value (``"happy"``, ``"sad"``...).
    """
    pieces: list[str] = []
    tags: list[tuple[int, str]] = []
    length = 0
    pos = 0
    for match in _TAG_RE.finditer(text):
        before = text[pos : match.start()]
        pieces.append(before)
        length += len(before)
        if match.group("b"):
            emotion = EMOTION_ALIASES[match.group("b").lower()]
        else:
            emotion = STAGE_DIRECTIONS[" ".join(match.group("s").lower().split())]
        tags.append((length, emotion.value))
        pos = match.end()
    if not tags:
        return text, []
    pieces.append(text[pos:])
    return _tidy("".join(pieces), tags)


def without_emotion_tags(text: str) -> str:
    """``text`` with its emotion tags out, for display: all other spacing stays as written.

    Each tag (or run of tags with only spaces between) goes with one space or tab beside it,
    the one after it or else the one before; :func:`strip_emotion_tags` also tidies the rest.
    """
    out: list[str] = []
    pos = 0
    run: tuple[int, int] | None = None
    for match in [*_TAG_RE.finditer(text), None]:
        if match is not None and run is not None and not text[run[1] : match.start()].strip(" \t"):
            run = (run[0], match.end())  # side by side: one run
            continue
        if run is not None:
            before, end = text[pos : run[0]], run[1]
            if text[end : end + 1] in (" ", "\t"):
                end += 1
            elif before.endswith((" ", "\t")):
                before = before[:-1]
            out.append(before)
            pos = end
        run = match.span() if match is not None else None
    out.append(text[pos:])
    return "".join(out)


def _tidy(raw: str, tags: list[tuple[int, str]]) -> tuple[str, list[tuple[int, str]]]:
    keep = [True] * len(raw)
    for m in _SPACES_RE.finditer(raw):
        for i in range(m.start() + 1, m.end()):
            keep[i] = False
    for m in re.finditer(r"[ \t]+(?=[.,!?;:])", raw):
        for i in range(m.start(), m.end()):
            keep[i] = False
    # leading and trailing whitespace
    i = 0
    while i < len(raw) and raw[i].isspace():
        keep[i] = False
        i += 1
    j = len(raw) - 1
    while j >= 0 and raw[j].isspace():
        keep[j] = False
        j -= 1
    prefix = [0]
    for k in keep:
        prefix.append(prefix[-1] + (1 if k else 0))
    clean = "".join(c for c, k in zip(raw, keep, strict=True) if k)
    out: list[tuple[int, str]] = []
    for offset, emotion in tags:
        new = prefix[offset]
        # a tag right before a removed space applies from the next kept character
        out.append((min(new, len(clean)), emotion))
    return clean, out


# --------------------------------------------------------------------------- text cues

DEFAULT_CUES: dict[Emotion, tuple[tuple[str, float], ...]] = {
    Emotion.HAPPY: (
        (r"glad|happy|delighted|great|wonderful|awesome|fantastic|love|lovely|enjoy", 0.55),
        (r"congratulations|congrats|hooray|yay|welcome|nice to meet|excellent|perfect", 0.6),
        (r"thanks|thank you|pleasure|fun|haha|good news", 0.4),
    ),
    Emotion.SAD: (
        (r"sorry|unfortunately|sadly|regret|apologi[sz]e|my condolences|heartbreaking", 0.6),
        (r"that must be hard|i understand how|difficult time|miss (?:you|them|her|him)", 0.55),
        (r"can't help|cannot help|not able to|afraid (?:that|not|i)", 0.35),
    ),
    Emotion.ANGRY: ((r"outrageous|unacceptable|furious|infuriating|how dare|disgraceful", 0.6),),
    Emotion.SURPRISED: (
        (r"wow|whoa|oh my|no way|really\?!|incredible|unbelievable|what a surprise", 0.6),
        (r"amazing|astonishing|surprising|i didn't expect|who knew", 0.45),
    ),
    Emotion.THINKING: (
        (r"let me think|hmm+|let's see|let me see|i wonder|good question|perhaps|maybe", 0.5),
        (r"it depends|on the other hand|consider|in theory|probably|not sure", 0.4),
    ),
    Emotion.FEARFUL: ((r"terrifying|scary|frightening|dangerous|be careful", 0.45),),
    Emotion.DISGUSTED: ((r"disgusting|gross|yuck|revolting", 0.5),),
}
"""Per-sentence cue phrases (regular expressions, matched on word boundaries) and strengths."""

_SENTIMENT_MOOD: dict[Emotion, tuple[Emotion, float]] = {
    # user's feeling -> (the avatar's empathetic expression, weight)
    Emotion.HAPPY: (Emotion.HAPPY, 0.7),
    Emotion.SAD: (Emotion.SAD, 0.65),
    Emotion.ANGRY: (Emotion.SAD, 0.5),  # concern, never anger back
    Emotion.FEARFUL: (Emotion.SAD, 0.4),
    Emotion.DISGUSTED: (Emotion.SAD, 0.35),
    Emotion.SURPRISED: (Emotion.SURPRISED, 0.45),
    Emotion.THINKING: (Emotion.THINKING, 0.4),
}

_INTENT_MOOD: tuple[tuple[str, Emotion, float], ...] = (
    (r"greet|hello|hi\b|welcome|introduc", Emotion.HAPPY, 0.6),
    (r"thank|bye|farewell|goodbye|compliment|praise|joke|fun", Emotion.HAPPY, 0.55),
    (r"complain|complaint|problem|issue|frustrat|refund|cancel|broken|bug|angry", Emotion.SAD, 0.5),
    (r"apolog|sorry|sad|condolence|bad_news", Emotion.SAD, 0.45),
    (
        r"question|help|ask|faq|how|what|why|explain|info|support|advice|recommend",
        Emotion.THINKING,
        0.35,
    ),
    (r"out_of_scope|unknown|fallback|clarif", Emotion.THINKING, 0.3),
)


@lru_cache(maxsize=1)
def _vader() -> Any:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:  # pragma: no cover - vadersentiment is a core dependency
        return None
    return SentimentIntensityAnalyzer()


def _sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` of ``text`` (pysbd, with a regex fallback)."""
    if not text.strip():
        return []
    spans: list[tuple[int, int]] = []
    try:
        import pysbd

        seg = pysbd.Segmenter(language="en", clean=False, char_span=True)
        for s in seg.segment(text):
            spans.append((int(s.start), int(s.end)))
    except Exception:  # pysbd missing or choking on odd input
        spans = [(m.start(), m.end()) for m in re.finditer(r"[^.!?]+(?:[.!?]+|$)", text)]
    return [(a, b) for a, b in spans if text[a:b].strip()]


@dataclass
class _State:
    emotion: Emotion = Emotion.NEUTRAL
    intensity: float = 0.0
    locked: bool = False
    """A tag set the emotion: text cues may not switch it."""
    lock_floor: float = 0.0


class LocalExpressionPolicy:
    """Rule-based expression policy: tags, text cues and the turn's mood, with hysteresis.

    Runs offline and in microseconds per sentence (VADER and a small lexicon); it satisfies
    ``avatarkit.ports.ExpressionPolicy``.

    Example:
        >>> policy = LocalExpressionPolicy()
        >>> keys = policy.plan_text("[happy] Hello there! Sorry, that part is broken.")
        >>> keys[0].emotion.value, keys[0].char_offset
        ('happy', 0)

    Args:
        tag_intensity: Intensity of an expression set by an explicit tag.
        max_intensity: Ceiling for any expression's intensity.
        switch_threshold: Evidence a cue needs to move the face to another emotion.
        switch_margin: How much stronger than the current expression a cue must be to replace
            it (the hysteresis band).
        half_life_chars: Characters of speech (about 15 a second) after which an expression
            that is not reinforced has lost half its intensity.
        neutral_below: Intensity under which the face relaxes to neutral.
        mood_weight: Scale of the turn's mood (sentiment and intent) against text cues.
        mood_threshold: Evidence the turn's mood needs to set the first sentence's expression
            (lower than ``switch_threshold``: the mood is context, not a passing cue).
        cues: Cue phrases per emotion (defaults to ``DEFAULT_CUES``).
        use_vader: Add VADER polarity of each sentence as happy/sad evidence.
    """

    def __init__(
        self,
        *,
        tag_intensity: float = 0.8,
        max_intensity: float = 0.9,
        switch_threshold: float = 0.45,
        switch_margin: float = 0.15,
        half_life_chars: float = 140.0,
        neutral_below: float = 0.18,
        mood_weight: float = 1.0,
        mood_threshold: float = 0.25,
        cues: Mapping[Emotion, Sequence[tuple[str, float]]] | None = None,
        use_vader: bool = True,
    ) -> None:
        self.tag_intensity = tag_intensity
        self.max_intensity = max_intensity
        self.switch_threshold = switch_threshold
        self.switch_margin = switch_margin
        self.half_life_chars = half_life_chars
        self.neutral_below = neutral_below
        self.mood_weight = mood_weight
        self.mood_threshold = mood_threshold
        self.use_vader = use_vader
        table = DEFAULT_CUES if cues is None else cues
        self._cues = [
            (emotion, re.compile(r"(?<!\w)(?:" + pattern + r")(?!\w)", re.IGNORECASE), strength)
            for emotion, items in table.items()
            for pattern, strength in items
        ]

    def __repr__(self) -> str:
        return (
            f"LocalExpressionPolicy(switch_threshold={self.switch_threshold}, "
            f"switch_margin={self.switch_margin}, half_life_chars={self.half_life_chars})"
        )

    async def plan(
        self,
        reply: DialogueResponse,
        *,
        sentiment: Sentiment | None = None,
        intent: IntentPrediction | None = None,
    ) -> list[FacialExpression]:
        """Return expression keyframes anchored in ``reply.text`` (``char_offset`` set).

        Tags are read from ``reply.raw_text`` when it is given (their positions are mapped onto
        ``reply.text``); otherwise from tags still in ``reply.text``; otherwise the first of
        ``reply.emotion_tags`` applies from the start.

        Args:
            reply: The avatar's reply.
            sentiment: Sentiment of the user's input, if analysed.
            intent: The user's intent, if classified.

        Returns:
            Keyframes sorted by ``char_offset``; the first is at offset 0.
        """
        text = reply.text
        tags: list[tuple[int, str]] = []
        if reply.raw_text and reply.raw_text != text:
            clean, raw_tags = strip_emotion_tags(reply.raw_text)
            tags = raw_tags if clean == text else _map_offsets(clean, text, raw_tags)
        else:
            clean, tags = strip_emotion_tags(text)
            if tags and clean != text:
                tags = _map_offsets(clean, text, tags)
        if not tags and reply.emotion_tags:
            emotion = EMOTION_ALIASES.get(reply.emotion_tags[0].strip().lower())
            if emotion is not None:
                tags = [(0, emotion.value)]
        return self.plan_text(text, sentiment=sentiment, intent=intent, tags=tags)

    def plan_text(
        self,
        text: str,
        *,
        sentiment: Sentiment | None = None,
        intent: IntentPrediction | None = None,
        tags: Sequence[tuple[int, str]] | None = None,
    ) -> list[FacialExpression]:
        """Plan keyframes for plain ``text`` (synchronous core of ``plan``).

        When ``tags`` is ``None``, emotion tags are stripped from ``text`` first and the
        offsets refer to the cleaned text.

        Args:
            text: The reply text.
            sentiment: Sentiment of the user's input.
            intent: The user's intent.
            tags: ``(char_offset, emotion)`` pairs, as returned by ``strip_emotion_tags``.

        Returns:
            Keyframes sorted by ``char_offset``; the first is at offset 0.
        """
        if tags is None:
            text, tags = strip_emotion_tags(text)
        mood = self._mood(sentiment, intent)
        events: list[tuple[int, int, Any]] = []  # (offset, order, payload)
        for start, end in _sentences(text):
            events.append((start, 1, (start, end)))
        for offset, name in tags:
            emotion = EMOTION_ALIASES.get(name.lower())
            if emotion is not None:
                events.append((offset, 0, emotion))
        events.sort(key=lambda e: (e[0], e[1]))

        state = _State()
        keys: list[FacialExpression] = []
        pending: tuple[Emotion, float] | None = None
        first_sentence = True
        spoken = 0

        def emit(offset: int, transition: float) -> None:
            emotion = state.emotion if state.intensity >= self.neutral_below else Emotion.NEUTRAL
            intensity = round(state.intensity if emotion is not Emotion.NEUTRAL else 0.0, 3)
            if keys:
                last = keys[-1]
                if last.char_offset == offset:
                    keys.pop()
                    transition = min(transition, last.transition)
                elif last.emotion is emotion and abs(last.intensity - intensity) < 0.1:
                    return
            keys.append(
                FacialExpression(
                    char_offset=offset, emotion=emotion, intensity=intensity, transition=transition
                )
            )

        for offset, _, payload in events:
            if isinstance(payload, Emotion):  # an explicit tag: it wins
                state.emotion = payload
                state.intensity = 0.0 if payload is Emotion.NEUTRAL else self.tag_intensity
                state.locked = True
                state.lock_floor = 0.5 * state.intensity
                pending = None
                emit(offset, _transition_for(payload, switched=True))
                continue
            start, end = payload
            # decay by the speech since the last sentence start
            if spoken:
                factor = 0.5 ** (spoken / self.half_life_chars)
                floor = state.lock_floor if state.locked else 0.0
                state.intensity = max(floor, state.intensity * factor)
            spoken = end - start
            evidence = self._cue_evidence(text[start:end])
            threshold = self.switch_threshold
            if first_sentence:
                for emotion, weight in mood.items():
                    evidence[emotion] = evidence.get(emotion, 0.0) + weight
                # the turn's mood is deliberate context, not a passing cue: a lower bar
                threshold = min(threshold, self.mood_threshold) if mood else threshold
                first_sentence = False
            switched = self._step(state, evidence, pending, threshold)
            best = max(evidence.items(), key=lambda kv: kv[1], default=None)
            if best is not None and best[0] is not state.emotion and not switched:
                pending = best  # a weak cue remembered for one sentence
            else:
                pending = None
            if state.intensity < self.neutral_below and not state.locked:
                state.emotion, state.intensity = Emotion.NEUTRAL, 0.0
            emit(start, _transition_for(state.emotion, switched=switched))
        if not keys or keys[0].char_offset != 0:
            keys.insert(0, FacialExpression(char_offset=0, emotion=Emotion.NEUTRAL, intensity=0.0))
        return keys

    # ------------------------------------------------------------------ internals

    def _mood(
        self, sentiment: Sentiment | None, intent: IntentPrediction | None
    ) -> dict[Emotion, float]:
        mood: dict[Emotion, float] = {}
        if sentiment is not None:
            strength = max(abs(sentiment.compound), 0.3)
            target = _SENTIMENT_MOOD.get(sentiment.emotion)
            if target is None:  # neutral emotion label: polarity alone, gently
                if sentiment.compound >= 0.5:
                    target = (Emotion.HAPPY, 0.4)
                elif sentiment.compound <= -0.5:
                    target = (Emotion.SAD, 0.4)
            if target is not None:
                mood[target[0]] = mood.get(target[0], 0.0) + target[1] * strength
        if intent is not None and intent.top:
            name = intent.top.lower()
            for pattern, emotion, weight in _INTENT_MOOD:
                if re.search(pattern, name):
                    conf = intent.confidence if intent.intents else 0.7
                    mood[emotion] = mood.get(emotion, 0.0) + weight * max(conf, 0.4)
                    break
        return {e: w * self.mood_weight for e, w in mood.items()}

    def _cue_evidence(self, sentence: str) -> dict[Emotion, float]:
        evidence: dict[Emotion, float] = {}
        for emotion, regex, strength in self._cues:
            if regex.search(sentence):
                evidence[emotion] = max(evidence.get(emotion, 0.0), strength)
        if self.use_vader and (analyzer := _vader()) is not None:
            compound = float(analyzer.polarity_scores(sentence)["compound"])
            if compound >= 0.3:
                evidence[Emotion.HAPPY] = max(evidence.get(Emotion.HAPPY, 0.0), 0.7 * compound)
            elif compound <= -0.3:
                evidence[Emotion.SAD] = max(evidence.get(Emotion.SAD, 0.0), -0.6 * compound)
        if sentence.rstrip().endswith("!") and evidence:
            for emotion in evidence:
                evidence[emotion] = min(1.0, evidence[emotion] * 1.2)
        return evidence

    def _step(
        self,
        state: _State,
        evidence: dict[Emotion, float],
        pending: tuple[Emotion, float] | None,
        threshold: float,
    ) -> bool:
        """Update ``state`` from one sentence's evidence; True when the emotion switched."""
        same = evidence.get(state.emotion, 0.0)
        if same > 0.0 and state.emotion is not Emotion.NEUTRAL:
            # reinforcement: intensity rises towards the cue, never above the ceiling
            state.intensity = min(self.max_intensity, max(state.intensity, same) + 0.1 * same)
        if state.locked:
            return False
        candidates = {e: v for e, v in evidence.items() if e is not state.emotion}
        if not candidates:
            return False
        emotion, strength = max(candidates.items(), key=lambda kv: kv[1])
        if pending is not None and pending[0] is emotion:
            strength += 0.6 * pending[1]  # a cue that persists over two sentences adds up
        if strength >= threshold and strength >= state.intensity + self.switch_margin:
            state.emotion = emotion
            state.intensity = min(self.max_intensity, strength)
            return True
        return False


def _transition_for(emotion: Emotion, *, switched: bool) -> float:
    if emotion is Emotion.SURPRISED and switched:
        return 0.15
    if emotion is Emotion.NEUTRAL:
        return 0.8
    return 0.35 if switched else 0.6


def _map_offsets(
    source: str, target: str, tags: Sequence[tuple[int, str]]
) -> list[tuple[int, str]]:
    """Move offsets in ``source`` onto the matching places of ``target`` (a near-copy)."""
    matcher = difflib.SequenceMatcher(a=source, b=target, autojunk=False)
    blocks = matcher.get_matching_blocks()
    out: list[tuple[int, str]] = []
    for offset, name in tags:
        mapped = len(target)
        for a, b, size in blocks:
            if size and offset < a + size:
                mapped = b + max(0, offset - a)
                break
        out.append((min(mapped, len(target)), name))
    return out


# --------------------------------------------------------------------------- timing


def resolve_times(
    expressions: Sequence[FacialExpression],
    words: Sequence[WordTiming],
    *,
    lead: float = 0.1,
) -> list[FacialExpression]:
    """Set each keyframe's ``time`` from its ``char_offset`` using the voice's word timings.

    A keyframe starts with the word at or after its offset, ``lead`` seconds early so the face
    is already moving as the word is said. Offsets past the last word take the last word's end.
    When the words carry no character offsets, their positions are estimated by joining the
    words with single spaces. Keyframes without ``char_offset`` keep their ``time``.

    Args:
        expressions: Keyframes from an expression policy.
        words: Word timings of the spoken reply (the same text the offsets refer to).
        lead: Seconds the expression starts before its word.

    Returns:
        New keyframes with ``time`` set, sorted by time (ties keep their order).
    """
    if not words:
        return [e.model_copy() for e in expressions]
    if all(w.char_start >= 0 and w.char_end >= 0 for w in words):
        ends = [w.char_end for w in words]
    else:
        ends, pos = [], 0
        for w in words:
            pos += len(w.text)
            ends.append(pos)
            pos += 1
    out: list[FacialExpression] = []
    for expr in expressions:
        if expr.char_offset is None:
            out.append(expr.model_copy())
            continue
        i = bisect.bisect_right(ends, expr.char_offset)
        if i >= len(words):
            time = words[-1].end
        else:
            time = max(0.0, words[i].start - lead) if expr.char_offset > 0 else 0.0
        out.append(expr.model_copy(update={"time": time}))
    out.sort(key=lambda e: e.time)
    return out
