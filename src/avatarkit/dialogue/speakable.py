"""Reply text as a voice should read it: markdown, links, code and emoji taken out.

Chat models write for screens, whatever their prompt says, and a voice reads what it is given:
eSpeak NG says "## Tips" as "hash hash tips", "**three**" as "asterisk asterisk three asterisk
asterisk" and "🚶" as "person walking". :func:`speakable` keeps the words and drops the marks:

- headings, list markers, block quotes and table pipes (a heading, list item or table row
  without end punctuation gets a full stop, so the voice pauses there);
- emphasis (``**``, ``__``, ``~~``, single ``*`` or ``_`` around words) and inline code ticks
  (the code is read); fenced code blocks (`````` or ``~~~``, to their closing fence or to the
  end of a reply cut short) and horizontal rules go entirely, and so do stray fences;
- a link ``[text](url)`` is read as its text, a bare URL as its host (``example.com``);
- emoji go; text symbols such as ``©``, ``™`` or ``°`` stay.

``2*3*4``, ``snake_case`` and e-mail addresses are left alone. Emoji are matched by their Unicode
blocks with one regular expression rather than with the ``emoji`` package: that package takes
about 60 ms to import (on the event loop, mid-turn) and lists ``©``, ``™`` and ``‼`` as emoji,
which a voice should read.

Emotion tags (``[happy]``, ``*smiles*``) are not this module's business: strip them first with
:func:`avatarkit.animation.expression.strip_emotion_tags`. :func:`speakable_with_offsets` moves
character offsets (where those tags were) along with the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

__all__ = [
    "FencedCode",
    "HtmlComments",
    "code_block_spans",
    "speakable",
    "speakable_with_offsets",
]

_Edit = tuple[int, int, str]  # replace text[start:end] with the string

_END_PUNCTUATION = ".!?:;,…"
_FENCE_LINE = re.compile(r"[ \t]*(?P<run>`{3,}|~{3,})(?P<rest>[^\n]*)")
_FENCE_START = re.compile(r"[ \t]*(?:`*|~*)")  # what a line may start with and become a fence
_STRAY_FENCE = re.compile(r"`{3,}")
_LINES = re.compile(r"[^\n]*\n|[^\n]+")  # lines end at "\n" only (not str.splitlines' many)
_TABLE_RULE = re.compile(
    r"^[ \t]*\|?(?:[ \t]*:?-{3,}:?[ \t]*\|)+[ \t]*(?::?-{3,}:?[ \t]*)?(?:\n|$)", re.MULTILINE
)
_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*(?:\n|$)", re.MULTILINE)
_PICTOGRAPH = "\U0001f000-\U0001faff\u2300-\u23ff\u2600-\u27bf\u2b00-\u2bff\u3030\u303d\u3297\u3299"
_EMOJI = re.compile(
    f"[{_PICTOGRAPH}][\ufe0e\ufe0f\u20e3\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f]*"
    f"(?:\u200d[{_PICTOGRAPH}][\ufe0f\U0001f3fb-\U0001f3ff]*)*"  # joined sequences: one emoji
)
_LINE_PREFIX = re.compile(
    r"^(?P<indent>[ \t]*)(?:(?P<heading>\#{1,6}[ \t]+)|(?P<quote>>[ \t]?)"
    r"|(?P<bullet>(?:[-*+•]|\d{1,3}[.)])[ \t]+)|(?P<table>\|(?=.*\|[ \t]*$)[ \t]*))"
    r"(?P<body>[^\n]*)$",
    re.MULTILINE,
)
_CLOSING_HASHES = re.compile(r"[ \t]+#+[ \t]*$")
_CELL = re.compile(r"[ \t]*\|[ \t]*")
_PAIRED = re.compile(r"(\*\*|__|~~)(?=\S)(?P<inner>[^\n]+?)(?<=\S)\1")
_SINGLE_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(?P<inner>[^*\n]+?)(?<=[^\s*])\*(?![\w*])")
_SINGLE_UNDERSCORE = re.compile(r"(?<![\w_])_(?=[^\s_])(?P<inner>[^_\n]+?)(?<=[^\s_])_(?![\w_])")
_CODE = re.compile(r"(?<!`)(`+)(?!`)(?P<inner>[^\n]+?)(?<!`)\1(?!`)")
"""An inline code span: a run of backticks, then anything up to a run of the same length (so
``` ``a`b`` ``` holds a backtick), as CommonMark reads it."""
_LINK = re.compile(r"(!?\[)([^\]\n]*)(\]\([^)\s]*(?:[ \t]+\"[^\"\n]*\")?\))")
_INLINE_TAGS = frozenset(
    re.findall(
        r"\w+",
        "a abbr b big cite code del em font i img ins kbd mark q s samp small span strike strong "
        "sub sup u var wbr",
    )
)
_BLOCK_TAGS = frozenset(
    re.findall(
        r"\w+",
        "address article aside blockquote br dd details div dl dt figcaption figure footer h1 h2 "
        "h3 h4 h5 h6 header hr li main nav ol p pre section summary table tbody td tfoot th thead "
        "tr ul",
    )
)
_HTML_TAG = re.compile(
    rf"</?(?P<name>(?i:{'|'.join(sorted(_INLINE_TAGS | _BLOCK_TAGS, key=len, reverse=True))}))"
    r"(?:\s+[\w:-]+\s*=[^<>]*)?\s*/?>"
)
"""A tag of a known HTML element, with attributes only as ``name=value``: so that ``a < b and c >
d`` and ``if a<b and b>c`` stay as written."""
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_URL = re.compile(r"(?<![\w/@.])(?:https?://|www\.)[^\s<>()\[\]\"']+")
_URL_TAIL = re.compile(r"[.,;:!?]+$")


def speakable(text: str) -> str:
    """``text`` without the markdown, links, code and emoji a voice would read out."""
    return speakable_with_offsets(text, ())[0]


def speakable_with_offsets(
    text: str, offsets: Sequence[int], *, fenced_code: bool = True
) -> tuple[str, list[int]]:
    """:func:`speakable`, moving character ``offsets`` of ``text`` onto the result.

    An offset inside removed markup moves to where the kept text resumes. Pass
    ``fenced_code=False`` for text that :class:`FencedCode` has taken the code out of already
    (a stream's sentences: one may start mid-line, where a fence is not one).
    """
    moved = list(offsets)
    passes = (
        _blocks if fenced_code else _rules,
        _emoji,
        _lines,
        _html,
        _marks,
        _links,
        _whitespace,
    )
    for edits in passes:
        text, moved = _apply(text, list(edits(text)), moved)
    return text, moved


class FencedCode:
    """Fenced code blocks taken out of a stream of text deltas, before it is cut into sentences.

    Keeps what :func:`speakable` keeps of the whole text, whatever the pieces: a line that may
    be a fence is held until it is known, any other line passes at once. Where a block opens,
    a paragraph break goes out, so the sentence before it is released while the code streams.
    """

    def __init__(self) -> None:
        self._fence: str | None = None  # the open block's fence (``` or ~~~, maybe longer)
        self._line = ""  # the start of the current line, held while it may be a fence
        self._mode = ""  # the rest of the current line: "keep", "drop", or "" (undecided)

    def push(self, delta: str) -> str:
        """The part of ``delta`` (and of what was held) known to be outside code blocks."""
        return "".join(self._feed(piece) for piece in _LINES.findall(delta))

    def flush(self) -> str:
        """What is left at the end of the stream (a last line without its newline)."""
        line, self._line, self._mode, fence, self._fence = self._line, "", "", self._fence, None
        if not line:
            return ""
        _, keep = _fence_step(fence, line)
        return "" if keep is None else line[keep:]

    def _feed(self, piece: str) -> str:
        """One piece of a line, ending in a newline where the line ends."""
        ends = piece.endswith("\n")
        if self._mode:
            kept = piece if self._mode == "keep" else ""
            self._mode = "" if ends else self._mode
            return kept
        line = self._line + piece
        if ends:
            self._line = ""
            return self._decided(line.removesuffix("\n"), "\n")
        if _FENCE_START.fullmatch(line) or (
            self._fence is None and _FENCE_LINE.match(line)
        ):  # a fence line (or not) when it ends
            self._line = line
            return ""
        if self._fence is not None and (m := _FENCE_LINE.match(line)) and not m["rest"].strip():
            self._line = line  # the closing fence, or text after it: the next piece tells
            return ""
        self._line = ""
        kept = self._decided(line, "")
        self._mode = "keep" if self._fence is None else "drop"
        return kept

    def _decided(self, line: str, newline: str) -> str:
        was_open = self._fence is not None
        self._fence, keep = _fence_step(self._fence, line)
        if keep is not None:
            return line[keep:] + newline
        return "\n\n" if self._fence is not None and not was_open else ""


