from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from avatarkit.cache import ReplyCache, backend_fingerprint, default_cache_dir
from avatarkit.errors import ConfigurationError
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


async def test_cancelling_the_first_caller_does_not_cancel_the_others(tmp_path: Path) -> None:
    # two users' turns ask for the same sentence; the first user interrupts: the second's
    # request must still get its audio, not inherit the first one's cancellation
    inner = FakeVoice(delay=0.2)
    voice = ReplyCache(tmp_path).voice(inner)
    first = asyncio.create_task(voice.synthesize("Same words"))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(voice.synthesize("Same words"))
    await asyncio.sleep(0.05)
    first.cancel()
    out = await asyncio.wait_for(second, 5)
    assert out.text == "Same words" and out.audio
    assert first.cancelled()


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


def test_fingerprints_of_real_backends_are_stable_and_secret_free() -> None:
    from avatarkit.limits import limited
    from avatarkit.providers.elevenlabs import ElevenLabsVoice
    from avatarkit.providers.espeak import EspeakVoice
    from avatarkit.render.local import LocalRenderer

    secret = "sk-test-very-secret-0123456789"
    eleven = ElevenLabsVoice("voice1", api_key=secret, voice_settings={"stability": 0.3})
    calmer = ElevenLabsVoice("voice1", api_key=secret, voice_settings={"stability": 0.9})
    prints = {
        "eleven": backend_fingerprint(eleven),
        "calmer": backend_fingerprint(calmer),
        "espeak": backend_fingerprint(EspeakVoice("en-us+f3", rate=160)),
        "faster": backend_fingerprint(EspeakVoice("en-us+f3", rate=200)),
        "r256": backend_fingerprint(LocalRenderer(size=(256, 256))),
        "r512": backend_fingerprint(LocalRenderer(size=(512, 512))),
    }
    # Same settings, same key — in a new object, and looking through avatarkit's wrappers.
    assert backend_fingerprint(EspeakVoice("en-us+f3", rate=160)) == prints["espeak"]
    assert backend_fingerprint(limited(LocalRenderer(size=(256, 256)), 2)) == prints["r256"]
    # Every setting that changes the output changes the key (nested pydantic, tuples too).
    assert len(set(prints.values())) == len(prints)
    # The key never holds the API key, and per-call state does not move it.
    assert all(secret not in p and "sk-" not in p for p in prints.values())
    eleven.last_character_cost = 42
    assert backend_fingerprint(eleven) == prints["eleven"]
    assert "ElevenLabsVoice" in prints["eleven"] and "voice1" in prints["eleven"]


async def test_bot_serves_a_repeated_reply_from_cache_without_provider_calls(
    tmp_path: Path,
) -> None:
    from avatarkit.bot import AvatarBot

    voice, renderer = FakeVoice(), FakeRenderer()
    bot = AvatarBot(
        chat=None, voice=voice, renderer=renderer, image="test", expression=None,
        preprocessor=None, intent=None, sentiment=None, cache=tmp_path / "c",
    )  # fmt: skip
    warm = await bot.prerender(["Hello there!", "Goodbye!", "Hello there!"])
    assert len(warm) == 2 and len(voice.calls) == 2 and len(renderer.calls) == 2
    # Three lookups a turn: the speech, the face plan (lip sync, pose) and the clip.
    assert all(r.metrics.cache_misses == 3 and r.metrics.cache_hits == 0 for r in warm)

    again = await bot.say("Hello there!")
    assert len(voice.calls) == 2 and len(renderer.calls) == 2
    assert again.metrics.provider_calls == {}
    assert (again.metrics.cache_hits, again.metrics.cache_misses) == (3, 0)
    assert "animate" not in again.metrics.durations
    assert again.video is not None and again.video.path.exists()
    assert again.voice is not None and again.voice.audio == warm[0].voice.audio  # type: ignore[union-attr]
    assert bot.prerender_sync(["Goodbye!"])[0].metrics.cache_hits == 3

    fresh = await bot.say("Something new.")
    assert fresh.metrics.provider_calls == {"voice.synthesize": 1, "renderer.render": 1}
    assert fresh.metrics.cache_misses == 3


