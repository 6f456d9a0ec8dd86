"""Choose intent-classifier settings by cross-validation on the intent file's own examples.

The evaluation set (intent_eval.jsonl) is never read here, so the defaults picked with this
script are not fitted to it. Stratified 5-fold: train on 4/5 of the examples, classify the rest.

    python benchmarks/intent_tune.py --backend tfidf
    python benchmarks/intent_tune.py --backend embedding
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from avatarkit.nlp.intent_file import OUT_OF_SCOPE, IntentFile, IntentSpec, load_intents
from avatarkit.nlp.intent_tfidf import TfidfIntentClassifier


def folds(intents: IntentFile, n: int = 5) -> Iterator[tuple[IntentFile, list[tuple[str, str]]]]:
    texts = [(e, s.name) for s in intents.intents for e in s.examples]
    y = [lab for _, lab in texts]
    skf = StratifiedKFold(n_splits=n, shuffle=True, random_state=0)
    for train_idx, test_idx in skf.split(texts, y):
        keep = {texts[i] for i in train_idx}
        specs = [
            IntentSpec(
                name=s.name,
                description=s.description,
                keywords=s.keywords,
                patterns=s.patterns,
                examples=tuple(e for e in s.examples if (e, s.name) in keep),
            )
            for s in intents.intents
        ]
        yield (
            IntentFile(language=intents.language, intents=tuple(specs)),
            [texts[i] for i in test_idx],
        )


class CachedEmbedder:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for t, v in zip(missing, self.inner.embed(missing), strict=True):
                self.cache[t] = v
        return np.stack([self.cache[t] for t in texts])


def run(make: Any, grid: dict[str, list[Any]], intents: IntentFile) -> None:
    parts = list(folds(intents))
    results = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=True))
        hit = total = 0
        for train, test in parts:
            clf = make(train, params)
            for text, gold in test:
                hit += clf.classify_sync(text).top == gold
                total += 1
        results.append((hit / total, params))
    results.sort(key=lambda r: r[0], reverse=True)
    for acc, params in results[:10]:
        print(f"{acc:.3f}  {params}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["tfidf", "embedding"], default="tfidf")
    args = parser.parse_args()
    intents = load_intents()
    n = sum(len(s.examples) for s in intents.intents)
    print(f"{n} examples, {len(intents.intents)} classes incl. {OUT_OF_SCOPE}; 5-fold CV")
    if args.backend == "tfidf":
        run(
            lambda f, p: TfidfIntentClassifier(f, multi_intent=False, **p),
            {"c": [2.0, 5.0, 10.0, 20.0, 50.0], "threshold": [0.2, 0.3, 0.4, 0.5]},
            intents,
        )
    else:
        from avatarkit.providers.transformers_nlp import (
            EmbeddingIntentClassifier,
            TransformersEmbedder,
        )

        emb = CachedEmbedder(TransformersEmbedder())
        emb.embed([e for s in intents.intents for e in s.examples])
        run(
            lambda f, p: EmbeddingIntentClassifier(f, embedder=emb, multi_intent=False, **p),
            {
                "k": [5, 8, 12, 20],
                "temperature": [0.01, 0.02, 0.03],
                "min_similarity": [0.15, 0.2, 0.25],
                "threshold": [0.3, 0.5],
            },
            intents,
        )


if __name__ == "__main__":
    main()
