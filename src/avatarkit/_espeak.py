"""A ctypes binding to eSpeak NG: speech, word and phoneme timings, IPA, voices.

The shared library and its data come from the ``espeakng-loader`` wheel, so no system package
is needed. eSpeak NG keeps global state (current voice, parameters, the synth callback), so
every call into the library holds one process-wide lock: concurrent calls from threads or
asyncio tasks run one after another and each gets its own, unmixed audio and timings.

What eSpeak reports and how it is mapped:

* ``WORD`` events carry a 1-based character position and length in the input text. Positions
  count Unicode code points (the same units as Python ``str`` indices), including SSML markup.
  Inside numbers, abbreviations and entities the positions are approximate (``"$42.50"`` gives
  events for ``$``, ``4`` and several for ``2``), so each event is snapped to the
  whitespace-delimited token it falls in and consecutive events of one token are merged:
  every :class:`~avatarkit.types.WordTiming` is a slice of the input text. Word pairs eSpeak
  speaks as one (``"of the"``, ``"to be"``) are split back using its G2P of each word.
* ``PHONEME`` events carry the IPA name of each phoneme (at most 8 UTF-8 bytes, so a
  stressed nasal diphthong such as ``ˈɐ̃ʊ̃`` loses its last combining tilde) with its stress
  mark; an empty name is a pause, reported here as ``"_"``. Language-switch markers such as
  ``"(en)"`` (a foreign word read with English rules) are dropped.
* A stop consonant's event (``p b t d k g``) comes at its release; the silent closure before
  it is counted in the preceding phoneme. Where the waveform shows that silence, the stop's
  start is moved back to the start of the closure (at most 80 ms), which is when the lips or
  tongue actually close.
"""

from __future__ import annotations

import bisect
import ctypes
import difflib
import struct
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from avatarkit.errors import ConfigurationError, InputValidationError, ProviderError
from avatarkit.types import PhonemeTiming, WordTiming

__all__ = [
    "MAX_TEXT_CHARS",
    "PITCH_RANGE",
    "RATE_RANGE",
    "VOLUME_RANGE",
    "EspeakVoiceInfo",
    "Synthesis",
    "check_range",
    "clean_text",
    "is_repeatable",
    "library_version",
    "list_variants",
    "list_voices",
    "resolve_voice",
    "synthesize",
    "text_to_ipa",
    "word_spans",
]

MAX_TEXT_CHARS = 100_000
"""Longest text one :func:`synthesize` call accepts (longer raises InputValidationError)."""
RATE_RANGE = (80, 450)
"""Speaking rate in words per minute accepted by eSpeak NG."""
PITCH_RANGE = (0, 100)
"""Base pitch, 50 is the voice's normal pitch."""
VOLUME_RANGE = (0, 200)
"""Amplitude, 100 is normal; above 100 may clip."""

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_SSML = 0x10
_POS_CHARACTER = 1
_EV_LIST_TERMINATED = 0
_EV_WORD = 1
_EV_SENTENCE = 2
_EV_MARK = 3
_EV_END = 5
_EV_MSG_TERMINATED = 6
_EV_PHONEME = 7
_P_RATE = 1
_P_VOLUME = 2
_P_PITCH = 3
_BUFFER_MS = 200
_SEED = 1
_G2P_MODE = 0x02 | (ord("_") << 8)  # IPA, "_" between phonemes

_STRESS = {"ˈ": 1, "ˌ": 2}
_DROP = str.maketrans("", "", "ˈˌ-")
_STOPS = frozenset({"p", "b", "t", "d", "k", "ɡ", "g"})
_CLOSURE_LOOKBACK = 0.080
_SILENCE_RMS = 1e-3  # eSpeak's closures are digital silence; 1e-3 is about -60 dBFS
_FRAME = 0.005


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_void_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class EspeakVoiceInfo:
    """One eSpeak NG voice.

    Attributes:
        name: Display name, e.g. ``"English_(America)"``.
        identifier: File name under ``espeak-ng-data/voices``, e.g. ``"gmw/en-US"``.
        languages: Language tags it speaks, most preferred first, e.g. ``("en-us", "en")``.
        gender: ``"male"``, ``"female"`` or ``"unknown"``.
        age: Age in years, 0 when not given.
    """

    name: str
    identifier: str
    languages: tuple[str, ...]
    gender: str
    age: int


