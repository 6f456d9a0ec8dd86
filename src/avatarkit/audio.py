"""Audio encoding and decoding: WAV, MP3, FLAC, OGG and raw PCM to float samples and back.

Decoding uses soundfile (libsndfile, wheels bundle MP3/FLAC/OGG support); headerless PCM and
µ-law are read with NumPy. Samples are float32 in [-1, 1], mono unless asked otherwise.
"""

from __future__ import annotations

import io
import wave

import numpy as np
import numpy.typing as npt

from avatarkit.errors import InputValidationError

__all__ = ["decode_audio", "encode_wav", "pcm16_to_float", "resample"]

FloatArray = npt.NDArray[np.float32]


def pcm16_to_float(pcm: bytes) -> FloatArray:
    """Headerless 16-bit little-endian PCM to float32 samples."""
    if len(pcm) % 2:
        pcm = pcm[:-1]
    return (np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)


def _ulaw_to_float(data: bytes) -> FloatArray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    sample = np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84)
    return (sample.astype(np.float32) / 32768.0).astype(np.float32)


def encode_wav(samples: npt.NDArray[np.generic], sample_rate: int) -> bytes:
    """Encode mono (n,) or multi-channel (n, c) samples, float in [-1, 1] or int16, as WAV."""
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        arr = (np.clip(arr.astype(np.float32), -1.0, 1.0) * 32767.0).round().astype(np.int16)
    channels = 1 if arr.ndim == 1 else arr.shape[1]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(arr.astype("<i2").tobytes())
    return buf.getvalue()


def decode_audio(
    data: bytes, format: str | None = None, *, sample_rate: int | None = None, mono: bool = True
) -> tuple[FloatArray, int]:
    """Decode audio bytes to float32 samples and their sample rate.

    Args:
        data: The encoded audio.
        format: ``"pcm_s16le"`` / ``"ulaw"`` (headerless: ``sample_rate`` required) or any
            container soundfile reads (``wav``, ``mp3``, ``flac``, ``ogg``); guessed when None.
        sample_rate: Rate of headerless input.
        mono: Average channels to one.

    Raises:
        InputValidationError: empty, unreadable or headerless input without a sample rate.
    """
    if not data:
        raise InputValidationError("no audio data to decode", field="audio")
    if format in ("pcm_s16le", "pcm", "ulaw"):
        if not sample_rate:
            raise InputValidationError(f"{format} audio has no header: give sample_rate")
        samples = _ulaw_to_float(data) if format == "ulaw" else pcm16_to_float(data)
        return samples, sample_rate
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            return _decode_wav_fast(data, mono)
        except (wave.Error, EOFError, ValueError):
            pass  # not plain PCM WAV (float, extensible...): let soundfile read it
    import soundfile as sf

    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise InputValidationError(
            f"cannot decode audio ({format or 'unknown format'}): {exc}"
        ) from exc
    out = samples.mean(axis=1) if mono else samples
    return np.ascontiguousarray(out, dtype=np.float32), int(rate)


def _decode_wav_fast(data: bytes, mono: bool) -> tuple[FloatArray, int]:
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError("not 16-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        frames = w.readframes(w.getnframes())
    samples = pcm16_to_float(frames)
    if channels > 1:
        samples = samples[: len(samples) // channels * channels].reshape(-1, channels)
        if mono:
            samples = samples.mean(axis=1).astype(np.float32)
    return samples, rate


def resample(samples: FloatArray, rate: int, target: int) -> FloatArray:
    """Linear-interpolation resampling (adequate for envelopes and lip-sync analysis)."""
    if rate == target or len(samples) == 0:
        return samples
    n = round(len(samples) * target / rate)
    x_old = np.linspace(0.0, 1.0, num=len(samples), endpoint=False)
    x_new = np.linspace(0.0, 1.0, num=n, endpoint=False)
    return np.interp(x_new, x_old, samples).astype(np.float32)
