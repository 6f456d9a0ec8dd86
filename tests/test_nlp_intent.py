import pytest

from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.nlp.intent import decide, make_intent, split_clauses
from avatarkit.nlp.intent_file import OUT_OF_SCOPE, IntentFile, IntentSpec, load_intents
from avatarkit.nlp.intent_llm import LLMIntentClassifier
from avatarkit.nlp.intent_rule import RuleIntentClassifier
from avatarkit.nlp.intent_tfidf import TfidfIntentClassifier, training_pairs
from avatarkit.nlp.preprocess import LocalPreprocessor, make_preprocessor
from avatarkit.nlp.sentiment import VaderSentiment, make_sentiment
from avatarkit.ports import IntentClassifier

REQUIRED = {
    "greeting",
    "farewell",
    "thanks",
    "ask_about_avatar",
    "small_talk",
    "book_appointment",
    "support_question",
    "complaint",
    "help",
    "affirm",
    "deny",
}


@pytest.fixture(scope="module")
def tfidf() -> TfidfIntentClassifier:
    return TfidfIntentClassifier()


@pytest.fixture(scope="module")
def rules() -> RuleIntentClassifier:
    return RuleIntentClassifier()


# ------------------------------------------------------------------ intent file


def test_default_file_covers_the_bot_intents_with_examples():
    f = load_intents()
    assert set(f.names) >= REQUIRED
    assert OUT_OF_SCOPE not in f.names and f.out_of_scope_examples
    for name in REQUIRED:
        spec = f.get(name)
        assert len(spec.examples) >= 15 and spec.description
        assert spec.keywords or spec.patterns


def test_yaml_file_round_trip(tmp_path):
    path = tmp_path / "intents.yaml"
    path.write_text(
        "intents:\n"
        "  order_pizza:\n"
        "    description: wants pizza\n"
        "    keywords: [pizza]\n"
        "    examples: [a large pizza please, I want a margherita]\n"
        "  weather:\n"
        "    patterns: ['\\bweather\\b']\n"
        "    examples: [is it raining, will it be sunny]\n"
    )
    f = load_intents(path)
    assert f.names == ["order_pizza", "weather"]
    assert f.get("weather").patterns == (r"\bweather\b",)


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("intents:\n  a:\n    patterns: ['(unclosed']\n", "bad regex"),
        ("intents:\n  Bad Name:\n    examples: [x]\n", "must match"),
        ("intents:\n  affirm:\n    examples: [yes]\n", "quote them"),
        ("intents:\n  out_of_scope:\n    keywords: [x]\n", "examples only"),
        ("intents:\n  out_of_scope:\n    examples: [x]\n", "no intent besides"),
        ("intents: [1, 2", "not valid YAML"),
        ("- just a list\n", "top level must be a mapping"),
    ],
)
def test_invalid_files_raise_configuration_errors(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigurationError, match=message):
        load_intents(path)