@dataclass(frozen=True)
class Synthesis:
    """The result of one synthesis: 16-bit mono samples and what is said when.

    Attributes:
        samples: int16 mono samples.
        sample_rate: Samples per second (22050 for eSpeak NG's own voices).
        words: Word timings; ``text[w.char_start:w.char_end] == w.text`` for the input text.
        phonemes: IPA phoneme timings, contiguous, pauses as ``"_"`` with no word.
        marks: SSML ``<mark name=...>`` names with their time in seconds.
    """

    samples: npt.NDArray[np.int16]
    sample_rate: int
    words: list[WordTiming]
    phonemes: list[PhonemeTiming]
    marks: list[tuple[str, float]]

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.samples) / self.sample_rate


@dataclass
class _Collect:
    chunks: list[bytes]
    events: list[tuple[int, int, int, int, str]]  # (type, position, length, sample, name)
    error: BaseException | None = None


class _Engine:
    """The loaded library; every method must be called with ``_lock`` held."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ConfigurationError(
                "the local voice needs espeakng-loader: pip install espeakng-loader"
            ) from exc
        self.data_path = Path(espeakng_loader.get_data_path())
        try:
            lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
        except OSError as exc:
            raise ConfigurationError(f"cannot load the eSpeak NG library: {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        options = _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, str(self.data_path).encode(), options
        )
        if rate <= 0:
            raise ConfigurationError(
                f"eSpeak NG failed to initialise with data at {self.data_path}"
            )
        self.lib = lib
        self.sample_rate = int(rate)
        self.version = (lib.espeak_Info(None) or b"").decode()
        self.collect: _Collect | None = None
        self._callback = _SynthCallback(self._on_synth)  # keep a reference: C holds it
        lib.espeak_SetSynthCallback(self._callback)
        self.reset_addresses = _static_counters(lib, Path(espeakng_loader.get_library_path()))
        self.voices = self._list_voices()
        variant_files = [p for p in (self.data_path / "voices" / "!v").iterdir() if p.is_file()]
        self.variants = sorted(p.name for p in variant_files)
        self.voice_keys: dict[str, str] = {}  # any accepted spelling → the identifier to load
        for v in self.voices:
            for key in (v.identifier, v.identifier.rsplit("/", 1)[-1], v.name):
                self.voice_keys.setdefault(key.lower(), v.identifier)
        for v in self.voices:  # language tags last: an exact name or file name wins
            for key in v.languages:
                self.voice_keys.setdefault(key.lower(), v.identifier)
        self.klatt_variants = frozenset(p.name.lower() for p in variant_files if _uses_klatt(p))

    def _on_synth(self, wav: Any, count: int, events: Any) -> int:
        collect = self.collect
        if collect is None:
            return 1
        try:
            if count > 0 and wav:
                collect.chunks.append(ctypes.string_at(wav, count * 2))
            i = 0
            while events[i].type != _EV_LIST_TERMINATED:
                ev = events[i]
                name = ""
                if ev.type == _EV_PHONEME:
                    name = ev.id.string.split(b"\0", 1)[0].decode("utf-8", "ignore")
                elif ev.type == _EV_MARK and ev.id.name:
                    name = (ctypes.string_at(ev.id.name) or b"").decode("utf-8", "replace")
                collect.events.append((ev.type, ev.text_position, ev.length, ev.sample, name))
                i += 1
        except BaseException as exc:  # never let an exception cross the C boundary
            collect.error = exc
            return 1
        return 0

    def _list_voices(self) -> list[EspeakVoiceInfo]:
        out: list[EspeakVoiceInfo] = []
        table = self.lib.espeak_ListVoices(None)
        i = 0
        while table[i]:
            v = table[i].contents
            langs: list[str] = []
            addr = v.languages
            while addr and ctypes.string_at(addr, 1) != b"\0":
                raw = ctypes.string_at(addr + 1)  # after the priority byte
                if not raw:
                    break
                langs.append(raw.decode("utf-8", "replace"))
                addr += len(raw) + 2
            identifier = (v.identifier or b"").decode("utf-8", "replace")
            if not self._has_dictionary(identifier):
                i += 1
                continue  # listed by eSpeak, but its wheel ships no dictionary for it
            out.append(
                EspeakVoiceInfo(
                    name=(v.name or b"").decode("utf-8", "replace"),
                    identifier=identifier,
                    languages=tuple(langs),
                    gender={1: "male", 2: "female"}.get(v.gender, "unknown"),
                    age=int(v.age),
                )
            )
            i += 1
        return out

    def _has_dictionary(self, identifier: str) -> bool:
        """Whether the pronunciation dictionary a voice file names is in the data folder."""
        try:
            lines = (self.data_path / "lang" / identifier).read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return True  # not a language file we can read: let eSpeak decide
        dictionary = None
        for line in lines:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "dictionary":
                dictionary = parts[1]
                break
            if len(parts) >= 2 and parts[0] == "language" and dictionary is None:
                dictionary = parts[1].split("-")[0]
        return dictionary is None or (self.data_path / f"{dictionary}_dict").is_file()

    def set_voice(self, voice: str) -> None:
        """Load ``voice``, every time: reloading also resets the previous utterance's state."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ConfigurationError(f"eSpeak NG could not load voice {voice!r}")

    def phonemize(self, text: str) -> list[list[str]]:
        """IPA phonemes per spoken word of ``text`` with the current voice (no audio)."""
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_char_p(ctypes.addressof(buf))
        words: list[list[str]] = []
        while ptr.value:
            out = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _G2P_MODE)
            for word in (out or b"").decode("utf-8", "replace").split():
                phones = [p.translate(_DROP) for p in word.split("_")]
                words.append([p for p in phones if p])
        return words

    def run(
        self, text: str, voice: str, rate: int, pitch: int, volume: int, ssml: bool
    ) -> _Collect:
        self.set_voice(voice)
        for param, value in ((_P_RATE, rate), (_P_PITCH, pitch), (_P_VOLUME, volume)):
            self.lib.espeak_SetParameter(param, value, 0)
        self.lib.espeak_ng_SetRandSeed(_SEED)  # noise and jitter: same text, same samples
        for address in self.reset_addresses:
            ctypes.c_int.from_address(address).value = 0
        data = text.encode("utf-8")
        collect = _Collect(chunks=[], events=[])
        self.collect = collect
        flags = _CHARS_UTF8 | (_SSML if ssml else 0)
        try:
            err = self.lib.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None
            )
        finally:
            self.collect = None
        if collect.error is not None:
            raise collect.error
        if err != 0:
            raise ProviderError(f"espeak_Synth failed with code {err}", provider="espeak")
        return collect


