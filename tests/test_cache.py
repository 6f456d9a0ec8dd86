from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from avatarkit.cache import ReplyCache, backend_fingerprint
from avatarkit.testing import FakeImageGenerator, FakeRenderer, FakeVoice, fake_speech
from avatarkit.types import AvatarPrompt, Timeline


async def test_repeated_reply_costs_no_provider_call(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path)
    inner = FakeVoice()
    voice = cache.voice(inner)
    first = await voice.synthesize("Welcome back!")
    spaced = "  Welcome   back! "
    again = await voice.synthesize(spaced)  # same text after normalisation
    assert inner.calls == ["Welcome back!"]
    assert again.audio == first.audio
    assert [(w.text, w.start, w.end) for w in again.words] == [
        (w.text, w.start, w.end) for w in first.words
    ]
    # Character offsets point into the text that was asked for, not the cached one.
    assert [spaced[w.char_start : w.char_end] for w in again.words] == ["Welcome", "back!"]
    assert again.text == spaced
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)
    assert voice.capabilities == inner.capabilities


async def test_settings_and_text_change_the_key(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path)
    a, b = FakeVoice(sample_rate=16_000), FakeVoice(sample_rate=22_050)
    assert backend_fingerprint(a) != backend_fingerprint(b)
    await cache.voice(a).synthesize("Hi")
    await cache.voice(b).synthesize("Hi")
    await cache.voice(a).synthesize("Hi!")
    assert len(a.calls) == 2 and len(b.calls) == 1


async def test_concurrent_identical_requests_share_one_call(tmp_path: Path) -> None:
    inner = FakeVoice(delay=0.1)
    voice = ReplyCache(tmp_path).voice(inner)
    results = await asyncio.gather(*(voice.synthesize("Same words") for _ in range(5)))
    assert len(inner.calls) == 1
    assert len({r.audio for r in results}) == 1


async def test_prerender_fills_the_cache_once(tmp_path: Path) -> None:
    inner = FakeVoice()
    voice = ReplyCache(tmp_path).voice(inner)
    assert await voice.prerender(["Hello!", "Goodbye!", "Hello!"]) == 2
    assert await voice.prerender(["Hello!", "Goodbye!"]) == 0
    assert len(inner.calls) == 2


def test_cache_is_shared_across_processes(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path / "c")
    asyncio.run(cache.voice(FakeVoice()).synthesize("Across processes"))
    cache.close()
    code = (
        "import asyncio, sys; from avatarkit.cache import ReplyCache; "
        "from avatarkit.testing import FakeVoice; v = FakeVoice(); "
        f"c = ReplyCache({str(tmp_path / 'c')!r}); "
        "asyncio.run(c.voice(v).synthesize('Across processes')); "
        "print(len(v.calls), c.stats.hits)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "1"]


async def test_renderer_cache_serves_the_same_clip(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path / "cache")
    inner = FakeRenderer()
    renderer = cache.renderer(inner)
    image = await FakeImageGenerator().generate(AvatarPrompt(seed=1, width=64, height=64))
    voice = fake_speech("Hello there")
    timeline = Timeline(duration=voice.duration, words=voice.words)
    first = await renderer.render(image, voice, timeline, output=tmp_path / "first.gif")
    second = await renderer.render(image, voice, timeline, output=tmp_path / "copy.gif")
    assert len(inner.calls) == 1
    assert second.path == tmp_path / "copy.gif"
    assert second.path.read_bytes() == first.path.read_bytes()
    # Whoever gets a hit owns their copy: deleting it leaves the cache intact.
    second.path.unlink()
    third = await renderer.render(image, voice, timeline, output=tmp_path / "again.gif")
    assert len(inner.calls) == 1 and third.path.read_bytes() == first.path.read_bytes()
    # Another timeline (or format) is another clip.
    other = Timeline(duration=voice.duration + 0.5, words=voice.words)
    await renderer.render(image, voice, other, output=tmp_path / "other.gif")
    assert len(inner.calls) == 2