class HtmlComments:
    """HTML comments (``<!-- ... -->``) taken out of a stream of text deltas.

    A comment may arrive in pieces, and the sentence splitter would cut it at the ``!`` of
    ``<!--``: so a comment is held from its opening to its close and dropped, and a delta
    ending in what may open one (``<``, ``<!``, ``<!-``) is held until the next tells. Any
    other text comes through unchanged, however it is split: ``<!-`` that opens no comment,
    and a comment never closed (released at :meth:`flush`, as :func:`speakable` keeps it).
    """

    _OPEN, _CLOSE = "<!--", "-->"

    def __init__(self) -> None:
        self._held = ""
        self._inside = False  # what is held is a comment's beginning, from its "<!--"
        self._from = 0  # where in it to look for the close next

    def push(self, delta: str) -> str:
        """The part of ``delta`` (and of what was held) known to be outside comments."""
        text, self._held = self._held + delta, ""
        out: list[str] = []
        pos = 0
        while True:
            if self._inside:  # text[pos:] opens a comment
                end = text.find(self._CLOSE, max(pos + len(self._OPEN), pos + self._from))
                if end < 0:  # hold the whole comment: dropped if it closes, kept if not
                    self._held = text[pos:]
                    self._from = max(len(self._OPEN), len(self._held) - len(self._CLOSE) + 1)
                    return "".join(out)
                pos, self._inside, self._from = end + len(self._CLOSE), False, 0
                continue
            start = text.find(self._OPEN, pos)
            if start < 0:
                keep = next(
                    (
                        k
                        for k in (3, 2, 1)
                        if len(text) - k >= pos and text.endswith(self._OPEN[:k])
                    ),
                    0,
                )
                out.append(text[pos : len(text) - keep])
                self._held = text[len(text) - keep :]
                return "".join(out)
            out.append(text[pos:start])
            pos, self._inside = start, True

    def flush(self) -> str:
        """What is left at the end of the stream (a comment never closed is text, kept)."""
        held, self._held, self._inside, self._from = self._held, "", False, 0
        return held


