"""Intent handlers: your Python functions answer particular intents, like Rasa's custom actions.

A handler is any function, plain or ``async``, that takes the user's input and the conversation
state and returns the reply text, or ``None`` to let the chat model answer instead::

    def opening_hours(user: UserInput, state: DialogueState) -> str | None:
        return "We are open nine to five, Monday to Friday."

    manager = DialogueManager(chat, handlers={"opening_hours": opening_hours})

A handler may change ``state.slots`` and ``state.context``; the manager saves them with the turn.

:class:`SlotForm` is a ready-made handler that collects slots across turns (Rasa's forms): it
asks for each missing slot in turn, keeps the conversation on the form until every slot is
filled (or the user cancels), then calls your ``submit`` function.
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from avatarkit.errors import ConfigurationError
from avatarkit.types import DialogueState, UserInput

from .slot import already_past

__all__ = ["ACTIVE_FORM_KEY", "Handler", "SlotForm", "call_handler"]

Handler = Callable[[UserInput, DialogueState], str | Awaitable[str | None] | None]
"""``handler(user, state)`` returns the reply, or ``None`` to fall through to the chat model."""

ACTIVE_FORM_KEY = "active_form"
"""Key in ``DialogueState.context`` naming the form that is collecting slots, if any."""


async def call_handler(handler: Handler, user: UserInput, state: DialogueState) -> str | None:
    """Call a sync or async handler and return its reply (``None``: fall through).

    Raises:
        ConfigurationError: the handler returned something other than a string or ``None``.
    """
    result: Any = handler(user, state)
    if inspect.isawaitable(result):
        result = await result
    if result is not None and not isinstance(result, str):
        name = getattr(handler, "__name__", repr(handler))
        raise ConfigurationError(
            f"handler {name} must return a str or None, got {type(result).__name__}"
        )
    return result if result is None or result.strip() else None


SubmitFn = Callable[[UserInput, DialogueState], str | Awaitable[str]]


class SlotForm:
    """A handler that fills named slots across turns, then submits.

    Args:
        name: The form's name; also the intent it usually answers (``"book_appointment"``).
        slots: Slot name → the question that asks for it, in the order to ask them.
        submit: Called once every slot is filled: a function ``(user, state) -> str`` (sync or
            async), or a template string filled from the slots (``"Booked for {date} at {time}."``).
        cancel_words: Phrases that abandon the form.
        cancel_reply: What to say when the user cancels.
        clear_on_submit: Remove this form's slots from the state after submitting.
        past_reply: What to say when the form's ``date`` (at the ``time``, if any) has
            already passed (:func:`~avatarkit.dialogue.slot.already_past`); filled from the
            slots like ``submit``. The past date (or, for today, the time) is dropped and asked
            for again.

    Example::

        booking = SlotForm(
            "book_appointment",
            {"date": "Which day would suit you?", "time": "At what time?"},
            submit="Done: you are booked on {date} at {time}.",
        )
    """

    def __init__(
        self,
        name: str,
        slots: Mapping[str, str],
        submit: SubmitFn | str,
        *,
        cancel_words: Sequence[str] = ("cancel", "never mind", "nevermind", "forget it", "stop"),
        cancel_reply: str = "All right, I have cancelled that.",
        clear_on_submit: bool = True,
        past_reply: str = "That's already in the past, I'm afraid. When else would suit you?",
    ) -> None:
        if not name:
            raise ConfigurationError("a SlotForm needs a name")
        if not slots:
            raise ConfigurationError(f"SlotForm {name!r} needs at least one slot")
        self.name = name
        self.slots = dict(slots)
        self.submit = submit
        self.cancel_reply = cancel_reply
        self.clear_on_submit = clear_on_submit
        self.past_reply = past_reply
        words = "|".join(re.escape(w) for w in cancel_words)
        self._cancel = re.compile(rf"\b(?:{words})\b", re.IGNORECASE) if words else None
        self.__name__ = f"SlotForm[{name}]"

    def __repr__(self) -> str:
        return f"SlotForm({self.name!r}, slots={list(self.slots)})"

    def missing(self, state: DialogueState) -> list[str]:
        """The form's slots that ``state`` has not filled yet, in asking order."""
        return [s for s in self.slots if state.slots.get(s) in (None, "")]

    def is_active(self, state: DialogueState) -> bool:
        """Whether this form is collecting slots in ``state``."""
        return state.context.get(ACTIVE_FORM_KEY) == self.name

    async def __call__(
        self, user: UserInput, state: DialogueState, *, now: dt.datetime | None = None
    ) -> str | None:
        """Ask for the next missing slot, or submit when all are filled.

        A ``date`` slot (at its ``time``, when the form asks for one) already past ``now`` (the
        dialogue manager's clock; default: the local time) gets ``past_reply`` instead, never a
        booking.
        """
        if self._cancel is not None and self._cancel.search(user.text) and self.is_active(state):
            state.context.pop(ACTIVE_FORM_KEY, None)
            for slot in self.slots:
                state.slots.pop(slot, None)
            return self.cancel_reply
        when = now or dt.datetime.now().astimezone()
        # only the form's own slots: a time the extractors found is no part of a date-only form
        asked = {slot: state.slots[slot] for slot in self.slots if slot in state.slots}
        if "date" in self.slots and already_past(asked, when):
            state.context[ACTIVE_FORM_KEY] = self.name
            answer = self.past_reply.format_map(_Defaulting(state.slots))
            # a past day is asked for again; today's day stays when only its time has passed
            if already_past({"date": state.slots["date"]}, when):
                state.slots.pop("date", None)
            if "time" in self.slots:
                state.slots.pop("time", None)
            return answer
        missing = self.missing(state)
        if missing:
            state.context[ACTIVE_FORM_KEY] = self.name
            return self.slots[missing[0]]
        state.context.pop(ACTIVE_FORM_KEY, None)
        if isinstance(self.submit, str):
            reply: str = self.submit.format_map(_Defaulting(state.slots))
        else:
            result: Any = self.submit(user, state)
            if inspect.isawaitable(result):
                result = await result
            reply = str(result)
        if self.clear_on_submit:
            for slot in self.slots:
                state.slots.pop(slot, None)
        return reply


class _Defaulting(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
