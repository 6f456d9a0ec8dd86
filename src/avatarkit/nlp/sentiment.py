"""Sentiment with VADER (the lexicon ``vadersentiment`` ships) and its mapping to a face's Emotion.

:data:`SERVICE_LEXICON` adds the words of customer complaints that VADER's lexicon lacks.
:func:`emotion_for` is shared by every sentiment backend: polarity from the scores, refined by cue
words (anger, fear, disgust, surprise, uncertainty) read in the text itself.
"""

from __future__ import annotations

import asyncio
import difflib
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from avatarkit.config import Settings
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.types import Emotion, Sentiment

__all__ = [
    "SERVICE_LEXICON",
    "VaderSentiment",
    "check_text",
    "emotion_for",
    "label_for",
    "make_sentiment",
]

POSITIVE_AT = 0.05
"""VADER's documented cut-off: compound ≥ 0.05 is positive, ≤ -0.05 negative."""


_DID_NOT = ("didn't", "did not")
_HAS_NOT = ("hasn't", "has not", "haven't", "have not")
_DID_NOT_COME = (  # (base, past, participle) forms of a delivery or visit that did not happen
    ("arrive", "come", "show up", "turn up"),
    ("arrived", "came", "showed up", "turned up"),
    ("arrived", "come", "shown up", "turned up"),
)

SERVICE_LEXICON: Mapping[str, float] = MappingProxyType(
    {
        # Asking for one's money back is a complaint. VADER has no "refund", and its "want"
        # (+0.3) made "I want a refund" positive. Rated as VADER rates "complaint".
        "refund": -1.2,
        "refunds": -1.2,
        # Inflections VADER lacks, rated as their base word ("crash" -1.7).
        "crashed": -1.7,
        "crashes": -1.7,
        "crashing": -1.7,
        # Faults VADER does not know, rated as the nearest word it does: "cheated" -2.3,
        # "defective" -1.9, "errors" -1.4, "faulty" -1.3.
        "overcharged": -2.3,
        "malfunction": -1.9,
        "malfunctions": -1.9,
        "malfunctioned": -1.9,
        "malfunctioning": -1.9,
        "glitch": -1.4,
        "glitches": -1.4,
        "glitchy": -1.4,
        "buggy": -1.4,
        "unresponsive": -1.3,
        # Complaints made of neutral words, which a word lexicon cannot see ("work" and
        # "arrived" have no valence, so VADER's negation has nothing to flip): phrases, rated
        # as "refund", "faulty" (-1.3) and "missing" (-1.2).
        "money back": -1.2,
        "doesn't work": -1.3,
        "does not work": -1.3,
        "didn't work": -1.3,
        "did not work": -1.3,
        "isn't working": -1.3,
        "not working": -1.3,
        # What never came: "never arrived / came / showed up / turned up", with "didn't", "did
        # not", "hasn't", "has not", "haven't", "have not" before the verb's other forms.
        **{f"never {verb}": -1.2 for verb in _DID_NOT_COME[1]},
        **{f"{neg} {verb}": -1.2 for neg in _DID_NOT for verb in _DID_NOT_COME[0]},
        **{f"{neg} {verb}": -1.2 for neg in _HAS_NOT for verb in _DID_NOT_COME[2]},
        # Politeness is how a request is worded, not how the customer feels. VADER rated
        # "please" (+1.3) and "like" (+1.5) as words ("pleased", "I like it"), so "Please
        # refund me" read neutral and "I'd like a refund" positive. "please" gets no valence
        # (0 takes it out of the lexicon); "would like" asks for something: rated as "want".
        "please": 0.0,
        "would like": 0.3,
        "i'd like": 0.3,
        "we'd like": 0.3,
    }
)
"""Words and phrases of customer complaints missing from VADER's lexicon, and politeness
formulas it reads as praise, with a valence on its -4..4 scale (each rated as VADER rates the
nearest word it has; 0: no sentiment at all). :class:`VaderSentiment` adds them; a degree
adverb may stand between a phrase's words ("I'd really like", "didn't quite work")."""

# Degree adverbs that may stand inside a phrase: "I'd really like a refund" is still a request.
# Not in one that starts with "not" or "never": "not just working" is no "not working".
_ADVERB = r"(?:really|just|truly|actually|quite|so|very\s+much)"

