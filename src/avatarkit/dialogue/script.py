"""The seed's step 2: from a prompt ("Introduce yourself") to the words the avatar will speak.

:func:`write_script` asks a chat model, in the persona's voice, for text meant to be spoken to
camera, then cleans what models like to add around it (markdown, bullet points, stage
directions such as ``*smiles*``, a "Script:" label, wrapping quotes) and keeps it within a word
limit, cutting at a sentence end. Emotion tags like ``[happy]`` are kept: the voice stage strips
them and the face uses them.
"""

from __future__ import annotations

import re
import unicodedata

from avatarkit.errors import InputValidationError, ProviderError
from avatarkit.ports import ChatModel
from avatarkit.types import ChatMessage

from .persona import Persona
from .sentences import split_text

__all__ = ["MAX_PROMPT_CHARS", "clean_script", "write_script", "write_script_sync"]

MAX_PROMPT_CHARS = 4000
"""Longest prompt accepted."""

_STAGE = re.compile(r"(?<![\w*])\*[^*\n]{1,80}\*(?![\w*])")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+.*$", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)
_LABEL = re.compile(r"^\s*(?:script|speech|transcript|answer)\s*:\s*", re.IGNORECASE)
_EMPHASIS = re.compile(r"(\*\*|__|`)")
_QUOTES = ('"', "“", "”", "'")
_TAG = re.compile(r"\[[^\[\]\n]{1,40}\]")
_WORD = re.compile(r"\w")
_FINAL = re.compile(r"[.!?…。！？]")


def clean_script(text: str, *, max_words: int | None = None) -> str:
    """Turn a model's answer into plain speakable text.

    Removes headings, bullets, ``*stage directions*`` (single stars), emphasis marks, a leading
    "Script:" label and quotes around the whole text; joins lines; drops a last sentence left
    unfinished (no ``.``, ``!``, ``?`` or ``…`` after its last word, as when the model ran out
    of tokens) when a finished one comes before it; cuts after the last whole sentence that
    fits ``max_words`` (always keeping the first sentence).
    """
    text = _HEADING.sub("", text)
    text = _EMPHASIS.sub("", text)  # **bold** first, so only *single-starred* actions remain
    text = _STAGE.sub("", text)
    text = _BULLET.sub("", text)
    text = _LABEL.sub("", text.strip())
    text = " ".join(text.split())
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    text = _drop_unfinished(text)
    if max_words is not None and len(text.split()) > max_words:
        kept: list[str] = []
        count = 0
        for sentence in split_text(text):
            n = len(sentence.split())
            if kept and count + n > max_words:
                break
            kept.append(sentence)
            count += n
        text = " ".join(kept)
    return text


def _drop_unfinished(text: str) -> str:
    """``text`` without its last sentence when that one has no end mark and is not the only one."""
    sentences = split_text(text)
    if len(sentences) < 2:
        return text
    last = _TAG.sub("", sentences[-1])  # "Nice to meet you! [happy]" is finished
    words = list(_WORD.finditer(last))
    if not words:
        return text
    tail = last[words[-1].end() :]  # an end mark, or an emoji ("see you soon 👋"), ends it
    if _FINAL.search(tail) or any(unicodedata.category(c) == "So" for c in tail):
        return text
    return text[: text.rindex(sentences[-1])].rstrip()


async def write_script(
    prompt: str,
    chat: ChatModel,
    persona: Persona | None = None,
    *,
    max_words: int = 120,
) -> str:
    """Write what the avatar says for ``prompt``, in the persona's voice.

    Args:
        prompt: What to talk about, e.g. ``"Introduce yourself"``.
        chat: The chat model that writes it.
        persona: Who speaks (default persona when ``None``).
        max_words: Longest script in words; the text is cut at a sentence end.

    Returns:
        Plain text, ready for a voice.

    Raises:
        InputValidationError: ``prompt`` is empty or longer than :data:`MAX_PROMPT_CHARS`, or
            ``max_words`` is below 1 (checked before the model is called).
        ProviderError: the model failed or returned no usable text.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputValidationError("the script prompt is empty", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputValidationError(
            f"the script prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}",
            field="prompt",
        )
    if max_words < 1:
        raise InputValidationError(f"max_words must be >= 1, got {max_words}", field="max_words")
    persona = persona or Persona()
    system = (
        persona.system_prompt()
        + "\nYou are writing words you will say aloud to the camera, in the first person. "
        f"Write only the spoken words, at most {max_words} words: no title, no stage "
        "directions, no markdown, no emoji."
    )
    messages = [
        ChatMessage(role="system", content=system),
        ChatMessage(role="user", content=prompt.strip()),
    ]
    raw = await chat.complete(messages)
    text = clean_script(raw, max_words=max_words)
    if not text:
        raise ProviderError(
            f"the chat model returned no speakable text for {prompt.strip()[:60]!r}",
            provider=type(chat).__name__,
        )
    return text


def write_script_sync(
    prompt: str, chat: ChatModel, persona: Persona | None = None, *, max_words: int = 120
) -> str:
    """:func:`write_script` for synchronous code (scripts, notebooks)."""
    from avatarkit import _sync

    return _sync.run(write_script(prompt, chat, persona, max_words=max_words))
