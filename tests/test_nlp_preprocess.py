import subprocess
import sys

import pytest

from avatarkit.errors import InputValidationError
from avatarkit.nlp.preprocess import LocalPreprocessor, base_language, stopwords_for
from avatarkit.ports import TextPreprocessor
from avatarkit.types import ProcessedText


def test_satisfies_the_port_and_runs_async():
    pre = LocalPreprocessor()
    assert isinstance(pre, TextPreprocessor)


async def test_async_preprocess_returns_processed_text():
    out = await LocalPreprocessor().preprocess("Hello there")
    assert isinstance(out, ProcessedText)
    assert out.tokens == ["Hello", "there"]


def test_unicode_quotes_and_whitespace_are_normalised():
    out = LocalPreprocessor().preprocess_sync("  I\u2019d  like\u00a0a \ufb01ne\tＴＥＡ\u200b  ")
    assert out.normalized == "I'd like a fine TEA"
    assert out.original == "  I\u2019d  like\u00a0a \ufb01ne\tＴＥＡ\u200b  "
    assert "I'd" in out.tokens


def test_each_normalisation_step_can_be_switched_off():
    raw = "  Ｈi  there "
    assert LocalPreprocessor(normalize_unicode=False).normalize(raw) == "Ｈi there"
    assert LocalPreprocessor(collapse_whitespace=False).normalize(raw) == "  Hi  there "
    assert LocalPreprocessor(lowercase=True).normalize(raw) == "hi there"


def test_tokens_drop_punctuation_and_content_tokens_drop_stop_words():
    out = LocalPreprocessor().preprocess_sync("Can you book the slots for me, tomorrow?")
    assert out.tokens == ["Can", "you", "book", "the", "slots", "for", "me", "tomorrow"]
    assert out.content_tokens == ["book", "slots", "tomorrow"]
    assert out.stems == ["book", "slot", "tomorrow"]
    assert out.lemmas == ["book", "slot", "tomorrow"]


def test_negations_are_kept_unless_asked():
    text = "I do not want that"
    assert "not" in LocalPreprocessor().preprocess_sync(text).content_tokens
    assert "not" not in LocalPreprocessor(keep_negations=False).preprocess_sync(text).content_tokens


def test_stemming_and_lemmatisation_reduce_inflections():
    out = LocalPreprocessor().preprocess_sync("running appointments")
    assert out.stems == ["run", "appoint"]
    assert out.lemmas == ["run", "appointment"]


def test_steps_switched_off_leave_their_lists_empty():
    out = LocalPreprocessor(remove_stopwords=False, stem=False, lemmatize=False).preprocess_sync(
        "the cats were running"
    )
    assert out.content_tokens == out.tokens == ["the", "cats", "were", "running"]
    assert out.stems == [] and out.lemmas == []
    bare = LocalPreprocessor(tokenize=False).preprocess_sync("the cats")
    assert bare.tokens == [] and bare.content_tokens == [] and bare.normalized == "the cats"


def test_german_uses_german_stop_words_stems_and_lemmas():
    out = LocalPreprocessor(language="de-DE").preprocess_sync("Ich möchte die Häuser und Termine")
    assert out.language == "de"
    assert [t.lower() for t in out.content_tokens] == ["möchte", "häuser", "termine"]
    assert out.stems == ["mocht", "haus", "termin"]
    assert out.lemmas[1:] == ["Haus", "Termin"]


def test_call_language_overrides_the_default_and_detection_picks_one():
    pre = LocalPreprocessor(detect_languages=["en", "de", "fr"])
    assert pre.preprocess_sync("Guten Tag, ich möchte einen Termin buchen").language == "de"
    assert pre.preprocess_sync("Hello, I would like to book a table").language == "en"
    assert pre.preprocess_sync("hallo", language="fr").language == "fr"
    assert LocalPreprocessor(language="de").preprocess_sync("the house").language == "de"


def test_language_without_resources_keeps_tokens_and_skips_the_rest():
    out = LocalPreprocessor(language="xx").preprocess_sync("alpha beta")
    assert out.content_tokens == ["alpha", "beta"]
    assert out.stems == [] and out.lemmas == []


def test_custom_stop_words_replace_the_shipped_list():
    pre = LocalPreprocessor(stopwords={"en": {"Alpha"}})
    assert pre.preprocess_sync("alpha the beta").content_tokens == ["the", "beta"]
    assert LocalPreprocessor(stopwords=["beta"]).preprocess_sync("alpha beta").content_tokens == [
        "alpha"
    ]


def test_english_list_keeps_chat_words_and_drops_contractions():
    words = stopwords_for("en")
    assert {"hello", "thanks", "help", "book"}.isdisjoint(words)
    assert {"the", "i'm", "you're"} <= words
    assert "not" not in words and "not" in stopwords_for("en", keep_negations=False)
    assert "und" in stopwords_for("de")


def test_base_language():
    assert base_language("de_DE") == "de"
    assert base_language("EN-us") == "en"
    assert base_language("no") == "nb"


def test_bad_input_raises_typed_errors():
    with pytest.raises(InputValidationError):
        LocalPreprocessor().preprocess_sync(42)  # type: ignore[arg-type]
    with pytest.raises(InputValidationError, match="limit is 10"):
        LocalPreprocessor(max_chars=10).preprocess_sync("x" * 11)
    with pytest.raises(InputValidationError):
        LocalPreprocessor(language=" ")


def test_empty_text_gives_empty_lists():
    out = LocalPreprocessor().preprocess_sync("   ")
    assert out.normalized == "" and out.tokens == []


def test_importing_nlp_leaves_torch_and_sklearn_out():
    code = (
        "import sys, avatarkit.nlp; "
        "print(any(m in sys.modules for m in ('torch', 'transformers', 'sklearn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_a_languages_first_text_is_processed_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the first text in a language loads its word lists (up to 1.6 s): other sessions on the
    # event loop must not wait for it; later texts are quick and stay on the loop
    import threading

    pre = LocalPreprocessor()
    threads: list[bool] = []
    real = pre.preprocess_sync

    def recording(text: str, *, language: str | None = None) -> ProcessedText:
        threads.append(threading.current_thread() is threading.main_thread())
        return real(text, language=language)

    monkeypatch.setattr(pre, "preprocess_sync", recording)
    await pre.preprocess("Hello there, how are you?")
    await pre.preprocess("And how was your day?")
    await pre.preprocess("Wie geht es dir?", language="de")
    assert threads == [False, True, False]  # on the loop's thread only once the language is warm