def _uses_klatt(variant_file: Path) -> bool:
    try:
        lines = variant_file.read_text("utf-8", "replace").splitlines()
    except OSError:
        return False
    return any(line.split()[:1] == ["klatt"] for line in lines)


_RESET_SYMBOLS = ("Flutter_ix", "cycle_count")
"""Wavegen counters that carry over from one utterance to the next (pitch flutter phase,
harmonics refresh): reset before each synthesis so the same input gives the same samples."""


def _static_counters(lib: ctypes.CDLL, path: Path) -> list[int]:
    """Addresses of the 4-byte statics in :data:`_RESET_SYMBOLS`, read from the ELF symbol table.

    eSpeak NG keeps these counters in function-level statics with no API to reset them, so
    successive calls give slightly different audio. Where the library has no symbol table
    (stripped, not ELF) the list is empty and synthesis is merely not bit-for-bit repeatable.
    """
    try:
        symbols = _elf_symbols(path.read_bytes())
    except (OSError, ValueError, struct.error):
        return []
    anchor = symbols.get("espeak_Synth")
    if anchor is None:
        return []
    fn = ctypes.cast(lib.espeak_Synth, ctypes.c_void_p).value
    if fn is None:
        return []
    base = fn - anchor[0]
    out: list[int] = []
    for want in _RESET_SYMBOLS:
        hits = [v for k, v in symbols.items() if k == want or k.startswith(want + ".")]
        if len(hits) != 1 or hits[0][1] != 4:
            return []
        out.append(base + hits[0][0])
    return out


