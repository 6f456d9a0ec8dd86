"""IPA phoneme → Oculus/Meta viseme table, and the Rhubarb mouth-shape view.

eSpeak NG reports phonemes in IPA for every language it speaks, so one table keyed by IPA
covers them all. A phoneme is looked up in three steps:

1. pauses (``_``, ``""``, ``|``, ``||``) are ``sil``;
2. modifiers that do not change the mouth's shape are dropped: length (``ː``, ``ˑ``),
   nasalisation (◌̃), stress marks, syllabic/non-syllabic marks, aspiration, eSpeak's
   ``-`` suffix of reduced vowels, tie bars...;
3. what is left is split, longest symbol first, into known segments: ``tʃ`` is one segment
   (``CH``), ``aɪ`` is two (``aa`` then ``ih``), ``ɔːɹ`` is ``oh`` then ``RR``.

A symbol the table does not know is *reported*: :func:`phoneme_visemes` raises
:class:`UnknownPhonemeError` and :func:`unknown_phonemes` lists them, instead of quietly
showing some default mouth.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from functools import lru_cache

from avatarkit.animation.face_state import OCULUS_VISEMES
from avatarkit.errors import InputValidationError

__all__ = [
    "CLOSED_VISEMES",
    "OVR_TO_RHUBARB",
    "PAUSE_SYMBOLS",
    "RHUBARB_SHAPES",
    "VOWEL_VISEMES",
    "UnknownPhonemeError",
    "is_pause",
    "is_vowel",
    "phoneme_visemes",
    "to_rhubarb",
    "unknown_phonemes",
    "viseme_class",
]


class UnknownPhonemeError(InputValidationError):
    """A phoneme symbol has no entry in the IPA → viseme table."""

    def __init__(self, phoneme: str, segment: str) -> None:
        super().__init__(
            f"no viseme for phoneme {phoneme!r} (unknown segment {segment!r})", field="phoneme"
        )
        self.phoneme = phoneme
        self.segment = segment


PAUSE_SYMBOLS: frozenset[str] = frozenset({"", "_", "|", "||", "‖", "#", "sil", "pau", "sp"})
"""Symbols that stand for a pause (the mouth rests)."""

# Base segments (after modifiers are stripped) → viseme. Grouped by mouth shape; the comment
# names the languages whose eSpeak voices emit the symbol.
_BASE: dict[str, str] = {}


def _put(viseme: str, symbols: str) -> None:
    for s in symbols.split():
        _BASE[s] = viseme


# Lips pressed together: p b m (all), bilabial fricatives/approximants (es β), ɓ, ʙ.
_put("PP", "p b m β ɸ ɓ ʙ")
# Lower lip on upper teeth: f v (all), ʋ, ɱ (labiodental nasal), German pf is p then f.
_put("FF", "f v ʋ ɱ")
# Tongue between the teeth: θ ð (en, es).
_put("TH", "θ ð")
# Alveolar / retroflex stops and flaps without a rhotic look.
_put("DD", "t d ʈ ɖ ʔ")
# Back of the tongue: k g (and eSpeak's ɡ), q ɢ, velar/uvular fricatives (de x, es ɣ), ŋ, h.
_put("kk", "k g ɡ c ɟ q ɢ x ɣ χ ŋ ɴ h ɦ ħ ʕ ɰ")
# Post-alveolar (rounded, protruded): tʃ dʒ ʃ ʒ (en, it, pt, fr), alveolo-palatal, retroflex.
_put("CH", "tʃ dʒ ʃ ʒ tɕ dʑ ɕ ʑ ʂ ʐ tʂ dʐ")
# Sibilants and spread-lip fricatives: s z, ts dz (de, it), German ç ("ich"), palatal ʝ.
_put("SS", "s z ts dz ç ʝ")
# Tongue-tip closures with open lips: n l (all), ɲ (es, it, pt, fr), ʎ (es, it, pt), ɫ, ɭ, ɳ.
_put("nn", "n l ɲ ʎ ɫ ɭ ɳ ɬ ɮ ɺ ʟ")
# Rhotics: ɹ (en), r (es, it), ɾ (de, es, it, pt), ʁ ʀ (fr, de, pt), ɻ, ɽ, r-coloured schwa.
_put("RR", "ɹ r ɾ ʁ ʀ ɻ ɽ ɚ ɝ")
# Open vowels.
_put("aa", "a ɑ æ ɐ ʌ ɒ ä ɶ")
# Mid front / central vowels, schwa.
_put("E", "e ɛ ə ɜ ɘ ɵ ɞ")
# Close front / central unrounded vowels and the palatal glide.
_put("ih", "i ɪ ɨ ᵻ ɯ j")
# Mid back rounded and front rounded mid vowels (fr/de ø œ: the lips round like o).
_put("oh", "o ɔ ø œ ɤ")
# Close rounded vowels (u ʊ, fr/de y ʏ: lips round like u), w and the rounded palatal glide ɥ.
_put("ou", "u ʊ ᵿ y ʏ ʉ w ɥ ʍ")

# Segments that eSpeak joins into one symbol but that look like two shapes.
_SEQUENCES: dict[str, tuple[str, ...]] = {
    "pf": ("PP", "FF"),  # de "Pfeife"
}

# Combining marks and modifiers that do not change which shape the mouth makes.
_DROP: frozenset[str] = frozenset(
    {
        "ː",  # long
        "ˑ",  # half-long
        "ˈ",  # primary stress
        "ˌ",  # secondary stress
        "\u0303",  # nasalised (fr ɑ̃ ɔ̃ ɛ̃ œ̃, pt ɐ̃ ũ)
        "\u0329",  # syllabic
        "\u030d",  # syllabic (above)
        "\u032f",  # non-syllabic (pt diphthong glides)
        "\u0311",  # non-syllabic (above)
        "\u032a",  # dental
        "\u0325",  # voiceless
        "\u030a",  # voiceless (above)
        "\u031e",  # lowered
        "\u031d",  # raised
        "\u0308",  # centralised
        "\u0361",  # tie bar above
        "\u035c",  # tie bar below
        "\u0320",  # retracted
        "\u031f",  # advanced
        "\u0339",  # more rounded
        "\u031c",  # less rounded
        "ʰ",  # aspirated
        "ʲ",  # palatalised
        "ʷ",  # labialised
        "ˠ",  # velarised
        "ˤ",  # pharyngealised
        "ʼ",  # ejective
        "-",  # eSpeak: reduced / elidable vowel (fr "e-", "ə-")
        "'",
        ",",
        "^",
        "!",
        "=",
        "~",
        "̆",
    }
)

VOWEL_VISEMES: frozenset[str] = frozenset({"aa", "E", "ih", "oh", "ou"})
"""Visemes of vowels: the mouth's open shapes."""

