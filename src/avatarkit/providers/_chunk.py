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


def _hard_split(text: str, start: int, end: int, limit: int) -> list[tuple[int, int]]:
    """Split one over-long sentence at whitespace (or anywhere, as a last resort)."""
    out: list[tuple[int, int]] = []
    while end - start > limit:
        cut = text.rfind(" ", start + 1, start + limit + 1)
        if cut <= start:
            cut = start + limit
        out.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        out.append((start, end))
    return out


def split_text(text: str, limit: int, *, language: str = "en") -> list[TextChunk]:
    """Chunks of at most ``limit`` characters, cut between sentences where possible.

    Each chunk is a slice of ``text`` (``text[c.start:c.end] == c.text``), stripped of
    surrounding whitespace; sentences are packed greedily.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    stripped = text.strip()
    if len(stripped) <= limit:
        start = text.find(stripped) if stripped else 0
        return [TextChunk(stripped, start)] if stripped else []
    pieces: list[tuple[int, int]] = []
    for s, e in _sentences(text, language) or [(0, len(text))]:
        pieces.extend(_hard_split(text, s, e, limit))
    chunks: list[TextChunk] = []
    cur: tuple[int, int] | None = None
    for s, e in pieces:
        if cur is not None and e - cur[0] <= limit:
            cur = (cur[0], e)
            continue
        if cur is not None:
            chunks.append(TextChunk(text[cur[0] : cur[1]], cur[0]))
        cur = (s, e)
    if cur is not None:
        chunks.append(TextChunk(text[cur[0] : cur[1]], cur[0]))
    return [c for c in chunks if not _BLANK.fullmatch(c.text)]


_BLANK = re.compile(r"\s*")
