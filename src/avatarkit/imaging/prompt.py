"""The AUTOMATIC1111 web UI's prompt syntax: attention weights, ``BREAK`` and ``<lora:…>`` tags.

Pure Python; the diffusers backend turns the parsed segments into weighted prompt embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from avatarkit.errors import InputValidationError

__all__ = [
    "CHUNK_TOKENS",
    "ROUND_MULTIPLIER",
    "SQUARE_MULTIPLIER",
    "LoraRequest",
    "ParsedPrompt",
    "PromptSegment",
    "TokenChunk",
    "chunk_tokens",
    "parse_prompt",
    "parse_prompt_attention",
]

ROUND_MULTIPLIER = 1.1
"""``(text)`` multiplies the attention paid to ``text`` by this."""
SQUARE_MULTIPLIER = 1 / 1.1
"""``[text]`` multiplies the attention paid to ``text`` by this."""


class PromptSegment(NamedTuple):
    """A run of prompt text with one attention weight; compares equal to ``(text, weight)``."""

    text: str
    weight: float
    is_break: bool = False
    """``BREAK``: the text after it starts a new 75-token chunk (``text`` is ``"BREAK"``)."""


class LoraRequest(NamedTuple):
    """A ``<lora:name:weight>`` tag found in a prompt."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt in the web UI's syntax, parsed."""

    segments: list[PromptSegment]
    """Text runs with their weights, ``BREAK`` markers between chunks."""
    loras: list[LoraRequest] = field(default_factory=list)
    """LoRA tags, removed from the text, in order of appearance."""
    other_networks: list[str] = field(default_factory=list)
    """Other ``<kind:…>`` tags (hypernetworks…), removed from the text and not applied."""
    text: str = ""
    """The prompt without its ``<…>`` tags."""


# Tokens of the attention syntax, in the order the web UI tries them: escapes first, then
# brackets, a ``:number)`` that closes a weighted bracket, other closers, then plain text.
_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]           # escaped bracket or backslash
    |\\                    # lone backslash (dropped, as in the web UI)
    |\(|\[                 # openers
    |:(?P<weight>[+-]?[.\d]+)\)   # ':1.3)' closes a round bracket with that multiplier
    |\)|]                  # closers
    |[^\\()\[\]:]+         # plain text
    |:                     # a colon that is not a weight
    """,
    re.X,
)


@dataclass
class _Run:
    text: str
    weight: float = 1.0
    is_break: bool = False


_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_NETWORK = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt_attention(text: str) -> list[PromptSegment]:
    r"""Split ``text`` into runs of equal attention weight, as the web UI does.

    ``(a)`` multiplies by 1.1, ``[a]`` divides by 1.1, ``(a:1.3)`` multiplies by 1.3, and
    nested brackets multiply (``((a))`` = 1.21, ``((a:1.3))`` = 1.43). ``\(``, ``\)``,
    ``\[``, ``\]`` and ``\\`` are literal characters. An unclosed bracket runs to the end
    of the prompt; a closer with no opener is literal text. ``BREAK`` (a whole word, in
    capitals) becomes a segment with ``is_break=True``. Neighbouring runs of equal weight
    are merged. An empty prompt gives ``[("", 1.0)]``.

    Unlike the web UI, a ``BREAK`` inside brackets still starts a new chunk (the web UI
    then encodes the word "BREAK" with a negative weight, which is a bug nobody relies on).

    Raises:
        InputValidationError: a weight such as ``(a:1.2.3)`` is not a number.
    """
    res: list[_Run] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for item in res[start:]:
            if not item.is_break:
                item.weight *= factor

    for m in _TOKEN.finditer(text):
        token = m.group(0)
        weight = m.group("weight")
        if token.startswith("\\"):
            res.append(_Run(token[1:]))
        elif token == "(":
            round_open.append(len(res))
        elif token == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            try:
                value = float(weight)
            except ValueError:
                raise InputValidationError(
                    f"prompt weight {weight!r} in {token!r} is not a number", field="prompt"
                ) from None
            multiply(round_open.pop(), value)
        elif token == ")" and round_open:
            multiply(round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            multiply(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    res.append(_Run("BREAK", is_break=True))
                res.append(_Run(part))

    for pos in round_open:
        multiply(pos, ROUND_MULTIPLIER)
    for pos in square_open:
        multiply(pos, SQUARE_MULTIPLIER)

    merged: list[PromptSegment] = []
    for run in res or [_Run("")]:
        seg = PromptSegment(run.text, run.weight, run.is_break)
        prev = merged[-1] if merged else None
        same = prev is not None and prev.weight == seg.weight
        if prev is not None and same and not prev.is_break and not seg.is_break:
            merged[-1] = PromptSegment(prev.text + seg.text, prev.weight)
        else:
            merged.append(seg)
    return merged


def _parse_lora(args: str) -> LoraRequest:
    parts = args.split(":")
    name = parts[0].strip()
    if not name:
        raise InputValidationError(f"<lora:{args}> names no LoRA", field="prompt")
    weight = 1.0
    for part in parts[1:]:
        part = part.strip()
        key, eq, value = part.partition("=")
        if eq and key.strip() not in ("te", "unet"):
            continue  # named options the diffusers backend has no use for (dyn=...)
        raw = value if eq else part
        try:
            weight = float(raw)
        except ValueError:
            raise InputValidationError(
                f"<lora:{args}>: weight {raw!r} is not a number", field="prompt"
            ) from None
        break
    return LoraRequest(name, weight)


def parse_prompt(text: str) -> ParsedPrompt:
    """Parse a web UI prompt: take out its ``<lora:name:weight>`` tags, then its weights.

    Example:
        >>> p = parse_prompt("a (red:1.2) hat <lora:pixel:0.7>")
        >>> p.loras, [tuple(s)[:2] for s in p.segments]
        ([LoraRequest(name='pixel', weight=0.7)], [('a ', 1.0), ('red', 1.2), (' hat ', 1.0)])
    """
    loras: list[LoraRequest] = []
    others: list[str] = []

    def take(m: re.Match[str]) -> str:
        kind, args = m.group(1), m.group(2)
        if kind.lower() == "lora":
            loras.append(_parse_lora(args))
        else:
            others.append(m.group(0))
        return ""

    stripped = _NETWORK.sub(take, text)
    return ParsedPrompt(parse_prompt_attention(stripped), loras, others, stripped)


CHUNK_TOKENS = 75
"""Prompt tokens per text-encoder pass; with the start and end tokens a chunk is CLIP's 77."""
COMMA_BACKTRACK = 20
"""A chunk that fills up within this many tokens of a comma is cut after the comma."""


