import pytest

from avatarkit.errors import InputValidationError
from avatarkit.nlp.sentiment import SERVICE_LEXICON, VaderSentiment, emotion_for, label_for
from avatarkit.ports import SentimentAnalyzer
from avatarkit.types import Emotion


@pytest.fixture(scope="module")
def vader() -> VaderSentiment:
    return VaderSentiment()


def test_satisfies_the_port(vader):
    assert isinstance(vader, SentimentAnalyzer)


async def test_positive_text(vader):
    s = await vader.analyze("Thank you, that was wonderful!")
    assert s.label == "positive" and s.compound > 0.5
    assert s.emotion is Emotion.HAPPY and s.backend == "vader"
    assert s.positive + s.negative + s.neutral == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(
    ("text", "emotion"),
    [
        ("This is unacceptable, I hate this service!", Emotion.ANGRY),
        ("I lost my job today and I feel awful.", Emotion.SAD),
        ("I'm really worried about the surgery tomorrow.", Emotion.FEARFUL),
        ("Ugh, that smells disgusting.", Emotion.DISGUSTED),
        ("Wow, no way!", Emotion.SURPRISED),
        ("Hmm, maybe Tuesday? I'm not sure which day suits me.", Emotion.THINKING),
        ("The meeting is at three.", Emotion.NEUTRAL),
        ("I love it, best day ever", Emotion.HAPPY),
    ],
)
def test_text_maps_to_the_expected_emotion(vader, text, emotion):
    assert vader.analyze_sync(text).emotion is emotion


def test_vader_reads_emphasis(vader):
    assert (
        vader.analyze_sync("This is GREAT!!!").compound
        > vader.analyze_sync("This is great").compound
    )


def test_negation_flips_polarity(vader):
    assert vader.analyze_sync("I am happy").label == "positive"
    assert vader.analyze_sync("I am not happy").label == "negative"


def test_mild_negative_without_anger_words_is_sad_not_angry():
    assert emotion_for("I waited and nobody came", -0.3) is Emotion.SAD
    assert emotion_for("I am furious", -0.6) is Emotion.ANGRY
    assert emotion_for("furious", -0.1) is Emotion.SAD  # anger word but weak, no "!"
    assert emotion_for("furious!", -0.1) is Emotion.ANGRY


def test_label_cut_offs():
    assert label_for(0.05) == "positive"
    assert label_for(-0.05) == "negative"
    assert label_for(0.049) == "neutral"


def test_bad_input_is_rejected(vader):
    with pytest.raises(InputValidationError):
        vader.analyze_sync(None)  # type: ignore[arg-type]
    with pytest.raises(InputValidationError):
        VaderSentiment(max_chars=5).analyze_sync("too long")


def test_empty_text_is_neutral(vader):
    s = vader.analyze_sync("")
    assert s.label == "neutral" and s.emotion is Emotion.NEUTRAL


async def test_a_long_message_is_scored_off_the_event_loop(monkeypatch, vader):
    # VADER takes 30–90 ms near the input limit: other sessions must not wait for it; short
    # messages (well under a millisecond) stay on the loop
    import threading

    on_loop = []
    real = vader.analyze_sync

    def recording(text):
        on_loop.append(threading.current_thread() is threading.main_thread())
        return real(text)

    monkeypatch.setattr(vader, "analyze_sync", recording)
    await vader.analyze("I love this!")
    await vader.analyze("What a wonderful, terrible, surprising day it was. " * 60)
    assert on_loop == [True, False]


@pytest.mark.parametrize(
    "text",
    [
        "I want a refund",
        "I want my money back",
        "Can I get a refund?",
        "this is broken",
        "I was charged twice",
        "I was overcharged",
        "The app keeps crashing",
        "It doesn't work",
        "It doesn’t work",
        "IT DOESNT WORK",
        "My order never arrived",
    ],
)
def test_complaints_read_negative(vader, text):
    s = vader.analyze_sync(text)
    assert s.label == "negative" and s.emotion is Emotion.SAD


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I got my refund, thanks!", "positive"),
        ("The crash course was great", "positive"),
        ("I don't want my money back, I love it", "positive"),
        ("I want to book an appointment", "positive"),
        ("The meeting is at three.", "neutral"),
    ],
)
def test_the_service_lexicon_leaves_other_messages_alone(vader, text, label):
    assert vader.analyze_sync(text).label == label


