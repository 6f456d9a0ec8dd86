"""DialogueManager, persona, history budget, slots, handlers and forms, write_script."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest

from avatarkit.dialogue.handler import SlotForm, call_handler
from avatarkit.dialogue.history import build_messages, estimate_tokens, tokenizer_counter
from avatarkit.dialogue.manager import DialogueManager, Persona
from avatarkit.dialogue.persona import PAST_NOTE
from avatarkit.dialogue.script import clean_script, write_script
from avatarkit.dialogue.slot import already_past, extract_slots
from avatarkit.dialogue.store import InMemoryStore, SQLiteStore
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.testing import FakeChatModel, FunctionChatModel
from avatarkit.types import (
    ChatMessage,
    DialogueState,
    DialogueTurn,
    Emotion,
    Intent,
    IntentPrediction,
    Sentiment,
    UserInput,
)

NOW = dt.datetime(2026, 11, 27, 10, 0)  # a Friday


def intent(name: str) -> IntentPrediction:
    return IntentPrediction(intents=[Intent(name=name, confidence=0.9)], top=name, detected=[name])


def user(text: str, session: str = "s") -> UserInput:
    return UserInput(text=text, session_id=session)


# --------------------------------------------------------------------------- persona


def test_persona_from_yaml_resolves_the_knowledge_path(tmp_path: Path) -> None:
    (tmp_path / "faq.md").write_text("## When are you open?\nNine to five.\n")
    (tmp_path / "ada.yaml").write_text(
        "name: Ada\nbackstory: I guide visitors through the computer museum.\n"
        "style: warm and curious\nknowledge: faq.md\nemotion_tags: true\n"
    )
    persona = Persona.from_yaml(tmp_path / "ada.yaml")
    assert persona.name == "Ada" and persona.knowledge == (tmp_path / "faq.md").resolve()
    prompt = persona.system_prompt()
    assert prompt.startswith("You are Ada,")
    assert "computer museum" in prompt and "warm and curious" in prompt and "[happy]" in prompt


@pytest.mark.parametrize(
    "content, match",
    [("name: [unclosed", "not valid YAML"), ("- a list", "mapping"), ("nmae: Ada", "invalid")],
)
def test_bad_persona_files_are_configuration_errors(
    tmp_path: Path, content: str, match: str
) -> None:
    (tmp_path / "p.yaml").write_text(content)
    with pytest.raises(ConfigurationError, match=match):
        Persona.from_yaml(tmp_path / "p.yaml")
    with pytest.raises(ConfigurationError, match="does not exist"):
        Persona.from_yaml(tmp_path / "missing.yaml")


def test_persona_accepts_the_name_positionally() -> None:
    assert Persona("Bo").name == "Bo"


# --------------------------------------------------------------------------- history budget


def _history(n: int) -> DialogueState:
    return DialogueState(
        turns=[
            DialogueTurn(user=f"user message {i} " * 5, assistant=f"reply {i} " * 5)
            for i in range(n)
        ]
    )


def test_history_keeps_persona_and_latest_turns_within_budget() -> None:
    state = _history(20)
    msgs = build_messages(state, "newest question", system="SYSTEM " * 10, max_tokens=200)
    assert msgs[0].role == "system" and msgs[0].content.startswith("SYSTEM")
    assert msgs[-1] == ChatMessage(role="user", content="newest question")
    total = sum(estimate_tokens(m.content) + 4 for m in msgs)
    assert total <= 200
    kept = [m.content for m in msgs[1:-1]]
    assert kept, "some history fits"
    assert kept[-1] == state.turns[-1].assistant and kept[-2] == state.turns[-1].user
    assert len(kept) % 2 == 0  # whole turns only
    assert len(kept) < 40


def test_history_without_budget_keeps_all_and_max_turns_limits() -> None:
    state = _history(5)
    assert len(build_messages(state, "q", system="s")) == 1 + 10 + 1
    assert len(build_messages(state, "q", system="s", max_turns=2)) == 1 + 4 + 1
    assert len(build_messages(state, "q", system="s", max_turns=0)) == 2


def test_history_budget_too_small_still_keeps_persona_and_question() -> None:
    msgs = build_messages(
        _history(3), "question", system="a long system prompt " * 20, max_tokens=10
    )
    assert [m.role for m in msgs] == ["system", "user"]


def test_tokenizer_counter_uses_encode() -> None:
    class Words:
        def encode(self, text: str) -> list[int]:
            return [0] * len(text.split())

    count = tokenizer_counter(Words())
    assert count("one two three") == 3
    msgs = build_messages(_history(10), "q", max_tokens=60, counter=count)
    assert 2 < len(msgs) < 22


# --------------------------------------------------------------------------- slots


def test_slots_are_extracted_and_normalised() -> None:
    found = extract_slots("I'm Ada Lovelace, ada@Example.org, next Friday at 3:30 pm", now=NOW)
    assert found == {
        "email": "ada@example.org",
        "date": "2026-12-04",
        "time": "15:30",
        "name": "Ada Lovelace",
    }
    assert extract_slots("on March 3rd at noon", now=NOW) == {"date": "2027-03-03", "time": "12:00"}
    assert extract_slots("call me at +44 20 7946 0958 tomorrow", now=NOW) == {
        "phone": "+442079460958",
        "date": "2026-11-28",
    }
    assert extract_slots("I'm fine, I have 2 cats", now=NOW) == {}


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("Friday at 3pm", "2026-12-04"),  # 3 pm today has passed: the next Friday
        ("on Friday at 10 pm", "2026-11-27"),  # still ahead today
        ("Friday", "2026-11-27"),  # no time: today
        ("this Friday at 3pm", "2026-11-27"),  # "this" names today's
        ("next Friday at 10 pm", "2026-12-04"),
        ("Monday at 9am", "2026-11-30"),
    ],
)
def test_todays_weekday_at_a_time_already_past_means_next_week(text: str, date: str) -> None:
    evening = dt.datetime(2026, 11, 27, 21, 11)  # a Friday, after 3 pm
    assert extract_slots(text, now=evening)["date"] == date


EVENING = dt.datetime(2026, 11, 27, 21, 11)  # a Friday, after 3 pm


@pytest.mark.parametrize(
    ("slots", "past"),
    [
        ({"date": "2026-11-27", "time": "15:00"}, True),  # "today at 3 pm" said at 9 pm
        ({"date": "2026-11-27", "time": "21:11"}, True),  # this very minute
        ({"date": "2026-11-27", "time": "22:00"}, False),
        ({"date": "2026-11-27"}, False),  # today, no time: not past
        ({"date": "2026-11-26"}, True),
        ({"date": "2026-11-28", "time": "09:00"}, False),
        ({"time": "15:00"}, False),  # no day: cannot tell
        ({"date": "next friday", "time": "15:00"}, False),  # not ISO (a custom extractor's)
        ({"date": "2026-11-26", "time": "3pm"}, True),  # the day alone has passed
    ],
)
def test_already_past_compares_the_date_and_time_slots_with_now(
    slots: dict[str, str], past: bool
) -> None:
    assert already_past(slots, EVENING) is past
    aware = EVENING.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5)))  # the wall clock counts
    assert already_past(slots, aware) is past


def test_today_at_a_time_already_past_stays_today() -> None:
    # the user said "today": the day is kept, and the dialogue is told it has passed
    assert extract_slots("today at 3 pm", now=EVENING) == {"date": "2026-11-27", "time": "15:00"}


async def test_the_system_prompt_says_when_the_users_date_and_time_have_passed() -> None:
    now = [EVENING]
    manager = DialogueManager(FakeChatModel("ok"), clock=lambda: now[0])
    await manager.respond(user("today at 3 pm"))
    state = await manager.load("s")
    note = f"{PAST_NOTE} (it is now 2026-11-27 21:11)."
    assert manager.system_prompt(state).endswith(note)
    await manager.respond(user("at 10 pm then"))
    assert PAST_NOTE not in manager.system_prompt(await manager.load("s"))
    now[0] = dt.datetime(2026, 11, 27, 22, 30)  # later the same evening, still talking
    assert PAST_NOTE in manager.system_prompt(await manager.load("s"))


# --------------------------------------------------------------------------- handlers and forms


async def test_sync_and_async_handlers_and_fall_through() -> None:
    def hours(u: UserInput, state: DialogueState) -> str | None:
        return "We open at nine." if "open" in u.text else None

    async def complaint(u: UserInput, state: DialogueState) -> str:
        await asyncio.sleep(0)
        state.context["escalated"] = True
        return "I'm sorry, a human will call you back."

    chat = FakeChatModel("From the model.")
    manager = DialogueManager(chat, handlers={"hours": hours, "complaint": complaint})

    r1 = await manager.respond(user("when do you open?"), intent=intent("hours"))
    assert (r1.text, r1.handled_by, r1.intent) == ("We open at nine.", "handler:hours", "hours")
    r2 = await manager.respond(user("what time is it?"), intent=intent("hours"))  # returns None
    assert (r2.text, r2.handled_by) == ("From the model.", "FakeChatModel")
    r3 = await manager.respond(user("this is awful"), intent=intent("complaint"))
    assert r3.handled_by == "handler:complaint"
    state = await manager.load("s")
    assert state.context["escalated"] is True
    assert [t.intent for t in state.turns] == ["hours", "hours", "complaint"]
    assert len(chat.calls) == 1


async def test_a_handler_returning_a_non_string_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="must return a str or None"):
        await call_handler(lambda u, s: 42, user("x"), DialogueState())  # type: ignore[arg-type,return-value]


async def test_slot_form_collects_slots_across_turns_then_submits() -> None:
    submitted: list[dict[str, str]] = []

    async def submit(u: UserInput, state: DialogueState) -> str:
        submitted.append(dict(state.slots))
        return f"Booked for {state.slots['date']} at {state.slots['time']}."

    form = SlotForm("book", {"date": "Which day?", "time": "What time?"}, submit)
    chat = FakeChatModel("chat")
    manager = DialogueManager(chat, handlers={"book": form}, clock=lambda: NOW)

    assert (
        await manager.respond(user("I want to book"), intent=intent("book"))
    ).text == "Which day?"
    # The form stays active whatever the classifier thinks the next message is.
    r = await manager.respond(user("tomorrow please"), intent=intent("out_of_scope"))
    assert (r.text, r.handled_by) == ("What time?", "handler:book")
    r = await manager.respond(user("at 4pm"), intent=intent("small_talk"))
    assert r.text == "Booked for 2026-11-28 at 16:00."
    assert submitted == [{"date": "2026-11-28", "time": "16:00"}]
    state = await manager.load("s")
    assert "active_form" not in state.context and "date" not in state.slots
    # Afterwards the chat model answers again.
    assert (
        await manager.respond(user("thanks"), intent=intent("thanks"))
    ).handled_by == "FakeChatModel"


async def test_slot_form_skips_slots_given_up_front_and_can_be_cancelled() -> None:
    form = SlotForm("book", {"date": "Which day?", "time": "What time?"}, "Booked {date} {time}.")
    manager = DialogueManager(FakeChatModel("chat"), handlers={"book": form}, clock=lambda: NOW)
    r = await manager.respond(user("book me for Monday at 10:15"), intent=intent("book"))
    assert r.text == "Booked 2026-11-30 10:15."

    assert (await manager.respond(user("book again"), intent=intent("book"))).text == "Which day?"
    r = await manager.respond(user("never mind"), intent=intent("other"))
    assert r.text == "All right, I have cancelled that."
    assert (
        await manager.respond(user("hello"), intent=intent("greeting"))
    ).handled_by == "FakeChatModel"


async def test_slot_form_does_not_book_a_date_or_time_already_past() -> None:
    # the form booked them silently: only the chat model's system prompt was told
    form = SlotForm("book", {"date": "Which day?", "time": "What time?"}, "Booked {date} {time}.")
    manager = DialogueManager(FakeChatModel("chat"), handlers={"book": form}, clock=lambda: EVENING)
    past = "That's already in the past, I'm afraid. When else would suit you?"
    r = await manager.respond(user("Book me in on 2026-11-20 at 3 pm"), intent=intent("book"))
    assert (r.text, r.handled_by) == (past, "handler:book")
    state = await manager.load("s")
    assert state.context["active_form"] == "book" and "date" not in state.slots
    # today's date is kept when only its time has passed
    assert (await manager.respond(user("today at 3 pm"), intent=intent("other"))).text == past
    assert (await manager.load("s")).slots["date"] == "2026-11-27"
    r = await manager.respond(user("10 pm then"), intent=intent("other"))
    assert r.text == "Booked 2026-11-27 22:00."


async def test_slot_form_reads_an_iso_date_and_its_own_clock() -> None:
    form = SlotForm("book", {"date": "Which day?"}, "Booked {date}.", past_reply="Too late.")
    assert await form(user("x"), DialogueState(slots={"date": "2026-11-20"}), now=NOW) == (
        "Too late."
    )
    manager = DialogueManager(FakeChatModel("chat"), handlers={"book": form}, clock=lambda: NOW)
    r = await manager.respond(user("Book me in on 2026-12-02"), intent=intent("book"))
    assert r.text == "Booked 2026-12-02."


async def test_a_date_only_form_ignores_a_time_it_does_not_ask_for() -> None:
    # the time the default extractors filled made today past: past_reply for ever
    form = SlotForm("book", {"date": "Which day?"}, "Booked {date}.", past_reply="Too late.")
    ten = dt.datetime(2026, 11, 27, 10, 0)
    manager = DialogueManager(FakeChatModel("chat"), handlers={"book": form}, clock=lambda: ten)
    r = await manager.respond(user("today at 9am please"), intent=intent("book"))
    assert r.text == "Booked 2026-11-27."
    r = await manager.respond(user("Book me in yesterday, 2026-11-26"), intent=intent("book"))
    assert r.text == "Too late."


# --------------------------------------------------------------------------- the manager


async def test_chat_model_gets_persona_history_and_known_slots() -> None:
    seen: list[Sequence[ChatMessage]] = []

    def reply(messages: Sequence[ChatMessage]) -> str:
        seen.append(messages)
        return f"reply {len(seen)}"

    manager = DialogueManager(
        FunctionChatModel(reply),
        persona=Persona("Ada", backstory="I love maths."),
        clock=lambda: NOW,
    )
    await manager.respond(user("Hello, my name is Grace"))
    await manager.respond(
        user("What do you like?"), sentiment=Sentiment(compound=0.6, emotion=Emotion.HAPPY)
    )
    last = seen[-1]
    assert last[0].role == "system" and "You are Ada" in last[0].content
    assert "I love maths." in last[0].content and "name: Grace" in last[0].content
    assert [(m.role, m.content) for m in last[1:]] == [
        ("user", "Hello, my name is Grace"),
        ("assistant", "reply 1"),
        ("user", "What do you like?"),
    ]
    state = await manager.load("s")
    assert state.turns[-1].emotion is Emotion.HAPPY and state.slots == {"name": "Grace"}


async def test_sessions_are_isolated_under_concurrency(tmp_path: Path) -> None:
    async def slow_echo(messages: Sequence[ChatMessage]) -> str:
        await asyncio.sleep(0.01)
        return f"echo {messages[-1].content}"

    store = SQLiteStore(tmp_path / "c.sqlite")
    manager = DialogueManager(FunctionChatModel(slow_echo), store=store, slot_extractors={})

    async def talk(session: str) -> None:
        for i in range(4):
            await manager.respond(user(f"{session}-{i}", session))

    await asyncio.gather(*(talk(f"user{k}") for k in range(6)), talk("user0"))
    for k in range(6):
        turns = (await manager.load(f"user{k}")).turns
        assert all(t.user.startswith(f"user{k}-") for t in turns)
        assert len(turns) == (8 if k == 0 else 4)  # user0 talked twice at once; no turn lost
    await store.aclose()


async def test_handle_and_record_for_streaming_turns() -> None:
    form = SlotForm("book", {"date": "Which day?"}, "Booked {date}.")
    manager = DialogueManager(
        FakeChatModel("x"), handlers={"book": form}, store=InMemoryStore(), clock=lambda: NOW
    )
    assert await manager.handle(user("book"), intent("book")) == "Which day?"
    # The form's state was saved by handle(): it keeps asking until the slot is filled.
    assert await manager.handle(user("hello"), intent("greeting")) == "Which day?"
    assert await manager.handle(user("Monday"), None) == "Booked 2026-11-30."
    assert await manager.handle(user("hi"), intent("greeting")) is None
    await manager.record(
        user("hi there"), "Hello! (only what was heard)", intent=intent("greeting")
    )
    state = await manager.load("s")
    assert [t.assistant for t in state.turns] == ["Hello! (only what was heard)"]
    assert state.turns[0].intent == "greeting"


async def test_handle_returns_none_without_a_handler() -> None:
    manager = DialogueManager(FakeChatModel("x"))
    assert await manager.handle(user("hello"), intent("greeting")) is None
    assert (await manager.load("s")).turns == []


async def test_bad_input_is_refused_before_the_model_is_called() -> None:
    chat = FakeChatModel("x")
    manager = DialogueManager(chat)
    with pytest.raises(InputValidationError):
        await manager.respond(user("   "))
    with pytest.raises(InputValidationError):
        await manager.respond(UserInput(text="hi", session_id=""))
    assert chat.calls == []


async def test_stored_history_is_bounded_and_reset_forgets() -> None:
    manager = DialogueManager(FakeChatModel("ok"), max_stored_turns=3, slot_extractors={})
    for i in range(5):
        await manager.respond(user(f"m{i}"))
    assert [t.user for t in (await manager.load("s")).turns] == ["m2", "m3", "m4"]
    assert await manager.reset("s") is True
    assert (await manager.load("s")).turns == []


# --------------------------------------------------------------------------- script


async def test_write_script_asks_in_persona_and_cleans_the_answer() -> None:
    chat = FakeChatModel(
        '## My intro\n"**Hello!** *smiles warmly* I am Ada.\n'
        '- I guide visitors.\n- I love old computers."'
    )
    text = await write_script("Introduce yourself", chat, Persona("Ada"), max_words=50)
    assert text == "Hello! I am Ada. I guide visitors. I love old computers."
    [messages] = chat.calls
    assert messages[0].role == "system" and "You are Ada" in messages[0].content
    assert "at most 50 words" in messages[0].content
    assert messages[1] == ChatMessage(role="user", content="Introduce yourself")


def test_clean_script_cuts_at_a_sentence_within_the_word_limit() -> None:
    text = "One two three. Four five six seven. Eight nine ten eleven twelve."
    assert clean_script(text, max_words=8) == "One two three. Four five six seven."
    assert clean_script("Script: [happy] Hi there.") == "[happy] Hi there."


async def test_write_script_drops_a_sentence_the_model_did_not_finish() -> None:
    # a model that hits its token limit stops mid-sentence
    chat = FakeChatModel("I'm Ava, a virtual guide. I'm here to help you. I'm ready to")
    text = await write_script("Introduce yourself", chat)
    assert text == "I'm Ava, a virtual guide. I'm here to help you."


def test_clean_script_keeps_finished_sentences_and_a_lone_fragment() -> None:
    assert clean_script("Hello there! How are you") == "Hello there!"
    assert clean_script("Nice to meet you!” I said. See you") == "Nice to meet you!” I said."
    assert clean_script("Hi, I'm Ava") == "Hi, I'm Ava"  # nothing complete before it: kept
    for finished in (
        "Hello there. Nice to meet you! [happy]",  # an emotion tag after the last sentence
        'Hello there. She said "see you soon."',
        "Hello there. Really?!",
        "Hello there. Bye…",
        "Hello there. See you soon 👋",
    ):
        assert clean_script(finished) == finished
    # the fragment goes before the word limit counts
    assert clean_script("One two. Three four. Five six seven", max_words=3) == "One two."


async def test_write_script_refuses_bad_prompts_before_calling() -> None:
    chat = FakeChatModel("x")
    for bad in ["", "  ", "x" * 5000]:
        with pytest.raises(InputValidationError):
            await write_script(bad, chat)
    assert chat.calls == []


async def test_amend_last_cuts_the_reply_to_what_was_heard() -> None:
    from avatarkit.dialogue.manager import DialogueManager
    from avatarkit.testing import FakeChatModel
    from avatarkit.types import UserInput

    manager = DialogueManager(chat=FakeChatModel("One two three. Four five six."))
    user = UserInput(text="count please", session_id="s1")
    await manager.respond(user)
    assert await manager.amend_last(user, "One two three.")
    state = await manager.load("s1")
    assert state.turns[-1].assistant == "One two three."
    other = UserInput(text="something else", session_id="s1")
    assert not await manager.amend_last(other, "nothing")  # only the turn that answers this input


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("Book me in tonight at midnight", "2026-11-28"),
        ("at midnight tonight please", "2026-11-28"),
        ("Friday at midnight", "2026-11-28"),  # said on a Friday evening: tonight, not next week
        ("tomorrow at midnight", "2026-11-29"),
        ("today at 3 pm", "2026-11-27"),  # a time that is not midnight keeps its day
    ],
)
def test_midnight_ends_the_day_it_is_named_with(text: str, date: str) -> None:
    from avatarkit.dialogue.slot import already_past, extract_slots

    friday_evening = dt.datetime(2026, 11, 27, 21, 0)
    slots = extract_slots(text, now=friday_evening)
    assert slots["date"] == date
    assert already_past(slots, friday_evening) == (date == "2026-11-27")


@pytest.mark.parametrize(
    ("text", "name"),
    [("my name is Zoë", "Zoë"), ("My name is José María", "José María"),
     ("call me Émile", "Émile"), ("I am Chloé", "Chloé"), ("I'm tired. I'm Ana", "Ana"),
     ("I'm tired", None), ("my name is Ana and I like cats", "Ana")],
)  # fmt: skip
def test_names_are_read_in_any_script(text: str, name: str | None) -> None:
    from avatarkit.dialogue.slot import extract_name

    assert extract_name(text, dt.datetime(2026, 1, 1)) == name


@pytest.mark.parametrize(
    ("text", "name"),
    [("This is Unacceptable!", None), ("I'm Furious!", None), ("This is Ridiculous.", None),
     ("I'm Leaving", None), ("I'm Off", None), ("I'm Stuck", None),
     ("I'm Alice", "Alice"), ("This is Alice", "Alice"), ("I'm Zoë", "Zoë"), ("I'm Rob", "Rob"),
     ("Hi, I'm Alice!", "Alice")],
)  # fmt: skip
def test_a_complaint_or_goodbye_is_no_name(text: str, name: str | None) -> None:
    from avatarkit.dialogue.slot import extract_name

    assert extract_name(text, dt.datetime(2026, 1, 1)) == name