def _elf_symbols(data: bytes) -> dict[str, tuple[int, int]]:
    """``{name: (value, size)}`` from the ``.symtab`` of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    out: dict[str, tuple[int, int]] = {}
    for sec in sections:
        if sec[1] != 2:  # SHT_SYMTAB
            continue
        offset, size, link, entsize = sec[4], sec[5], sec[6], sec[9]
        str_off = sections[link][4]
        for pos in range(offset, offset + size, entsize):
            name_off, _info, _other, _shndx, value, sym_size = struct.unpack_from(
                "<IBBHQQ", data, pos
            )
            if not name_off:
                continue
            end = data.index(b"\0", str_off + name_off)
            out[data[str_off + name_off : end].decode("ascii", "replace")] = (value, sym_size)
    return out


_lock = threading.RLock()
_engine: _Engine | None = None


def _get() -> _Engine:
    """The engine, initialised on first use; call with ``_lock`` held."""
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def is_repeatable(voice: str | None = None) -> bool:
    """Whether the same input gives bit-identical samples and timings on every call.

    True where the library's per-utterance counters could be located and reset (Linux wheels
    of espeakng-loader), for every voice except variants using the Klatt synthesiser
    (``klatt``, ``klatt2``...``klatt6``, ``adam``, ``robosoft``...): those draw noise from
    the C library's ``rand()`` and keep filter state, so their samples differ slightly from
    call to call (their events repeat; stop onsets found in the audio may move a few ms).

    Args:
        voice: A voice spec to ask about; None asks about the engine in general.
    """
    with _lock:
        engine = _get()
        if not engine.reset_addresses:
            return False
        if voice is None:
            return True
        variant = voice.partition("+")[2].strip().lower()
        return variant not in engine.klatt_variants


def library_version() -> str:
    """The eSpeak NG version string, e.g. ``"1.52.0"``."""
    with _lock:
        return _get().version


# --------------------------------------------------------------------------- voices


def list_voices(language: str | None = None) -> list[EspeakVoiceInfo]:
    """Voices eSpeak NG can speak with, optionally only those for ``language``.

    Args:
        language: A language tag such as ``"en"``, ``"de"`` or ``"pt-br"``; matches a voice
            whose languages equal it or start with it followed by ``-`` (case-insensitive).

    Returns:
        The voices, in eSpeak's order.
    """
    with _lock:
        voices = list(_get().voices)
    if language is None:
        return voices
    lang = language.strip().lower().replace("_", "-")
    return [
        v
        for v in voices
        if any(code.lower() == lang or code.lower().startswith(lang + "-") for code in v.languages)
    ]


def list_variants() -> list[str]:
    """Voice variants (``"f3"``, ``"m2"``, ``"klatt"``...) usable as ``"<voice>+<variant>"``."""
    with _lock:
        return list(_get().variants)


def resolve_voice(voice: str) -> str:
    """Check a voice spec and return the voice eSpeak loads (``"en-US+F3"`` → ``"gmw/en-US+f3"``).

    A spec is a language tag (``"en-us"``), a voice identifier (``"gmw/en-US"``) or name
    (``"English (America)"``), optionally followed by ``+variant``.

    Raises:
        ConfigurationError: no such voice or variant; the message names close matches.
    """
    if not isinstance(voice, str) or not voice.strip():
        raise ConfigurationError(f"an eSpeak voice must be a non-empty string, got {voice!r}")
    base, _, variant = voice.strip().partition("+")
    with _lock:
        engine = _get()
        known, variants = engine.voice_keys, engine.variants
    key = base.lower()
    if key not in known:
        close = difflib.get_close_matches(key, list(known), n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ConfigurationError(
            f"unknown eSpeak voice {base!r}.{hint} "
            "See avatarkit.providers.espeak.EspeakVoice.voices() for the full list."
        )
    if not variant:
        return known[key]
    by_lower = {v.lower(): v for v in variants}
    if variant.lower() not in by_lower:
        close = difflib.get_close_matches(variant.lower(), list(by_lower), n=5, cutoff=0.5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ConfigurationError(f"unknown eSpeak voice variant {variant!r}.{hint}")
    return f"{known[key]}+{by_lower[variant.lower()]}"


# --------------------------------------------------------------------------- text helpers


def clean_text(text: str) -> str:
    """Replace control characters and lone surrogates with spaces, keeping every offset.

    Tabs and newlines are kept; everything else in Unicode category ``Cc``/``Cs`` (NUL, bell,
    escape...) becomes a space, so character offsets into the cleaned text are offsets into
    the original.
    """
    if text.isprintable():
        return text
    return "".join(
        " "
        if (c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cs")) or c in "\u2028\u2029"
        else c
        for c in text
    )


def _mask_markup(text: str) -> str:
    """SSML text with every ``<...>`` tag replaced by spaces (offsets kept)."""
    out = list(text)
    i = 0
    while True:
        start = text.find("<", i)
        if start < 0:
            break
        end = text.find(">", start)
        if end < 0:
            break
        out[start : end + 1] = " " * (end + 1 - start)
        i = end + 1
    return "".join(out)


_SPOKEN_PUNCT = frozenset("&%#@*§‰‱′″")


def _is_edge_punct(c: str) -> bool:
    return unicodedata.category(c)[0] == "P" and c not in _SPOKEN_PUNCT


def word_spans(text: str, *, ssml: bool = False) -> list[tuple[int, int]]:
    """Character spans of the words of ``text``: whitespace-separated, edge punctuation cut.

    Punctuation at either end of a token is not part of the word (``"OK?"`` → ``"OK"``);
    symbols and spoken signs are (``"$42.50,"`` → ``"$42.50"``, ``"15%"``, ``"&"``). A token
    of punctuation only is no word. With ``ssml=True`` markup tags are skipped.
    """
    src = _mask_markup(text) if ssml else text
    spans: list[tuple[int, int]] = []
    n = len(src)
    i = 0
    while i < n:
        while i < n and src[i].isspace():
            i += 1
        j = i
        while j < n and not src[j].isspace():
            j += 1
        a, b = i, j
        while a < b and _is_edge_punct(src[a]):
            a += 1
        while b > a and _is_edge_punct(src[b - 1]):
            b -= 1
        if a < b:
            spans.append((a, b))
        i = j
    return spans


def check_range(name: str, value: int, bounds: tuple[int, int]) -> None:
    """Raise InputValidationError unless ``value`` is an integer within ``bounds`` (inclusive)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputValidationError(f"{name} must be an integer, got {value!r}", field=name)
    if not bounds[0] <= value <= bounds[1]:
        raise InputValidationError(
            f"{name} must be between {bounds[0]} and {bounds[1]}, got {value}", field=name
        )


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise InputValidationError(
            f"text must be a string, got {type(text).__name__}", field="text"
        )
    if len(text) > MAX_TEXT_CHARS:
        raise InputValidationError(
            f"text has {len(text):,} characters; eSpeak takes at most {MAX_TEXT_CHARS:,} per call "
            "(split it into sentences)",
            field="text",
        )
    cleaned = clean_text(text)
    if not cleaned.strip():
        raise InputValidationError(
            "there is no text to speak (empty or whitespace only)", field="text"
        )
    return cleaned


