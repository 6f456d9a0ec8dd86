"""Sentiment with VADER (the lexicon ``vadersentiment`` ships) and its mapping to a face's Emotion.

:func:`emotion_for` is shared by every sentiment backend: polarity from the scores, refined by cue
words (anger, fear, disgust, surprise, uncertainty) read in the text itself.
"""

from __future__ import annotations

import asyncio
import difflib
import re
from typing import Any, Literal

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from avatarkit.config import Settings
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.types import Emotion, Sentiment

__all__ = ["VaderSentiment", "check_text", "emotion_for", "label_for", "make_sentiment"]

POSITIVE_AT = 0.05
"""VADER's documented cut-off: compound ≥ 0.05 is positive, ≤ -0.05 negative."""


def _cue(phrases: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + phrases + r")\b", re.IGNORECASE)


_ANGER = _cue(
    "angry|anger|furious|mad at|hate|hated|outraged|outrageous|livid|pissed|unacceptable|"
    "ridiculous|infuriating|annoyed|annoying|fed up|sick of|rude|scam|ripped off|useless|"
    "pathetic|worst|damn|wtf"
)
_DISGUST = _cue("disgusting|disgusted|gross|revolting|nasty|yuck|eww+|vile")
_FEAR = _cue(
    "afraid|scared|scary|frightened|terrified|worried|worry|anxious|nervous|panic|panicking|fear"
)
_SURPRISE = _cue(
    "wow|whoa|woah|omg|oh my god|no way|really|unbelievable|incredible|amazing|surprised|"
    "surprising|can'?t believe|what a|holy"
)
_UNCERTAIN = _cue(
    "maybe|perhaps|not sure|unsure|i wonder|wondering|hmm+|might|whether|i guess|"
    "don'?t know|do not know|confused|which one|should i|let me think"
)
_PONDER = _cue("hmm+|i wonder|let me think|wondering")


def label_for(compound: float) -> Literal["positive", "negative", "neutral"]:
    """Polarity label of a compound score, with VADER's ±0.05 cut-offs."""
    if compound >= POSITIVE_AT:
        return "positive"
    if compound <= -POSITIVE_AT:
        return "negative"
    return "neutral"


def emotion_for(text: str, compound: float) -> Emotion:
    """The facial emotion suggested by ``text`` and its compound polarity in [-1, 1].

    Rules, first match wins: an exclamation with a surprise word → surprised; negative text
    with disgust words → disgusted, with fear words → fearful, strongly negative (≤ -0.4) with
    anger words or any anger word with ``!`` → angry; a question with uncertainty words (or
    "hmm", "I wonder") while not strongly polar → thinking; other negative → sad; positive →
    happy; else neutral.
    """
    exclaims = "!" in text
    question = "?" in text
    if exclaims and _SURPRISE.search(text) and compound > -0.4:
        return Emotion.SURPRISED
    if compound <= -POSITIVE_AT:
        if _DISGUST.search(text):
            return Emotion.DISGUSTED
        if _FEAR.search(text):
            return Emotion.FEARFUL
        if _ANGER.search(text) and (compound <= -0.4 or exclaims):
            return Emotion.ANGRY
    if abs(compound) < 0.5 and ((question and _UNCERTAIN.search(text)) or _PONDER.search(text)):
        return Emotion.THINKING
    if compound <= -POSITIVE_AT:
        return Emotion.SAD
    if compound >= POSITIVE_AT:
        return Emotion.HAPPY
    return Emotion.NEUTRAL


_INLINE_CHARS = 500  # VADER scores this much in about a millisecond; 4,000 in 30–90 ms


class VaderSentiment:
    """VADER: a rule- and lexicon-based scorer tuned for short social text; no model, no torch.

    It reads case, punctuation, degree words, negation and emoji, so give it the original text,
    not a lowercased one.

    Args:
        max_chars: Longest accepted input (default: ``Settings().max_input_chars``).
    """

    backend = "vader"

    def __init__(self, *, max_chars: int | None = None) -> None:
        self._analyzer = SentimentIntensityAnalyzer()
        self.max_chars = max_chars if max_chars is not None else Settings().max_input_chars

    def __repr__(self) -> str:
        return "VaderSentiment()"

    async def analyze(self, text: str) -> Sentiment:
        """Return the sentiment of ``text``.

        Raises:
            InputValidationError: ``text`` is not a string or is longer than ``max_chars``.
        """
        if isinstance(text, str) and len(text) > _INLINE_CHARS:  # tens of ms: off the loop
            return await asyncio.to_thread(self.analyze_sync, text)
        return self.analyze_sync(text)

    def analyze_sync(self, text: str) -> Sentiment:
        """Blocking form of :meth:`analyze` (pure CPU)."""
        check_text(text, self.max_chars)
        s = self._analyzer.polarity_scores(text)
        compound = float(s["compound"])
        return Sentiment(
            compound=compound,
            positive=float(s["pos"]),
            negative=float(s["neg"]),
            neutral=float(s["neu"]),
            label=label_for(compound),
            emotion=emotion_for(text, compound),
            backend=self.backend,
        )


def check_text(text: object, max_chars: int) -> str:
    """Return ``text`` if it is a string of at most ``max_chars`` characters.

    Raises:
        InputValidationError: otherwise.
    """
    if not isinstance(text, str):
        raise InputValidationError(
            f"text must be a string, got {type(text).__name__}", field="text"
        )
    if len(text) > max_chars:
        raise InputValidationError(
            f"text is {len(text)} characters long; the limit is {max_chars}", field="text"
        )
    return text


def make_sentiment(name: str | None = None, **options: Any) -> VaderSentiment:
    """Factory for spec ``"local"`` / ``"local:vader"`` → :class:`VaderSentiment`.

    Raises:
        ConfigurationError: unknown name.
    """
    key = (name or "vader").lower()
    if key in ("vader", "default", "local"):
        return VaderSentiment(**options)
    close = difflib.get_close_matches(key, ["vader"], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigurationError(
        f"unknown sentiment backend {key!r}.{hint} The local provider has 'vader'; a model "
        "folder is the 'transformers:<folder>' spec."
    )