def test_duplicate_names_and_missing_files_are_rejected(tmp_path):
    with pytest.raises(ConfigurationError, match="repeated: a"):
        load_intents({"intents": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_intents(tmp_path / "nope.yaml")


# ------------------------------------------------------------------ shared decisions


def test_split_clauses_at_punctuation_and_conjunctions():
    assert split_clauses("thanks! and can I book a slot tomorrow?") == [
        "thanks!",
        "can I book a slot tomorrow?",
    ]
    assert split_clauses("hi, who are you") == ["hi", "who are you"]
    assert split_clauses("book it but not on Friday") == ["book it", "not on Friday"]
    assert split_clauses("hello") == ["hello"]
    assert split_clauses("?!") == ["?!"]


def test_decide_falls_back_to_out_of_scope_below_threshold():
    pred = decide(["a", "b"], {"a": 0.3, "b": 0.2}, [], threshold=0.5, backend="x")
    assert pred.top == OUT_OF_SCOPE and pred.detected == []
    assert pred.intents[0].name == OUT_OF_SCOPE and pred.intents[0].confidence == 0.7
    assert [i.name for i in pred.intents[1:]] == ["a", "b"]


def test_decide_reports_one_intent_per_clause_in_text_order():
    pred = decide(
        ["a", "b", "c"],
        {"a": 0.2, "b": 0.7, "c": 0.1},
        [{"a": 0.9, "b": 0.05}, {"b": 0.8, "a": 0.1}],
        threshold=0.5,
        backend="x",
    )
    assert pred.top == "b" and pred.detected == ["a", "b"]
    assert pred.intents[0].name in {"a", "b"} and pred.confidence == 0.9


def test_decide_respects_a_trained_out_of_scope_class():
    pred = decide(["a"], {"a": 0.55, OUT_OF_SCOPE: 0.6}, [], threshold=0.5, backend="x")
    assert pred.top == OUT_OF_SCOPE


# ------------------------------------------------------------------ rules


def test_rules_match_keywords_by_stem_and_patterns(rules):
    assert rules.classify_sync("any chance of booking for Friday?").top == "book_appointment"
    assert rules.classify_sync("Who are you?").top == "ask_about_avatar"
    assert rules.classify_sync("nope").top == "deny"


def test_rules_answer_out_of_scope_without_evidence(rules):
    pred = rules.classify_sync("the mitochondria is the powerhouse of the cell")
    assert pred.top == OUT_OF_SCOPE and pred.detected == []


def test_rules_combine_evidence_as_noisy_or():
    spec = IntentSpec(name="pay", keywords=("invoice",), patterns=(r"\bpay\b",))
    clf = RuleIntentClassifier(IntentFile(intents=(spec,)), multi_intent=False)
    assert clf.classify_sync("pay").confidence == pytest.approx(0.75)
    assert clf.classify_sync("invoice").confidence == pytest.approx(0.5)
    assert clf.classify_sync("pay the invoices").confidence == pytest.approx(0.875)


# ------------------------------------------------------------------ tf-idf


def test_classifiers_satisfy_the_port(tfidf, rules):
    assert isinstance(tfidf, IntentClassifier) and isinstance(rules, IntentClassifier)


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("hey there, good evening", "greeting"),
        ("ok I am heading off now, bye", "farewell"),
        ("thank you so much for your help today", "thanks"),
        ("what is your name and who made you", "ask_about_avatar"),
        ("can I book an appointment for next Monday", "book_appointment"),
        ("how do I reset the password of my account", "support_question"),
        ("this service is terrible and unacceptable", "complaint"),
        ("yes, that is correct", "affirm"),
        ("no, I don't think so", "deny"),
        ("what is the tallest building in the world", OUT_OF_SCOPE),
    ],
)
def test_tfidf_classifies_unseen_utterances(tfidf, text, intent):
    assert tfidf.classify_sync(text).top == intent


THIRD_PARTY_QUESTIONS = [
    "Who wrote Hamlet?",
    "Who directed Jaws?",
    "Who discovered penicillin?",
    "Who built the pyramids?",
    "Who made the first computer?",
    "Who designed the Eiffel Tower?",
    "Who created Mickey Mouse?",
    "Who is Taylor Swift?",
]


@pytest.mark.parametrize("text", THIRD_PARTY_QUESTIONS)
def test_tfidf_does_not_take_questions_about_third_parties_for_questions_about_itself(tfidf, text):
    # "who" starts most questions about the avatar, but "Who wrote Hamlet?" is not one of them
    assert tfidf.classify_sync(text).top == OUT_OF_SCOPE


def test_the_questions_these_tests_ask_are_not_training_examples():
    def norm(text: str) -> str:
        return " ".join(text.lower().strip("?!. ").split())

    train = {norm(t) for t in training_pairs(load_intents())[0]}
    asked = [
        *THIRD_PARTY_QUESTIONS,
        *QUESTIONS_ABOUT_THE_USER,
        *QUESTIONS_ABOUT_THE_AVATARS_THINGS,
        *SELF_INTRODUCTIONS,
        *GREETING_WORDS_IN_QUESTIONS,
        *WORD_QUESTIONS,
    ]
    assert not {norm(t) for t in asked} & train


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Who are you?", "ask_about_avatar"),
        ("Who made you?", "ask_about_avatar"),
        ("Who created you?", "ask_about_avatar"),
        ("Who built you?", "ask_about_avatar"),
        ("Who designed you?", "ask_about_avatar"),
        ("Who is your creator?", "ask_about_avatar"),
        ("What can you do?", "help"),
    ],
)
def test_tfidf_still_knows_questions_about_the_avatar(tfidf, text, intent):
    assert tfidf.classify_sync(text).top == intent


