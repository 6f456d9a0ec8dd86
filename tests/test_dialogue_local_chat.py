"""LocalChatModel: retrieval + templates over the persona and knowledge files; offline, stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from avatarkit.dialogue.local_chat import (
    DEFAULT_KNOWLEDGE,
    KnowledgeEntry,
    LocalChatModel,
    load_knowledge,
    make_chat,
)
from avatarkit.dialogue.manager import DialogueManager, Persona
from avatarkit.dialogue.script import write_script
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.ports import ChatModel
from avatarkit.registry import create
from avatarkit.types import ChatMessage, UserInput

ADA = Persona("Ada", backstory="I guide visitors through the computer museum.")


@pytest.fixture(scope="module")
def model() -> LocalChatModel:
    return LocalChatModel(ADA)


def ask(model: LocalChatModel, text: str) -> str:
    return model.reply([ChatMessage(role="user", content=text)])


# Common things people say to an avatar, with the entry that must answer them; several are
# phrased differently from every example question in the knowledge file.
CASES = [
    ("Hello!", "greeting"),
    ("hey there, good evening", "greeting"),
    ("Who are you?", "who_are_you"),
    ("Please tell me a bit about yourself", "who_are_you"),
    ("what should i call you", "who_are_you"),
    ("Thanks a lot!", "thanks"),
    ("thank you so much for your help", "thanks"),
    ("Goodbye, see you later", "farewell"),
    ("What can you do for me?", "help"),
    ("How are you today?", "how_are_you"),
    ("Are you a real person?", "are_you_human"),
    ("Tell me about your interests", "interests"),
    ("Tell me a joke please", "joke"),
    ("Who created you?", "creator"),
    ("This service is terrible", "complaint"),
    ("What is the capital of France?", "fallback"),
    ("Explain quantum chromodynamics", "fallback"),
    ("I want to buy a second-hand car", "fallback"),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_common_intents_are_answered_by_the_right_entry(
    model: LocalChatModel, text: str, expected: str
) -> None:
    entry, score = model.match(text)
    assert entry.id == expected, (text, entry.id, score)


def test_answers_use_the_persona(model: LocalChatModel) -> None:
    intro = ask(model, "Who are you?")
    assert intro == "Hi, I'm Ada. I guide visitors through the computer museum."
    assert "Ada" in ask(model, "Introduce yourself")


def test_greeting_plus_question_answers_the_question(model: LocalChatModel) -> None:
    assert ask(model, "Hi! Who are you?").startswith("Hi, I'm Ada.")


def test_users_name_is_used_once_known(model: LocalChatModel) -> None:
    assert ask(model, "My name is Grace") in (
        "[happy] Nice to meet you, Grace!",
        "[happy] Lovely to meet you, Grace.",
    )


def test_unknown_questions_get_a_polite_fallback(model: LocalChatModel) -> None:
    reply = ask(model, "What is the capital of France?")
    fallback = next(e for e in model.entries if e.id == "fallback")
    assert reply in fallback.answers


def test_same_conversation_same_answer_and_turns_vary_it(model: LocalChatModel) -> None:
    msgs = [ChatMessage(role="user", content="thanks")]
    assert model.reply(msgs) == model.reply(msgs)
    answers = {
        model.reply(
            [ChatMessage(role="user", content="x"), ChatMessage(role="assistant", content="y")] * n
            + [ChatMessage(role="user", content="thanks")]
        )
        for n in range(3)
    }
    assert len(answers) == 3  # three turns, three different thank-you answers


async def test_streams_the_same_text_it_completes(model: LocalChatModel) -> None:
    msgs = [ChatMessage(role="user", content="What can you do?")]
    pieces = [p async for p in model.stream(msgs)]
    assert len(pieces) > 5
    assert "".join(pieces) == await model.complete(msgs)
    assert isinstance(model, ChatModel) and model.capabilities.offline


def test_persona_is_read_from_a_system_prompt_when_not_given() -> None:
    model = LocalChatModel()
    system = Persona("Zed", backstory="I sell bicycles.").system_prompt()
    reply = model.reply(
        [
            ChatMessage(role="system", content=system),
            ChatMessage(role="user", content="who are you"),
        ]
    )
    assert reply == "Hi, I'm Zed. I sell bicycles."


def test_markdown_and_yaml_knowledge_files(tmp_path: Path) -> None:
    md = tmp_path / "shop.md"
    md.write_text(
        "# Shop FAQ\n\n## When are you open? | What are your opening hours?\n"
        "We are open from nine to five.\n\n## Where is the shop?\n"
        "On Main Street.\n---\nBy the station.\n"
    )
    yml = tmp_path / "extra.yaml"
    yml.write_text(
        '- id: parking\n  questions: ["Where can I park?"]\n  answers: Behind the shop.\n'
    )
    model = LocalChatModel(Persona("Ada", knowledge=md), knowledge=yml)
    assert ask(model, "what are the opening hours") == "We are open from nine to five."
    assert ask(model, "where's the shop?") in ("On Main Street.", "By the station.")
    assert ask(model, "where do I park my car") == "Behind the shop."
    assert ask(model, "hello").startswith(("[happy] Hello", "[happy] Hi", "[happy] Hey"))


def test_a_persona_entry_replaces_the_built_in_one() -> None:
    own = KnowledgeEntry("who_are_you", ("who are you",), ("I am the museum's guide robot.",))
    model = LocalChatModel(ADA, knowledge=[own])
    assert ask(model, "Who are you?") == "I am the museum's guide robot."


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("k.yaml", "- questions: [hi]\n", "needs answers"),
        ("k.yaml", "just a string", "must be a list"),
        ("k.yaml", "- {questions: [hi], answers: [yo], emotion: giddy}", "has emotion 'giddy'"),
        ("k.md", "no headings here", "no '## question' headings"),
        ("k.md", "## Question?\n\n", "has no answer"),
        ("k.txt", "## q\na", "must end in"),
    ],
)
def test_bad_knowledge_files_are_configuration_errors(
    tmp_path: Path, name: str, content: str, match: str
) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigurationError, match=match):
        load_knowledge(tmp_path / name)


def test_default_knowledge_file_ships_with_the_package() -> None:
    entries = load_knowledge(DEFAULT_KNOWLEDGE)
    ids = {e.id for e in entries}
    assert {"greeting", "farewell", "thanks", "who_are_you", "help", "fallback"} <= ids
    assert all(e.answers for e in entries)


def test_empty_or_missing_user_message_is_refused(model: LocalChatModel) -> None:
    with pytest.raises(InputValidationError):
        model.reply([ChatMessage(role="system", content="s")])
    with pytest.raises(InputValidationError):
        ask(model, "   ")


def test_factory_and_registry(tmp_path: Path) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text("## Do you sell tickets?\nYes, at the door.\n")
    assert ask(make_chat(str(faq)), "do you sell tickets") == "Yes, at the door."
    assert isinstance(create("chat", "local"), LocalChatModel)


async def test_introduce_yourself_script_with_the_local_model() -> None:
    text = await write_script("Introduce yourself", LocalChatModel(), ADA)
    assert text == "Hi, I'm Ada. I guide visitors through the computer museum."


async def test_an_entry_that_needs_the_users_name_waits_until_it_is_known() -> None:
    manager = DialogueManager(LocalChatModel(), persona=ADA)
    before = await manager.respond(UserInput(text="My name is"))
    fallback = next(e for e in LocalChatModel().entries if e.id == "fallback")
    assert before.text in fallback.answers  # not "Nice to meet you, !"
    named = await manager.respond(UserInput(text="Hello, my name is Grace"))
    assert "Grace" in named.text


async def test_asked_their_name_the_user_hears_it_once_known_and_honestly_before() -> None:
    manager = DialogueManager(LocalChatModel(), persona=ADA)
    for text in ("What's my name?", "Do you know my name?"):
        before = await manager.respond(UserInput(text=text))
        assert before.text == "You haven't told me your name yet."
    await manager.respond(UserInput(text="Hi, my name is Alice"))
    for text in (
        "What is my name?",
        "What's my name?",
        "Do you know my name?",
        "Ada, what's my name again?",
    ):
        assert (await manager.respond(UserInput(text=text))).text == "Your name is Alice."
    both = await manager.respond(UserInput(text="Hi! What's my name?"))
    assert both.text == "Hello! Your name is Alice."


@pytest.mark.parametrize(
    "text", ["What's a good name for my cat?", "What's my dog's name?", "What is your name?"]
)
async def test_questions_like_what_is_my_name_are_not_taken_for_it(text: str) -> None:
    manager = DialogueManager(LocalChatModel(), persona=ADA)
    await manager.respond(UserInput(text="Hi, my name is Alice"))
    reply = (await manager.respond(UserInput(text=text))).text
    assert "Your name is" not in reply and "your name yet" not in reply
    if text == "What is your name?":
        assert reply.startswith("Hi, I'm Ada.")


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("What's my dog's name?", "I'm afraid I don't know your dog's name."),
        (
            "Ada, do you remember my best friend's name?",
            "I'm afraid I don't know your best friend's name.",
        ),
        ("What is my cat called?", "I'm afraid I don't know what your cat is called."),
        ("How old am I?", "I'm afraid I don't know how old you are."),
        ("Where do I live?", "I'm afraid I don't know where you live."),
        ("Hi! What's my dog's name?", "Hello! I'm afraid I don't know your dog's name."),
    ],
)
async def test_other_questions_about_the_user_are_not_answered_about_the_avatar(
    text: str, reply: str
) -> None:
    # by similarity they matched "what's your name", "how old are you", "where do you live"
    manager = DialogueManager(LocalChatModel(), persona=ADA)
    await manager.respond(UserInput(text="my name is Alice"))
    assert (await manager.respond(UserInput(text=text))).text == reply


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("What's your dog's name?", "I'm a virtual avatar, so I don't have a dog of my own."),
        ("What's your mother's name?", "I'm a virtual avatar, so I don't have a mother of my own."),
        (
            "what is your company's name",
            "I'm a virtual avatar, so I don't have a company of my own.",
        ),
        ("What's the name of your owl?", "I'm a virtual avatar, so I don't have an owl of my own."),
        ("Ada, what is your cat called?", "I'm a virtual avatar, so I don't have a cat of my own."),
    ],
)
async def test_questions_about_the_avatars_things_are_not_answered_with_its_name(
    text: str, reply: str
) -> None:
    # by similarity they matched "what's your name": "Hi, I'm Ada", as if the dog were called Ada
    manager = DialogueManager(LocalChatModel(), persona=ADA)
    assert (await manager.respond(UserInput(text=text))).text == reply


async def test_a_persona_entry_about_its_things_still_answers_them(tmp_path: Path) -> None:
    faq = tmp_path / "faq.md"
    faq.write_text("## What's your company called? | Who do you work for?\nWe are Acme Bakery.\n")
    manager = DialogueManager(LocalChatModel(), persona=ADA.model_copy(update={"knowledge": faq}))
    assert (await manager.respond(UserInput(text="What's your company's name?"))).text == (
        "We are Acme Bakery."
    )
    own = await manager.respond(UserInput(text="What's your full name?"))
    assert own.text.startswith("Hi, I'm Ada.")


async def test_the_avatars_own_age_and_home_are_still_its_own() -> None:
    manager = DialogueManager(LocalChatModel(), persona=ADA)
    assert (
        "young as the software" in (await manager.respond(UserInput(text="How old are you?"))).text
    )
    assert (
        "wherever this program runs"
        in (await manager.respond(UserInput(text="Where do you live?"))).text
    )


async def test_the_users_name_is_remembered_beyond_the_history_sent() -> None:
    # only the last turn reaches the model; the name comes from the session's slots
    manager = DialogueManager(LocalChatModel(), persona=ADA, max_history_turns=1)
    await manager.respond(UserInput(text="Call me Alice"))
    await manager.respond(UserInput(text="How are you?"))
    await manager.respond(UserInput(text="Tell me a joke"))
    assert (await manager.respond(UserInput(text="What's my name?"))).text == "Your name is Alice."


@pytest.mark.parametrize(
    ("text", "name"),
    [("I'm Alice", "Alice"), ("I am Alice Smith", "Alice Smith"), ("This is Zoë", "Zoë"),
     ("Ada, I'm Alice", "Alice"), ("Hi! I'm Alice.", "Alice")],
)  # fmt: skip
async def test_the_user_introducing_themself_is_greeted_by_name(text: str, name: str) -> None:
    # "I'm Alice" shared too few words with "my name is" and fell back ("I don't have a good
    # answer to that one"); an intent label said the avatar's own introduction instead
    manager = DialogueManager(LocalChatModel(emotion_tags=False), persona=ADA)
    reply = (await manager.respond(UserInput(text=text))).text
    assert reply.removeprefix("Hello! ") in (
        f"Nice to meet you, {name}!",
        f"Lovely to meet you, {name}.",
    )
    assert (await manager.respond(UserInput(text="What's my name?"))).text == (
        f"Your name is {name}."
    )


@pytest.mark.parametrize("text", ["I'm tired", "I'm happy", "This is terrible"])
def test_what_only_looks_like_an_introduction_is_not_one(model: LocalChatModel, text: str) -> None:
    assert model.match(text)[0].id != "introduce_user"


async def test_local_model_in_a_manager_conversation() -> None:
    manager = DialogueManager(LocalChatModel(), persona=ADA)
    first = await manager.respond(UserInput(text="Hello, my name is Grace"))
    second = await manager.respond(UserInput(text="bye"))
    assert "Grace" in first.text
    assert second.handled_by == "LocalChatModel"
    assert len((await manager.load("default")).turns) == 2


async def test_a_bot_persona_with_knowledge_reaches_the_registry_local_model(
    tmp_path: Path,
) -> None:
    import avatarkit as ak

    faq = tmp_path / "faq.md"
    faq.write_text("## When are you open?\nFrom nine to five, every day.\n")
    persona = Persona("Ada", backstory="I run the bakery.", knowledge=faq)
    bot = ak.AvatarBot(
        chat="local",
        persona=persona,
        voice=None,
        renderer=None,
        preprocessor=None,
        intent=None,
        sentiment=None,
        expression=None,
    )
    hours = await bot.respond("when are you open?")
    who = await bot.respond("who are you?")
    assert hours.dialogue is not None and hours.dialogue.text == "From nine to five, every day."
    assert who.dialogue is not None and who.dialogue.text == "Hi, I'm Ada. I run the bakery."


def test_emotion_tags_lead_tagged_answers_and_can_be_turned_off() -> None:
    tagged = LocalChatModel(ADA)
    assert ask(tagged, "this is terrible, it doesn't work").startswith("[sad] I'm sorry")
    assert ask(tagged, "who are you").startswith("Hi, I'm Ada.")  # a neutral entry: no tag
    plain = LocalChatModel(ADA, emotion_tags=False)
    assert ask(plain, "this is terrible, it doesn't work").startswith("I'm sorry")


async def test_the_bot_turns_local_emotion_tags_into_expression_cues() -> None:
    import avatarkit as ak

    bot = ak.AvatarBot(
        chat="local",
        voice=None,
        renderer=None,
        preprocessor=None,
        intent=None,
        sentiment=None,
        expression=None,
    )
    reply = await bot.respond("Thanks a lot!")
    assert reply.dialogue is not None
    assert reply.dialogue.emotion_tags == ["happy"]
    assert not reply.dialogue.text.startswith("[")


def test_the_understanding_stages_intent_answers_what_no_question_matches(
    model: LocalChatModel,
) -> None:
    text = "Can you sort out a slot with the dentist?"  # shares no question's words
    assert model.match(text)[0].id == "fallback"
    plain = model.reply([ChatMessage(role="user", content=text)])
    hinted = model.reply([ChatMessage(role="user", content=text, intent="book_appointment")])
    assert plain != hinted and "Which day and time" in hinted
    # a question that does match wins over the intent label
    assert "Ada" in model.reply(
        [ChatMessage(role="user", content="Who are you?", intent="book_appointment")]
    )
    # an intent no entry claims falls back as before
    assert model.reply([ChatMessage(role="user", content=text, intent="order_pizza")]) == plain


def test_a_negative_message_that_matches_nothing_gets_sympathy(model: LocalChatModel) -> None:
    text = "Everything went wrong with my week"
    assert model.match(text)[0].id == "fallback"
    reply = model.reply([ChatMessage(role="user", content=text, sentiment="negative")])
    assert reply.startswith("[sad]") and "sorry" in reply.lower()
    neutral = model.reply([ChatMessage(role="user", content=text, sentiment="neutral")])
    assert "sorry" not in neutral.lower()


def test_answers_use_the_date_and_time_the_user_gave() -> None:
    model = LocalChatModel(ADA, emotion_tags=False)

    def booking(facts: str | None) -> str:
        system = ADA.system_prompt() + (
            f"\nWhat you know about the user so far: {facts}." if facts else ""
        )
        return model.reply(
            [ChatMessage(role="system", content=system),
             ChatMessage(role="user", content="I'd like to book an appointment")]
        )  # fmt: skip

    assert "Which day and time" in booking(None)
    both = booking("date: 2026-11-28; name: Grace; time: 15:00")
    assert both.startswith("Saturday, November 28 at 3 pm: I've made a note")
    assert booking("date: 2026-12-01").startswith("I've noted Tuesday, December 1. What time")
    assert booking("time: 09:30").startswith("I've noted 9:30 am. Which day")
    assert "noon" in booking("date: 2026-11-28; time: 12:00")


async def test_a_time_already_past_is_not_noted_but_said_to_have_passed() -> None:
    import datetime as dt

    now = [dt.datetime(2026, 11, 27, 21, 11)]  # a Friday evening
    model = LocalChatModel(ADA, emotion_tags=False)
    manager = DialogueManager(model, persona=ADA, clock=lambda: now[0])
    late = await manager.respond(UserInput(text="Book me in today at 3 pm", session_id="a"))
    assert late.text == "3 pm today has already passed, I'm afraid. When else would suit you?"
    ahead = await manager.respond(UserInput(text="Book me in today at 10 pm", session_id="b"))
    assert ahead.text.startswith("Friday, November 27 at 10 pm: I've made a note")
    # the next morning, the day before's booking has passed too
    now[0] = dt.datetime(2026, 11, 28, 9, 0)
    again = await manager.respond(UserInput(text="I'd like to book an appointment", session_id="b"))
    assert again.text.startswith("Friday, November 27 at 10 pm has already passed")


@pytest.mark.parametrize(
    "text",
    [
        "Book me in on 2026-12-01",
        "Book me in for 2026-12-01 at 09:30",
        "book me in tomorrow at 10:30",
        "Can you book me in on December 2nd at 3pm?",
    ],
)
def test_dates_and_times_do_not_make_a_message_unknown(model: LocalChatModel, text: str) -> None:
    # their words and numbers counted as words the knowledge never saw: it fell back
    assert model.match(text)[0].id == "appointment"


async def test_a_booking_with_an_iso_date_is_understood_without_an_intent_label() -> None:
    import datetime as dt

    clock = dt.datetime(2026, 11, 27, 10, 0)
    manager = DialogueManager(LocalChatModel(ADA, emotion_tags=False), clock=lambda: clock)
    reply = await manager.respond(UserInput(text="Book me in on 2026-12-01"))
    assert reply.text == "I've noted Tuesday, December 1. What time would suit you?"
    late = await manager.respond(UserInput(text="Book me in on 2026-11-20", session_id="b"))
    assert late.text.startswith("Friday, November 20 has already passed")
    fallback = next(e for e in LocalChatModel().entries if e.id == "fallback")
    for text in ("What happened in 1969?", "What is 12 times 12?"):  # numbers are no topic
        assert ask(LocalChatModel(ADA), text) in fallback.answers
    # numbers are known only to entries that say dates: "call me at ..." is no "call me Alice"
    await manager.respond(UserInput(text="I'm Alice", session_id="c"))
    for text in ("Call me at 555-1234", "call me tomorrow at 3pm"):
        reply = await manager.respond(UserInput(text=text, session_id="c"))
        assert "meet you" not in reply.text


async def test_a_manager_passes_intent_and_sentiment_to_the_local_model() -> None:
    from avatarkit.types import Intent, IntentPrediction, Sentiment

    manager = DialogueManager(LocalChatModel(ADA, emotion_tags=False), persona=ADA)
    booking = IntentPrediction(intents=[Intent(name="book_appointment", confidence=0.9)],
                               top="book_appointment")  # fmt: skip
    reply = await manager.respond(
        UserInput(text="Could you fit me in tomorrow at 3pm, please?"), intent=booking
    )
    assert "at 3 pm: I've made a note of that" in reply.text
    state = await manager.load("default")
    assert state.slots["time"] == "15:00"
    msgs = manager.messages(
        state, "hmm", intent=booking, sentiment=Sentiment(compound=-0.6, label="negative")
    )
    assert (msgs[-1].intent, msgs[-1].sentiment) == ("book_appointment", "negative")
    assert all(m.intent is None for m in msgs[:-1])
    unsure = IntentPrediction(intents=[Intent(name="help", confidence=0.1)], top="out_of_scope")
    assert manager.messages(state, "hmm", intent=unsure)[-1].intent is None
    guess = IntentPrediction(intents=[Intent(name="help", confidence=0.3)], top="help")
    assert manager.messages(state, "hmm", intent=guess)[-1].intent is None  # under 50 % sure


def test_knowledge_entries_declare_intents(tmp_path: Path) -> None:
    good = tmp_path / "k.yaml"
    good.write_text("- id: hours\n  intents: opening_hours\n  questions: [when do you open]\n"
                    "  answers: [At nine.]\n")  # fmt: skip
    entry = next(e for e in LocalChatModel(knowledge=good).entries if e.id == "hours")
    assert entry.intents == ("opening_hours",)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- id: hours\n  intents: {a: 1}\n  questions: [q]\n  answers: [a]\n")
    with pytest.raises(ConfigurationError, match="bad intents"):
        LocalChatModel(knowledge=bad)


async def test_a_name_in_any_script_is_heard_whole_and_said_back() -> None:
    manager = DialogueManager(LocalChatModel(), persona=ADA)
    hello = await manager.respond(UserInput(text="Hi, my name is Zoë"))
    assert "Zoë" in hello.text
    assert (await manager.respond(UserInput(text="What's my name?"))).text == "Your name is Zoë."
    other = DialogueManager(LocalChatModel(), persona=ADA)
    await other.respond(UserInput(text="Call me Ana-Lucía"))
    assert (await other.respond(UserInput(text="What's my name?"))).text == (
        "Your name is Ana-Lucía."
    )


async def test_asked_their_full_first_or_last_name_the_user_hears_the_name_given() -> None:
    manager = DialogueManager(LocalChatModel(), persona=ADA)
    await manager.respond(UserInput(text="My name is Grace Hopper"))
    for text in ("What's my full name?", "What is my last name?", "Do you know my first name?"):
        assert (await manager.respond(UserInput(text=text))).text == "Your name is Grace Hopper."
    dog = await manager.respond(UserInput(text="What's my dog's name?"))
    assert "dog" in dog.text and "Grace" not in dog.text