# --------------------------------------------------------------------------- synthesis


def synthesize(
    text: str,
    voice: str = "en-us",
    *,
    rate: int = 175,
    pitch: int = 50,
    volume: int = 100,
    ssml: bool = False,
) -> Synthesis:
    """Speak ``text`` with eSpeak NG and return the samples with word and phoneme timings.

    Thread-safe: calls are serialised on one process-wide lock.

    Args:
        text: Plain text, or SSML when ``ssml`` is true (``<speak>``, ``<break>``,
            ``<mark>``, ``<prosody>``, ``<say-as>``...). Control characters are spoken as
            spaces.
        voice: Voice spec, e.g. ``"en-us"``, ``"de"``, ``"en-us+f3"``.
        rate: Words per minute, 80 to 450.
        pitch: Base pitch, 0 to 100 (50 normal).
        volume: Amplitude, 0 to 200 (100 normal).
        ssml: Treat ``<...>`` as SSML markup.

    Returns:
        The :class:`Synthesis`; word offsets refer to ``text`` as given.

    Raises:
        InputValidationError: empty or whitespace-only text, text over
            :data:`MAX_TEXT_CHARS`, or a parameter out of range.
        ConfigurationError: unknown voice or variant.
        ProviderError: eSpeak NG reported an internal error.
    """
    cleaned = _check_text(text)
    check_range("rate", rate, RATE_RANGE)
    check_range("pitch", pitch, PITCH_RANGE)
    check_range("volume", volume, VOLUME_RANGE)
    spec = resolve_voice(voice)
    with _lock:
        engine = _get()
        collect = engine.run(cleaned, spec, rate, pitch, volume, ssml)
        sample_rate = engine.sample_rate
    samples = np.frombuffer(b"".join(collect.chunks), dtype="<i2").astype(np.int16, copy=True)
    return _build(text, cleaned, spec, ssml, samples, sample_rate, collect.events)