# Questions about the user themself are not questions about the avatar, and no shipped intent
# is about the user: a handler registered for ask_about_avatar must not answer "What's my
# name?" with the avatar's introduction.
QUESTIONS_ABOUT_THE_USER = [
    "What's my name?",
    "What is my name?",
    "Do you know my name?",
    "What's my dog's name?",
    "What’s my dog’s  name?",
    "Do you remember what I'm called?",
    "How old am I?",
]


@pytest.mark.parametrize("backend", ["tfidf", "rules"])
@pytest.mark.parametrize("text", QUESTIONS_ABOUT_THE_USER)
def test_questions_about_the_user_are_not_about_the_avatar(request, backend, text):
    pred = request.getfixturevalue(backend).classify_sync(text)
    assert "ask_about_avatar" not in (pred.top, *pred.detected)
    if "name" in text:  # no intent of the set is about the user: out of scope
        assert pred.top == OUT_OF_SCOPE


@pytest.mark.parametrize("backend", ["tfidf", "rules"])
@pytest.mark.parametrize(
    "text", ["What's your name?", "What is your name?", "Could you tell me your name?"]
)
def test_the_avatars_name_is_still_asked_about_the_avatar(request, backend, text):
    assert request.getfixturevalue(backend).classify_sync(text).top == "ask_about_avatar"


# Questions about something of the avatar's are not questions about the avatar's own name: its
# introduction would claim the dog's name was its own.
QUESTIONS_ABOUT_THE_AVATARS_THINGS = [
    "What's your dog's name?",
    "What's your mother's name?",
    "what is your company's name",
    "What’s your best friend’s name?",
    "What is the name of your cat?",
    "What is your horse called?",
]


@pytest.mark.parametrize("backend", ["tfidf", "rules"])
@pytest.mark.parametrize("text", QUESTIONS_ABOUT_THE_AVATARS_THINGS)
def test_questions_about_the_avatars_things_are_not_about_its_name(request, backend, text):
    pred = request.getfixturevalue(backend).classify_sync(text)
    assert "ask_about_avatar" not in (pred.top, *pred.detected)


@pytest.mark.parametrize(
    "text", ["What's your full name?", "What is your real name?", "What's your creator's name?"]
)
def test_the_avatars_own_name_and_origin_are_still_about_the_avatar(tfidf, text):
    assert tfidf.classify_sync(text).top == "ask_about_avatar"


# The user introducing themself asks nothing about the avatar (MiniLM took "I'm Alice" for
# ask_about_avatar) nor complains ("This is Alice" is not "this is terrible"): no shipped intent
# is an introduction, so every backend calls it out of scope, as the rules always did.
SELF_INTRODUCTIONS = [
    "I'm Alice",
    "I am Alice",
    "i'm alice",
    "I'm Alice Smith",
    "Call me Alice",
    "This is Alice",
    "I'm Zoë",
]


@pytest.mark.parametrize("backend", ["tfidf", "rules"])
@pytest.mark.parametrize("text", SELF_INTRODUCTIONS)
def test_the_user_introducing_themself_is_no_intent_of_the_set(request, backend, text):
    pred = request.getfixturevalue(backend).classify_sync(text)
    assert pred.top == OUT_OF_SCOPE and pred.detected == []


@pytest.mark.parametrize(
    ("text", "detected"),
    [
        ("Hi, I'm Alice", ["greeting"]),
        ("This is terrible", ["complaint"]),
        ("I'm really disappointed", ["complaint"]),
        ("Who are you?", ["ask_about_avatar"]),
    ],
)
def test_what_looks_like_an_introduction_keeps_its_intent(tfidf, text, detected):
    assert tfidf.classify_sync(text).detected == detected


def test_who_am_i_talking_to_is_still_about_the_avatar(tfidf):
    assert tfidf.classify_sync("Who am I talking to?").top == "ask_about_avatar"


# "hello" is a greeting where it opens what is said, not inside a question about a song or a word
GREETING_WORDS_IN_QUESTIONS = [
    "Who sings Hello?",
    "When did Adele release Hello?",
    "How do you say hello in Japanese?",
    "What does hey mean in Swedish?",
    "Is howdy only said in Texas?",
]


@pytest.mark.parametrize("backend", ["tfidf", "rules"])
@pytest.mark.parametrize("text", GREETING_WORDS_IN_QUESTIONS)
def test_a_greeting_word_inside_a_question_is_no_greeting(request, backend, text):
    pred = request.getfixturevalue(backend).classify_sync(text)
    assert pred.top != "greeting" and "greeting" not in pred.detected
    if text == "Who sings Hello?":
        assert pred.top == OUT_OF_SCOPE


