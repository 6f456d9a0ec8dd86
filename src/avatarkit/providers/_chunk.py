"""Split long text into request-sized chunks at sentence boundaries (pysbd), keeping offsets."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["TextChunk", "split_text"]


@dataclass(frozen=True)
class TextChunk:
    """One request's worth of text and where it lies in the whole."""

    text: str
    start: int
    """Offset of ``text`` in the original string."""

    @property
    def end(self) -> int:
        """Offset one past the chunk's last character."""
        return self.start + len(self.text)


def _sentences(text: str, language: str) -> list[tuple[int, int]]:
    import pysbd

    try:
        seg = pysbd.Segmenter(language=language, clean=False, char_span=True)
    except ValueError:  # a language pysbd does not know
        seg = pysbd.Segmenter(language="en", clean=False, char_span=True)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for span in seg.segment(text):
        # pysbd's spans can drift on repeated sentences: find each sentence from the cursor.
        sent = span.sent.strip()
        if not sent:
            continue
        at = text.find(sent, cursor)
        if at < 0:
            at = max(cursor, span.start)
        spans.append((at, at + len(sent)))
        cursor = at + len(sent)
    return spans


_SENTENCE_END = frozenset(".!?…。！？\"'”’»)")
_WINDOW = 1500
"""Characters before each cut that pysbd reads to find the last sentence end (pysbd is slow)."""


def _cut(text: str, start: int, limit: int, language: str) -> int:
    """Where the chunk starting at ``start`` ends: after the last whole sentence that fits."""
    end = start + limit
    w0 = max(start, end - min(limit, _WINDOW))
    spans = _sentences(text[w0:end], language)
    # The last span is cut short by the window's edge unless it ends like a sentence.
    ends = [w0 + e for _, e in spans]
    if (
        ends
        and end < len(text)
        and not text[ends[-1] : end].strip()
        and text[ends[-1] - 1] not in _SENTENCE_END
    ):
        ends.pop()
    ends = [e for e in ends if e > start]
    if ends:
        return ends[-1]
    space = text.rfind(" ", start + 1, end + 1)
    return space if space > start else end


def split_text(text: str, limit: int, *, language: str = "en") -> list[TextChunk]:
    """Chunks of at most ``limit`` characters, cut between sentences where possible.

    Each chunk is a slice of ``text`` (``text[c.start:c.end] == c.text``), stripped of
    surrounding whitespace. Sentences (pysbd) are packed greedily; a sentence longer than
    ``limit`` is cut at a space.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    chunks: list[TextChunk] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return chunks
        rest = text[pos:].rstrip()
        if len(rest) <= limit:
            chunks.append(TextChunk(rest, pos))
            return chunks
        end = _cut(text, pos, limit, language)
        piece = text[pos:end].rstrip()
        if not _BLANK.fullmatch(piece):
            chunks.append(TextChunk(piece, pos))
        pos = end


_BLANK = re.compile(r"\s*")
