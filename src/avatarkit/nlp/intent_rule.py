"""Rule-based intent classification from the intent file's keywords and regex patterns."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from avatarkit.nlp.intent import ScoringIntentClassifier
from avatarkit.nlp.intent_file import IntentFile, load_intents
from avatarkit.nlp.preprocess import LocalPreprocessor

__all__ = ["RuleIntentClassifier"]


class RuleIntentClassifier(ScoringIntentClassifier):
    """Keywords and patterns: transparent, instant, no training.

    Each match is evidence with a weight (a pattern ``pattern_weight``, a keyword
    ``keyword_weight``); an intent's confidence combines its matches as a noisy-OR,
    ``1 - Π(1 - w)``, so one pattern gives 0.75 and a pattern plus a keyword 0.875 by default.
    Keywords match whole words case-insensitively, and also by Snowball stem (``book`` matches
    ``booking``).

    Args:
        intents: Intent file (path, mapping, ``IntentFile``) or ``None`` for the default.
        threshold: Lowest confidence that counts; below it ``top`` is ``out_of_scope``.
        pattern_weight: Evidence of one regex match.
        keyword_weight: Evidence of one keyword match.
        multi_intent: Also score each clause.
    """

    backend = "rules"

    def __init__(
        self,
        intents: IntentFile | str | Path | dict[str, Any] | None = None,
        *,
        threshold: float = 0.5,
        pattern_weight: float = 0.75,
        keyword_weight: float = 0.5,
        multi_intent: bool = True,
    ) -> None:
        super().__init__(load_intents(intents), threshold=threshold, multi_intent=multi_intent)
        self.pattern_weight = pattern_weight
        self.keyword_weight = keyword_weight
        self._prep = LocalPreprocessor(
            language=self.intents.language, remove_stopwords=False, lemmatize=False
        )
        self._patterns = {
            spec.name: [re.compile(p, re.IGNORECASE) for p in spec.patterns]
            for spec in self.intents.intents
            if spec.name in self.names
        }
        self._keywords = {
            spec.name: [self._key(k) for k in spec.keywords]
            for spec in self.intents.intents
            if spec.name in self.names
        }

    def _key(self, phrase: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        p = self._prep.preprocess_sync(phrase)
        return tuple(t.casefold() for t in p.tokens), tuple(p.stems)

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Noisy-OR of keyword and pattern evidence per intent, for each text."""
        out: list[dict[str, float]] = []
        for text in texts:
            p = self._prep.preprocess_sync(text)
            words = tuple(t.casefold() for t in p.tokens)
            stems = tuple(p.stems)
            scores: dict[str, float] = {}
            for name in self.names:
                miss = 1.0
                for rx in self._patterns[name]:
                    if rx.search(p.normalized):
                        miss *= 1.0 - self.pattern_weight
                for kw_words, kw_stems in self._keywords[name]:
                    if _contains(words, kw_words) or _contains(stems, kw_stems):
                        miss *= 1.0 - self.keyword_weight
                scores[name] = 1.0 - miss
            out.append(scores)
        return out


def _contains(seq: tuple[str, ...], sub: tuple[str, ...]) -> bool:
    n = len(sub)
    if n == 0 or n > len(seq):
        return False
    return any(seq[i : i + n] == sub for i in range(len(seq) - n + 1))
