"""What every intent classifier shares: clause splitting, thresholds and multi-intent decisions.

A backend only scores texts (intent → confidence in [0, 1]); :class:`ScoringIntentClassifier`
scores the whole utterance and each of its clauses, and turns the scores into an
:class:`~avatarkit.types.IntentPrediction`: ranked intents, ``top`` (``out_of_scope`` below the
threshold) and ``detected`` (one intent per clause, so "thanks! and can I book a slot?" gives two).
"""

from __future__ import annotations

import asyncio
import difflib
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from avatarkit._names import is_name_word
from avatarkit.config import Settings
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.nlp.intent_file import OUT_OF_SCOPE, IntentFile
from avatarkit.nlp.preprocess import LocalPreprocessor
from avatarkit.types import Intent, IntentPrediction, ProcessedText

if TYPE_CHECKING:
    from avatarkit.nlp.intent_llm import LLMIntentClassifier

__all__ = [
    "INTENT_BACKENDS",
    "OUT_OF_SCOPE",
    "ScoringIntentClassifier",
    "decide",
    "make_intent",
    "split_clauses",
    "text_of",
]

_SENTENCE_END_RE = re.compile(r"(?<=[.!?;,])\s+|\s*\n+\s*")
_CONJUNCTION_RE = re.compile(
    r"(?:^|\s*,?\s+)(?:and also|and then|and|but|also|plus|oh and|by the way|btw)\b\s*,?\s*",
    re.IGNORECASE,
)
_WORD_RE = re.compile(r"\w")

INTENT_BACKENDS = ("tfidf", "rules", "llm")
"""Intent backends of the ``local`` provider; ``tfidf`` is the default."""


def split_clauses(text: str) -> list[str]:
    """Split an utterance into clauses at punctuation and at ``and``/``but``/``also``/``plus``.

    Clauses without a word character are dropped. A single-clause text gives ``[text]``.
    """
    clauses: list[str] = []
    for sentence in _SENTENCE_END_RE.split(text):
        for part in _CONJUNCTION_RE.split(sentence):
            part = part.strip(" ,")
            if _WORD_RE.search(part):
                clauses.append(part)
    return clauses or ([text.strip()] if text.strip() else [])


def nothing_to_classify(backend: str) -> IntentPrediction:
    """The answer for empty input: certainly out of scope."""
    return IntentPrediction(
        intents=[Intent(name=OUT_OF_SCOPE, confidence=1.0)], top=OUT_OF_SCOPE, backend=backend
    )


def text_of(text: ProcessedText | str) -> str:
    """The text a classifier reads: ``ProcessedText.normalized`` or the string itself.

    Raises:
        InputValidationError: ``text`` is neither, or is longer than
            ``Settings().max_input_chars``.
    """
    if isinstance(text, ProcessedText):
        raw = text.normalized
    elif isinstance(text, str):
        raw = text
    else:
        raise InputValidationError(
            f"classify() takes ProcessedText or str, got {type(text).__name__}", field="text"
        )
    limit = Settings().max_input_chars
    if len(raw) > limit:
        raise InputValidationError(
            f"text is {len(raw)} characters long; the limit is {limit}", field="text"
        )
    return raw


def decide(
    names: Sequence[str],
    whole: Mapping[str, float],
    clauses: Sequence[Mapping[str, float]],
    *,
    threshold: float,
    backend: str,
) -> IntentPrediction:
    """Turn scores into a prediction.

    Args:
        names: The real intents (``out_of_scope`` excluded).
        whole: Scores of the whole utterance; may hold an ``out_of_scope`` score.
        clauses: Scores of each clause, in text order (empty for a single clause).
        threshold: Lowest confidence at which an intent counts as present.
        backend: Name recorded in the prediction.

    Returns:
        Ranked intents (``out_of_scope`` first when it is ``top``), ``top`` and ``detected``.
    """
    whole_conf = {n: _clip(whole.get(n, 0.0)) for n in names}
    best = max(names, key=lambda n: whole_conf[n])
    trained_oos = whole.get(OUT_OF_SCOPE)
    oos = _clip(1.0 - whole_conf[best] if trained_oos is None else trained_oos)

    conf = dict(whole_conf)
    found: list[str] = []
    for scores in clauses:
        cand = max(names, key=lambda n: scores.get(n, 0.0))
        value = _clip(scores.get(cand, 0.0))
        if value >= threshold and value > scores.get(OUT_OF_SCOPE, 0.0):
            conf[cand] = max(conf[cand], value)
            if cand not in found:
                found.append(cand)

    if whole_conf[best] >= threshold and (trained_oos is None or whole_conf[best] > oos):
        top = best
    elif found:
        top = max(found, key=lambda n: conf[n])
    else:
        top = OUT_OF_SCOPE
    if top == OUT_OF_SCOPE:
        detected: list[str] = []
    elif top in found:
        detected = found  # text order
    else:
        detected = [top, *found]

    ranked = sorted(names, key=lambda n: conf[n], reverse=True)
    intents = [Intent(name=n, confidence=round(conf[n], 4)) for n in ranked]
    oos_intent = Intent(name=OUT_OF_SCOPE, confidence=round(oos, 4))
    if top == OUT_OF_SCOPE:
        intents.insert(0, oos_intent)
    else:
        pos = next((i for i, it in enumerate(intents) if it.confidence < oos), len(intents))
        intents.insert(pos, oos_intent)
    return IntentPrediction(intents=intents, top=top, detected=detected, backend=backend)


