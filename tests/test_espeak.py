"""The local eSpeak NG voice, checked on real synthesized speech."""

from __future__ import annotations

import asyncio
import io
import itertools
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from avatarkit import _espeak
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.ports import SpeechSynthesizer
from avatarkit.providers.espeak import EspeakVoice, provider
from avatarkit.registry import Registry
from avatarkit.types import PhonemeTiming, Timeline, VoiceOutput, WordTiming

SENTENCE = "It costs $42.50, OK? Please buy my big map, Peter."


@pytest.fixture(scope="module")
def spoken() -> _espeak.Synthesis:
    return _espeak.synthesize(SENTENCE)


def _check_timings(words: list[WordTiming], phonemes: list[PhonemeTiming], duration: float) -> None:
    timeline = Timeline(duration=duration, words=words, phonemes=phonemes)
    assert timeline.problems() == []
    for a, b in itertools.pairwise(phonemes):
        assert a.end <= b.start + 1e-9
    for a, b in itertools.pairwise(words):
        assert a.end <= b.start + 1e-9


# --------------------------------------------------------------------------- audio and timings


def test_duration_matches_samples(spoken: _espeak.Synthesis) -> None:
    assert spoken.sample_rate == 22050
    assert spoken.samples.dtype == np.int16
    assert spoken.duration == pytest.approx(len(spoken.samples) / 22050)
    assert 2.0 < spoken.duration < 10.0
    assert np.abs(spoken.samples.astype(np.int32)).max() > 3000  # real speech, not silence


def test_timings_monotonic_and_inside_audio(spoken: _espeak.Synthesis) -> None:
    _check_timings(spoken.words, spoken.phonemes, spoken.duration)
    # phonemes tile the audio: no gaps, from the first sample to the last
    assert spoken.phonemes[0].start == 0.0
    assert spoken.phonemes[-1].end == pytest.approx(spoken.duration)
    for a, b in itertools.pairwise(spoken.phonemes):
        assert a.end == pytest.approx(b.start)


def test_words_are_slices_of_the_input(spoken: _espeak.Synthesis) -> None:
    assert [w.text for w in spoken.words] == [
        "It", "costs", "$42.50", "OK", "Please", "buy", "my", "big", "map", "Peter"
    ]  # fmt: skip
    for w in spoken.words:
        assert SENTENCE[w.char_start : w.char_end] == w.text


def test_every_word_gets_its_phonemes(spoken: _espeak.Synthesis) -> None:
    per_word: dict[int, list[str]] = {}
    for p in spoken.phonemes:
        assert p.phoneme and "ˈ" not in p.phoneme and "ˌ" not in p.phoneme
        if p.word_index is not None:
            per_word.setdefault(p.word_index, []).append(p.phoneme)
    assert sorted(per_word) == list(range(len(spoken.words)))
    assert per_word[4] == ["p", "l", "iː", "z"]  # "Please"
    assert any(p.stress == 1 for p in spoken.phonemes)


