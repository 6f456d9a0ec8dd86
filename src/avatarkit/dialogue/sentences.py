"""Turn a stream of text deltas into whole sentences, each released as soon as it is known.

A voice can start speaking the first sentence while the chat model still writes the second,
so a sentence leaves the splitter the moment its end is certain: on its final punctuation,
without waiting for the next token, unless `pysbd <https://github.com/nipunsadvilkar/pySBD>`_
(a rule-based sentence boundary detector that knows abbreviations such as "Dr.", "e.g." and
"U.S.", decimals and lists in 23 languages) says the text may go on. When a delta ends right
after such a point, the splitter asks pysbd whether a next sentence could start there (it
probes with a following word). The end of the stream releases the rest.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from avatarkit.config import get_logger
from avatarkit.errors import InputValidationError

__all__ = ["SentenceSplitter", "split_sentences", "split_text"]

_log = get_logger("avatarkit.dialogue.sentences")

# Terminal punctuation, optional closing quotes/brackets, then whitespace; or a blank line.
_CANDIDATE = re.compile(r"[.!?…。！？](?:[\"'”’»)\]]*)\s|\n\s*\n")
# The buffer ends on terminal punctuation: the sentence may be complete already, so ask pysbd
# now instead of waiting for the next token's whitespace. A full stop after a digit (3.5) or a
# one-letter word (e.g., J. Smith) waits for more text.
_ENDS_SENTENCE = re.compile(r"(?:(?<!\d)(?<!\b[^\W\d_])\.|[!?…。！？])[\"'”’»)\]]*$")
_PROBE = "The"
_SOFT_BREAK = re.compile(r"[,;:–—]\s")


def _segmenter(language: str) -> Any:
    import pysbd
    from pysbd.languages import LANGUAGE_CODES

    code = (language or "en").split("-")[0].split("_")[0].lower()
    if code not in LANGUAGE_CODES:
        _log.warning("pysbd has no rules for language %r; splitting sentences as English", code)
        code = "en"
    return pysbd.Segmenter(language=code, clean=False, char_span=True)


class SentenceSplitter:
    """Incremental sentence splitter: :meth:`push` deltas, get back finished sentences.

    Args:
        language: Language of the text (BCP-47; pysbd's rules for its primary subtag).
        max_chars: A run of text this long with no sentence end is cut at the last comma or
            space before it, so a voice never waits on an endless sentence.

    Example::

        splitter = SentenceSplitter()
        for delta in ["Hello there. How", " are you?"]:
            for sentence in splitter.push(delta):
                speak(sentence)
        for sentence in splitter.flush():
            speak(sentence)
    """

    def __init__(self, language: str = "en", *, max_chars: int = 400) -> None:
        if max_chars < 20:
            raise InputValidationError(
                f"max_chars must be >= 20, got {max_chars}", field="max_chars"
            )
        self._seg = _segmenter(language)
        self.max_chars = max_chars
        self._buf = ""
        self._checked = 0  # buffer offset before which no boundary candidate remains unresolved

    @property
    def pending(self) -> str:
        """Text received but not yet released as a sentence."""
        return self._buf

    def push(self, delta: str) -> list[str]:
        """Add ``delta``; return the sentences it completed (stripped, non-empty), in order."""
        if not delta:
            return []
        self._buf += delta
        out: list[str] = []
        # Look for a candidate boundary only in text not yet examined (a few chars of overlap for
        # punctuation that arrived before its whitespace).
        if _CANDIDATE.search(self._buf, max(0, self._checked - 8)) or _ENDS_SENTENCE.search(
            self._buf
        ):
            out.extend(self._release_complete())
        self._checked = len(self._buf)
        while len(self._buf) > self.max_chars:
            out.append(self._cut_long())
        return [s for s in out if s]

    def flush(self) -> list[str]:
        """Release everything still buffered (the stream ended); the splitter is then empty."""
        rest, self._buf, self._checked = self._buf, "", 0
        if not rest.strip():
            return []
        return [s.strip() for _, s in self._sentences(rest) if s.strip()]

    def _sentences(self, text: str) -> list[tuple[int, str]]:
        """The sentences pysbd finds in ``text``, as ``(start, sentence)``.

        ``<!`` ends none: it opens markup (``<!-``, ``<!DOCTYPE``), and a cut there would make
        the next sentence start with ``-``, which reads as a list item.
        """
        out: list[tuple[int, str]] = []
        for span in self._seg.segment(text):
            if out and text[: span.start].rstrip().endswith("<!"):
                start = out[-1][0]
                out[-1] = (start, text[start : span.end])
            else:
                out.append((span.start, span.sent))
        return out

    def _release_complete(self) -> list[str]:
        text = self._buf
        probed = text[-1:].isspace() or bool(_ENDS_SENTENCE.search(text))
        probe = (_PROBE if text[-1:].isspace() else " " + _PROBE) if probed else ""
        spans = self._sentences(text + probe)
        if len(spans) < 2:
            return []
        cut = spans[-1][0]  # everything before the last segment is complete
        if probed and cut >= len(text):
            cut = len(text)
        done = [s.strip() for start, s in spans[:-1] if start < cut]
        self._buf = text[cut:]
        return done

    def _cut_long(self) -> str:
        window = self._buf[: self.max_chars]
        soft = [m.end() for m in _SOFT_BREAK.finditer(window)]
        cut = soft[-1] if soft else window.rfind(" ") + 1
        if cut <= 0:
            cut = self.max_chars
        head, self._buf = self._buf[:cut], self._buf[cut:]
        self._checked = 0
        return head.strip()


async def split_sentences(
    deltas: AsyncIterable[str], *, language: str = "en", max_chars: int = 400
) -> AsyncIterator[str]:
    """Yield whole sentences from a stream of text deltas, each as soon as it is complete.

    Args:
        deltas: Text pieces, e.g. ``chat.stream(messages)``.
        language: Language of the text.
        max_chars: Longest run without a sentence end before a forced cut.
    """
    splitter = SentenceSplitter(language, max_chars=max_chars)
    async for delta in deltas:
        for sentence in splitter.push(delta):
            yield sentence
    for sentence in splitter.flush():
        yield sentence


def split_text(text: str, *, language: str = "en") -> list[str]:
    """Split a whole text into stripped, non-empty sentences."""
    return [s.sent.strip() for s in _segmenter(language).segment(text) if s.sent.strip()]