def _build(
    text: str,
    cleaned: str,
    voice: str,
    ssml: bool,
    samples: npt.NDArray[np.int16],
    sample_rate: int,
    events: list[tuple[int, int, int, int, str]],
) -> Synthesis:
    total = len(samples)
    spans = word_spans(cleaned, ssml=ssml)
    word_events = [pos - 1 for etype, pos, *_ in events if etype == _EV_WORD]
    assigned = _assign_spans(word_events, spans)

    # Pass 1: walk the events; map WORD events to spans; collect raw phonemes.
    word_span_ids: list[int] = []
    word_event_sample: list[int] = []
    raw_ph: list[tuple[int, str, int, int | None]] = []  # (sample, ipa, stress, word)
    marks: list[tuple[str, float]] = []
    current: int | None = None
    n_word_events = 0
    for etype, _pos, _length, sample, name in events:
        sample = min(max(sample, 0), total)
        if etype == _EV_WORD:
            k = assigned[n_word_events]
            n_word_events += 1
            if k < 0:
                continue
            if not word_span_ids or k > word_span_ids[-1]:
                word_span_ids.append(k)
                word_event_sample.append(sample)
            current = len(word_span_ids) - 1
        elif etype == _EV_PHONEME:
            stress = 0
            for mark, level in _STRESS.items():
                if mark in name:
                    stress = level
            ipa = name.translate(_DROP).strip()
            if ipa.startswith("(") and ipa.endswith(")"):
                continue  # a language switch marker such as "(en)", not a sound
            if not ipa:
                raw_ph.append((sample, "_", 0, None))
            else:
                raw_ph.append((sample, ipa, stress, current))
        elif etype == _EV_MARK:
            marks.append((name, sample / sample_rate))
        elif etype == _EV_END:
            current = None
            raw_ph.append((sample, "_", 0, None))

    if word_span_ids and word_span_ids[-1] - word_span_ids[0] + 1 > len(word_span_ids):
        _split_joined_words(cleaned, spans, word_span_ids, word_event_sample, raw_ph, voice)

    # Pass 2: phoneme boundaries (each ends where the next starts), stop closures, pauses.
    starts_s = [s for s, *_ in raw_ph]
    _refine_stop_onsets(samples, sample_rate, raw_ph, starts_s)
    phonemes: list[PhonemeTiming] = []
    for i, (_, ipa, stress, word) in enumerate(raw_ph):
        a = starts_s[i]
        b = starts_s[i + 1] if i + 1 < len(raw_ph) else total
        if b <= a:
            continue
        if ipa == "_" and phonemes and phonemes[-1].phoneme == "_":
            phonemes[-1] = phonemes[-1].model_copy(update={"end": b / sample_rate})
            continue
        phonemes.append(
            PhonemeTiming(
                phoneme=ipa,
                start=a / sample_rate,
                end=b / sample_rate,
                word_index=word,
                stress=stress,
            )
        )

    # Pass 3: words span their phonemes.
    words: list[WordTiming] = []
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for p in phonemes:
        if p.word_index is not None:
            first.setdefault(p.word_index, p.start)
            last[p.word_index] = p.end
    prev_end = 0.0
    for w, k in enumerate(word_span_ids):
        a_char, b_char = spans[k]
        t0 = first.get(w, word_event_sample[w] / sample_rate)
        t1 = last.get(w, t0)
        t0 = max(t0, prev_end)
        t1 = max(t1, t0)
        words.append(
            WordTiming(
                text=text[a_char:b_char], start=t0, end=t1, char_start=a_char, char_end=b_char
            )
        )
        prev_end = t1
    marks.sort(key=lambda m: m[1])
    return Synthesis(samples, sample_rate, words, phonemes, marks)


