"""Slot extraction: pull dates, times, e-mail addresses, phone numbers and names out of a message.

Each extractor is a plain function ``(text, now) -> str | None``; the values are normalised
strings (ISO dates ``2026-03-14``, 24-hour times ``15:30``) so they survive a JSON store. The
extractors are small regular expressions on purpose: they run offline in microseconds, and a
wrong guess is worse than none, so each matches only clear phrasings ("tomorrow", "next
Friday", "March 3rd", "3:30 pm", "my name is Ada"). Pass your own to the dialogue manager for
anything else.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping

from avatarkit._names import is_name_word

__all__ = [
    "DATE_WORDS",
    "DEFAULT_EXTRACTORS",
    "SlotExtractor",
    "already_past",
    "extract_date",
    "extract_email",
    "extract_name",
    "extract_phone",
    "extract_slots",
    "extract_time",
]

SlotExtractor = Callable[[str, dt.datetime], str | None]
"""``extractor(text, now)`` returns the slot's value found in ``text``, or ``None``."""

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PHONE = re.compile(r"(?<![\w+])(\+?\d[\d ().-]{5,}\d)(?!\w)")

_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for name in names
}
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
DATE_WORDS: frozenset[str] = frozenset(
    {*_MONTHS, *_WEEKDAYS, "today", "tonight", "tomorrow", "noon", "midday", "midnight", "am", "pm"}
)
"""The words (lower case) of the dates and times the extractors read, besides numbers: values
of a slot, not what a message is about."""
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_MONTH_DAY = re.compile(
    rf"\b(?P<month>{_MONTH_RE})\.?\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(?P<year>\d{{4}}))?",
    re.IGNORECASE,
)
_DAY_MONTH = re.compile(
    rf"\b(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<month>{_MONTH_RE})\b\.?"
    rf"(?:,?\s+(?P<year>\d{{4}}))?",
    re.IGNORECASE,
)
_RELATIVE = re.compile(r"\b(day after tomorrow|tomorrow|today|tonight)\b", re.IGNORECASE)
_WEEKDAY = re.compile(rf"\b(?:(next|this)\s+)?({'|'.join(_WEEKDAYS)})\b", re.IGNORECASE)

_TIME_12 = re.compile(r"\b(\d{1,2})(?:[:.](\d{2}))?\s*([ap])\.?\s*m\b\.?", re.IGNORECASE)
_TIME_24 = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_TIME_WORD = re.compile(r"\b(noon|midday|midnight)\b", re.IGNORECASE)
_TIME_AT = re.compile(r"\bat\s+(\d{1,2})(?:\s+o'?clock)?\b(?![:.\d])", re.IGNORECASE)

_NAME_WORD = r"[^\W\d_](?:[^\W\d_]|['’-])+"  # letters of any script: "Zoë", "José", "Ana-Lucía"
_NAME_EXPLICIT = re.compile(rf"\b(?i:my name is|my name's)\s+({_NAME_WORD}(?:\s+{_NAME_WORD})?)")
_NAME_INTRO = re.compile(rf"\b(?i:call me|i'm|i am|this is)\s+({_NAME_WORD}(?:\s+{_NAME_WORD})?)")
"""After "call me", "I'm"...: only a capitalised word is a name ("I'm Ada", not "I'm tired")."""


def extract_email(text: str, now: dt.datetime) -> str | None:
    """The first e-mail address in ``text``, lower-cased."""
    m = _EMAIL.search(text)
    return m.group(0).lower() if m else None


def extract_phone(text: str, now: dt.datetime) -> str | None:
    """The first phone number (7 to 15 digits) in ``text``, as ``+``/digits only."""
    for m in _PHONE.finditer(text):
        raw = m.group(1)
        digits = re.sub(r"\D", "", raw)
        if 7 <= len(digits) <= 15 and not _ISO_DATE.fullmatch(raw.strip()):
            return ("+" if raw.startswith("+") else "") + digits
    return None


def _safe_date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def extract_date(text: str, now: dt.datetime) -> str | None:
    """A date in ``text`` as ISO ``YYYY-MM-DD``, resolved against ``now``.

    Midnight ends the day it is named with: "tonight at midnight" and "Friday at midnight"
    are the next day's 00:00, the moment the ``time`` slot (``00:00``) then names.

    Understands ``2026-03-14``, ``March 14(th)(, 2026)``, ``14(th) (of) March``, ``today``,
    ``tonight``, ``tomorrow``, ``the day after tomorrow``, ``(next|this) Friday``. A month and
    day with no year means the next such date from today. Today's weekday alone means today,
    unless the text names a time that has already passed ("Friday at 3 pm" said on a Friday
    evening is next week's); ``this Friday`` is always today's, and ``today`` is today even at
    a time already past (see :func:`already_past`).
    """
    midnight = _is_midnight(text, now)
    day = _named_date(text, now, midnight)
    if day is None:
        return None
    return (day + dt.timedelta(days=1) if midnight else day).isoformat()


def _is_midnight(text: str, now: dt.datetime) -> bool:
    """Whether the time ``text`` names is the word "midnight"."""
    m = _TIME_WORD.search(text)
    return m is not None and m.group(1).lower() == "midnight" and extract_time(text, now) == "00:00"


