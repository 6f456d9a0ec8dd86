"""Text preprocessing: normalisation, tokens, stop words, stems and lemmas, each step switchable.

Libraries: ``simplemma`` (tokeniser, lemmatiser with shipped dictionaries for 54 languages,
language detection), ``snowballstemmer`` (stemmers), ``stop-words`` (stop-word lists in 33
languages) and scikit-learn's English stop-word list, which is shorter than ``stop-words``'
English list and keeps words a chat bot needs (``hello``, ``thanks``, ``help``).
"""

from __future__ import annotations

import asyncio
import functools
import re
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import simplemma
import snowballstemmer
from simplemma.strategies.dictionaries.dictionary_factory import SUPPORTED_LANGUAGES
from stop_words import LANGUAGE_MAPPING, get_stop_words

from avatarkit.config import Settings, get_logger
from avatarkit.errors import InputValidationError
from avatarkit.types import ProcessedText

__all__ = ["NEGATIONS", "LocalPreprocessor", "base_language", "make_preprocessor", "stopwords_for"]

_log = get_logger("avatarkit.nlp")

NEGATIONS: frozenset[str] = frozenset(
    {"no", "not", "nor", "never", "none", "nothing", "nobody", "nowhere", "cannot", "without"}
)
"""Words kept by default even when a stop-word list names them: they flip meaning."""

# Characters NFKC leaves alone but that break contractions and matching ("I’d", "«hi»").
_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2013": "-",
        "\u2014": "-",
    }
)
_INVISIBLE_RE = re.compile(r"[\u200b-\u200f\u2060\ufeff\u00ad]")
_SPACE_RE = re.compile(r"\s+")
_WORDLIKE_RE = re.compile(r"\w", re.UNICODE)

_SNOWBALL = {
    "ar": "arabic",
    "ca": "catalan",
    "cs": "czech",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "eo": "esperanto",
    "es": "spanish",
    "et": "estonian",
    "eu": "basque",
    "fa": "persian",
    "fi": "finnish",
    "fr": "french",
    "ga": "irish",
    "hi": "hindi",
    "hu": "hungarian",
    "hy": "armenian",
    "id": "indonesian",
    "it": "italian",
    "lt": "lithuanian",
    "nb": "norwegian",
    "ne": "nepali",
    "nl": "dutch",
    "nn": "norwegian",
    "no": "norwegian",
    "pl": "polish",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "st": "sesotho",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}


def base_language(language: str) -> str:
    """The lowercase primary subtag of a BCP-47 tag: ``"de-DE"`` → ``"de"``, ``"no"`` → ``"nb"``."""
    code = language.strip().replace("_", "-").split("-")[0].lower()
    return "nb" if code == "no" else code


_EN_CONTRACTIONS = frozenset(
    f"{who}'{tail}"
    for who in ("i", "you", "he", "she", "it", "we", "they", "that", "there", "what", "let", "")
    for tail in ("m", "d", "ll", "ve", "re", "s")
)


@functools.cache
def stopwords_for(language: str, *, keep_negations: bool = True) -> frozenset[str]:
    """The shipped stop-word list for ``language`` (empty when none ships).

    English uses scikit-learn's list; other languages use the ``stop-words`` package.
    """
    lang = base_language(language)
    if lang == "en":
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        words: frozenset[str] = frozenset(ENGLISH_STOP_WORDS) | _EN_CONTRACTIONS
    elif lang in LANGUAGE_MAPPING:
        words = frozenset(w.casefold() for w in get_stop_words(lang))
    else:
        words = frozenset()
    return words - NEGATIONS if keep_negations else words


@functools.cache
def _stemmer(lang: str) -> Any:
    algorithm = _SNOWBALL.get(lang)
    return snowballstemmer.stemmer(algorithm) if algorithm else None


_LEMMA_LANGS: frozenset[str] = SUPPORTED_LANGUAGES
"""Languages simplemma ships a dictionary for."""