def _assign_spans(positions: list[int], spans: list[tuple[int, int]]) -> list[int]:
    """The word span each WORD event (0-based character position) belongs to; -1 for none.

    eSpeak's positions are exact for plain words and drift by a character or two around
    numbers, abbreviations and symbols. An event inside a span takes that span. An event in
    the gap between spans goes to the next span, unless the next event lands in that span
    itself (then it continues the word before, e.g. the second word of an emoji's name).
    Spans never go backwards.
    """
    if not spans:
        return [-1] * len(positions)
    starts = [a for a, _ in spans]
    raw: list[tuple[int, bool]] = []  # (span, inside)
    for pos in positions:
        k = bisect.bisect_right(starts, pos) - 1
        if k >= 0 and pos < spans[k][1]:
            raw.append((k, True))
        else:
            raw.append((k + 1, False))  # gap before span k+1 (k+1 may be len(spans))
    out: list[int] = []
    last = -1
    for i, (k, inside) in enumerate(raw):
        if not inside:
            nxt = raw[i + 1][0] if i + 1 < len(raw) else None
            if k >= len(spans) or (last >= 0 and nxt == k):
                k = last
        k = max(k, last)
        out.append(k)
        last = k
    return out


def _split_joined_words(
    text: str,
    spans: list[tuple[int, int]],
    word_span_ids: list[int],
    word_event_sample: list[int],
    raw_ph: list[tuple[int, str, int, int | None]],
    voice: str,
) -> None:
    """Give words eSpeak spoke as one (``"of the"``, ``"to be"``) their own timings.

    eSpeak's dictionary joins some unstressed word pairs into one spoken word with one WORD
    event. When a skipped word's own phoneme count plus its neighbour's equals the joined
    word's, the joined phonemes are split at that count; otherwise they stay together.
    """
    w = 0
    while w < len(word_span_ids):
        k = word_span_ids[w]
        nxt = word_span_ids[w + 1] if w + 1 < len(word_span_ids) else len(spans)
        if nxt - k != 2:  # exactly one word skipped: the common case of a joined pair
            w += 1
            continue
        skipped = k + 1
        trio = [spans[j] for j in (k, skipped, nxt) if j < len(spans)]
        counts = _g2p_counts([text[a:b] for a, b in trio], voice)
        own = [i for i, (_, ipa, _s, word) in enumerate(raw_ph) if word == w and ipa != "_"]
        after = [i for i, (_, ipa, _s, word) in enumerate(raw_ph) if word == w + 1 and ipa != "_"]
        if counts[0] and counts[1] and counts[0] + counts[1] == len(own):
            owner, split_at = w, own[counts[0]]  # the skipped word is the end of word w
        elif len(counts) > 2 and counts[1] and counts[2] and counts[1] + counts[2] == len(after):
            owner, split_at = w + 1, after[counts[1]]  # ... or the start of word w + 1
        else:
            w += 1
            continue
        for i, (smp, ipa, st, word) in enumerate(raw_ph):
            if word is not None and (word > owner or (word == owner and i >= split_at)):
                raw_ph[i] = (smp, ipa, st, word + 1)
        word_span_ids.insert(w + 1, skipped)
        if owner == w:
            word_event_sample.insert(w + 1, raw_ph[split_at][0])
        else:
            word_event_sample.insert(w + 1, word_event_sample[w + 1])
            word_event_sample[w + 2] = raw_ph[split_at][0]
        w += 2


