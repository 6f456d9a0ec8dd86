"""Factories for the ``local`` provider's NLP roles: ``factory(name, **options)`` → a backend.

``name`` is the part of a spec after the colon (``"local:rules"`` → ``"rules"``), or ``None``.
"""

from __future__ import annotations

import difflib
from typing import Any

from avatarkit.errors import ConfigurationError
from avatarkit.nlp.intent import ScoringIntentClassifier
from avatarkit.nlp.intent_llm import LLMIntentClassifier
from avatarkit.nlp.intent_rule import RuleIntentClassifier
from avatarkit.nlp.intent_tfidf import TfidfIntentClassifier
from avatarkit.nlp.preprocess import LocalPreprocessor
from avatarkit.nlp.sentiment import VaderSentiment

__all__ = ["INTENT_BACKENDS", "make_intent", "make_preprocessor", "make_sentiment"]

INTENT_BACKENDS = ("tfidf", "rules", "llm")
"""Intent backends of the ``local`` provider; ``tfidf`` is the default."""


def _unknown(role: str, name: str, known: tuple[str, ...], hint: str = "") -> ConfigurationError:
    close = difflib.get_close_matches(name, known, n=1)
    suggestion = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigurationError(
        f"unknown {role} backend {name!r}.{suggestion} Choose one of: {', '.join(known)}.{hint}"
    )


def make_preprocessor(name: str | None = None, **options: Any) -> LocalPreprocessor:
    """``"local"`` → :class:`LocalPreprocessor`; ``"local:<lang>"`` sets its default language."""
    if name and name.lower() not in ("local", "default"):
        options.setdefault("language", name)
    return LocalPreprocessor(**options)


def make_intent(
    name: str | None = None, **options: Any
) -> ScoringIntentClassifier | LLMIntentClassifier:
    """``"tfidf"`` (default), ``"rules"`` or ``"llm"`` (needs ``chat=`` a ChatModel).

    Options go to the classifier (``intents=`` a path or ``IntentFile``, ``threshold=``...).

    Raises:
        ConfigurationError: unknown name, or ``"llm"`` without ``chat``.
    """
    key = (name or "tfidf").lower()
    if key in ("tfidf", "default", "local"):
        return TfidfIntentClassifier(**options)
    if key in ("rules", "rule"):
        return RuleIntentClassifier(**options)
    if key == "llm":
        chat = options.pop("chat", None)
        if chat is None:
            raise ConfigurationError(
                "intent 'llm' needs a chat model: make_intent('llm', chat=<ChatModel>)"
            )
        return LLMIntentClassifier(chat, **options)
    hint = (
        " Embeddings are the 'transformers:embedding' spec."
        if key in ("embedding", "embeddings", "minilm")
        else ""
    )
    raise _unknown("intent", key, INTENT_BACKENDS, hint)


def make_sentiment(name: str | None = None, **options: Any) -> VaderSentiment:
    """``"vader"`` (default) → :class:`VaderSentiment`.

    Raises:
        ConfigurationError: unknown name.
    """
    key = (name or "vader").lower()
    if key in ("vader", "default", "local"):
        return VaderSentiment(**options)
    raise _unknown(
        "sentiment", key, ("vader",), " A model folder is the 'transformers:<folder>' spec."
    )