class LocalPreprocessor:
    """Offline preprocessor producing :class:`~avatarkit.types.ProcessedText`.

    Steps, in order: unicode NFKC (plus typographic quotes to ASCII), whitespace collapse,
    optional lowercasing, tokenisation (simplemma's regex tokenizer; punctuation dropped),
    stop-word removal, Snowball stemming and simplemma lemmatisation. Each can be switched off.

    Args:
        language: Default language (BCP-47) when a call gives none and detection is off.
        normalize_unicode: Apply NFKC and fold typographic quotes and dashes.
        collapse_whitespace: Strip and collapse runs of whitespace to one space.
        lowercase: Casefold ``normalized`` and the tokens.
        tokenize: Split into word tokens (off: every later list stays empty).
        remove_stopwords: Fill ``content_tokens`` without stop words.
        stem: Fill ``stems`` (Snowball, for languages it has).
        lemmatize: Fill ``lemmas`` (simplemma, for the 54 languages it ships).
        keep_negations: Keep ``not``/``no``/``never``... as content tokens.
        stopwords: Custom stop words: one collection for every language or a mapping
            language → collection; replaces the shipped lists.
        detect_languages: Candidate languages for automatic detection (simplemma) when a call
            gives no language; ``None`` turns detection off.
        max_chars: Longest accepted input (default: ``Settings().max_input_chars``).
    """

    def __init__(
        self,
        *,
        language: str = "en",
        normalize_unicode: bool = True,
        collapse_whitespace: bool = True,
        lowercase: bool = False,
        tokenize: bool = True,
        remove_stopwords: bool = True,
        stem: bool = True,
        lemmatize: bool = True,
        keep_negations: bool = True,
        stopwords: Collection[str] | Mapping[str, Collection[str]] | None = None,
        detect_languages: Sequence[str] | None = None,
        max_chars: int | None = None,
    ) -> None:
        if not isinstance(language, str) or not language.strip():
            raise InputValidationError("language must be a non-empty string", field="language")
        self.language = base_language(language)
        self.normalize_unicode = normalize_unicode
        self.collapse_whitespace = collapse_whitespace
        self.lowercase = lowercase
        self.tokenize = tokenize
        self.remove_stopwords = remove_stopwords
        self.stem = stem
        self.lemmatize = lemmatize
        self.keep_negations = keep_negations
        self._custom_stopwords = stopwords
        self._warm: set[str | None] = set()  # ``language`` arguments whose word lists are loaded
        self.detect_languages = (
            tuple(base_language(x) for x in detect_languages) if detect_languages else None
        )
        self.max_chars = max_chars if max_chars is not None else Settings().max_input_chars

    def __repr__(self) -> str:
        steps = [
            name
            for name in (
                "normalize_unicode",
                "collapse_whitespace",
                "lowercase",
                "tokenize",
                "remove_stopwords",
                "stem",
                "lemmatize",
            )
            if getattr(self, name)
        ]
        return f"LocalPreprocessor(language={self.language!r}, steps={steps})"

    async def preprocess(self, text: str, *, language: str | None = None) -> ProcessedText:
        """Return the preprocessing result for ``text``.

        Raises:
            InputValidationError: ``text`` is not a string or is longer than ``max_chars``.
        """
        if language in self._warm:  # quick: on the loop, no thread hop on the first-audio path
            return self.preprocess_sync(text, language=language)
        # a language's first text loads its word lists (0.2–1.6 s): other sessions keep going
        out = await asyncio.to_thread(self.preprocess_sync, text, language=language)
        self._warm.add(language)
        return out

    def preprocess_sync(self, text: str, *, language: str | None = None) -> ProcessedText:
        """Blocking form of :meth:`preprocess` (pure CPU, no event loop needed)."""
        if not isinstance(text, str):
            raise InputValidationError(
                f"text must be a string, got {type(text).__name__}", field="text"
            )
        if len(text) > self.max_chars:
            raise InputValidationError(
                f"text is {len(text)} characters long; the limit is {self.max_chars}",
                field="text",
            )
        lang = self._language_for(text, language)
        normalized = self.normalize(text)
        if not self.tokenize:
            return ProcessedText(original=text, normalized=normalized, language=lang)
        tokens = [t for t in simplemma.simple_tokenizer(normalized) if _WORDLIKE_RE.search(t)]
        content = tokens
        if self.remove_stopwords:
            stop = self._stopwords(lang)
            content = [t for t in tokens if t.casefold() not in stop]
        stems: list[str] = []
        stemmer = _stemmer(lang) if self.stem else None
        if stemmer is not None:
            stems = list(stemmer.stemWords([t.casefold() for t in content]))
        lemmas: list[str] = []
        if self.lemmatize and lang in _LEMMA_LANGS:
            lemmas = [simplemma.lemmatize(t, lang=lang) for t in content]
        return ProcessedText(
            original=text,
            normalized=normalized,
            tokens=tokens,
            content_tokens=list(content),
            stems=stems,
            lemmas=lemmas,
            language=lang,
        )

    def normalize(self, text: str) -> str:
        """Apply the normalisation steps (unicode, whitespace, case) to ``text``."""
        out = text
        if self.normalize_unicode:
            out = _INVISIBLE_RE.sub("", unicodedata.normalize("NFKC", out).translate(_QUOTES))
        if self.collapse_whitespace:
            out = _SPACE_RE.sub(" ", out).strip()
        if self.lowercase:
            out = out.casefold()
        return out

    def _language_for(self, text: str, language: str | None) -> str:
        if language:
            return base_language(language)
        if self.detect_languages and text.strip():
            ranked = simplemma.langdetect(text, lang=self.detect_languages)
            best, score = ranked[0]
            if best != "unk" and score >= 0.5:
                return str(best)
        return self.language

    def _stopwords(self, lang: str) -> frozenset[str]:
        custom = self._custom_stopwords
        if custom is None:
            return stopwords_for(lang, keep_negations=self.keep_negations)
        if isinstance(custom, Mapping):
            chosen: Collection[str] = custom.get(lang, ())
        else:
            chosen = custom
        words = frozenset(w.casefold() for w in chosen)
        return words - NEGATIONS if self.keep_negations else words


def make_preprocessor(name: str | None = None, **options: Any) -> LocalPreprocessor:
    """Factory for spec ``"local"`` → :class:`LocalPreprocessor` (``"local:de"``: German)."""
    if name and name.lower() not in ("local", "default"):
        options.setdefault("language", name)
    return LocalPreprocessor(**options)