CLOSED_VISEMES: frozenset[str] = frozenset({"sil", "PP"})
"""Visemes with the lips together: rest and p/b/m."""

_VOWEL_SEGMENTS = frozenset(
    s for s, v in _BASE.items() if v in VOWEL_VISEMES and s not in {"j", "w", "ɥ", "ʍ"}
) | {"ɚ", "ɝ"}

_MAX_SEG = max(len(s) for s in (*_BASE, *_SEQUENCES))


def _strip(phoneme: str) -> str:
    # NFD splits precomposed nasal vowels (e.g. "ũ" → "u" + U+0303) so the mark can be dropped.
    decomposed = unicodedata.normalize("NFD", phoneme)
    kept = "".join(ch for ch in decomposed if ch not in _DROP and not ch.isdigit())
    return unicodedata.normalize("NFC", kept)


def is_pause(phoneme: str) -> bool:
    """Whether ``phoneme`` stands for a pause."""
    return phoneme.strip() in PAUSE_SYMBOLS


@lru_cache(maxsize=4096)
def _lookup(phoneme: str) -> tuple[str, ...] | str:
    """Visemes for a phoneme, or the first unknown segment (as a str) when it has none."""
    if is_pause(phoneme):
        return ("sil",)
    rest = _strip(phoneme.strip())
    if not rest:
        return ("sil",)
    out: list[str] = []
    i = 0
    while i < len(rest):
        for size in range(min(_MAX_SEG, len(rest) - i), 0, -1):
            seg = rest[i : i + size]
            if seg in _SEQUENCES:
                out.extend(_SEQUENCES[seg])
                break
            if seg in _BASE:
                out.append(_BASE[seg])
                break
        else:
            return rest[i]
        i += size
    merged = [v for k, v in enumerate(out) if k == 0 or out[k - 1] != v]
    return tuple(merged)