@pytest.mark.parametrize(
    "text",
    [
        "I'd like a refund",
        "I would like a refund",
        "I’d like my money back",
        "Please refund me",
        "Could you please refund me?",
        "I'd like a refund, please",
    ],
)
def test_polite_refund_requests_read_mildly_negative(vader, text):
    # "please" and "I'd like" are how a request is worded, not how the customer feels
    s = vader.analyze_sync(text)
    assert s.label == "negative" and s.compound > -0.5 and s.emotion is Emotion.SAD


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I'd like a coffee", "positive"),
        ("I'd like that", "positive"),
        ("I would like to thank you", "positive"),
        ("I like this coffee", "positive"),
        ("Yes please!", "positive"),
        ("Could you please tell me the time?", "neutral"),
    ],
)
def test_polite_requests_without_a_complaint_do_not_read_negative(vader, text, label):
    assert vader.analyze_sync(text).label == label


@pytest.mark.parametrize(
    "text",
    [
        "Please help, my order never arrived",
        "Help! My parcel never came",
        "Can you help me? The package never showed up",
        "The technician didn't turn up",
        "My delivery still hasn't come",
        "I need help, the update didn't really work",
    ],
)
def test_a_plea_for_help_with_a_complaint_reads_negative(vader, text):
    # asking for help is a request, not praise (VADER rates "help" +1.7, as in "a great help")
    assert vader.analyze_sync(text).label == "negative"


@pytest.mark.parametrize(
    "text",
    [
        "I'd really like a refund",
        "I would really like my money back",
        "We'd just like a refund, please",
        "I would very much like a refund",
    ],
)
def test_an_adverb_inside_a_polite_refund_request_does_not_make_it_praise(vader, text):
    s = vader.analyze_sync(text)
    assert s.label == "negative" and s.compound > -0.5


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Can you help me?", "neutral"),
        ("I need some help with my booking", "neutral"),
        ("Please help me choose a present", "neutral"),
        ("I'd really like a coffee", "positive"),
        ("Thanks for your help!", "positive"),
        ("That was really helpful", "positive"),
        ("The parcel came on time, great job", "positive"),
    ],
)
def test_requests_for_help_without_a_complaint_do_not_read_negative(vader, text, label):
    assert vader.analyze_sync(text).label == label


def test_a_zero_valence_takes_a_word_out_of_vaders_lexicon():
    plain = VaderSentiment(lexicon={})
    assert plain.analyze_sync("Call me back PLEASE").label == "positive"  # VADER's "please" +1.3
    neutral = VaderSentiment(lexicon={"please": 0})
    # a word of valence 0 in the lexicon would read negative in capitals
    assert neutral.analyze_sync("Call me back PLEASE").compound == 0.0


def test_the_lexicon_can_be_replaced_or_extended():
    # VADER alone reads "I want a refund" as positive: its "want" is +0.3
    assert VaderSentiment(lexicon={}).analyze_sync("I want a refund").label == "positive"
    on_hold = VaderSentiment(lexicon={**SERVICE_LEXICON, "on hold": -1.3})
    assert on_hold.analyze_sync("I've been ON HOLD for an hour").label == "negative"
    assert on_hold.analyze_sync("I want a refund").label == "negative"


@pytest.mark.parametrize(
    "lexicon",
    [
        {"Refund": -1.2},
        {"money  back": -1.2},
        {"": -1.0},
        {"refund": -5.0},
        {"refund": float("nan")},
        {"refund": True},
        {"refund": "bad"},
        ["refund"],
    ],
)
def test_a_bad_lexicon_is_refused(lexicon):
    with pytest.raises(InputValidationError, match="lexicon"):
        VaderSentiment(lexicon=lexicon)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("That didn't help at all.", "negative"),
        ("This doesn't help me.", "negative"),
        ("You've been a big help.", "positive"),
        ("It's not just working, it's flying!", "neutral"),
        ("It's not so working out", "neutral"),
    ],
)
def test_help_that_is_no_request_and_not_just_keep_vaders_reading(vader, text, label):
    # "help" has no valence only where it asks for help; "not just" is no "not working"
    assert vader.analyze_sync(text).label == label
