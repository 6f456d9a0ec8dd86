"""Which words can be a person's name, shared by slot extraction and the intent file's exclusions.

"I'm Alice" introduces Alice, but "This is Unacceptable!" or "I'm Leaving" introduce nobody:
a word with a negative valence in VADER's lexicon (the ``vadersentiment`` package, read once,
when first asked), or one of :data:`NOT_NAMES`, is not a name, capitalised or not.
"""

from __future__ import annotations

import functools
from importlib import resources

__all__ = ["NOT_NAMES", "is_name_word"]

NOT_NAMES: frozenset[str] = frozenset({
    # how one is ("I'm fine", "I'm just looking") and small words after "I'm" / "this is"
    "fine", "good", "great", "ok", "okay", "well", "sorry", "here", "there", "not", "so", "very",
    "happy", "sad", "tired", "just", "looking", "trying", "going", "interested", "new", "back",
    "afraid", "sure", "glad", "the", "a", "an", "your", "my", "in", "at", "from", "on", "done",
    # goodbyes and complaints VADER gives no valence ("I'm Off", "It's Late")
    "leaving", "off", "out", "outta", "gone", "heading", "late", "still", "waiting", "never",
    "broken", "wrong", "missing", "stuck",
})  # fmt: skip
"""Words (lower case) that are never a name, whatever VADER thinks of them."""

# Given names that VADER rates as the verb or word they also are ("rob" -2.6).
_NAMES_VADER_RATES = frozenset({"rob", "dick"})


@functools.cache
def _negative_words() -> frozenset[str]:
    """The words VADER's lexicon gives a negative valence ("unacceptable", "furious")."""
    lexicon = resources.files("vaderSentiment").joinpath("vader_lexicon.txt")
    words = set()
    for line in lexicon.read_text(encoding="utf-8").splitlines():
        word, _, rest = line.partition("\t")
        try:
            valence = float(rest.split("\t", 1)[0])
        except ValueError:
            continue
        if valence < 0:
            words.add(word)
    return frozenset(words - _NAMES_VADER_RATES)


def is_name_word(word: str) -> bool:
    """Whether ``word`` can be (part of) a person's name: not a complaint, goodbye or mood."""
    lower = word.lower()
    return lower not in NOT_NAMES and lower not in _negative_words()