def phoneme_visemes(phoneme: str) -> tuple[str, ...]:
    """The Oculus viseme(s) a phoneme shows, in order.

    A plain phoneme gives one viseme (``"p"`` → ``("PP",)``); a diphthong or a joined
    symbol gives its shapes in turn (``"aɪ"`` → ``("aa", "ih")``, ``"ɔːɹ"`` → ``("oh", "RR")``).

    Raises:
        UnknownPhonemeError: the phoneme contains a symbol the table does not know.
    """
    found = _lookup(phoneme)
    if isinstance(found, str):
        raise UnknownPhonemeError(phoneme, found)
    return found


def is_vowel(phoneme: str) -> bool:
    """Whether ``phoneme`` (after modifiers are dropped) starts with a vowel."""
    rest = _strip(phoneme.strip())
    return bool(rest) and any(rest.startswith(v) for v in _VOWEL_SEGMENTS)


def unknown_phonemes(phonemes: Iterable[str]) -> set[str]:
    """The phonemes among ``phonemes`` that the table cannot map (empty when all are known)."""
    return {p for p in phonemes if isinstance(_lookup(p), str)}


# --------------------------------------------------------------------------- Rhubarb view

RHUBARB_SHAPES: tuple[str, ...] = ("A", "B", "C", "D", "E", "F", "G", "H", "X")
"""Rhubarb Lip Sync mouth shapes: A–F basic, G H X extended."""

OVR_TO_RHUBARB: dict[str, str] = {
    "sil": "X",
    "PP": "A",
    "FF": "G",
    "TH": "B",
    "DD": "B",
    "kk": "B",
    "CH": "B",
    "SS": "B",
    "nn": "B",
    "RR": "B",
    "ih": "B",
    "aa": "D",
    "E": "C",
    "oh": "E",
    "ou": "F",
}
"""Oculus viseme → Rhubarb shape (api-contracts §5). ``nn`` could use H for a long ``l``."""

assert set(OVR_TO_RHUBARB) == set(OCULUS_VISEMES)


def to_rhubarb(viseme: str) -> str:
    """The Rhubarb shape (A–H, X) for an Oculus viseme.

    Raises:
        InputValidationError: ``viseme`` is not one of the 15 Oculus visemes.
    """
    try:
        return OVR_TO_RHUBARB[viseme]
    except KeyError:
        raise InputValidationError(
            f"unknown viseme {viseme!r}; expected one of {', '.join(OCULUS_VISEMES)}",
            field="viseme",
        ) from None


_CLASS = {
    "sil": "closed",
    "PP": "closed",
    "FF": "labiodental",
    "TH": "teeth",
    "DD": "teeth",
    "SS": "teeth",
    "nn": "teeth",
    "kk": "teeth",
    "CH": "rounded",
    "RR": "rounded",
    "ou": "rounded",
    "oh": "rounded",
    "aa": "open",
    "E": "open",
    "ih": "spread",
}


def viseme_class(viseme: str) -> str:
    """A coarse visual class of a viseme, for comparing lip-sync tracks.

    Classes: ``closed`` (sil PP), ``labiodental`` (FF), ``teeth`` (TH DD SS nn kk),
    ``rounded`` (CH RR oh ou), ``open`` (aa E), ``spread`` (ih).
    """
    return _CLASS.get(viseme, "unknown")