# Questions about a word (how to say, spell or translate it) are out of scope whatever the word:
# "hello", "goodbye" or "thank you" mentioned there greets, leaves or thanks nobody, and TF-IDF
# took "how do you say..." for small talk.
WORD_QUESTIONS = [
    "How do you say hi in German?",
    "How do you say hello in Japanese?",
    "how would you say good morning in Italian",
    "Translate good morning into Spanish",
    "How do you spell howdy?",
    "How do you pronounce hello in Mandarin?",
    "how do you say goodbye in Portuguese",
    "How do you say thank you in Korean?",
    "How do you say cat in Greek?",
]


@pytest.mark.parametrize("backend", ["tfidf", "rules"])
@pytest.mark.parametrize("text", WORD_QUESTIONS)
def test_a_question_about_a_word_is_out_of_scope(request, backend, text):
    pred = request.getfixturevalue(backend).classify_sync(text)
    assert pred.top == OUT_OF_SCOPE and pred.detected == []


@pytest.mark.parametrize("backend", ["tfidf", "rules"])
@pytest.mark.parametrize(
    ("text", "detected"),
    [
        ("I just wanted to say hi", ["greeting"]),
        ("Hello, how do you say cat in Greek?", ["greeting"]),
        ("Can I just say thank you so much", ["thanks"]),
        ("Goodbye, I have to go now", ["farewell"]),
    ],
)
def test_greetings_thanks_and_farewells_said_are_still_said(request, backend, text, detected):
    pred = request.getfixturevalue(backend).classify_sync(text)
    assert pred.detected == detected


def test_a_greeting_after_which_the_question_mentions_one_is_still_a_greeting(tfidf, rules):
    for classifier in (tfidf, rules):
        assert classifier.classify_sync("Hi! Who sings Hello?").detected == ["greeting"]


def test_exclude_patterns_rule_an_intent_out_for_every_scoring_backend(tfidf):
    spec = IntentSpec(name="pay", keywords=("invoice",), exclude=(r"\bno invoice\b",))
    clf = RuleIntentClassifier(IntentFile(intents=(spec,)))
    assert clf.classify_sync("the invoice").top == "pay"
    assert clf.classify_sync("I need no invoice").top == OUT_OF_SCOPE
    # a trained out_of_scope class takes the excluded intent's probability
    pred = tfidf.classify_sync("Who sings Hello?")
    assert pred.intents[0].name == OUT_OF_SCOPE and pred.intents[0].confidence > 0.5
    with pytest.raises(ConfigurationError, match="bad regex"):
        load_intents({"intents": {"pay": {"examples": ["x"], "exclude": ["(unclosed"]}}})
    with pytest.raises(ConfigurationError, match="exclude"):
        load_intents({"intents": {"a": {"examples": ["x"]}, "out_of_scope": {"exclude": ["x"]}}})


@pytest.mark.parametrize("backend", ["tfidf", "rules"])
@pytest.mark.parametrize(
    ("text", "detected"),
    [
        ("Hello?", ["greeting"]),
        ("hey", ["greeting"]),
        ("oh hello there!", ["greeting"]),
        ("Ada, hello!", ["greeting"]),
        ("Good evening, everyone", ["greeting"]),
        ("Hello, who are you?", ["greeting", "ask_about_avatar"]),
        ("Hi Ada, can I book a table for Friday?", ["greeting", "book_appointment"]),
    ],
)
def test_greetings_are_still_greetings(request, backend, text, detected):
    pred = request.getfixturevalue(backend).classify_sync(text)
    assert pred.detected == detected and pred.top in detected


async def test_tfidf_detects_several_intents(tfidf):
    text = LocalPreprocessor().preprocess_sync("thanks! and can I book a slot tomorrow?")
    pred = await tfidf.classify(text)
    assert pred.backend == "tfidf"
    assert pred.detected == ["thanks", "book_appointment"]
    assert pred.top in pred.detected


def test_tfidf_confidences_are_ranked_probabilities(tfidf):
    pred = tfidf.classify_sync("I want to schedule a meeting")
    confidences = [i.confidence for i in pred.intents]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)
    assert {i.name for i in pred.intents} == {*tfidf.names, OUT_OF_SCOPE}
    assert pred.top == "book_appointment" and pred.confidence >= tfidf.threshold


