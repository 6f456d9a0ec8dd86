"""Lip sync on real eSpeak speech: the viseme table, the three sources, holds and timing."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile as sf

from avatarkit import _espeak
from avatarkit.animation.face_state import OCULUS_VISEMES
from avatarkit.animation.lipsync import (
    MIN_HOLD,
    lipsync,
    lipsync_from_audio,
    lipsync_from_phonemes,
    lipsync_from_words,
    mouth_track,
    timeline_from,
    word_phonemes,
    words_from_characters,
)
from avatarkit.animation.viseme import (
    OVR_TO_RHUBARB,
    UnknownPhonemeError,
    phoneme_visemes,
    to_rhubarb,
    unknown_phonemes,
)
from avatarkit.audio import decode_audio
from avatarkit.errors import InputValidationError
from avatarkit.providers.espeak import EspeakVoice
from avatarkit.types import (
    Emotion,
    FacialExpression,
    LipSync,
    PhonemeTiming,
    Timeline,
    VoiceOutput,
    WordTiming,
)

PARAGRAPHS = {
    "en": (
        "en-us",
        "The quick brown fox jumps over the lazy dog. She sells sea shells by the shore, "
        "judging each choice with pleasure. Why would thirty thousand people visit a tiny "
        "village? Our young boy enjoyed the huge orange cake; good food, poor tour, near ear.",
    ),
    "de": (
        "de",
        "Grüß Gott, ich möchte gern ein Brötchen mit Käse. Zwölf Boxkämpfer jagen Viktor quer "
        "über den großen Sylter Deich. Pfeifen, Schiff, Löwe, Häuser, heute, Bach, Zeitung, "
        "Quatsch, Ingenieur, Orange, Journal.",
    ),
    "fr": (
        "fr",
        "Bonjour, je voudrais un croissant et un grand café au lait. Le chien brun mange du "
        "pain dans le jardin fleuri. Un bon vin blanc, une fenêtre ouverte, huit nuits, oiseau, "
        "cœur, peur, deux œufs, agneau, gagner, jaune, rue, loup.",
    ),
    "es": (
        "es",
        "Buenos días, me gustaría un café con leche, por favor. El perro corre rápidamente por "
        "la calle mojada. El niño pequeño juega con el gato, la llave, el yate, cigarro, jamón, "
        "hierro, guerra, zapato, chocolate, ahora.",
    ),
    "it": (
        "it",
        "Buongiorno, vorrei un cappuccino e un cornetto. Il gatto nero dorme tranquillo sulla "
        "sedia. Gli gnocchi, la famiglia, lo sciopero, cielo, giorno, pizza, mezzo, azzurro, "
        "chiesa, ghiaccio, figlio, bagno, cuore, quattro.",
    ),
    "pt": (
        "pt",
        "Bom dia, eu gostaria de um café com leite e um pão de queijo. O cachorro corre pela "
        "rua molhada. Coração, mãe, pães, irmão, filho, ninho, chave, jogo, vinho, limão, "
        "ontem, também, rato, carro, muito.",
    ),
}

SENTENCE = "Please bring me a big bottle of milk, maybe two. Then we go home."


@pytest.fixture(scope="module")
def voice() -> VoiceOutput:
    return EspeakVoice("en-us").synthesize_sync(SENTENCE)


def assert_clean(ls: LipSync, duration: float) -> None:
    """Cues sorted, contiguous, non-overlapping, covering exactly [0, duration]."""
    assert ls.cues, "no cues"
    assert ls.duration == pytest.approx(duration)
    assert ls.cues[0].start == 0.0
    assert ls.cues[-1].end == pytest.approx(duration, abs=1e-9)
    for a, b in zip(ls.cues, ls.cues[1:], strict=False):
        assert a.end == pytest.approx(b.start, abs=1e-9)
        assert a.viseme != b.viseme or a.weight != b.weight
    for c in ls.cues:
        assert c.end > c.start
        assert c.viseme in OCULUS_VISEMES
        assert c.source == ls.source
        assert 0.0 <= c.weight <= 1.0
    assert Timeline(duration=duration, visemes=ls.cues).problems() == []


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    ("phoneme", "visemes"),
    [
        ("p", ("PP",)),
        ("m", ("PP",)),
        ("f", ("FF",)),
        ("θ", ("TH",)),
        ("tʃ", ("CH",)),
        ("ʒ", ("CH",)),
        ("aɪ", ("aa", "ih")),
        ("oʊ", ("oh", "ou")),
        ("ɔːɹ", ("oh", "RR")),
        ("iː", ("ih",)),
        ("ɑ̃", ("aa",)),  # French nasal vowel
        ("ɐ̃ʊ̃", ("aa", "ou")),  # Portuguese nasal diphthong
        ("y", ("ou",)),  # front rounded: lips round
        ("ø", ("oh",)),
        ("ç", ("SS",)),
        ("x", ("kk",)),
        ("ʁ", ("RR",)),
        ("ɲ", ("nn",)),
        ("ʎ", ("nn",)),
        ("ɾ", ("RR",)),
        ("pf", ("PP", "FF")),
        ("ts", ("SS",)),
        ("kː", ("kk",)),
        ("_", ("sil",)),
    ],
)
def test_phoneme_table(phoneme: str, visemes: tuple[str, ...]) -> None:
    assert phoneme_visemes(phoneme) == visemes


def test_unknown_phonemes_are_reported_not_defaulted() -> None:
    with pytest.raises(UnknownPhonemeError) as info:
        phoneme_visemes("ʘ")  # a click: not in any of the supported languages
    assert info.value.phoneme == "ʘ"
    assert unknown_phonemes(["p", "ʘ", "a", "Q"]) == {"ʘ", "Q"}
    spans = [PhonemeTiming(phoneme="ʘ", start=0.0, end=0.1)]
    with pytest.raises(UnknownPhonemeError):
        lipsync_from_phonemes(spans, 0.2, strict=True)
    assert lipsync_from_phonemes(spans, 0.2).cues  # non-strict: still a usable track


def test_rhubarb_view_covers_every_viseme() -> None:
    assert set(OVR_TO_RHUBARB) == set(OCULUS_VISEMES)
    assert to_rhubarb("PP") == "A" and to_rhubarb("sil") == "X" and to_rhubarb("aa") == "D"
    with pytest.raises(InputValidationError):
        to_rhubarb("AA")


@pytest.mark.parametrize("language", sorted(PARAGRAPHS))
def test_every_phoneme_espeak_emits_has_a_viseme(language: str) -> None:
    voice_name, text = PARAGRAPHS[language]
    out = EspeakVoice(voice_name).synthesize_sync(text)
    spoken = {p.phoneme for p in out.phonemes}
    g2p = {p for word in _espeak.text_to_ipa(text, voice_name) for p in word}
    assert len(spoken) > 20
    assert unknown_phonemes(spoken | g2p) == set()
    ls = lipsync(out, language=language, strict=True)
    assert_clean(ls, out.duration)
    assert {c.viseme for c in ls.cues} >= {"sil", "PP", "aa", "E", "ih"}


# --------------------------------------------------------------------------- source 1


def test_source_1_cues_are_clean(voice: VoiceOutput) -> None:
    ls = lipsync(voice)
    assert ls.source == "phonemes"
    assert_clean(ls, voice.duration)
    # Minimum hold: only closures (PP) and rest at the very ends may be shorter.
    short = [c for c in ls.cues[1:-1] if c.end - c.start < MIN_HOLD - 1e-9]
    assert all(c.viseme == "PP" for c in short), short


def _bilabial_onsets(voice: VoiceOutput) -> list[tuple[str, float, float]]:
    """(word, start, end) of each word-initial p/b/m in the true phoneme timings."""
    out = []
    for wi, w in enumerate(voice.words):
        phs = [p for p in voice.phonemes if p.word_index == wi]
        if phs and phs[0].phoneme in ("p", "b", "m"):
            out.append((w.text, phs[0].start, phs[0].end))
    return out


def test_pbm_words_close_the_lips_on_time(voice: VoiceOutput) -> None:
    onsets = _bilabial_onsets(voice)
    assert [w for w, *_ in onsets] == ["Please", "bring", "me", "big", "bottle", "milk", "maybe"]
    cues = lipsync(voice).cues
    for word, start, end in onsets:
        pp = [c for c in cues if c.viseme == "PP" and c.start < end and c.end > start]
        assert pp, f"no PP for {word!r}"
        assert abs(pp[0].start - start) <= 0.03, (word, pp[0].start, start)
        mid = (start + end) / 2
        assert Timeline(duration=voice.duration, visemes=cues).viseme_at(mid) == "PP"


def test_rest_at_pauses(voice: VoiceOutput) -> None:
    pauses = [p for p in voice.phonemes if p.phoneme == "_" and p.end - p.start > 0.15]
    assert pauses, "the sentence has a pause after 'two.'"
    timeline = Timeline(duration=voice.duration, visemes=lipsync(voice).cues)
    for p in pauses:
        assert timeline.viseme_at((p.start + p.end) / 2) == "sil"


def test_coarticulation_rounds_before_rounded_vowels() -> None:
    # "k" before "uː" (as in "cool"): the lips round already during the k.
    spans = [
        PhonemeTiming(phoneme="_", start=0.0, end=0.1),
        PhonemeTiming(phoneme="k", start=0.1, end=0.2),
        PhonemeTiming(phoneme="uː", start=0.2, end=0.4),
        PhonemeTiming(phoneme="_", start=0.4, end=0.5),
    ]
    ls = lipsync_from_phonemes(spans, 0.5)
    assert [c.viseme for c in ls.cues] == ["sil", "ou", "sil"]
    assert ls.cues[1].start == pytest.approx(0.1)
    plain = lipsync_from_phonemes(
        [spans[0], spans[1], PhonemeTiming(phoneme="iː", start=0.2, end=0.4), spans[3]], 0.5
    )
    assert [c.viseme for c in plain.cues] == ["sil", "kk", "ih", "sil"]


def test_short_cues_merge_but_closures_stay() -> None:
    spans = [
        PhonemeTiming(phoneme="a", start=0.0, end=0.2),
        PhonemeTiming(phoneme="s", start=0.2, end=0.215),  # 15 ms: too short to show
        PhonemeTiming(phoneme="a", start=0.215, end=0.4),
        PhonemeTiming(phoneme="b", start=0.4, end=0.42),  # 20 ms closure: kept, lengthened
        PhonemeTiming(phoneme="a", start=0.42, end=0.6),
    ]
    ls = lipsync_from_phonemes(spans, 0.6)
    assert [c.viseme for c in ls.cues] == ["aa", "PP", "aa"]
    pp = ls.cues[1]
    assert pp.end - pp.start == pytest.approx(MIN_HOLD)
    assert pp.start < 0.4 < 0.42 < pp.end


# --------------------------------------------------------------------------- source 2


def test_source_2_from_word_timings(voice: VoiceOutput) -> None:
    words_only = voice.model_copy(update={"phonemes": []})
    ls = lipsync(words_only)
    assert ls.source == "words"
    assert_clean(ls, voice.duration)
    truth = lipsync(voice)
    frames = np.arange(0, voice.duration, 0.01)
    t1 = Timeline(duration=voice.duration, visemes=truth.cues)
    t2 = Timeline(duration=voice.duration, visemes=ls.cues)
    same = np.mean([t1.viseme_at(t) == t2.viseme_at(t) for t in frames])
    assert same > 0.6
    for word, start, end in _bilabial_onsets(voice):
        pp = [
            c for c in ls.cues if c.viseme == "PP" and c.start < end + 0.03 and c.end > start - 0.03
        ]
        assert pp, f"no PP near {word!r}"


def test_source_2_uses_text_when_words_carry_only_offsets(voice: VoiceOutput) -> None:
    bare = [w.model_copy(update={"text": ""}) for w in voice.words]
    ls = lipsync(
        voice.model_copy(update={"phonemes": [], "words": bare, "text": ""}), text=SENTENCE
    )
    assert ls.source == "words"


def test_word_phonemes_stay_inside_their_words(voice: VoiceOutput) -> None:
    phs = word_phonemes(voice.words, "en")
    assert {p.word_index for p in phs} == set(range(len(voice.words)))
    for p in phs:
        w = voice.words[p.word_index]
        assert w.start - 1e-9 <= p.start < p.end <= w.end + 1e-9
    # Vowels get more time than stops in the duration model.
    big = [p for p in phs if voice.words[p.word_index].text == "big"]
    assert [p.phoneme for p in big] == ["b", "ɪ", "ɡ"]
    assert big[1].end - big[1].start > big[0].end - big[0].start


def test_source_2_other_language() -> None:
    out = EspeakVoice("de").synthesize_sync("Mein Bruder baut ein Boot am Meer.")
    ls = lipsync_from_words(out.words, out.duration, language="de", strict=True)
    assert_clean(ls, out.duration)
    assert sum(c.viseme == "PP" for c in ls.cues) >= 5


# --------------------------------------------------------------------------- source 3


def _closed_frames_truth(voice: VoiceOutput) -> np.ndarray:
    n = math.ceil(voice.duration / 0.01)
    y = np.ones(n, dtype=bool)
    t = np.arange(n) * 0.01
    for p in voice.phonemes:
        if p.phoneme not in ("_", "p", "b", "m"):
            y[(t >= p.start) & (t < p.end)] = False
    return y


def test_source_3_from_audio_alone(voice: VoiceOutput) -> None:
    bare = voice.model_copy(update={"phonemes": [], "words": [], "text": ""})
    ls = lipsync(bare)
    assert ls.source == "audio"
    assert_clean(ls, voice.duration)
    t = Timeline(duration=voice.duration, visemes=ls.cues)
    n = math.ceil(voice.duration / 0.01)
    pred = np.array([t.viseme_at(k * 0.01) in ("sil", "PP") for k in range(n)])
    truth = _closed_frames_truth(voice)
    agree = np.mean(pred == truth)
    assert agree > 0.85
    assert pred[truth].mean() > 0.6  # most closures are caught
    assert {c.viseme for c in ls.cues} - {"sil", "PP"}, "open shapes too"


def test_mouth_track_opening_follows_energy() -> None:
    rate = 16000
    t = np.arange(rate) / rate
    tone = 0.5 * np.sin(2 * np.pi * 220 * t) * (1 + 0.3 * np.sin(2 * np.pi * 700 * t))
    x = np.concatenate([np.zeros(rate // 2), tone, np.zeros(rate // 2)]).astype(np.float32)
    track = mouth_track(x, rate)
    assert track.opening[30:45].max() == 0.0  # silence: mouth shut
    assert track.closed[30:45].min() > 0.5
    assert track.opening[80:120].mean() > track.opening[30:45].mean()
    assert set(track.shape[30:45]) == {"sil"}


def test_source_3_from_wav_mp3_and_pcm_agree(voice: VoiceOutput) -> None:
    samples, rate = decode_audio(voice.audio)
    mp3 = io.BytesIO()
    sf.write(mp3, samples, rate, format="MP3")
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    from_wav = lipsync_from_audio(voice.audio)
    from_mp3 = lipsync_from_audio(mp3.getvalue())
    from_pcm = lipsync_from_audio(pcm, format="pcm_s16le", sample_rate=rate)
    from_float = lipsync_from_audio(samples, sample_rate=rate)
    for ls in (from_wav, from_mp3, from_pcm, from_float):
        assert ls.duration == pytest.approx(voice.duration, abs=0.08)  # MP3 pads frames
    ref = Timeline(duration=from_wav.duration, visemes=from_wav.cues)
    for other in (from_mp3, from_pcm, from_float):
        alt = Timeline(duration=other.duration, visemes=other.cues)
        frames = np.arange(0, min(ref.duration, alt.duration) - 0.1, 0.01)
        closed = [
            (ref.viseme_at(f) in ("sil", "PP")) == (alt.viseme_at(f) in ("sil", "PP"))
            for f in frames
        ]
        assert np.mean(closed) > 0.85


def test_source_3_bad_input() -> None:
    with pytest.raises(InputValidationError):
        lipsync_from_audio(b"")
    with pytest.raises(InputValidationError):
        lipsync_from_audio(b"not audio at all, just bytes" * 10)
    with pytest.raises(InputValidationError):
        lipsync_from_audio(np.zeros(100, dtype=np.float32))  # no sample rate
    with pytest.raises(InputValidationError):
        lipsync_from_audio(b"\x00\x01" * 100, format="pcm_s16le")  # headerless, no rate
    silent = lipsync_from_audio(np.zeros(8000, dtype=np.float32), sample_rate=16000)
    assert [c.viseme for c in silent.cues] == ["sil"]


def test_bad_durations_are_rejected() -> None:
    with pytest.raises(InputValidationError):
        lipsync_from_phonemes([], -1.0)
    with pytest.raises(InputValidationError):
        lipsync_from_phonemes([], float("nan"))
    assert lipsync_from_phonemes([], 0.0).cues == []


# --------------------------------------------------------------------------- timeline


def test_timeline_from_places_expressions_by_character_offset(voice: VoiceOutput) -> None:
    offset = SENTENCE.index("maybe")
    exprs = [
        FacialExpression(char_offset=offset, emotion=Emotion.HAPPY),
        FacialExpression(time=0.0, emotion=Emotion.NEUTRAL),
    ]
    timeline = timeline_from(voice, lipsync(voice), exprs)
    assert timeline.problems() == []
    assert timeline.viseme_source == "phonemes"
    assert [e.emotion for e in timeline.expressions] == [Emotion.NEUTRAL, Emotion.HAPPY]
    maybe = next(w for w in voice.words if w.text == "maybe")
    assert timeline.expressions[1].time == pytest.approx(maybe.start)
    assert timeline.words == voice.words and timeline.duration == voice.duration
    assert timeline_from(voice).visemes == timeline.visemes  # lip sync computed when omitted


def test_words_without_timing_fall_back_to_audio() -> None:
    out = EspeakVoice("en-us").synthesize_sync("Maybe.")
    zero = [WordTiming(text="Maybe", start=0.0, end=0.0)]
    ls = lipsync(out.model_copy(update={"phonemes": [], "words": zero}))
    assert ls.source == "audio"


def test_words_from_characters_feed_source_2(voice: VoiceOutput) -> None:
    # Character timings as ElevenLabs' alignment gives them, made from the true word timings.
    chars, starts, ends = [], [], []
    pos = 0
    for w in voice.words:
        gap = SENTENCE[pos : w.char_start]
        for ch in gap:
            chars.append(ch)
            starts.append(w.start)
            ends.append(w.start)
        n = len(w.text)
        for k, ch in enumerate(w.text):
            chars.append(ch)
            starts.append(w.start + (w.end - w.start) * k / n)
            ends.append(w.start + (w.end - w.start) * (k + 1) / n)
        pos = w.char_end
    words = words_from_characters(chars, starts, ends)
    assert [w.text.strip(".,") for w in words] == [w.text for w in voice.words]
    assert words[0].start == voice.words[0].start
    assert "".join(chars)[words[2].char_start : words[2].char_end] == words[2].text
    ls = lipsync_from_words(words, voice.duration)
    assert_clean(ls, voice.duration)
    assert ls.source == "words"
    with pytest.raises(InputValidationError):
        words_from_characters(["a", "b"], [0.0], [0.1, 0.2])
    with pytest.raises(InputValidationError):
        words_from_characters(["a"], [0.2], [0.1])