def _fence_step(fence: str | None, line: str) -> tuple[str | None, int | None]:
    """The fence open after ``line`` (one line, no newline), and where its kept text starts.

    ``None`` for the second: the line is a fence or code, all of it goes. A closing fence
    followed by a space and text (a model's slip) closes the block and keeps that text; a fence
    of backticks whose info string has a backtick is inline code, not a fence.
    """
    m = _FENCE_LINE.match(line)
    if fence is None:
        if m and not (m["run"][0] == "`" and "`" in m["rest"]):
            return m["run"], None
        return None, 0
    if m and m["run"][0] == fence[0] and len(m["run"]) >= len(fence):
        rest = m["rest"]
        if not rest.strip():
            return None, None
        if rest[0] in " \t":
            return None, len(line) - len(rest.lstrip())
    return fence, None


# ----------------------------------------------------------------------------- passes


def _blocks(text: str) -> Iterator[_Edit]:
    """Fenced code, table rules and horizontal rules: whole lines out."""
    yield from _whole_lines(text, list(_code_blocks(text)))


def _rules(text: str) -> Iterator[_Edit]:
    """Table rules and horizontal rules: whole lines out."""
    yield from _whole_lines(text, [])


def _whole_lines(text: str, spans: list[tuple[int, int]]) -> Iterator[_Edit]:
    spans += [m.span() for p in (_TABLE_RULE, _RULE) for m in p.finditer(text)]
    end = -1
    for start, stop in sorted(spans):
        if start >= end:  # the spans may overlap (a "---" line is both kinds of rule)
            yield start, stop, ""
            end = stop