def test_tfidf_empty_text_is_out_of_scope(tfidf):
    pred = tfidf.classify_sync("   ")
    assert pred.top == OUT_OF_SCOPE and pred.confidence == 1.0


def test_tfidf_trains_from_a_custom_file():
    f = load_intents(
        {
            "intents": {
                "order_pizza": {"examples": ["a large pizza", "pizza with cheese", "margherita"]},
                "order_drink": {"examples": ["a cola", "some water", "a beer please"]},
            }
        }
    )
    clf = TfidfIntentClassifier(f, multi_intent=False)
    assert clf.classify_sync("one pizza with extra cheese").top == "order_pizza"
    assert clf.classify_sync("a cold beer").top == "order_drink"
    assert not clf.has_out_of_scope_class


def test_the_shipped_intents_can_be_extended_with_your_own():
    hours = IntentSpec(
        name="opening_hours",
        keywords=("opening hours", "closing time"),
        examples=(
            "what are your opening hours",
            "when are you open",
            "are you open on sunday",
            "what time do you close",
            "how late are you open today",
        ),
    )
    shipped = load_intents()
    extended = shipped.with_intents(hours)
    assert extended.names == [*shipped.names, "opening_hours"]
    assert extended.out_of_scope_examples == shipped.out_of_scope_examples
    clf = TfidfIntentClassifier(extended)
    assert clf.classify_sync("When are you open?").top == "opening_hours"
    assert clf.classify_sync("I'd like to book an appointment").top == "book_appointment"
    # a spec named like a shipped intent replaces it
    greeting = IntentSpec(name="greeting", examples=("ahoy",))
    assert shipped.with_intents(greeting).get("greeting").examples == ("ahoy",)
    assert len(shipped.with_intents(greeting).intents) == len(shipped.intents)


def test_tfidf_needs_examples_for_every_intent():
    f = IntentFile(intents=(IntentSpec(name="a", examples=("x",)), IntentSpec(name="b")))
    with pytest.raises(ConfigurationError, match="none for: b"):
        TfidfIntentClassifier(f)


def test_bad_threshold_and_input_are_rejected(tfidf):
    with pytest.raises(InputValidationError):
        TfidfIntentClassifier(threshold=1.5)
    with pytest.raises(InputValidationError):
        tfidf.classify_sync(3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ factories


def test_factories_build_the_named_backends():
    assert isinstance(make_intent(), TfidfIntentClassifier)
    assert isinstance(make_intent("rules", threshold=0.6), RuleIntentClassifier)
    assert isinstance(make_sentiment(), VaderSentiment)
    assert make_preprocessor("de").language == "de"
    assert make_preprocessor("local", lowercase=True).lowercase


def test_factory_errors_are_clear():
    with pytest.raises(ConfigurationError, match="Did you mean 'rules'"):
        make_intent("rulez")
    with pytest.raises(ConfigurationError, match="transformers:embedding"):
        make_intent("embedding")
    with pytest.raises(ConfigurationError, match="needs a chat model"):
        make_intent("llm")
    with pytest.raises(ConfigurationError, match="vader"):
        make_sentiment("vadr")


def test_llm_factory_wraps_the_given_chat():
    class Chat:
        pass

    clf = make_intent("llm", chat=Chat())
    assert isinstance(clf, LLMIntentClassifier) and isinstance(clf.chat, Chat)


# A capitalised complaint or goodbye introduces nobody: "This is Unacceptable!" was taken for
# the user saying their name, which ruled complaint out.
@pytest.mark.parametrize("backend", ["tfidf", "rules"])
@pytest.mark.parametrize(
    ("text", "intent"),
    [("This is Unacceptable!", "complaint"), ("This is Ridiculous.", "complaint"),
     ("It's Broken", "complaint"), ("I'm Leaving", "farewell")],
)  # fmt: skip
def test_a_capitalised_complaint_or_goodbye_is_no_introduction(request, backend, text, intent):
    classifier = request.getfixturevalue(backend)
    top = classifier.classify_sync(text).top
    assert top == classifier.classify_sync(text.lower()).top  # as if not capitalised
    assert top == intent or (backend == "rules" and top == OUT_OF_SCOPE)  # no rule: "leaving"
