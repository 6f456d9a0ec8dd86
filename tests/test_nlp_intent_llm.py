import json
from collections.abc import AsyncIterator, Sequence

import pytest

from avatarkit.errors import InputValidationError, ProviderError
from avatarkit.nlp.intent_file import OUT_OF_SCOPE
from avatarkit.nlp.intent_llm import LLMIntentClassifier, intent_schema, parse_reply
from avatarkit.nlp.intent_rule import RuleIntentClassifier
from avatarkit.ports import ChatCapabilities, ChatModel, IntentClassifier
from avatarkit.types import ChatMessage


class ScriptedChat:
    """A chat model answering from a list of replies and recording every request."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.calls: list[list[ChatMessage]] = []

    @property
    def capabilities(self) -> ChatCapabilities:
        return ChatCapabilities(streaming=True, json_schema=False, offline=True)

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        self.calls.append(list(messages))
        return self.replies.pop(0)

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        yield await self.complete(messages)


def reply(*pairs: tuple[str, float]) -> str:
    return json.dumps({"intents": [{"name": n, "confidence": c} for n, c in pairs]})


def test_scripted_chat_is_a_chat_model_and_classifier_is_an_intent_classifier():
    chat = ScriptedChat()
    assert isinstance(chat, ChatModel)
    assert isinstance(LLMIntentClassifier(chat), IntentClassifier)


async def test_prompt_holds_the_schema_and_the_allowed_intents():
    chat = ScriptedChat(reply(("greeting", 0.9)))
    clf = LLMIntentClassifier(chat)
    await clf.classify("hello")
    system, user = chat.calls[0]
    assert system.role == "system" and user.role == "user" and user.content == "hello"
    assert json.dumps(intent_schema(clf.names), separators=(",", ":")) in system.content
    for name in [*clf.names, OUT_OF_SCOPE]:
        assert f"- {name}:" in system.content
    assert "Examples:" in system.content


async def test_multi_intent_reply_gives_top_and_detected():
    chat = ScriptedChat(reply(("book_appointment", 0.8), ("thanks", 0.9), ("help", 0.1)))
    pred = await LLMIntentClassifier(chat).classify("thanks! and can I book a slot tomorrow?")
    assert pred.top == "thanks"
    assert pred.detected == ["thanks", "book_appointment"]
    assert [i.name for i in pred.intents[:3]] == ["thanks", "book_appointment", "help"]
    assert pred.backend == "llm"
    names = [i.name for i in pred.intents]
    assert sorted(names) == sorted({*names}) and OUT_OF_SCOPE in names


async def test_low_confidence_reply_is_out_of_scope():
    chat = ScriptedChat(reply(("small_talk", 0.3)))
    pred = await LLMIntentClassifier(chat, threshold=0.5).classify("what is a quasar")
    assert pred.top == OUT_OF_SCOPE and pred.detected == []
    assert pred.intents[0].name == OUT_OF_SCOPE and pred.intents[0].confidence == pytest.approx(0.7)


async def test_fenced_reply_amid_prose_is_parsed():
    text = "Sure! Here you go:\n```json\n" + reply(("deny", 0.95)) + "\n```\nHope it helps."
    pred = await LLMIntentClassifier(ScriptedChat(text)).classify("nope")
    assert pred.top == "deny"


async def test_invalid_reply_is_sent_back_once_with_the_error():
    chat = ScriptedChat(reply(("weather", 0.9)), reply(("affirm", 0.9)))
    pred = await LLMIntentClassifier(chat).classify("yes")
    assert pred.top == "affirm"
    assert len(chat.calls) == 2
    feedback = chat.calls[1][-1]
    assert feedback.role == "user" and "weather" in feedback.content
    assert chat.calls[1][-2].role == "assistant"


async def test_every_reply_invalid_raises_provider_error():
    chat = ScriptedChat("I think it's a greeting", "{not json}")
    with pytest.raises(ProviderError, match="no valid intent JSON after 2"):
        await LLMIntentClassifier(chat).classify("hi")


async def test_fallback_answers_when_replies_are_invalid():
    chat = ScriptedChat("no idea")
    clf = LLMIntentClassifier(chat, attempts=1, fallback=RuleIntentClassifier())
    pred = await clf.classify("goodbye")
    assert pred.top == "farewell" and pred.backend == "rules"
    assert len(chat.calls) == 1


async def test_too_long_text_is_rejected_before_calling_the_model():
    chat = ScriptedChat(reply(("greeting", 0.9)))
    with pytest.raises(InputValidationError, match="limit"):
        await LLMIntentClassifier(chat).classify("hi " * 5000)
    assert chat.calls == []


async def test_empty_text_does_not_call_the_model():
    chat = ScriptedChat()
    pred = await LLMIntentClassifier(chat).classify("  ")
    assert pred.top == OUT_OF_SCOPE and chat.calls == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        '{"intents": []}',
        '{"intents": [{"name": "greeting", "confidence": 1.5}]}',
        '{"intents": [{"name": "greeting"}]}',
        '{"intents": [{"name": "unknown", "confidence": 0.5}]}',
    ],
)
def test_parse_reply_rejects_schema_violations(text):
    with pytest.raises(ValueError):
        parse_reply(text, {"greeting", OUT_OF_SCOPE})


def test_bad_settings_are_rejected():
    with pytest.raises(InputValidationError):
        LLMIntentClassifier(ScriptedChat(), threshold=0)
    with pytest.raises(InputValidationError):
        LLMIntentClassifier(ScriptedChat(), attempts=0)


async def test_the_intent_files_exclude_patterns_overrule_the_model():
    # the shipped file rules greeting out of a question that only mentions a greeting word
    chat = ScriptedChat(reply(("greeting", 0.9), ("small_talk", 0.6)))
    pred = await LLMIntentClassifier(chat).classify("Who sings Hello?")
    assert pred.top == "small_talk" and pred.detected == ["small_talk"]
    assert next(i for i in pred.intents if i.name == "greeting").confidence == 0.0
    # and leaves a real greeting alone
    chat = ScriptedChat(reply(("greeting", 0.9)))
    assert (await LLMIntentClassifier(chat).classify("Hello there!")).top == "greeting"


async def test_a_clause_the_exclude_patterns_leave_alone_keeps_the_intent():
    # introducing yourself, then asking the avatar's name: the second clause is about the avatar
    chat = ScriptedChat(reply(("ask_about_avatar", 0.95)))
    pred = await LLMIntentClassifier(chat).classify("My name is Ana. What's your name?")
    assert pred.top == "ask_about_avatar"
    chat = ScriptedChat(reply(("greeting", 0.9)))
    assert (await LLMIntentClassifier(chat).classify("Is anyone there? Hello?")).top == "greeting"