def _clip(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


class Exclusions:
    """The intents an intent file's ``exclude`` patterns rule out of a text, for any backend.

    Patterns read the text as the rules' patterns do (typographic quotes as ASCII, whitespace
    collapsed), case-insensitively. A pattern with a group named ``name`` matches only where
    the group's words can be a person's name, as the dialogue's name slot reads them ("This is
    Alice", not "This is Unacceptable!").
    """

    def __init__(self, intents: IntentFile) -> None:
        self._patterns = [
            (spec.name, [re.compile(p, re.IGNORECASE) for p in spec.exclude])
            for spec in intents.intents
            if spec.exclude and spec.name != OUT_OF_SCOPE
        ]
        self._plain = LocalPreprocessor(tokenize=False).normalize

    def ruled_out(self, text: str) -> set[str]:
        """Names of the intents an ``exclude`` pattern matches in ``text``."""
        if not self._patterns:
            return set()
        plain = self._plain(text)
        return {name for name, rxs in self._patterns if any(_excludes(rx, plain) for rx in rxs)}


def _excludes(rx: re.Pattern[str], text: str) -> bool:
    """Whether ``rx`` matches ``text``, with a name in its ``name`` group if it has one."""
    if "name" not in rx.groupindex:
        return rx.search(text) is not None
    return any(
        all(is_name_word(w) for w in (m.group("name") or "").split()) for m in rx.finditer(text)
    )


class ScoringIntentClassifier(ABC):
    """Base of the classifiers that score texts: implements ``classify`` from :meth:`score`.

    Args:
        intents: The intent file the classifier knows.
        threshold: Lowest confidence for an intent to count; below it ``top`` is ``out_of_scope``.
        multi_intent: Also score each clause so several intents can be detected.
    """

    backend: str = "scoring"

    def __init__(self, intents: IntentFile, *, threshold: float, multi_intent: bool = True) -> None:
        if not 0.0 < threshold < 1.0:
            raise InputValidationError(
                f"threshold must be in (0, 1), got {threshold}", field="threshold"
            )
        self.intents = intents
        self.threshold = threshold
        self.multi_intent = multi_intent
        self._exclusions = Exclusions(intents)

    @property
    def names(self) -> list[str]:
        """The intents this classifier can answer (``out_of_scope`` excluded)."""
        return self.intents.names

    @abstractmethod
    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Confidence in [0, 1] of each intent (may include ``out_of_scope``) for each text."""

    async def classify(self, text: ProcessedText | str) -> IntentPrediction:
        """Return ranked intents; ``top`` is ``out_of_scope`` below the threshold.

        Raises:
            InputValidationError: ``text`` is neither ProcessedText nor str.
        """
        # Scoring is CPU work (milliseconds): off the event loop, so other sessions keep moving.
        return await asyncio.to_thread(self.classify_sync, text)

    def classify_sync(self, text: ProcessedText | str) -> IntentPrediction:
        """Blocking form of :meth:`classify` (pure CPU)."""
        raw = text_of(text).strip()
        if not raw:
            return nothing_to_classify(self.backend)
        clauses = split_clauses(raw) if self.multi_intent else [raw]
        if len(clauses) < 2:
            (whole,) = self._scored([raw])
            return decide(self.names, whole, [], threshold=self.threshold, backend=self.backend)
        whole, *parts = self._scored([raw, *clauses])
        return decide(self.names, whole, parts, threshold=self.threshold, backend=self.backend)

    def _scored(self, texts: list[str]) -> list[dict[str, float]]:
        """:meth:`score`, with 0 for every intent an ``exclude`` pattern rules out of a text.

        Its confidence passes to ``out_of_scope`` where the backend scores that.
        """
        scored = self.score(texts)
        for text, scores in zip(texts, scored, strict=True):
            for name in self._exclusions.ruled_out(text):
                if name in scores:
                    if OUT_OF_SCOPE in scores:
                        scores[OUT_OF_SCOPE] = min(1.0, scores[OUT_OF_SCOPE] + scores[name])
                    scores[name] = 0.0
        return scored


def make_intent(
    name: str | None = None, **options: Any
) -> ScoringIntentClassifier | LLMIntentClassifier:
    """Factory for spec ``"local"``/``"local:tfidf"`` (default), ``"local:rules"``, ``"local:llm"``.

    ``"llm"`` needs ``chat=`` a ChatModel. Other options go to the classifier (``intents=`` a
    path or ``IntentFile``, ``threshold=``...).

    Raises:
        ConfigurationError: unknown name, or ``"llm"`` without ``chat``.
    """
    key = (name or "tfidf").lower()
    if key in ("tfidf", "default", "local"):
        from avatarkit.nlp.intent_tfidf import TfidfIntentClassifier

        return TfidfIntentClassifier(**options)
    if key in ("rules", "rule"):
        from avatarkit.nlp.intent_rule import RuleIntentClassifier

        return RuleIntentClassifier(**options)
    if key == "llm":
        from avatarkit.nlp.intent_llm import LLMIntentClassifier

        chat = options.pop("chat", None)
        if chat is None:
            raise ConfigurationError(
                "intent 'llm' needs a chat model: make_intent('llm', chat=<ChatModel>)"
            )
        return LLMIntentClassifier(chat, **options)
    close = difflib.get_close_matches(key, INTENT_BACKENDS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    if key in ("embedding", "embeddings", "minilm"):
        hint += " Embeddings are the 'transformers:embedding' spec."
    raise ConfigurationError(
        f"unknown intent backend {key!r}.{hint} Choose one of: {', '.join(INTENT_BACKENDS)}."
    )