def _named_date(text: str, now: dt.datetime, midnight: bool) -> dt.date | None:
    """The day ``text`` names (see :func:`extract_date`), before midnight moves it on."""
    today = now.date()
    if m := _ISO_DATE.search(text):
        d = _safe_date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if d:
            return d
    for pattern in (_MONTH_DAY, _DAY_MONTH):
        if m := pattern.search(text):
            month = _MONTHS[m.group("month").lower()]
            day = int(m.group("day"))
            if m.group("year"):
                d = _safe_date(int(m.group("year")), month, day)
            else:
                d = _safe_date(today.year, month, day)
                if d is not None and d < today:
                    d = _safe_date(today.year + 1, month, day)
            if d:
                return d
    if m := _RELATIVE.search(text):
        word = m.group(1).lower()
        offset = {"today": 0, "tonight": 0, "tomorrow": 1, "day after tomorrow": 2}[word]
        return today + dt.timedelta(days=offset)
    if m := _WEEKDAY.search(text):
        target = _WEEKDAYS.index(m.group(2).lower())
        ahead = (target - today.weekday()) % 7
        qualifier = (m.group(1) or "").lower()
        if ahead == 0 and qualifier == "next":
            ahead = 7
        elif ahead == 0 and not qualifier and not midnight:
            # today's weekday: today, unless its time has passed (midnight ends the day: never)
            time = extract_time(text, now)
            if time is not None and time <= now.strftime("%H:%M"):
                ahead = 7
        return today + dt.timedelta(days=ahead)
    return None


def extract_time(text: str, now: dt.datetime) -> str | None:
    """A time of day in ``text`` as 24-hour ``HH:MM``.

    Understands ``3pm``, ``3:30 p.m.``, ``15:30``, ``noon``, ``midnight`` and ``at 3`` (read as
    the afternoon for 1 to 7, like people mean it for appointments).
    """
    if m := _TIME_12.search(text):
        hour, minute = int(m.group(1)), int(m.group(2) or 0)
        if 1 <= hour <= 12 and minute < 60:
            hour = hour % 12 + (12 if m.group(3).lower() == "p" else 0)
            return f"{hour:02d}:{minute:02d}"
    if m := _TIME_24.search(text):
        return f"{int(m.group(1)):02d}:{m.group(2)}"
    if m := _TIME_WORD.search(text):
        return "00:00" if m.group(1).lower() == "midnight" else "12:00"
    if m := _TIME_AT.search(text):
        hour = int(m.group(1))
        if 1 <= hour <= 12:
            return f"{hour + 12 if hour <= 7 else hour:02d}:00"
    return None


def extract_name(text: str, now: dt.datetime) -> str | None:
    """The user's name from "my name is Ada", "call me Ada", "I'm Ada Lovelace".

    A word VADER rates negative, or a goodbye ("I'm Leaving", "This is Unacceptable!"), is
    not a name.
    """
    m = _NAME_EXPLICIT.search(text) or next(
        (m for m in _NAME_INTRO.finditer(text) if m.group(1)[0].isupper()), None
    )
    if not m:
        return None
    first, *rest = m.group(1).split()
    if not is_name_word(first):
        return None
    # a second word is a surname only when capitalised ("my name is Ana and I...": Ana)
    words = [first, *(w for w in rest[:1] if w[0].isupper() and is_name_word(w))]
    return " ".join(w[:1].upper() + w[1:] for w in words)


def already_past(slots: Mapping[str, str], now: dt.datetime) -> bool:
    """Whether the ``date`` slot (at the ``time`` slot, if any) lies before ``now``'s minute.

    "today at 3 pm" said at 9 pm keeps today's date, as the user said it; this tells the
    dialogue that the moment has passed. A time with no date, or a value that is not ISO
    (``YYYY-MM-DD``, ``HH:MM``), is never past.
    """
    try:
        day = dt.date.fromisoformat(slots["date"])
    except (KeyError, TypeError, ValueError):
        return False
    if "time" not in slots:
        return day < now.date()
    try:
        at = dt.time.fromisoformat(slots["time"])
    except (TypeError, ValueError):
        return day < now.date()
    # as extract_date reads "Friday at 3 pm": a time that is this very minute has passed
    return dt.datetime.combine(day, at) <= now.replace(tzinfo=None, second=0, microsecond=0)


DEFAULT_EXTRACTORS: Mapping[str, SlotExtractor] = {
    "email": extract_email,
    "phone": extract_phone,
    "date": extract_date,
    "time": extract_time,
    "name": extract_name,
}
"""The extractors the dialogue manager runs on every message unless told otherwise."""


def extract_slots(
    text: str,
    extractors: Mapping[str, SlotExtractor] = DEFAULT_EXTRACTORS,
    *,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Run every extractor on ``text``; return the slots found (name → value)."""
    when = now or dt.datetime.now().astimezone()
    found: dict[str, str] = {}
    for name, extractor in extractors.items():
        value = extractor(text, when)
        if value is not None:
            found[name] = value
    return found
