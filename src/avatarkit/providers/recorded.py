"""A recording as the voice: animate audio you already have (a voice actor, another TTS).

``RecordedVoice`` implements :class:`avatarkit.ports.SpeechSynthesizer` by returning the
recording instead of synthesising ``text``. A recording has no word or phoneme timings, so lip
sync reads the mouth from the audio alone (``lipsync`` source ``"audio"``); the text still sets
the face's expressions. ``avatarkit animate "TEXT" --audio take.wav`` uses it, and the spec
``"recorded:<path>"`` names it anywhere a voice spec goes (``AvatarBot(voice=...)``, a batch
file's ``voice`` column).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avatarkit.audio import decode_audio, encode_wav
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.ports import VoiceCapabilities
from avatarkit.registry import Provider
from avatarkit.types import VoiceOutput

__all__ = ["RecordedVoice", "provider"]


class RecordedVoice:
    """A voice that says what a recording says, whatever text it is given.

    The file is read and decoded once, up front (WAV, FLAC, OGG/Vorbis, MP3 and anything else
    soundfile reads), mixed to mono and kept as 16-bit WAV.

    Args:
        path: The recording.

    Raises:
        InputValidationError: the file is missing, a folder, empty or not decodable audio.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InputValidationError(
                f"recording {self.path} is a folder, not an audio file", field="audio"
            )
        if not self.path.is_file():
            raise InputValidationError(f"recording {self.path} does not exist", field="audio")
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise InputValidationError(
                f"cannot read recording {self.path}: {reason}", field="audio"
            ) from None
        if not data:
            raise InputValidationError(f"recording {self.path} is empty", field="audio")
        try:
            samples, rate = decode_audio(data)
        except InputValidationError as exc:
            # soundfile's own message names an in-memory buffer, not the file
            why = getattr(exc.__cause__, "error_string", None)
            raise InputValidationError(
                f"recording {self.path}: cannot decode it as audio (WAV, FLAC, OGG/Vorbis, "
                f"MP3...){f': {why}' if why else ''}",
                field="audio",
            ) from None
        if len(samples) == 0:
            raise InputValidationError(f"recording {self.path} holds no audio", field="audio")
        self._wav = encode_wav(samples, rate)
        self._rate = rate
        self.duration = len(samples) / rate
        """Length of the recording in seconds."""

    def __repr__(self) -> str:
        return f"RecordedVoice({str(self.path)!r}, {self.duration:.2f} s)"

    @property
    def capabilities(self) -> VoiceCapabilities:
        """No timings (lip sync reads the audio), WAV, offline."""
        return VoiceCapabilities(formats=("wav",), offline=True)

    async def synthesize(self, text: str) -> VoiceOutput:
        """The recording, labelled with ``text`` (what it says, for the face)."""
        return VoiceOutput(
            audio=self._wav,
            format="wav",
            sample_rate=self._rate,
            duration=self.duration,
            text=text,
            voice=f"recorded:{self.path.name}",
        )


def _factory(name: str | None, **options: Any) -> RecordedVoice:
    if not name:
        raise ConfigurationError("the recorded voice needs its file: 'recorded:<path>'")
    return RecordedVoice(name, **options)


provider = Provider(
    "recorded",
    voice=_factory,
    offline=True,
    description="a recording you already have as the voice ('recorded:<path>'); lip sync from "
    "the audio",
)
