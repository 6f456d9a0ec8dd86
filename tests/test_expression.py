from __future__ import annotations

import itertools

import pytest

from avatarkit.animation.expression import (
    LocalExpressionPolicy,
    resolve_times,
    strip_emotion_tags,
)
from avatarkit.ports import ExpressionPolicy
from avatarkit.types import (
    DialogueResponse,
    Emotion,
    FacialExpression,
    Intent,
    IntentPrediction,
    Sentiment,
    WordTiming,
)

# --------------------------------------------------------------------------- tags


def test_strip_tags_removes_known_tags_and_records_positions() -> None:
    clean, tags = strip_emotion_tags("[happy] Hello there! [sad] Sorry to hear that.")
    assert clean == "Hello there! Sorry to hear that."
    assert tags == [(0, "happy"), (clean.index("Sorry"), "sad")]


def test_strip_tags_understands_aliases_stage_directions_and_prefixes() -> None:
    clean, tags = strip_emotion_tags(
        "*smiles warmly* Sure. [emotion: shocked] Really? [Curious] Hm."
    )
    assert clean == "Sure. Really? Hm."
    assert [t for _, t in tags] == ["happy", "surprised", "thinking"]
    assert clean[tags[1][0] :].startswith("Really")
    assert clean[tags[2][0] :].startswith("Hm")


@pytest.mark.parametrize(
    "text",
    [
        "See note [1], it is *really* good.",
        "I'm *happy* to help, and **sorry** for the wait.",
        "<thinking>plan the answer</thinking> Fine.",
    ],
)
def test_strip_tags_leaves_ordinary_brackets_emphasis_and_markup(text: str) -> None:
    assert strip_emotion_tags(text) == (text, [])


def test_strip_tags_tidies_space_before_punctuation_and_trailing_tag() -> None:
    clean, tags = strip_emotion_tags("Bye for now [happy]. See you! [sad]")
    assert clean == "Bye for now. See you!"
    assert tags[0] == (clean.index("."), "happy")
    assert tags[1] == (len(clean), "sad")


# --------------------------------------------------------------------------- policy


def _emotions(keys: list[FacialExpression]) -> list[Emotion]:
    return [k.emotion for k in keys]


def _switches(keys: list[FacialExpression]) -> int:
    ems = _emotions(keys)
    return sum(1 for a, b in itertools.pairwise(ems) if a is not b)


def test_policy_satisfies_the_port() -> None:
    assert isinstance(LocalExpressionPolicy(), ExpressionPolicy)


def test_explicit_tag_wins_over_text_cues() -> None:
    keys = LocalExpressionPolicy().plan_text("[sad] What great, wonderful, fantastic news!")
    assert keys[0].char_offset == 0
    assert set(_emotions(keys)) == {Emotion.SAD}
    assert keys[0].intensity >= 0.6


def test_tag_in_the_middle_switches_at_its_offset() -> None:
    text = "Sorry about the delay. [happy] But the good news: it is fixed!"
    keys = LocalExpressionPolicy().plan_text(text)
    clean, _ = strip_emotion_tags(text)
    happy = [k for k in keys if k.emotion is Emotion.HAPPY]
    assert happy, keys
    assert happy[0].char_offset == clean.index("But")
    assert keys[0].emotion is Emotion.SAD


def test_tagged_emotion_holds_through_neutral_text() -> None:
    text = "[happy] Hello. " + "The meeting is at three in the main building on the left. " * 6
    keys = LocalExpressionPolicy().plan_text(text)
    assert keys[-1].emotion is Emotion.HAPPY


def test_alternating_weak_cues_do_not_flip_the_face() -> None:
    text = "That is good. That is bad. That is good. That is bad. That is good. That is bad."
    keys = LocalExpressionPolicy().plan_text(text)
    assert _switches(keys) <= 1, keys


def test_strong_cue_switches_the_face() -> None:
    keys = LocalExpressionPolicy().plan_text(
        "Hello. The package left on Monday. I'm so sorry, unfortunately it was lost."
    )
    assert Emotion.SAD in _emotions(keys)


def test_weak_cue_needs_to_persist_to_switch() -> None:
    policy = LocalExpressionPolicy(cues={Emotion.HAPPY: (("nice", 0.3),)}, use_vader=False)
    once = policy.plan_text("It is nice. It is on the table. It opens at noon.")
    twice = policy.plan_text("It is nice. Very nice indeed. It opens at noon.")
    assert Emotion.HAPPY not in _emotions(once)
    assert Emotion.HAPPY in _emotions(twice)