class TokenChunk(NamedTuple):
    """One 77-token text-encoder input: token ids and one attention weight per token."""

    tokens: list[int]
    weights: list[float]


def chunk_tokens(
    segments: Sequence[PromptSegment],
    tokenize: Callable[[str], list[int]],
    *,
    bos: int,
    eos: int,
    pad: int | None = None,
    comma: int | None = None,
    chunk_size: int = CHUNK_TOKENS,
    backtrack: int = COMMA_BACKTRACK,
) -> list[TokenChunk]:
    """Cut weighted segments into text-encoder chunks the way the web UI does.

    Each chunk holds ``chunk_size`` prompt tokens between ``bos`` and ``eos``, padded after
    the first ``eos`` with ``pad`` (``eos`` when None, as SD 1.x's tokenizer does).
    ``BREAK`` ends the current chunk. When a chunk fills up and a comma came within
    ``backtrack`` tokens, the tokens after the comma move to the next chunk. Padding tokens
    get weight 1.0. There is always at least one chunk.

    Args:
        segments: Output of :func:`parse_prompt_attention`.
        tokenize: Text → token ids, without start/end tokens.
        bos: Start-of-text id.
        eos: End-of-text id.
        pad: Padding id.
        comma: The ``,`` token id, for the comma backtrack (off when None).
        chunk_size: Prompt tokens per chunk.
        backtrack: Largest distance back to a comma, in tokens (0: off).
    """
    pad_id = eos if pad is None else pad
    chunks: list[TokenChunk] = []
    toks: list[int] = []
    wts: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal toks, wts, last_comma
        fill = chunk_size - len(toks)
        tokens = [bos, *toks, eos] + [pad_id] * fill
        chunks.append(TokenChunk(tokens, [1.0, *wts] + [1.0] * (fill + 1)))
        toks, wts, last_comma = [], [], -1

    for seg in segments:
        if seg.is_break:
            close()
            continue
        for token in tokenize(seg.text) if seg.text else []:
            if comma is not None and token == comma:
                last_comma = len(toks)
            elif (
                backtrack
                and len(toks) == chunk_size
                and last_comma != -1
                and len(toks) - last_comma <= backtrack
            ):
                cut = last_comma + 1
                moved_t, moved_w = toks[cut:], wts[cut:]
                toks, wts = toks[:cut], wts[:cut]
                close()
                toks, wts = moved_t, moved_w
            if len(toks) == chunk_size:
                close()
            toks.append(token)
            wts.append(seg.weight)
    if toks or not chunks:
        close()
    return chunks
