"""Understanding user text: preprocessing, intent classification and sentiment (no torch).

The transformers-based backends (MiniLM embeddings, model sentiment) live in
``avatarkit.providers.transformers_nlp`` and need the ``nlp`` extra.
"""

from avatarkit.nlp.intent import ScoringIntentClassifier, make_intent, split_clauses
from avatarkit.nlp.intent_file import OUT_OF_SCOPE, IntentFile, IntentSpec, load_intents
from avatarkit.nlp.intent_llm import LLMIntentClassifier
from avatarkit.nlp.intent_rule import RuleIntentClassifier
from avatarkit.nlp.intent_tfidf import TfidfIntentClassifier
from avatarkit.nlp.preprocess import LocalPreprocessor, make_preprocessor
from avatarkit.nlp.sentiment import VaderSentiment, emotion_for, make_sentiment

__all__ = [
    "OUT_OF_SCOPE",
    "IntentFile",
    "IntentSpec",
    "LLMIntentClassifier",
    "LocalPreprocessor",
    "RuleIntentClassifier",
    "ScoringIntentClassifier",
    "TfidfIntentClassifier",
    "VaderSentiment",
    "emotion_for",
    "load_intents",
    "make_intent",
    "make_preprocessor",
    "make_sentiment",
    "split_clauses",
]