def test_expression_decays_towards_neutral() -> None:
    text = "Congratulations, that is wonderful news! " + (
        "The form has four fields and a button at the bottom of the page. " * 6
    )
    keys = LocalExpressionPolicy().plan_text(text)
    assert keys[0].emotion is Emotion.HAPPY
    last = keys[-1]
    assert last.emotion is Emotion.NEUTRAL or last.intensity < keys[0].intensity / 2
    intensities = [k.intensity for k in keys if k.emotion is Emotion.HAPPY]
    assert intensities == sorted(intensities, reverse=True)


def test_greeting_intent_smiles_and_question_intent_thinks() -> None:
    policy = LocalExpressionPolicy()
    greet = IntentPrediction(intents=[Intent(name="greeting", confidence=0.9)], top="greeting")
    keys = policy.plan_text("I am Ava, your assistant.", intent=greet)
    assert keys[0].emotion is Emotion.HAPPY
    ask = IntentPrediction(intents=[Intent(name="question", confidence=0.9)], top="question")
    keys = policy.plan_text("The capital of Peru is Lima.", intent=ask)
    assert keys[0].emotion is Emotion.THINKING


def test_angry_user_gets_concern_not_anger() -> None:
    angry = Sentiment(compound=-0.8, negative=0.7, label="negative", emotion=Emotion.ANGRY)
    complaint = IntentPrediction(
        intents=[Intent(name="complaint", confidence=0.8)], top="complaint"
    )
    keys = LocalExpressionPolicy().plan_text(
        "I understand. Let me look at your order.", sentiment=angry, intent=complaint
    )
    assert keys[0].emotion is Emotion.SAD
    assert Emotion.ANGRY not in _emotions(keys)


async def test_plan_maps_raw_text_tags_onto_reply_text() -> None:
    reply = DialogueResponse(
        text="Hi! Sorry, the shop is closed.",
        raw_text="[happy] Hi! [sad] Sorry, the shop is closed.",
        emotion_tags=["happy", "sad"],
    )
    keys = await LocalExpressionPolicy().plan(reply)
    assert keys[0].emotion is Emotion.HAPPY
    sad = next(k for k in keys if k.emotion is Emotion.SAD)
    assert sad.char_offset == reply.text.index("Sorry")


async def test_plan_uses_emotion_tags_without_positions_from_the_start() -> None:
    reply = DialogueResponse(text="The shop opens at nine.", emotion_tags=["surprised"])
    keys = await LocalExpressionPolicy().plan(reply)
    assert keys[0].emotion is Emotion.SURPRISED and keys[0].char_offset == 0


def test_empty_text_gives_one_neutral_keyframe() -> None:
    keys = LocalExpressionPolicy().plan_text("")
    assert len(keys) == 1 and keys[0].emotion is Emotion.NEUTRAL


# --------------------------------------------------------------------------- timing


def _words(text: str, *, with_offsets: bool = True) -> list[WordTiming]:
    out, t, pos = [], 0.2, 0
    for w in text.split(" "):
        start = text.index(w, pos)
        pos = start + len(w)
        out.append(
            WordTiming(
                text=w,
                start=t,
                end=t + 0.3,
                char_start=start if with_offsets else -1,
                char_end=pos if with_offsets else -1,
            )
        )
        t += 0.4
    return out


@pytest.mark.parametrize("with_offsets", [True, False])
def test_resolve_times_uses_word_timings(with_offsets: bool) -> None:
    text = "Hello there my friend, sorry about that."
    words = _words(text, with_offsets=with_offsets)
    keys = [
        FacialExpression(char_offset=0, emotion=Emotion.HAPPY),
        FacialExpression(char_offset=text.index("sorry"), emotion=Emotion.SAD),
        FacialExpression(char_offset=len(text), emotion=Emotion.NEUTRAL),
    ]
    timed = resolve_times(keys, words, lead=0.1)
    assert timed[0].time == 0.0
    assert timed[1].time == pytest.approx(words[4].start - 0.1)
    assert timed[2].time == pytest.approx(words[-1].end)
    assert keys[1].time == 0.0  # inputs untouched


def test_resolve_times_keeps_keyframes_without_offset_and_sorts() -> None:
    words = _words("one two three")
    keys = [
        FacialExpression(char_offset=8, emotion=Emotion.SAD),
        FacialExpression(time=0.05, emotion=Emotion.HAPPY),
    ]
    timed = resolve_times(keys, words)
    assert [k.emotion for k in timed] == [Emotion.HAPPY, Emotion.SAD]
    assert timed[0].time == 0.05
