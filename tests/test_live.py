"""Opt-in tests against the real services; each runs only when its key (or URL) is set.

    ELEVENLABS_API_KEY=... OPENAI_API_KEY=... pytest -m live tests/test_live.py

They spend a little money: a few dozen characters of speech, one small image, one short D-ID
talk (set DID_TEST_IMAGE to a portrait photo; D-ID refuses pictures without a face).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from avatarkit.audio import decode_audio
from avatarkit.types import AvatarImage, AvatarPrompt, Timeline

pytestmark = pytest.mark.live

TEXT = "Hello! This is a short live test."


def needs(*names: str) -> pytest.MarkDecorator:
    missing = [n for n in names if not os.environ.get(n)]
    return pytest.mark.skipif(bool(missing), reason=f"set {', '.join(missing)} to run")


@needs("ELEVENLABS_API_KEY")
async def test_elevenlabs_live() -> None:
    from avatarkit.providers.elevenlabs import ElevenLabsVoice

    voice = ElevenLabsVoice(model_id="eleven_flash_v2_5", output_format="mp3_22050_32")
    assert any(v.voice_id for v in await voice.voices())
    out = await voice.synthesize(TEXT)
    samples, rate = decode_audio(out.audio, "mp3")
    assert len(samples) / rate == pytest.approx(out.duration, abs=0.1)
    assert [w.text for w in out.words][:2] == ["Hello", "This"]
    assert all(TEXT[w.char_start : w.char_end] == w.text for w in out.words)
    assert out.words[-1].end <= out.duration + 0.05
    chunks = [c async for c in voice.stream("Streaming.")]
    assert sum(map(len, chunks)) > 0


@needs("OPENAI_API_KEY")
async def test_openai_speech_live() -> None:
    from avatarkit.providers.openai_media import OpenAISpeech

    out = await OpenAISpeech("alloy", model="tts-1", response_format="pcm").synthesize(TEXT)
    assert out.format == "pcm_s16le" and 1.0 < out.duration < 10.0


@needs("OPENAI_API_KEY")
async def test_openai_image_live() -> None:
    from avatarkit.providers.openai_media import OpenAIImage

    pic = await OpenAIImage("dall-e-2", size="256x256").generate(AvatarPrompt("a smiling face"))
    assert (pic.width, pic.height) == (256, 256)


@needs("A1111_URL")
async def test_automatic1111_live() -> None:
    from avatarkit.providers.automatic1111 import A1111ImageGenerator

    gen = A1111ImageGenerator(os.environ["A1111_URL"])
    models = await gen.models()
    assert models
    await gen.embeddings()
    seen: list[tuple[int, int]] = []
    pic = await gen.generate(
        AvatarPrompt("portrait photo of a person", seed=42, steps=8, width=256, height=256),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert pic.provenance["seed"] == 42 and pic.provenance["model"]
    assert seen and seen[-1][0] == seen[-1][1]


@needs("DID_API_KEY", "DID_TEST_IMAGE")
async def test_did_live(tmp_path: Path) -> None:
    from PIL import Image

    from _cloud_helpers import mp3_bytes
    from avatarkit.providers.did import DIDRenderer
    from avatarkit.types import VoiceOutput

    path = Path(os.environ["DID_TEST_IMAGE"])
    with Image.open(path) as im:
        image = AvatarImage(
            data=path.read_bytes(),
            format="jpeg" if im.format == "JPEG" else "png",
            width=im.width,
            height=im.height,
        )
    voice = VoiceOutput(audio=mp3_bytes(2.0), format="mp3", sample_rate=44100, duration=2.0)
    video = await DIDRenderer(delete_after=True).render(
        image, voice, Timeline(duration=2.0), output=tmp_path / "live.mp4"
    )
    assert video.path.stat().st_size > 1000