def _g2p_counts(words: list[str], voice: str) -> list[int]:
    """How many phonemes eSpeak gives each word spoken alone."""
    out: list[int] = []
    with _lock:
        engine = _get()
        engine.set_voice(voice)
        for word in words:
            out.append(sum(len(w) for w in engine.phonemize(word)))
    return out


def _refine_stop_onsets(
    samples: npt.NDArray[np.int16],
    sample_rate: int,
    raw_ph: list[tuple[int, str, int, int | None]],
    starts: list[int],
) -> None:
    """Move each stop's start back over the silent closure eSpeak puts before its event."""
    if not len(samples) or not any(ipa in _STOPS for _, ipa, _s, _w in raw_ph):
        return
    frame = max(1, int(_FRAME * sample_rate))
    lookback = int(_CLOSURE_LOOKBACK * sample_rate)
    limit = (_SILENCE_RMS * 32768.0) ** 2 * frame  # energy of a frame at the threshold
    energy = np.concatenate(([0], np.cumsum(samples.astype(np.int64) ** 2)))
    for i, (_, ipa, _stress, _word) in enumerate(raw_ph):
        if ipa not in _STOPS or i == 0:
            continue
        start = starts[i]
        floor = max(starts[i - 1] + frame, start - lookback, 0)
        t = start
        while t - frame >= floor and energy[t] - energy[t - frame] < limit:
            t -= frame
        if t < start:
            starts[i] = t


# --------------------------------------------------------------------------- G2P


def text_to_ipa(text: str, voice: str = "en-us") -> list[list[str]]:
    """The IPA phonemes of each word of ``text``, in order.

    Words are those of :func:`word_spans` (whitespace-separated, edge punctuation cut), the
    same words :func:`synthesize` times. Phonemes come from the phoneme events of a synthesis,
    so they are exactly those eSpeak speaks: multi-letter phonemes (``"tʃ"``, ``"aɪ"``) are one
    item, stress marks are dropped, ``"ː"`` stays on its vowel. A word that expands to several
    spoken words (``"$42.50"``, ``"well-known"``) gets all their phonemes; a word eSpeak does
    not speak gets ``[]``.

    Raises:
        InputValidationError: empty text or over :data:`MAX_TEXT_CHARS`.
        ConfigurationError: unknown voice.
    """
    result = synthesize(text, voice)
    spans = word_spans(clean_text(text))
    index = {(w.char_start, w.char_end): i for i, w in enumerate(result.words)}
    per_word: list[list[str]] = [[] for _ in result.words]
    for p in result.phonemes:
        if p.word_index is not None and p.phoneme != "_":
            per_word[p.word_index].append(p.phoneme)
    return [per_word[index[s]] if s in index else [] for s in spans]