# Asking for help is a request, not praise: VADER's "help" (+1.7, "a great help") made "Please
# help, my order never arrived" positive. With the default lexicon, "help" where it asks ("please
# help", "can you help", "I need some help", "Help!" or "Help me" opening a sentence) is scored
# as a word of no valence; "didn't help", "a big help", "helpful" keep VADER's reading.
_HELP_REQUEST = re.compile(
    r"(?:(?<![\w'’])(?:please|pls|plz|(?:can|could|would|will)\s+(?:you|u)(?:\s+please)?"
    r"|need(?:\s+(?:some|your|a\s+little|a\s+bit\s+of|more))?)\s+|^\W*|[.!?]\s+)"
    r"(help)\b",
    re.IGNORECASE,
)
_NO_ADVERB = frozenset({"not", "never"})
_NO_VALENCE = "help_asked"  # a word VADER does not know (it keeps an inner "_")


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
        lexicon: Words or phrases (lower case) and valences (-4 to 4) added to VADER's
            lexicon, replacing its own where both have a word (0 removes the word: it then
            carries no sentiment, even in capitals); ``None``: :data:`SERVICE_LEXICON`,
            ``{}``: VADER's lexicon alone.

    Raises:
        InputValidationError: a lexicon entry is not lower-case words with one space between
            them, or its valence is not a number within [-4, 4].
    """

    backend = "vader"

    def __init__(
        self, *, max_chars: int | None = None, lexicon: Mapping[str, float] | None = None
    ) -> None:
        extra = _checked_lexicon(SERVICE_LEXICON if lexicon is None else lexicon)
        self._analyzer = SentimentIntensityAnalyzer()
        # VADER scores one word at a time: a phrase becomes one word ("money_back") in the text.
        # A word it knows with valence 0 would still read negative in capitals ("PLEASE"), so
        # 0 removes the word instead (VADER's own lexicon has no word rated 0).
        for key, valence in extra.items():
            if valence == 0:
                self._analyzer.lexicon.pop(_phrase_word(key), None)
            else:
                self._analyzer.lexicon[_phrase_word(key)] = valence
        phrases = sorted((k for k in extra if " " in k), key=len, reverse=True)
        self._phrases = (
            re.compile(
                "|".join(
                    r"(?<![\w'’])"
                    + (
                        rf"\s+(?:({_ADVERB})\s+)?" if p.split()[0] not in _NO_ADVERB else r"\s+"
                    ).join(_word_re(w) for w in p.split())
                    + r"(?![\w'’])"
                    for p in phrases
                ),
                re.IGNORECASE,
            )
            if phrases
            else None
        )
        self._help_requests = lexicon is None
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
        scored = text
        if self._help_requests:
            scored = _HELP_REQUEST.sub(_help_asked, scored)
        if self._phrases is not None:
            scored = self._phrases.sub(_phrase_word_of, scored)
        s = self._analyzer.polarity_scores(scored)
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


def _help_asked(match: re.Match[str]) -> str:
    """``match`` with its "help" (a request) as a word of no valence."""
    a, b = match.span(1)
    text, start = match.group(0), match.start()
    return text[: a - start] + _NO_VALENCE + text[b - start :]


def _word_re(word: str) -> str:
    return re.escape(word).replace("'", "['’]?")  # "doesn't", "doesn’t" and "doesnt"


def _phrase_word(phrase: str) -> str:
    """The one word a phrase is scored as: ``doesnt_work`` for "doesn't work" (a word stays)."""
    return "_".join(phrase.replace("'", "").replace("’", "").split()) if " " in phrase else phrase


def _phrase_word_of(match: re.Match[str]) -> str:
    """The word a matched phrase is scored as, without the adverbs inside it (its only groups)."""
    text, start, kept = match.group(0), match.start(), []
    pos = 0
    for group in range(1, match.re.groups + 1):
        a, b = match.span(group)
        if a >= 0:
            kept.append(text[pos : a - start])
            pos = b - start
    kept.append(text[pos:])
    return _phrase_word("".join(kept))


def _checked_lexicon(lexicon: Mapping[str, float]) -> dict[str, float]:
    """``lexicon`` checked: lower-case words or phrases, valences within [-4, 4]."""
    if not isinstance(lexicon, Mapping):
        raise InputValidationError(
            f"lexicon must map words to valences, got {type(lexicon).__name__}", field="lexicon"
        )
    out: dict[str, float] = {}
    for word, valence in lexicon.items():
        if (
            not isinstance(word, str)
            or not word
            or word != word.lower()
            or " ".join(word.split()) != word
        ):
            raise InputValidationError(
                f"lexicon entry {word!r} must be a lower-case word, or words with one space "
                "between them (VADER looks words up in lower case)",
                field="lexicon",
            )
        if (
            isinstance(valence, bool)
            or not isinstance(valence, int | float)
            or not math.isfinite(valence)
            or not -4.0 <= valence <= 4.0
        ):
            raise InputValidationError(
                f"lexicon valence of {word!r} must be a number within [-4, 4], got {valence!r}",
                field="lexicon",
            )
        out[word] = float(valence)
    return out


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
