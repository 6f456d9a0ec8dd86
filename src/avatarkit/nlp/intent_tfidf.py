"""The no-torch default: TF-IDF (word and character n-grams) + logistic regression (scikit-learn).

Trained at construction from the intent file's examples (keywords count as short examples;
``out_of_scope`` examples as a reject class), in tens of milliseconds on a laptop CPU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from avatarkit.config import get_logger
from avatarkit.errors import ConfigurationError
from avatarkit.nlp.intent import ScoringIntentClassifier
from avatarkit.nlp.intent_file import OUT_OF_SCOPE, IntentFile, load_intents

__all__ = ["TfidfIntentClassifier", "training_pairs"]

_log = get_logger("avatarkit.nlp")


def training_pairs(intents: IntentFile, *, keywords: bool = True) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` from the intent file: examples, then keywords as short examples."""
    texts: list[str] = []
    labels: list[str] = []
    for spec in intents.intents:
        items = [*spec.examples, *(spec.keywords if keywords else ())]
        texts.extend(items)
        labels.extend([spec.name] * len(items))
    return texts, labels


class TfidfIntentClassifier(ScoringIntentClassifier):
    """TF-IDF over word 1–2-grams and character 2–5-grams, then multinomial logistic regression.

    Its probabilities are the confidences; ``out_of_scope`` is a class of its own when the intent
    file has examples for it, and the answer whenever the best intent is below ``threshold``.

    Args:
        intents: Intent file (path, mapping, ``IntentFile``) or ``None`` for the default.
        threshold: Lowest probability that counts; below it ``top`` is ``out_of_scope``.
        c: Inverse regularisation of the logistic regression (higher: sharper probabilities).
        multi_intent: Also score each clause.

    Raises:
        ConfigurationError: an intent besides ``out_of_scope`` has no examples or keywords.
    """

    backend = "tfidf"

    def __init__(
        self,
        intents: IntentFile | str | Path | dict[str, Any] | None = None,
        *,
        threshold: float = 0.3,
        c: float = 20.0,
        multi_intent: bool = True,
    ) -> None:
        super().__init__(load_intents(intents), threshold=threshold, multi_intent=multi_intent)
        texts, labels = training_pairs(self.intents)
        empty = [n for n in self.names if n not in labels]
        if empty:
            raise ConfigurationError(
                f"TfidfIntentClassifier needs examples or keywords for every intent; none for: "
                f"{', '.join(empty)}"
            )
        # scikit-learn is imported here so that `import avatarkit.nlp` stays fast.
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion, Pipeline
        from threadpoolctl import threadpool_limits

        started = time.perf_counter()
        self._pipeline = Pipeline(
            [
                (
                    "features",
                    FeatureUnion(
                        [
                            (
                                "words",
                                TfidfVectorizer(
                                    ngram_range=(1, 2),
                                    sublinear_tf=True,
                                    token_pattern=r"(?u)\b\w+\b",
                                ),
                            ),
                            (
                                "chars",
                                TfidfVectorizer(
                                    analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True
                                ),
                            ),
                        ]
                    ),
                ),
                ("model", LogisticRegression(C=c, max_iter=2000)),
            ]
        )
        # One BLAS thread: on a busy small CPU, thread oversubscription makes lbfgs 10-30x slower.
        with threadpool_limits(limits=1):
            self._pipeline.fit([t.lower() for t in texts], labels)
        self.classes: list[str] = [str(x) for x in self._pipeline.classes_]
        self.train_seconds = time.perf_counter() - started
        _log.debug("tfidf intents trained on %d texts in %.3fs", len(texts), self.train_seconds)

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Class probabilities for each text."""
        probs = np.asarray(self._pipeline.predict_proba([t.lower() for t in texts]))
        return [
            {name: float(p) for name, p in zip(self.classes, row, strict=True)} for row in probs
        ]

    @property
    def has_out_of_scope_class(self) -> bool:
        """Whether the model was trained with ``out_of_scope`` examples."""
        return OUT_OF_SCOPE in self.classes