def code_block_spans(text: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` character spans of ``text``'s fenced code blocks, fences included.

    A block left open runs to the end of the text, as :func:`speakable` reads it.
    """
    return list(_code_blocks(text))


def _code_blocks(text: str) -> Iterator[tuple[int, int]]:
    """The spans of fenced code: fence and code lines with their newlines (as FencedCode)."""
    fence: str | None = None
    pos = 0
    for line in _LINES.findall(text):
        fence, keep = _fence_step(fence, line.removesuffix("\n"))
        if keep is None:
            yield pos, pos + len(line)
        elif keep:
            yield pos, pos + keep
        pos += len(line)


def _emoji(text: str) -> Iterator[_Edit]:
    for m in _EMOJI.finditer(text):
        yield m.start(), m.end(), ""


def _lines(text: str) -> Iterator[_Edit]:
    """Headings, quotes, list markers and table pipes off; a full stop where a line needs one."""
    yield from _disjoint(list(_line_edits(text)))


def _line_edits(text: str) -> Iterator[_Edit]:
    for m in _LINE_PREFIX.finditer(text):
        yield m.start(), m.start("body"), ""
        body_start, body = m.start("body"), m.group("body")
        if m.group("heading") and (h := _CLOSING_HASHES.search(body)):
            body = body[: h.start()]
            yield body_start + h.start(), body_start + h.end(), ""
        if m.group("table"):
            body = body.rstrip()
            cells = list(_CELL.finditer(body))
            for i, cell in enumerate(cells):
                last = i == len(cells) - 1 and cell.end() == len(body)
                yield body_start + cell.start(), body_start + cell.end(), "" if last else ", "
            body = body[: cells[-1].start()] if cells and cells[-1].end() == len(body) else body
        content = body.rstrip()
        if m.group("quote") is None and content and content[-1] not in _END_PUNCTUATION:
            yield body_start + len(content), body_start + len(content), "."


def _marks(text: str) -> Iterator[_Edit]:
    """Emphasis markers and code ticks around words: the markers go, the words stay."""
    edits: list[_Edit] = []
    for pattern in (_CODE, _PAIRED, _SINGLE_STAR, _SINGLE_UNDERSCORE):
        for m in pattern.finditer(text):
            edits += [(m.start(), m.start("inner"), ""), (m.end("inner"), m.end(), "")]
    edits += [(m.start(), m.end(), "") for m in _STRAY_FENCE.finditer(text)]  # unpaired ```
    yield from _disjoint(edits)


def _links(text: str) -> Iterator[_Edit]:
    """``[text](url)`` read as its text; a bare URL as its host."""
    edits: list[_Edit] = []
    for m in _LINK.finditer(text):
        edits += [(m.start(1), m.end(1), ""), (m.start(3), m.end(3), "")]
    for m in _URL.finditer(text):
        url = m.group()
        tail = _URL_TAIL.search(url)
        end = m.end() - (len(tail.group()) if tail else 0)
        edits.append((m.start(), end, _host(text[m.start() : end])))
    yield from _disjoint(edits)


def _html(text: str) -> Iterator[_Edit]:
    """HTML tags and comments out (a block tag leaves a space between the words it parted)."""
    code = [m.span() for m in _CODE.finditer(text)]  # `<b>` in code is read, as code is

    def in_code(m: re.Match[str]) -> bool:
        return any(start <= m.start() < stop for start, stop in code)

    edits: list[_Edit] = [
        (m.start(), m.end(), "") for m in _HTML_COMMENT.finditer(text) if not in_code(m)
    ]
    for m in _HTML_TAG.finditer(text):
        if not in_code(m):
            edits.append((m.start(), m.end(), " " if m["name"].lower() in _BLOCK_TAGS else ""))
    yield from _disjoint(edits)


def _whitespace(text: str) -> Iterator[_Edit]:
    """What the removals left: runs of spaces, spaces before punctuation, blank lines, ends."""
    edits: list[_Edit] = []
    for m in re.finditer(r"[ \t]+(?=\n|$|[.,!?;:])|(?<=\n)[ \t]+|^[ \t]+", text):
        edits.append((m.start(), m.end(), ""))
    for m in re.finditer(r"(?<=\S)[ \t]{2,}(?=\S)", text):
        edits.append((m.start(), m.end(), " "))
    for m in re.finditer(r"\n[ \t]*\n[\s]*", text):
        edits.append((m.start(), m.end(), "\n"))
    lead = len(text) - len(text.lstrip())
    if lead:
        edits.append((0, lead, ""))
    trail = len(text) - len(text.rstrip())
    if trail:
        edits.append((len(text) - trail, len(text), ""))
    yield from _disjoint(edits)


# ----------------------------------------------------------------------------- helpers


def _host(url: str) -> str:
    """``example.com`` for ``https://www.example.com/page?q=1`` (a URL with or without scheme)."""
    return (urlsplit(url if "://" in url else f"//{url}").hostname or url).removeprefix("www.")


def _disjoint(edits: list[_Edit]) -> Iterator[_Edit]:
    """Edits sorted by position, dropping any that overlap one already kept."""
    end = -1
    for start, stop, repl in sorted(edits, key=lambda e: (e[0], e[1])):
        if start >= end or start == stop == end:
            yield start, stop, repl
            end = max(end, stop)


def _apply(text: str, edits: list[_Edit], offsets: list[int]) -> tuple[str, list[int]]:
    """Apply sorted, disjoint edits; move each offset with the text around it."""
    if not edits:
        return text, offsets
    out: list[str] = []
    pos = 0
    starts: list[tuple[int, int, int, int]] = []  # (start, stop, new start, replacement length)
    new_len = 0
    for start, stop, repl in edits:
        out.append(text[pos:start])
        new_len += start - pos
        starts.append((start, stop, new_len, len(repl)))
        out.append(repl)
        new_len += len(repl)
        pos = stop
    out.append(text[pos:])
    return "".join(out), [_move(o, starts) for o in offsets]


def _move(offset: int, edits: Sequence[tuple[int, int, int, int]]) -> int:
    shift = 0
    for start, stop, new_start, length in edits:
        if stop <= offset and not (start == stop == offset and length == 0):
            shift = new_start + length - stop
            continue
        if start < offset < stop:  # inside a replaced span: where the kept text resumes
            return new_start + length
        break
    return offset + shift