def _frame_rms(audio: np.ndarray, start: int, stop: int, win: int) -> list[float]:
    hop = max(win // 4, 1)
    return [
        float(np.sqrt(np.mean(audio[i : i + win] ** 2)))
        for i in range(max(start, 0), min(stop, len(audio) - win), hop)
    ]


@pytest.mark.parametrize("text", [SENTENCE, "Mom bought a bag of plums, maybe more."])
def test_bilabials_line_up_with_closures_in_the_audio(text: str) -> None:
    """Each p/b/m word starts with its bilabial, and the lips really close within ±30 ms."""
    out = _espeak.synthesize(text)
    rate = out.sample_rate
    audio = out.samples.astype(np.float64) / 32768.0
    win = int(0.010 * rate)
    speech_level = float(np.percentile(_frame_rms(audio, 0, len(audio), win), 90))
    checked = 0
    for index, word in enumerate(out.words):
        if word.text[0].lower() not in "pbm":
            continue
        ph = next(p for p in out.phonemes if p.word_index == index)
        assert ph.phoneme == word.text[0].lower()
        assert ph.start == pytest.approx(word.start)
        near = _frame_rms(audio, int((ph.start - 0.03) * rate), int((ph.start + 0.03) * rate), win)
        assert min(near) < 0.3 * speech_level, f"no closure near {word.text!r} at {ph.start:.3f}"
        checked += 1
    assert checked >= 5


def test_ssml_marks_and_breaks() -> None:
    text = (
        '<speak>Hello <mark name="wave"/>there. <break time="700ms"/>'
        '<mark name="smile"/>Good to see you.</speak>'
    )
    out = _espeak.synthesize(text, ssml=True)
    assert [name for name, _ in out.marks] == ["wave", "smile"]
    words = {w.text: w for w in out.words}
    assert list(words) == ["Hello", "there", "Good", "to", "see", "you"]
    for w in out.words:
        assert text[w.char_start : w.char_end] == w.text
    wave_t, smile_t = (t for _, t in out.marks)
    assert abs(wave_t - words["there"].start) < 0.03
    assert abs(smile_t - words["Good"].start) < 0.03
    assert words["Good"].start - words["there"].end >= 0.65  # the break is in the audio
    _check_timings(out.words, out.phonemes, out.duration)


def test_non_ascii_offsets_map_to_python_characters() -> None:
    text = "Naïve café — 😀 über straße, señor!"
    out = _espeak.synthesize(text)
    assert [w.text for w in out.words][:2] == ["Naïve", "café"]
    assert "über" in [w.text for w in out.words] and "señor" in [w.text for w in out.words]
    for w in out.words:
        assert text[w.char_start : w.char_end] == w.text


def test_joined_word_pairs_get_their_own_timings() -> None:
    text = "One of the best is to be able to go out of here."
    out = _espeak.synthesize(text)
    assert [w.text for w in out.words] == text.rstrip(".").split()
    _check_timings(out.words, out.phonemes, out.duration)


# --------------------------------------------------------------------------- G2P and voices


def test_text_to_ipa_per_word() -> None:
    ipa = _espeak.text_to_ipa("Church judge, my boy!")
    assert ipa == [["tʃ", "ɜː", "tʃ"], ["dʒ", "ʌ", "dʒ"], ["m", "aɪ"], ["b", "ɔɪ"]]
    german = _espeak.text_to_ipa("Zeit", "de")
    assert german == [["ts", "aɪ", "t"]]


def test_voices_listed_and_selectable() -> None:
    voices = _espeak.list_voices()
    assert len(voices) > 100
    english = _espeak.list_voices("en")
    assert english and all(any(c.startswith("en") for c in v.languages) for v in english)
    assert {"de", "fr", "es", "it", "pt"} <= {c for v in voices for c in v.languages}
    assert "f3" in _espeak.list_variants()
    male = _espeak.synthesize("Hello there.", "en-us")
    female = _espeak.synthesize("Hello there.", "en-us+f3")
    assert not np.array_equal(male.samples[:20000], female.samples[:20000])


def test_unknown_voice_names_close_matches() -> None:
    with pytest.raises(ConfigurationError, match="en-us") as info:
        _espeak.synthesize("Hello", "en-uss")
    assert "EspeakVoice.voices()" in str(info.value)  # public: the user can call it
    assert any(v.name for v in EspeakVoice.voices("en"))
    with pytest.raises(ConfigurationError, match="f3"):
        EspeakVoice("en-us+f33")


# --------------------------------------------------------------------------- concurrency


_JOBS = [
    ("Peter picked a peck of pickled peppers.", "en-us", False),
    ("Ich möchte zwei Äpfel kaufen.", "de", False),
    ("Bonjour, je suis très heureux.", "fr+f3", False),
    ('<speak>Big <mark name="m"/>bad <break time="200ms"/> bob.</speak>', "en-us+m3", True),
]


def _run(job: tuple[str, str, bool]) -> _espeak.Synthesis:
    return _espeak.synthesize(job[0], job[1], ssml=job[2], rate=190 if job[2] else 175)


def _same(a: _espeak.Synthesis, b: _espeak.Synthesis) -> bool:
    return (
        np.array_equal(a.samples, b.samples)
        and a.words == b.words
        and a.phonemes == b.phonemes
        and a.marks == b.marks
    )


def test_concurrent_threads_and_tasks_match_solo_runs() -> None:
    assert all(_espeak.is_repeatable(voice) for _, voice, _ in _JOBS)
    solo = [_run(job) for job in _JOBS]
    # the same voice twice in a row, and after other voices, repeats exactly
    assert _same(_run(_JOBS[2]), solo[2]) and _same(_run(_JOBS[2]), solo[2])
    with ThreadPoolExecutor(max_workers=6) as pool:
        threaded = list(pool.map(_run, _JOBS * 4))
    assert all(_same(r, solo[i % len(_JOBS)]) for i, r in enumerate(threaded))

    voices = [EspeakVoice(v, ssml=s, rate=190 if s else 175) for _, v, s in _JOBS]

    async def many() -> list[VoiceOutput]:
        calls = [voices[i % len(_JOBS)].synthesize(_JOBS[i % len(_JOBS)][0]) for i in range(12)]
        return await asyncio.gather(*calls)

    from avatarkit._sync import run

    outs = run(many())
    for i, out in enumerate(outs):
        ref = solo[i % len(_JOBS)]
        with wave.open(io.BytesIO(out.audio)) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        assert np.array_equal(pcm, ref.samples)
        assert out.words == ref.words and out.phonemes == ref.phonemes
        assert out.marks == ref.marks


# --------------------------------------------------------------------------- the provider


def test_provider_spec_and_protocol() -> None:
    registry = Registry()
    registry.register(provider, replace=True)
    voice = registry.create("voice", "espeak:en-us+f3", rate=160)
    assert isinstance(voice, EspeakVoice) and isinstance(voice, SpeechSynthesizer)
    assert voice.voice == "en-us+f3" and voice.rate == 160
    assert registry.create("voice", "espeak").voice == "en-us"
    caps = voice.capabilities
    assert caps.word_timings and caps.phoneme_timings and caps.offline
    assert set(caps.formats) == {"wav", "pcm_s16le"}
    assert provider.offline


async def test_voice_output_wav_and_pcm() -> None:
    text = "Hello, my friend."
    wav = await EspeakVoice().synthesize(text)
    pcm = await EspeakVoice(format="pcm_s16le").synthesize(text)
    assert wav.format == "wav" and wav.audio[:4] == b"RIFF"
    assert pcm.format == "pcm_s16le" and len(pcm.audio) == round(pcm.duration * 22050) * 2
    assert wav.duration == pytest.approx(pcm.duration)
    assert wav.text == text and wav.voice == "espeak:en-us"
    assert [w.text for w in wav.words] == ["Hello", "my", "friend"]


def test_long_text_in_sentence_groups_on_one_clock() -> None:
    sentences = [f"This is sentence number {n}, spoken by Bob." for n in range(1, 13)]
    text = "  ".join(sentences)
    voice = EspeakVoice(chunk_chars=120)
    out = voice.synthesize_sync(text)
    whole = EspeakVoice(chunk_chars=10_000).synthesize_sync(text)
    assert [w.text for w in out.words] == [w.text for w in whole.words]
    for w in out.words:
        assert text[w.char_start : w.char_end] == w.text
    _check_timings(out.words, out.phonemes, out.duration)
    assert out.phonemes[-1].end == pytest.approx(out.duration)
    assert out.duration == pytest.approx(whole.duration, rel=0.05)
    bobs = [w for w in out.words if w.text == "Bob"]
    assert len(bobs) == 12 and all(b.start < c.start for b, c in itertools.pairwise(bobs))
    assert bobs[-1].start > 0.85 * out.duration


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\x00\x07\x1b"])
async def test_empty_text_is_rejected(text: str) -> None:
    with pytest.raises(InputValidationError):
        await EspeakVoice().synthesize(text)
    with pytest.raises(InputValidationError):
        _espeak.synthesize(text)


def test_control_characters_are_spoken_as_spaces() -> None:
    text = "Hello\x00 wor\x07ld\x1b[0m, bye\x7f!"
    out = _espeak.synthesize(text)
    assert out.duration > 0.5
    for w in out.words:
        assert text[w.char_start : w.char_end] == w.text
    assert "Hello" in [w.text for w in out.words]


def test_very_long_text_is_refused_quickly() -> None:
    text = "word " * 20_000  # 100,000 characters
    with pytest.raises(InputValidationError, match="100,000"):
        EspeakVoice().synthesize_sync(text)
    with pytest.raises(InputValidationError):
        _espeak.synthesize(text + "x")


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": -5}, {"rate": 10_000}, {"pitch": -1}, {"pitch": 500}, {"volume": 1_000},
     {"rate": 1.5}, {"format": "mp3"}],
)  # fmt: skip
def test_bad_parameters_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputValidationError):
        EspeakVoice(**kwargs)  # type: ignore[arg-type]
    if "format" not in kwargs:
        with pytest.raises(InputValidationError):
            _espeak.synthesize("Hello", **kwargs)  # type: ignore[arg-type]
