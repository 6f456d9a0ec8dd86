"""Chat messages from a persona and a dialogue state, cut to a token budget.

The budget always keeps the system prompt (the persona) and the new user message; it then adds
whole past turns, newest first, while they fit. Tokens are estimated as characters / 4 unless a
real tokenizer is given (:func:`tokenizer_counter`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

from avatarkit.config import get_logger
from avatarkit.errors import InputValidationError
from avatarkit.types import ChatMessage, DialogueState

__all__ = [
    "MESSAGE_OVERHEAD_TOKENS",
    "TokenCounter",
    "build_messages",
    "count_message_tokens",
    "estimate_tokens",
    "tokenizer_counter",
]

_log = get_logger("avatarkit.dialogue.history")

TokenCounter = Callable[[str], int]
"""Returns the number of tokens a text takes."""

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens each message costs beyond its text (role and separators, as in OpenAI's formats)."""


def estimate_tokens(text: str) -> int:
    """Estimate tokens as one per four characters (rounded up), OpenAI's rule of thumb."""
    return math.ceil(len(text) / 4)


class _Encoder(Protocol):
    def encode(self, text: str) -> Sequence[int]: ...


def tokenizer_counter(tokenizer: _Encoder) -> TokenCounter:
    """A counter from any tokenizer with ``encode(text) -> ids`` (transformers, tiktoken)."""

    def count(text: str) -> int:
        return len(tokenizer.encode(text))

    return count


def count_message_tokens(
    messages: Sequence[ChatMessage], counter: TokenCounter = estimate_tokens
) -> int:
    """Total tokens of ``messages``, with :data:`MESSAGE_OVERHEAD_TOKENS` per message."""
    return sum(counter(m.content) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def build_messages(
    state: DialogueState,
    user_text: str,
    *,
    system: str | None = None,
    max_tokens: int | None = None,
    max_turns: int | None = None,
    counter: TokenCounter = estimate_tokens,
) -> list[ChatMessage]:
    """The messages for the chat model: system prompt, recent turns, then ``user_text``.

    Args:
        state: The conversation so far; its turns become user/assistant pairs, oldest first.
        user_text: The new user message (always kept).
        system: The system prompt (always kept), usually ``persona.system_prompt()``.
        max_tokens: Token budget for all messages; older turns are dropped, whole, until the
            rest fits. ``None``: no limit.
        max_turns: Keep at most this many past turns. ``None``: no limit.
        counter: Counts the tokens of a text.

    Returns:
        ``[system?, user, assistant, ..., user]``.

    Raises:
        InputValidationError: ``max_tokens`` or ``max_turns`` is negative.
    """
    if max_tokens is not None and max_tokens < 0:
        raise InputValidationError(f"max_tokens must be >= 0, got {max_tokens}", field="max_tokens")
    if max_turns is not None and max_turns < 0:
        raise InputValidationError(f"max_turns must be >= 0, got {max_turns}", field="max_turns")

    head = [ChatMessage(role="system", content=system)] if system else []
    tail = [ChatMessage(role="user", content=user_text)]
    turns = state.turns if max_turns is None else state.turns[len(state.turns) - max_turns :]

    budget: int | None = None
    if max_tokens is not None:
        needed = count_message_tokens(head + tail, counter)
        if needed > max_tokens:
            _log.warning(
                "the system prompt and the user message alone need %d tokens, over the budget "
                "of %d; sending them without history",
                needed,
                max_tokens,
            )
            return head + tail
        budget = max_tokens - needed

    kept: list[ChatMessage] = []
    for turn in reversed(turns):
        pair = [
            ChatMessage(role="user", content=turn.user),
            ChatMessage(role="assistant", content=turn.assistant),
        ]
        if budget is not None:
            cost = count_message_tokens(pair, counter)
            if cost > budget:
                break
            budget -= cost
        kept[:0] = pair
    return head + kept + tail
