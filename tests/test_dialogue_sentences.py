"""Streaming sentence splitter: each sentence leaves as soon as its end is certain."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from avatarkit.dialogue.sentences import SentenceSplitter, split_sentences, split_text
from avatarkit.errors import InputValidationError

TEXT = (
    "Hello there! I'm Dr. Smith, and I was born in the U.S. in 1990. "
    "It costs 3.5 dollars, e.g. for a coffee. Is that fine?\n\n"
    "A new paragraph without an end"
)
EXPECTED = [
    "Hello there!",
    "I'm Dr. Smith, and I was born in the U.S. in 1990.",
    "It costs 3.5 dollars, e.g. for a coffee.",
    "Is that fine?",
    "A new paragraph without an end",
]


def test_whole_text_split() -> None:
    assert split_text(TEXT) == EXPECTED


@pytest.mark.parametrize("chunking", ["chars", "words", "triples"])
def test_any_chunking_gives_the_same_sentences(chunking: str) -> None:
    if chunking == "chars":
        deltas = list(TEXT)
    elif chunking == "words":
        deltas = re.findall(r"\S+\s*", TEXT)
    else:
        deltas = [TEXT[i : i + 3] for i in range(0, len(TEXT), 3)]
    splitter = SentenceSplitter()
    out: list[str] = []
    for d in deltas:
        out += splitter.push(d)
    out += splitter.flush()
    assert out == EXPECTED
    assert splitter.pending == ""


def test_sentence_released_on_the_delta_that_completes_it() -> None:
    s = SentenceSplitter()
    # A full stop that pysbd accepts as a sentence end releases the sentence at once: waiting
    # for the next token's whitespace is the latency streaming avoids.
    assert s.push("Hello there.") == ["Hello there."]
    assert s.push(" ") == []
    assert s.push("I met Dr.") == []  # an abbreviation is not an end
    assert s.push(" Who") == []
    assert s.push(" at 3.") == []  # nor a number that may go on (3.5)
    assert s.push("5 pm.") == ["I met Dr. Who at 3.5 pm."]
    assert s.push("How are") == []
    assert s.push(" you?\n") == ["How are you?"]
    assert s.flush() == []


def test_abbreviations_do_not_end_a_sentence_early() -> None:
    s = SentenceSplitter()
    assert s.push("I met Dr. ") == []  # "Dr. " is not an end, even with a space after it
    assert s.pending == "I met Dr. "
    assert s.push("Who at 5 p.m. ") == ["I met Dr. Who at 5 p.m."]
    assert s.push("Then we left. ") == ["Then we left."]
    assert s.flush() == []


def test_run_on_text_is_cut_at_a_comma() -> None:
    s = SentenceSplitter(max_chars=60)
    out = s.push(
        "one two three four five six seven, eight nine ten eleven twelve thirteen fourteen"
    )
    assert out == ["one two three four five six seven,"]
    assert s.flush() == ["eight nine ten eleven twelve thirteen fourteen"]


def test_other_languages_and_unknown_ones() -> None:
    s = SentenceSplitter("de-DE")
    out = s.push("Hallo Welt. Wie geht es dir? ") + s.flush()
    assert out == ["Hallo Welt.", "Wie geht es dir?"]
    assert split_text("Hello. World.", language="xx") == [
        "Hello.",
        "World.",
    ]  # falls back to English


def test_max_chars_must_be_sensible() -> None:
    with pytest.raises(InputValidationError):
        SentenceSplitter(max_chars=5)


async def test_split_sentences_over_an_async_stream() -> None:
    async def deltas() -> AsyncIterator[str]:
        for piece in re.findall(r"\S+\s*", TEXT):
            yield piece

    assert [s async for s in split_sentences(deltas())] == EXPECTED


def test_less_than_bang_ends_no_sentence_however_the_text_is_split() -> None:
    # pysbd cuts after the "!" of "<!": "- to start." then read as a list item, "-" dropped
    text = "Type <!- to start. See <!DOCTYPE html> here. Then go."
    expected = ["Type <!- to start.", "See <!DOCTYPE html> here.", "Then go."]
    for i in range(len(text) + 1):
        splitter = SentenceSplitter()
        assert [*splitter.push(text[:i]), *splitter.push(text[i:]), *splitter.flush()] == (
            expected
        ), i
