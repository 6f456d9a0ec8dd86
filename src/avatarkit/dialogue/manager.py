"""The dialogue manager: persona, history, slots, handlers and a chat model answer each input.

One turn goes like this:

1. the session's :class:`~avatarkit.types.DialogueState` is loaded from the store;
2. slot extractors fill ``state.slots`` from the message (date, time, e-mail, phone, name);
3. a form that is still collecting slots gets the message; otherwise the handler registered
   for the classified intent does (your Python function, like a Rasa action);
4. if no handler answered (or it returned ``None``), the chat model writes the reply from the
   persona's system prompt and as much recent history as fits the token budget;
5. the turn is appended and the state saved.

Each session is processed one turn at a time (a lock per session); different sessions run
concurrently and never see each other's state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import weakref
from collections.abc import Callable, Mapping

from avatarkit.errors import InputValidationError
from avatarkit.ports import ChatModel, check_result, unwrap
from avatarkit.types import (
    OUT_OF_SCOPE,
    ChatMessage,
    DialogueResponse,
    DialogueState,
    DialogueTurn,
    IntentPrediction,
    ProcessedText,
    Sentiment,
    UserInput,
)

from .handler import ACTIVE_FORM_KEY, Handler, SlotForm, call_handler
from .history import TokenCounter, build_messages, estimate_tokens
from .local_chat import LocalChatModel
from .persona import PAST_NOTE, USER_FACTS, Persona
from .slot import DEFAULT_EXTRACTORS, SlotExtractor, already_past, extract_slots
from .store import DialogueStore, InMemoryStore, check_session_id

__all__ = ["DialogueManager", "Handler", "Persona", "SlotForm"]


HINT_CONFIDENCE = 0.5
"""Least confidence for an intent label to travel on the user's chat message. On the held-out
set (``benchmarks/dialogue_bench.py``), the labels below it would answer 12 more of 282
in-scope utterances from the right entry, and give 4 more of 26 out-of-scope questions a
topical answer instead of the polite fallback."""


class DialogueManager:
    """Keeps per-session state and answers each input with a handler or the chat model.

    Args:
        chat: Writes every reply no handler gives.
        persona: Who the avatar is; its system prompt leads every chat request.
        handlers: Intent name → handler ``(user, state) -> str | None`` (sync or async), or a
            :class:`~avatarkit.dialogue.handler.SlotForm`.
        max_history_turns: Past turns sent to the chat model at most.
        store: Where sessions live between turns (default: in memory). Use
            :class:`~avatarkit.dialogue.store.SQLiteStore` to survive restarts.
        max_history_tokens: Token budget of everything sent to the chat model; the persona and
            the new message are always kept, the oldest turns dropped first. ``None``: no limit.
        token_counter: Counts tokens for the budget (default: characters / 4).
        slot_extractors: Slot name → extractor run on every message; ``None`` gives
            :data:`~avatarkit.dialogue.slot.DEFAULT_EXTRACTORS`, ``{}`` turns extraction off.
        max_stored_turns: Turns kept in the stored state (oldest dropped). ``None``: all.
        clock: Returns "now" for relative dates ("tomorrow"); defaults to the local time.

    Example::

        manager = DialogueManager(
            LocalChatModel(),
            persona=Persona("Ada", backstory="I guide visitors through the museum."),
            store=SQLiteStore("conversations.db"),
            handlers={"opening_hours": lambda user, state: "We open at nine."},
        )
        reply = await manager.respond(UserInput(text="Hi!", session_id="visitor-1"))
    """

    def __init__(
        self,
        chat: ChatModel,
        persona: Persona | None = None,
        handlers: Mapping[str, Handler] | None = None,
        max_history_turns: int = 8,
        *,
        store: DialogueStore | None = None,
        max_history_tokens: int | None = None,
        token_counter: TokenCounter = estimate_tokens,
        slot_extractors: Mapping[str, SlotExtractor] | None = None,
        max_stored_turns: int | None = 500,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        if max_history_turns < 0:
            raise InputValidationError(
                f"max_history_turns must be >= 0, got {max_history_turns}",
                field="max_history_turns",
            )
        if max_stored_turns is not None and max_stored_turns < 1:
            raise InputValidationError(
                f"max_stored_turns must be >= 1, got {max_stored_turns}", field="max_stored_turns"
            )
        self.chat = chat
        self.persona = persona if persona is not None else Persona()
        local = getattr(chat, "inner", chat)  # the bot wraps backends in a concurrency limiter
        if isinstance(local, LocalChatModel) and local.persona is None:
            local.use_persona(self.persona)
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.max_history_turns = max_history_turns
        self.store: DialogueStore = store if store is not None else InMemoryStore()
        self.max_history_tokens = max_history_tokens
        self.token_counter = token_counter
        self.slot_extractors = DEFAULT_EXTRACTORS if slot_extractors is None else slot_extractors
        self.max_stored_turns = max_stored_turns
        self._clock = clock or (lambda: dt.datetime.now().astimezone())
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __repr__(self) -> str:
        return (
            f"DialogueManager(chat={type(self.chat).__name__}, persona={self.persona.name!r}, "
            f"handlers={sorted(self.handlers)}, store={self.store!r})"
        )

    # -- state ---------------------------------------------------------------------------------

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_id] = lock
        return lock

    async def load(self, session_id: str) -> DialogueState:
        """The state of ``session_id`` from the store (a new one if unknown)."""
        return await self.store.load(check_session_id(session_id))

    async def reset(self, session_id: str) -> bool:
        """Forget a session; return whether it existed."""
        async with self._lock(session_id):
            return await self.store.delete(check_session_id(session_id))

    def system_prompt(self, state: DialogueState | None = None) -> str:
        """The persona's system prompt, plus what the session knows about the user.

        When the date (and time) the user gave have already passed ("today at 3 pm" said at
        9 pm), a line says so, with the clock's time, so the reply can tell the user.
        """
        prompt = self.persona.system_prompt()
        if state is not None and state.slots:
            facts = "; ".join(f"{k}: {v}" for k, v in sorted(state.slots.items()))
            prompt += f"\n{USER_FACTS}: {facts}."
            now = self._clock()
            if already_past(state.slots, now):
                prompt += f"\n{PAST_NOTE} (it is now {now:%Y-%m-%d %H:%M})."
        return prompt

    def messages(
        self,
        state: DialogueState,
        text: str,
        *,
        intent: IntentPrediction | None = None,
        sentiment: Sentiment | None = None,
    ) -> list[ChatMessage]:
        """Chat messages for the model: persona, the latest turns that fit, then ``text``.

        The last (user) message carries ``sentiment``'s label, and ``intent``'s when the
        classifier is at least :data:`HINT_CONFIDENCE` sure, for local backends; remote
        adapters send only roles and contents.
        """
        messages = build_messages(
            state,
            text,
            system=self.system_prompt(state),
            max_tokens=self.max_history_tokens,
            max_turns=self.max_history_turns,
            counter=self.token_counter,
        )
        hints: dict[str, str] = {}
        if (
            intent is not None
            and intent.top != OUT_OF_SCOPE
            and intent.confidence >= HINT_CONFIDENCE
        ):
            hints["intent"] = intent.top
        if sentiment is not None:
            hints["sentiment"] = sentiment.label
        if hints:
            messages[-1] = messages[-1].model_copy(update=hints)
        return messages

    # -- turns ---------------------------------------------------------------------------------

    def _fill_slots(self, state: DialogueState, text: str, now: dt.datetime) -> None:
        if self.slot_extractors:
            state.slots.update(extract_slots(text, self.slot_extractors, now=now))

    def _handler_for(
        self, state: DialogueState, intent: IntentPrediction | None
    ) -> tuple[str, Handler] | None:
        active = state.context.get(ACTIVE_FORM_KEY)
        if isinstance(active, str) and active in self.handlers:
            return active, self.handlers[active]
        if intent is not None:
            for name in [intent.top, *intent.detected]:
                if name in self.handlers:
                    return name, self.handlers[name]
        return None

    async def _run_handlers(
        self, user: UserInput, state: DialogueState, intent: IntentPrediction | None
    ) -> tuple[str, str] | None:
        """Fill slots, then ask the active form or the intent's handler; (name, reply) or None."""
        now = self._clock()
        self._fill_slots(state, user.text, now)
        chosen = self._handler_for(state, intent)
        if chosen is None:
            return None
        name, handler = chosen
        if isinstance(handler, SlotForm):  # a form tells past dates by the manager's clock
            handler = functools.partial(handler, now=now)
        reply = await call_handler(handler, user, state)
        return None if reply is None else (name, reply)

    @staticmethod
    def _check(user: UserInput) -> None:
        if not isinstance(user, UserInput):
            raise InputValidationError(
                f"expected a UserInput, got {type(user).__name__}", field="user"
            )
        if not user.text.strip():
            raise InputValidationError("the user's text is empty", field="text")
        check_session_id(user.session_id)

    async def respond(
        self,
        user: UserInput,
        *,
        processed: ProcessedText | None = None,
        intent: IntentPrediction | None = None,
        sentiment: Sentiment | None = None,
    ) -> DialogueResponse:
        """Answer ``user`` and record the turn in its session's state.

        Raises:
            InputValidationError: the input is empty or its session id unusable.
            ConfigurationError: a handler returned something other than text or ``None``, or
                the chat model something other than text.
            ProviderError: the chat model failed (nothing is recorded then).
        """
        self._check(user)
        async with self._lock(user.session_id):
            state = await self.store.load(user.session_id)
            handled = await self._run_handlers(user, state, intent)
            if handled is not None:
                name, text = handled
                handled_by = f"handler:{name}"
            else:
                messages = self.messages(state, user.text, intent=intent, sentiment=sentiment)
                text = await self.chat.complete(messages)
                check_result("chat", "complete", unwrap(self.chat), text)
                handled_by = self.chat_name
            self._append(state, user, text, intent, sentiment)
            await self.store.save(state)
        return DialogueResponse(
            text=text.strip(), intent=intent.top if intent else None, handled_by=handled_by
        )

    @property
    def chat_name(self) -> str:
        """The chat model's class name, looking through avatarkit's wrappers (``handled_by``)."""
        return type(unwrap(self.chat)).__name__

    async def handle(self, user: UserInput, intent: IntentPrediction | None) -> str | None:
        """Fill slots and run the active form or the intent's handler, without the chat model.

        Returns the handler's reply, or ``None`` when no handler answers (then stream the chat
        model with :meth:`messages` and store the turn with :meth:`record`). Slot and context
        changes are saved either way.
        """
        handled = await self.dispatch(user, intent)
        return None if handled is None else handled[1]

    async def dispatch(
        self, user: UserInput, intent: IntentPrediction | None
    ) -> tuple[str, str] | None:
        """:meth:`handle`, returning ``(handled_by, reply)``: ``handled_by`` is ``handler:NAME``."""
        self._check(user)
        async with self._lock(user.session_id):
            state = await self.store.load(user.session_id)
            handled = await self._run_handlers(user, state, intent)
            await self.store.save(state)
        return None if handled is None else (f"handler:{handled[0]}", handled[1])

    async def record(
        self,
        user: UserInput,
        text: str,
        *,
        intent: IntentPrediction | None = None,
        sentiment: Sentiment | None = None,
    ) -> None:
        """Add a turn whose reply was produced elsewhere (streaming: only what was delivered)."""
        check_session_id(user.session_id)
        async with self._lock(user.session_id):
            state = await self.store.load(user.session_id)
            self._append(state, user, text, intent, sentiment)
            await self.store.save(state)

    async def amend_last(self, user: UserInput, heard: str) -> bool:
        """Cut the session's last reply back to what was heard (the user interrupted playback).

        Only the latest turn, and only if it answers ``user``'s text, is changed; returns whether
        it was.
        """
        check_session_id(user.session_id)
        async with self._lock(user.session_id):
            state = await self.store.load(user.session_id)
            last = state.turns[-1] if state.turns else None
            if last is None or last.user != user.text:
                return False
            last.assistant = heard.strip()
            await self.store.save(state)
            return True

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
                assistant=text.strip(),
                intent=intent.top if intent else None,
                emotion=sentiment.emotion if sentiment else None,
            )
        )
        if self.max_stored_turns is not None and len(state.turns) > self.max_stored_turns:
            del state.turns[: len(state.turns) - self.max_stored_turns]
