"""The local voice: eSpeak NG speech with word and phoneme timings, offline, no key.

``EspeakVoice`` implements :class:`avatarkit.ports.SpeechSynthesizer` on top of
:mod:`avatarkit._espeak`. Synthesis runs in a worker thread; long plain text is cut into
sentence groups (pysbd) that are spoken one after another with all timings on one clock.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from avatarkit import _espeak
from avatarkit.audio import encode_wav
from avatarkit.errors import InputValidationError
from avatarkit.ports import VoiceCapabilities
from avatarkit.registry import Provider
from avatarkit.types import PhonemeTiming, VoiceOutput, WordTiming

__all__ = ["EspeakVoice", "provider"]

DEFAULT_VOICE = "en-us"
_PYSBD_LANGUAGES = frozenset(
    {"am", "ar", "bg", "da", "de", "el", "en", "es", "fa", "fr", "hi", "hy"}
    | {"it", "ja", "kk", "mr", "my", "nl", "pl", "ru", "sk", "ur", "zh"}
)
_SENTENCE_PAUSE = 0.3
"""Seconds of silence between sentence groups at the default rate (eSpeak's own gap)."""


class EspeakVoice:
    """Offline speech synthesis with eSpeak NG, with word and IPA phoneme timings.

    Args:
        voice: A language tag (``"en-us"``, ``"de"``, ``"pt-br"``), a voice name or
            identifier, optionally with a variant: ``"en-us+f3"``, ``"fr+m2"``. See
            :meth:`voices` and :meth:`variants`.
        rate: Words per minute, 80 to 450.
        pitch: Base pitch, 0 to 100 (50 normal).
        volume: Amplitude, 0 to 200 (100 normal).
        ssml: Read ``<speak>``, ``<break>``, ``<mark>``, ``<prosody>``... in the text.
        format: ``"wav"`` or ``"pcm_s16le"`` (headerless 16-bit mono).
        max_chars: Longest text accepted; longer raises InputValidationError.
        chunk_chars: Plain text longer than this is spoken in sentence groups of about this
            size, so other callers get a turn at the engine in between.

    Raises:
        ConfigurationError: unknown voice or variant (the message names close matches).
        InputValidationError: a parameter out of range.

    Example::

        voice = EspeakVoice("en-us+f3", rate=160)
        out = await voice.synthesize("Hello there!")
        out.words[0].text, out.phonemes[0].phoneme  # ("Hello", "h")
    """

    def __init__(
        self,
        voice: str = DEFAULT_VOICE,
        *,
        rate: int = 175,
        pitch: int = 50,
        volume: int = 100,
        ssml: bool = False,
        format: Literal["wav", "pcm_s16le"] = "wav",
        max_chars: int = 20_000,
        chunk_chars: int = 1_000,
    ) -> None:
        _espeak.check_range("rate", rate, _espeak.RATE_RANGE)
        _espeak.check_range("pitch", pitch, _espeak.PITCH_RANGE)
        _espeak.check_range("volume", volume, _espeak.VOLUME_RANGE)
        if format not in ("wav", "pcm_s16le"):
            raise InputValidationError(
                f"format must be 'wav' or 'pcm_s16le', got {format!r}", field="format"
            )
        _espeak.check_range("max_chars", max_chars, (1, _espeak.MAX_TEXT_CHARS))
        _espeak.check_range("chunk_chars", chunk_chars, (50, _espeak.MAX_TEXT_CHARS))
        _espeak.resolve_voice(voice)  # fail now, not at the first sentence
        self.voice = voice.strip()
        self.rate = rate
        self.pitch = pitch
        self.volume = volume
        self.ssml = ssml
        self.format: Literal["wav", "pcm_s16le"] = format
        self.max_chars = max_chars
        self.chunk_chars = chunk_chars

    def __repr__(self) -> str:
        return (
            f"EspeakVoice({self.voice!r}, rate={self.rate}, pitch={self.pitch}, "
            f"volume={self.volume}, ssml={self.ssml}, format={self.format!r})"
        )

    @property
    def capabilities(self) -> VoiceCapabilities:
        """Word and phoneme timings, WAV or raw PCM, offline."""
        return VoiceCapabilities(
            word_timings=True,
            phoneme_timings=True,
            streaming=False,
            formats=("wav", "pcm_s16le"),
            offline=True,
        )

    @staticmethod
    def voices(language: str | None = None) -> list[_espeak.EspeakVoiceInfo]:
        """The installed eSpeak voices, optionally only those for ``language``."""
        return _espeak.list_voices(language)

    @staticmethod
    def variants() -> list[str]:
        """Voice variants usable as ``"<voice>+<variant>"`` (``f1``-``f5``, ``m1``-``m7``...)."""
        return _espeak.list_variants()

    async def synthesize(self, text: str) -> VoiceOutput:
        """Speak ``text`` in a worker thread; timings refer to ``text`` itself.

        Raises:
            InputValidationError: empty or whitespace-only text, or longer than ``max_chars``.
        """
        self._check(text)
        return await asyncio.to_thread(self.synthesize_sync, text)

    def synthesize_sync(self, text: str) -> VoiceOutput:
        """Blocking :meth:`synthesize` for scripts and threads."""
        self._check(text)
        speak = functools.partial(
            _espeak.synthesize,
            voice=self.voice,
            rate=self.rate,
            pitch=self.pitch,
            volume=self.volume,
            ssml=self.ssml,
        )
        if self.ssml or len(text) <= self.chunk_chars:
            result = speak(text)
            samples, rate = result.samples, result.sample_rate
            words, phonemes, marks = result.words, result.phonemes, result.marks
        else:
            samples, rate, words, phonemes = self._speak_long(text, speak)
            marks = []
        audio = (
            encode_wav(samples, rate) if self.format == "wav" else samples.astype("<i2").tobytes()
        )
        return VoiceOutput(
            audio=audio,
            format=self.format,
            sample_rate=rate,
            channels=1,
            duration=len(samples) / rate,
            text=text,
            words=words,
            phonemes=phonemes,
            marks=marks,
            voice=f"espeak:{self.voice}",
        )

    def _check(self, text: str) -> None:
        if not isinstance(text, str):
            raise InputValidationError(
                f"text must be a string, got {type(text).__name__}", field="text"
            )
        if len(text) > self.max_chars:
            raise InputValidationError(
                f"text has {len(text):,} characters; this voice takes at most {self.max_chars:,} "
                "(raise max_chars, or split the text)",
                field="text",
            )
        if not _espeak.clean_text(text).strip():
            raise InputValidationError(
                "there is no text to speak (empty or whitespace only)", field="text"
            )

    def _speak_long(
        self, text: str, speak: Any
    ) -> tuple[npt.NDArray[np.int16], int, list[WordTiming], list[PhonemeTiming]]:
        """Speak ``text`` in sentence groups; one clock, offsets into ``text``."""
        pieces: list[npt.NDArray[np.int16]] = []
        words: list[WordTiming] = []
        phonemes: list[PhonemeTiming] = []
        rate = 0
        clock = 0.0
        for start, end in self._chunks(text):
            chunk = text[start:end]
            if not _espeak.clean_text(chunk).strip():
                continue
            part: _espeak.Synthesis = speak(chunk)
            rate = part.sample_rate
            if pieces:  # a sentence pause between groups, as eSpeak makes inside one call
                gap = np.zeros(round(_SENTENCE_PAUSE * 175 / self.rate * rate), dtype=np.int16)
                pieces.append(gap)
                gap_end = clock + len(gap) / rate
                if phonemes and phonemes[-1].phoneme == "_":
                    phonemes[-1] = phonemes[-1].model_copy(update={"end": gap_end})
                else:
                    phonemes.append(PhonemeTiming(phoneme="_", start=clock, end=gap_end))
                clock = gap_end
            base = len(words)
            for w in part.words:
                words.append(
                    w.model_copy(
                        update={
                            "start": w.start + clock,
                            "end": w.end + clock,
                            "char_start": w.char_start + start,
                            "char_end": w.char_end + start,
                        }
                    )
                )
            for p in part.phonemes:
                shifted = p.model_copy(
                    update={
                        "start": p.start + clock,
                        "end": p.end + clock,
                        "word_index": None if p.word_index is None else p.word_index + base,
                    }
                )
                if shifted.phoneme == "_" and phonemes and phonemes[-1].phoneme == "_":
                    phonemes[-1] = phonemes[-1].model_copy(update={"end": shifted.end})
                else:
                    phonemes.append(shifted)
            pieces.append(part.samples)
            clock += len(part.samples) / rate
        samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
        return samples, rate, words, phonemes

    def _chunks(self, text: str) -> list[tuple[int, int]]:
        """Character spans of sentence groups of about ``chunk_chars`` covering ``text``."""
        import pysbd

        language = self.voice.split("+")[0].split("-")[0].split("/")[-1].lower()
        segmenter = pysbd.Segmenter(
            language=language if language in _PYSBD_LANGUAGES else "en", clean=False
        )
        spans: list[tuple[int, int]] = []
        cursor = 0
        for sentence in segmenter.segment(text):
            core = sentence.strip()
            if not core:
                continue
            found = text.find(core, cursor)
            if found < 0:  # pysbd changed the text: fall back to what is left, in one piece
                break
            spans.append((found, found + len(core)))
            cursor = found + len(core)
        if cursor < len(text) and text[cursor:].strip():
            spans.append((cursor, len(text)))
        groups: list[tuple[int, int]] = []
        for a, b in spans:
            if groups and b - groups[-1][0] <= self.chunk_chars:
                groups[-1] = (groups[-1][0], b)
            else:
                groups.append((a, b))
        return groups


def _factory(name: str | None, **options: Any) -> EspeakVoice:
    return EspeakVoice(name or DEFAULT_VOICE, **options)


provider = Provider(
    "espeak",
    voice=_factory,
    offline=True,
    default_roles=("voice",),
    description="eSpeak NG: offline speech in 100+ languages with word and IPA phoneme timings",
)
