"""Intent backends side by side on benchmarks/data/intent_eval.jsonl.

Prints accuracy, macro-F1, out-of-scope F1, multi-intent recall, p50/p95 latency and set-up
time per backend, all measured in one run. The evaluation set is checked to share no utterance
with the intent file's examples and keywords.

    python benchmarks/intent_bench.py                      # rules, tfidf, embedding (if installed)
    python benchmarks/intent_bench.py --backends tfidf --errors
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sklearn.metrics import f1_score

from avatarkit.nlp.intent_file import OUT_OF_SCOPE, load_intents
from avatarkit.nlp.intent_rule import RuleIntentClassifier
from avatarkit.nlp.intent_tfidf import TfidfIntentClassifier, training_pairs
from avatarkit.types import IntentPrediction

DATA = Path(__file__).parent / "data" / "intent_eval.jsonl"


def _norm(s: str) -> str:
    return re.sub(r"[^\w ]", "", s.lower()).strip()


def load_eval(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    train = {_norm(t) for t in training_pairs(load_intents())[0]}
    leaked = [r["text"] for r in rows if _norm(r["text"]) in train]
    if leaked:
        sys.exit(f"evaluation set shares utterances with the training examples: {leaked}")
    return rows


def build(name: str) -> Callable[[str], IntentPrediction]:
    if name == "rules":
        return RuleIntentClassifier().classify_sync
    if name == "tfidf":
        return TfidfIntentClassifier().classify_sync
    if name == "embedding":
        from avatarkit.providers.transformers_nlp import EmbeddingIntentClassifier

        return EmbeddingIntentClassifier().classify_sync
    raise SystemExit(f"unknown backend {name!r}")


def evaluate(name: str, rows: list[dict[str, Any]], show_errors: bool) -> dict[str, Any]:
    started = time.perf_counter()
    classify = build(name)
    setup = time.perf_counter() - started
    classify("warm up")
    y_true: list[str] = []
    y_pred: list[str] = []
    latencies: list[float] = []
    multi_hit = multi_total = 0
    errors: list[str] = []
    for row in rows:
        gold = set(row.get("intents", [row["intent"]]))
        t0 = time.perf_counter()
        pred = classify(row["text"])
        latencies.append(time.perf_counter() - t0)
        y_pred.append(pred.top)
        y_true.append(pred.top if pred.top in gold else row["intent"])
        if pred.top not in gold:
            errors.append(
                f"  {row['text']!r}: gold {sorted(gold)}, got {pred.top} ({pred.confidence:.2f})"
            )
        if len(gold) > 1:
            multi_total += 1
            multi_hit += gold <= set(pred.detected)
    if show_errors:
        print(f"\n{name} errors ({len(errors)}):\n" + "\n".join(errors))
    latencies.sort()
    return {
        "backend": name,
        "accuracy": sum(t == p for t, p in zip(y_true, y_pred, strict=True)) / len(rows),
        "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0),
        "oos_f1": f1_score(y_true, y_pred, labels=[OUT_OF_SCOPE], average="macro", zero_division=0),
        "multi": multi_hit / multi_total if multi_total else float("nan"),
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
        "setup_s": setup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="rules,tfidf,embedding")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--errors", action="store_true", help="list misclassified utterances")
    args = parser.parse_args()
    rows = load_eval(args.data)
    labels = {r["intent"] for r in rows}
    n_multi = sum(len(r.get("intents", [])) > 1 for r in rows)
    print(
        f"{len(rows)} utterances, {len(labels)} intents, {n_multi} multi-intent; "
        "disjoint from the training examples"
    )
    results = []
    for name in args.backends.split(","):
        try:
            results.append(evaluate(name.strip(), rows, args.errors))
        except Exception as exc:  # a missing extra should not hide the other rows
            print(f"{name}: skipped ({type(exc).__name__}: {exc})")
    header = (
        "\n| backend | accuracy | macro-F1 | out-of-scope F1 | multi-intent recall "
        "| p50 latency | p95 latency | set-up |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['backend']} | {r['accuracy']:.1%} | {r['macro_f1']:.3f} | {r['oos_f1']:.3f} "
            f"| {r['multi']:.0%} | {r['p50_ms']:.1f} ms | {r['p95_ms']:.1f} ms "
            f"| {r['setup_s']:.2f} s |"
        )


if __name__ == "__main__":
    main()