def test_png_frame_folders_are_cached_and_saved(tmp_path: Path) -> None:
    import avatarkit as ak
    from avatarkit.render.local import LocalRenderer

    renderer = LocalRenderer(size=64, fps=10, format="png")
    bot = ak.AvatarBot(chat=None, renderer=renderer, cache=tmp_path / "cache")
    first = bot.say_sync("Hi there")
    again = bot.say_sync("Hi there")  # served from the cache: a copy of the folder
    assert first.video is not None and again.video is not None
    assert first.video.path.is_dir() and again.video.path.is_dir()
    assert again.video.path != first.video.path
    frames = sorted(p.name for p in first.video.path.glob("frame_*.png"))
    assert frames and sorted(p.name for p in again.video.path.glob("frame_*.png")) == frames

    written = again.save(tmp_path / "out")
    assert written["video"] == tmp_path / "out" / "frames" and written["video"].is_dir()
    assert sorted(p.name for p in written["video"].glob("frame_*.png")) == frames
    again.save(tmp_path / "out")  # saving twice replaces the folder
    assert sorted(p.name for p in written["video"].glob("frame_*.png")) == frames
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


async def test_a_turn_cancelled_while_its_clip_is_cached_leaves_no_temporary_video(
    tmp_path: Path,
) -> None:
    import tempfile
    import threading

    import pytest

    mp = pytest.MonkeyPatch()  # undone before the check: the check reads the real tempdir
    (tmp_path / "tmp").mkdir()
    mp.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    cache = ReplyCache(tmp_path / "cache")
    entered, release = threading.Event(), threading.Event()
    real = cache.put_video

    def slow_put(key: str, video: object) -> object:
        entered.set()
        release.wait(5)
        return real(key, video)  # type: ignore[arg-type]

    mp.setattr(cache, "put_video", slow_put)
    renderer = cache.renderer(FakeRenderer())
    image = await FakeImageGenerator().generate(AvatarPrompt(seed=1, width=64, height=64))
    voice = fake_speech("Hello there")
    task = asyncio.create_task(
        renderer.render(image, voice, Timeline(duration=voice.duration, words=voice.words))
    )
    while not entered.is_set():
        await asyncio.sleep(0.01)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    mp.undo()
    assert list((tmp_path / "tmp").iterdir()) == []


async def test_concurrent_identical_renders_share_one_render(tmp_path: Path) -> None:
    cache = ReplyCache(tmp_path / "cache")
    inner = FakeRenderer(delay=0.1)
    renderer = cache.renderer(inner)
    image = await FakeImageGenerator().generate(AvatarPrompt(seed=1, width=64, height=64))
    voice = fake_speech("A brand new sentence.")
    timeline = Timeline(duration=voice.duration, words=voice.words)
    videos = await asyncio.gather(
        *(renderer.render(image, voice, timeline, output=tmp_path / f"{i}.gif") for i in range(4))
    )
    assert len(inner.calls) == 1
    assert [v.path for v in videos] == [tmp_path / f"{i}.gif" for i in range(4)]
    assert len({v.path.read_bytes() for v in videos}) == 1


def test_a_cache_folder_that_cannot_be_made_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avatarkit import AvatarBot

    taken = tmp_path / "notes.txt"
    taken.write_text("a file, not a folder")
    for folder in (taken, taken / "cache"):
        with pytest.raises(ConfigurationError, match=r"reply cache.*notes\.txt"):
            ReplyCache(folder)
    monkeypatch.setenv("AVATARKIT_CACHE_DIR", str(taken))
    with pytest.raises(ConfigurationError, match="AVATARKIT_CACHE_DIR"):
        AvatarBot(cache=True, renderer=None)


def test_a_blank_cache_dir_variable_counts_as_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("AVATARKIT_CACHE_DIR", "  ")
    assert default_cache_dir() == tmp_path / "avatarkit"  # not a folder named "  " here
