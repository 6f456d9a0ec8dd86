"""The dialogue manager: persona, history and a chat model turn a user input into a reply."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from avatarkit.ports import ChatModel
from avatarkit.types import (
    ChatMessage,
    DialogueResponse,
    DialogueState,
    DialogueTurn,
    IntentPrediction,
    ProcessedText,
    Sentiment,
    UserInput,
)

__all__ = ["DialogueManager", "Handler", "Persona"]


@dataclass
class Persona:
    """Who the avatar is: the chat model's system prompt is built from this."""

    name: str = "Ava"
    backstory: str = "a friendly animated assistant made with avatarkit"
    style: str = "warm, concise, two or three short sentences"
    avatar_prompt: str = "a friendly person, portrait, looking at the camera"

    def system_prompt(self) -> str:
        """The system message for chat models."""
        return (
            f"You are {self.name}, {self.backstory}. You speak through an animated face, so "
            f"answer in plain spoken sentences (no markdown, no lists). Style: {self.style}."
        )


class Handler(Protocol):
    """An intent handler: returns the reply text, or None to let the chat model answer."""

    def __call__(self, user: UserInput, state: DialogueState) -> str | Awaitable[str | None] | None:
        """Answer ``user`` given the session ``state``; ``None`` lets the chat model answer."""
        ...


@dataclass
class DialogueManager:
    """Keeps per-session state and answers each input with a handler or the chat model."""

    chat: ChatModel
    persona: Persona = field(default_factory=Persona)
    handlers: Mapping[str, Callable[..., object]] = field(default_factory=dict)
    max_history_turns: int = 8
    _states: dict[str, DialogueState] = field(default_factory=dict, init=False, repr=False)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict, init=False, repr=False)

    async def load(self, session_id: str) -> DialogueState:
        """The state of ``session_id`` (a new one if unknown)."""
        return self._states.setdefault(session_id, DialogueState(session_id=session_id))

    def messages(self, state: DialogueState, text: str) -> list[ChatMessage]:
        """Chat messages for the model: persona, the latest turns, then the new input."""
        msgs = [ChatMessage(role="system", content=self.persona.system_prompt())]
        for turn in state.turns[-self.max_history_turns :]:
            msgs.append(ChatMessage(role="user", content=turn.user))
            msgs.append(ChatMessage(role="assistant", content=turn.assistant))
        msgs.append(ChatMessage(role="user", content=text))
        return msgs

    async def respond(
        self,
        user: UserInput,
        *,
        processed: ProcessedText | None = None,
        intent: IntentPrediction | None = None,
        sentiment: Sentiment | None = None,
    ) -> DialogueResponse:
        """Answer ``user`` and record the turn in its session's state."""
        lock = self._locks.setdefault(user.session_id, asyncio.Lock())
        async with lock:
            state = await self.load(user.session_id)
            top = intent.top if intent else None
            text: str | None = None
            handled_by = type(self.chat).__name__
            handler = self.handlers.get(top) if top else None
            if handler is not None:
                result = handler(user, state)
                text = await result if isinstance(result, Awaitable) else result  # type: ignore[assignment]
                handled_by = f"handler:{top}"
            if text is None:
                text = await self.chat.complete(self.messages(state, user.text))
                handled_by = type(self.chat).__name__
            self._append(state, user, text, intent, sentiment)
            return DialogueResponse(text=text.strip(), intent=top, handled_by=handled_by)

    async def handle(self, user: UserInput, intent: IntentPrediction | None) -> str | None:
        """The reply of the handler registered for ``intent``, or None when none answers."""
        handler = self.handlers.get(intent.top) if intent else None
        if handler is None:
            return None
        state = await self.load(user.session_id)
        result = handler(user, state)
        out = await result if isinstance(result, Awaitable) else result
        return out if isinstance(out, str) else None

    async def record(
        self,
        user: UserInput,
        text: str,
        *,
        intent: IntentPrediction | None = None,
        sentiment: Sentiment | None = None,
    ) -> None:
        """Add a turn whose reply was produced elsewhere (streaming: only what was delivered)."""
        async with self._locks.setdefault(user.session_id, asyncio.Lock()):
            self._append(await self.load(user.session_id), user, text, intent, sentiment)

    def _append(
        self,
        state: DialogueState,
        user: UserInput,
        text: str,
        intent: IntentPrediction | None,
        sentiment: Sentiment | None,
    ) -> None:
        state.turns.append(
            DialogueTurn(
                user=user.text,
                assistant=text,
                intent=intent.top if intent else None,
                emotion=sentiment.emotion if sentiment else None,
            )
        )
