"""The offline default chat model: retrieval over a small knowledge file, answers from templates.

:class:`LocalChatModel` needs no key, no network and no weights. It matches the user's message
against the example questions of a knowledge file with TF-IDF (scikit-learn: word 1-2-grams and
character 2-4-grams, cosine similarity), picks the best entry above a threshold and fills one
of its answers with the persona's fields. It answers the common things people say to an
avatar (greetings, "who are you?", thanks, farewells, help, small talk) from a built-in file,
and whatever your persona's knowledge file adds; anything else gets a polite fallback. The same
conversation always gets the same answer, so tests and demos are reproducible.

Knowledge files are YAML (a list of ``{id, questions: [...], answers: [...]}``) or Markdown::

    ## What are your opening hours? | When are you open?
    We are open from nine to five, Monday to Friday.

    ## Where are you?
    On Main Street, next to the station.
    ---
    You will find us on Main Street, by the station.

(a heading lists questions separated by ``|``; the text below it is the answer; ``---`` separates
alternative answers).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import string
import unicodedata
import zlib
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.ports import ChatCapabilities
from avatarkit.types import ChatMessage, Emotion

from .persona import DEFAULT_PERSONA, PAST_NOTE, USER_FACTS, Persona
from .slot import DATE_WORDS, extract_name

__all__ = [
    "DEFAULT_KNOWLEDGE",
    "KnowledgeEntry",
    "LocalChatModel",
    "load_knowledge",
    "make_chat",
]

_EMOTIONS = frozenset(e.value for e in Emotion)
FALLBACK_ID = "fallback"
GREETING_ID = "greeting"
INTRODUCE_USER_ID = "introduce_user"
"""The entry answering the user's introduction ("I'm Alice", "This is Alice"), which is
recognised by its wording as well: "I'm Alice" shares too few words with "my name is"."""
USER_NAME_ID = "user_name"
"""The entry answering a question about the user's own name ("What's my name?"), which is
recognised by its wording, not by example questions: "What's a good name for my cat?" shares
most of its words."""
USER_FACT_ID = "user_fact"
"""The entry answering another question about the user themself ("What's my dog's name?", "How
old am I?"), recognised by its wording: by similarity it matched the avatar's own answer
("what's your name", "how old are you"). Its ``{asked}`` is the question turned round ("your
dog's name", "how old you are")."""
AVATAR_FACT_ID = "avatar_fact"
"""The entry answering a question about something of the avatar's ("What's your dog's name?"),
recognised by its wording: by similarity it matched "what's your name", and the avatar gave its
own name as the dog's. Its ``{asked}`` is the thing asked about ("a dog"). An entry of yours
whose questions name that thing ("What's your company called?") answers instead."""
_EPOCH = dt.datetime(2000, 1, 1)  # extract_name ignores the clock


def _default_knowledge_path() -> Path:
    return Path(str(resources.files("avatarkit").joinpath("data/dialogue_knowledge.yaml")))


DEFAULT_KNOWLEDGE = _default_knowledge_path()
"""The built-in knowledge file (greetings, identity, thanks, farewells, help, small talk)."""


@dataclass(frozen=True)
class KnowledgeEntry:
    """One topic: example questions that lead to it and the answers it gives."""

    id: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    source: str = field(default="", compare=False)
    emotion: str | None = None
    """An :class:`~avatarkit.types.Emotion` value the answer is said with (``"happy"``)."""
    intents: tuple[str, ...] = ()
    """Intents this entry answers when no question matches the message well enough (the
    understanding stage's label travels on the user message: ``ChatMessage.intent``)."""


def _entries_from_yaml(text: str, source: str) -> list[KnowledgeEntry]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"knowledge file {source} is not valid YAML: {exc}") from exc
    if isinstance(data, dict) and "entries" in data:
        data = data["entries"]
    if not isinstance(data, list):
        raise ConfigurationError(
            f"knowledge file {source} must be a list of entries with questions and answers"
        )
    out: list[KnowledgeEntry] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise ConfigurationError(f"knowledge file {source}: entry {i} is not a mapping")
        questions = item.get("questions", item.get("q", []))
        answers = item.get("answers", item.get("answer", item.get("a", [])))
        questions = [questions] if isinstance(questions, str) else questions
        answers = [answers] if isinstance(answers, str) else answers
        if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
            raise ConfigurationError(f"knowledge file {source}: entry {i} has bad questions")
        if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise ConfigurationError(f"knowledge file {source}: entry {i} needs answers")
        entry_id = str(item.get("id") or (questions[0] if questions else f"entry{i}"))
        intents = item.get("intents", [])
        intents = [intents] if isinstance(intents, str) else intents
        if not isinstance(intents, list) or not all(isinstance(n, str) for n in intents):
            raise ConfigurationError(f"knowledge file {source}: entry {entry_id!r} has bad intents")
        emotion = item.get("emotion")
        if emotion is not None and emotion not in _EMOTIONS:
            raise ConfigurationError(
                f"knowledge file {source}: entry {entry_id!r} has emotion {emotion!r}; "
                f"use one of {', '.join(sorted(_EMOTIONS))}"
            )
        out.append(
            KnowledgeEntry(
                entry_id,
                tuple(q.strip() for q in questions if q.strip()),
                tuple(a.strip() for a in answers),
                source,
                emotion,
                tuple(n.strip() for n in intents if n.strip()),
            )
        )
    return out


_HEADING = re.compile(r"^#{2,6}\s+(.+?)\s*#*\s*$")


def _entries_from_markdown(text: str, source: str) -> list[KnowledgeEntry]:
    out: list[KnowledgeEntry] = []
    questions: list[str] | None = None
    body: list[str] = []

    def close() -> None:
        if questions is None:
            return
        answers = [
            " ".join(part.split()) for part in "\n".join(body).split("\n---") if part.strip()
        ]
        answers = [a.strip("- ").strip() for a in answers if a.strip("- ").strip()]
        if not answers:
            raise ConfigurationError(
                f"knowledge file {source}: the heading {' | '.join(questions)!r} has no answer"
            )
        out.append(KnowledgeEntry(questions[0], tuple(questions), tuple(answers), source))

    for line in text.splitlines():
        m = _HEADING.match(line)
        if m:
            close()
            questions = [q.strip() for q in m.group(1).split("|") if q.strip()]
            body = []
        elif questions is not None:
            body.append(line)
    close()
    if not out:
        raise ConfigurationError(
            f"knowledge file {source} has no '## question' headings with answers below them"
        )
    return out


def load_knowledge(path: str | Path) -> list[KnowledgeEntry]:
    """Read a YAML (``.yaml``/``.yml``) or Markdown (``.md``) knowledge file.

    Raises:
        ConfigurationError: the file is missing, has another extension or is malformed.
    """
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigurationError(f"knowledge file {file} does not exist") from exc
    suffix = file.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return _entries_from_yaml(text, str(file))
    if suffix in (".md", ".markdown"):
        return _entries_from_markdown(text, str(file))
    raise ConfigurationError(
        f"knowledge file {file} must end in .yaml, .yml or .md (got {suffix or 'no extension'})"
    )


def _normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


_FILLER = r"(?:(?:hey|so|and|ok|okay|well|um|sorry|wait)\s+)*"  # said before a question
_AGAIN = r"(?:\s+(?:again|please|then|now))*"  # and after it
_MY_NAME = r"my\s+(?:(?:full|first|last|given|family|middle)\s+name|name|surname)"
_ASKS_OWN_NAME = re.compile(
    _FILLER + rf"(?:what(?:'s| is| was)\s+{_MY_NAME}"
    rf"|(?:do|did)\s+you\s+(?:still\s+)?(?:know|remember|get|catch)\s+{_MY_NAME}"
    rf"|(?:can|could|will|would)\s+you\s+(?:tell\s+me|remember|say)\s+{_MY_NAME}"
    rf"|(?:tell\s+me|say|remember)\s+{_MY_NAME}"
    rf"|(?:did\s+i\s+tell|have\s+i\s+told)\s+you\s+{_MY_NAME})" + _AGAIN
)  # matched whole on normalised text: "my (full) name" itself, never "my dog's name"
_OWNER = r"(?P<owner>[\w']+(?:\s+[\w']+){0,2}?)"  # "dog's", "best friend's", "dogs"
_ABOUT_USER: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(_FILLER + pattern + _AGAIN), asked)
    for pattern, asked in (
        (rf"what(?:'s| is| was)\s+my\s+{_OWNER}\s+name", "your {owner} name"),
        (
            rf"(?:(?:do|did)\s+you\s+(?:still\s+)?(?:know|remember)|(?:can|could)\s+you\s+tell"
            rf"\s+me|tell\s+me)\s+my\s+{_OWNER}\s+name",
            "your {owner} name",
        ),
        (rf"what(?:'s| is| was)\s+my\s+{_OWNER}\s+called", "what your {owner} is called"),
        (r"how\s+old\s+am\s+i", "how old you are"),
        (r"where\s+do\s+i\s+live", "where you live"),
        (r"where\s+(?:am\s+i|do\s+i\s+come)\s+from", "where you are from"),
    )
)  # matched whole on normalised text, like _ASKS_OWN_NAME
_INTRODUCES = _FILLER + (
    r"(?:i'm|i\s+am|this\s+is|my\s+name\s+is|my\s+name's"
    r"|(?:(?:you\s+can|please|just|people)\s+)?call\s+me)\s+"
)  # then the name extract_name finds, and nothing else: "I'm Alice", "this is Alice here"
_ORIGIN = r"(?:creator|maker|developer|designer|programmer|builder|author)"  # still the avatar's
_THING = rf"(?!{_ORIGIN}\b)(?P<thing>[\w']+(?:\s+[\w']+){{0,2}}?)"  # "dog", "best friend"
_ABOUT_AVATAR: tuple[re.Pattern[str], ...] = tuple(
    re.compile(_FILLER + pattern + _AGAIN)
    for pattern in (
        rf"what(?:'s| is| was)\s+your\s+{_THING}(?:'s|s')\s+name",
        rf"what(?:'s| is| was)\s+the\s+name\s+of\s+your\s+{_THING}",
        rf"what(?:'s| is| was)\s+your\s+{_THING}\s+called",
    )
)  # matched whole on normalised text, like _ABOUT_USER
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_FACTS = re.compile(rf"^{re.escape(USER_FACTS)}: (?P<v>.+)\.$", re.MULTILINE)
_PAST = re.compile(
    rf"^{re.escape(PAST_NOTE)} \(it is now (?P<day>\d{{4}}-\d\d-\d\d)[ T]", re.MULTILINE
)
_FACT_FIELDS = ("date", "time", "email", "phone")  # the user's name is {user_name}
SYMPATHY_ID = "sympathy"
"""The entry answering a negative message that matches nothing else."""


def _spoken_date(iso: str) -> str:
    try:
        day = dt.date.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{day:%A}, {day:%B} {day.day}"


def _spoken_time(hhmm: str) -> str:
    try:
        t = dt.time.fromisoformat(hhmm)
    except ValueError:
        return hhmm
    if t.minute == 0 and t.hour in (0, 12):
        return "midnight" if t.hour == 0 else "noon"
    hour = t.hour % 12 or 12
    minutes = f":{t.minute:02d}" if t.minute else ""
    return f"{hour}{minutes} {'am' if t.hour < 12 else 'pm'}"


def _told(messages: Sequence[ChatMessage]) -> dict[str, str]:
    """Every ``key: value`` the dialogue manager told the model about the user (its slots)."""
    system = next((m.content for m in messages if m.role == "system"), "")
    found = _FACTS.search(system)
    if found is None:
        return {}
    told: dict[str, str] = {}
    for pair in found.group("v").split("; "):
        key, sep, value = pair.partition(": ")
        if sep and value:
            told[key] = value
    return told


def _past(messages: Sequence[ChatMessage], told: dict[str, str]) -> str | None:
    """The user's date and time, spoken ("3 pm today"), when the manager says they have passed.

    ``told`` is :func:`_told` of the same messages.
    """
    system = next((m.content for m in messages if m.role == "system"), "")
    found = _PAST.search(system)
    if found is None or "date" not in told:
        return None
    day = "today" if told["date"] == found.group("day") else _spoken_date(told["date"])
    if "time" not in told:
        return day
    time = _spoken_time(told["time"])
    return f"{time} today" if day == "today" else f"{day} at {time}"


def _facts(told: dict[str, str]) -> dict[str, str]:
    """The facts among what the manager told the model (:func:`_told`), dates and times spoken."""
    facts = {k: v for k, v in told.items() if k in _FACT_FIELDS}
    if "date" in facts:
        facts["date"] = _spoken_date(facts["date"])
    if "time" in facts:
        facts["time"] = _spoken_time(facts["time"])
    return facts


_PERSONA_NAME = re.compile(r"^You are (?P<name>[^,\n]+), an animated avatar", re.MULTILINE)
_PERSONA_BACKSTORY = re.compile(r"^Backstory: (?P<v>.+)$", re.MULTILINE)


def _fields_of(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


class _Index:
    """TF-IDF over every example question (word, character n-grams); entries by id and intent.

    A message's similarity is scaled by the square root of its *coverage*: the share of its
    content words (not stop words) that occur anywhere in the questions. "What is the capital
    of France?" shares "what is the" with a weather question, but "capital" and "France" are
    unknown, so it falls back instead of talking about the weather. Dates and times (numbers,
    :data:`~avatarkit.dialogue.slot.DATE_WORDS`) count as known to the entries whose answers
    say them (``{date}``, ``{time}``, ``{past}``): "Book me in on 2026-12-01" is as well known
    to the appointment entry as "Book me in", and no better known to any other.
    """

    def __init__(self, entries: Sequence[KnowledgeEntry]) -> None:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

        self.stop_words: frozenset[str] = frozenset(ENGLISH_STOP_WORDS)
        self.by_id = {e.id: e for e in entries}
        self.by_intent: dict[str, KnowledgeEntry] = {}
        for entry in entries:  # the first entry claiming an intent answers it
            for name in entry.intents:
                self.by_intent.setdefault(name, entry)

        self.rows: list[int] = []
        texts: list[str] = []
        self.words: list[frozenset[str]] = []  # every word of each entry's questions
        for i, entry in enumerate(entries):
            for q in entry.questions:
                self.rows.append(i)
                texts.append(_normalize(q))
            self.words.append(frozenset(w for q in entry.questions for w in _normalize(q).split()))
        self.takes_dates = [any(_fields_of(a) & _DATED for a in e.answers) for e in entries]
        self.n_entries = len(entries)
        self.word = TfidfVectorizer(
            analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"[\w']+"
        )
        self.char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
        self.vocabulary = {tok for t in texts for tok in t.split()}
        self.word_m = self.word.fit_transform(texts) if texts else None
        self.char_m = self.char.fit_transform(texts) if texts else None

    def scores(self, text: str, ignore: frozenset[str] = frozenset()) -> list[float]:
        """Best similarity of ``text`` to each entry's questions (0 for entries with none).

        Words in ``ignore`` (normalised; e.g. the user's name) do not count against coverage.
        """
        best = [0.0] * self.n_entries
        if self.word_m is None or self.char_m is None:
            return best
        q = _normalize(text)
        w = (self.word_m @ self.word.transform([q]).T).toarray().ravel()
        c = (self.char_m @ self.char.transform([q]).T).toarray().ravel()
        content = [
            t for t in q.split() if len(t) > 1 and t not in self.stop_words and t not in ignore
        ]
        known = sum(t in self.vocabulary for t in content)
        dated = sum(t not in self.vocabulary and _is_date_word(t) for t in content)
        scale = (known / len(content)) ** 0.5 if content else 1.0
        dated_scale = ((known + dated) / len(content)) ** 0.5 if content else 1.0
        for entry, score in zip(self.rows, 0.5 * w + 0.5 * c, strict=True):
            factor = dated_scale if self.takes_dates[entry] else scale
            best[entry] = max(best[entry], float(score) * factor)
        return best


_DATED = frozenset({"date", "time", "past"})  # answer fields that say the user's date or time


def _is_date_word(token: str) -> bool:
    """Whether a normalised token is part of a date or time ("2026", "3pm", "friday")."""
    return token in DATE_WORDS or any(ch.isdigit() for ch in token)


class LocalChatModel:
    """Retrieval + template responder: offline, deterministic, instant.

    Args:
        persona: Fills ``{name}``, ``{backstory}``... in answers; its ``knowledge`` file is
            searched too. ``None``: taken from a system prompt written by
            :meth:`Persona.system_prompt` when there is one, else the default persona.
        knowledge: Extra knowledge files or entries, searched before the built-in ones (an
            entry with the same id replaces the built-in entry).
        include_defaults: Also answer from the built-in knowledge file.
        threshold: Lowest similarity (0-1) that counts as a match; below it, the fallback answers.
        emotion_tags: Start an answer whose entry has an ``emotion`` with its tag (``[happy]``),
            which the bot turns into the face's expression and removes before speech.
    """

    def __init__(
        self,
        persona: Persona | None = None,
        *,
        knowledge: str | Path | Sequence[str | Path | KnowledgeEntry] | None = None,
        include_defaults: bool = True,
        threshold: float = 0.45,
        emotion_tags: bool = True,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise InputValidationError(
                f"threshold must be within [0, 1], got {threshold}", field="threshold"
            )
        self.persona = persona
        self.threshold = threshold
        self.emotion_tags = emotion_tags
        sources: list[str | Path | KnowledgeEntry] = []
        if isinstance(knowledge, str | Path):
            sources.append(knowledge)
        elif knowledge is not None:
            sources.extend(knowledge)
        if persona is not None and persona.knowledge is not None:
            sources.append(persona.knowledge)
        entries: dict[str, KnowledgeEntry] = {}
        for src in sources:
            for entry in [src] if isinstance(src, KnowledgeEntry) else load_knowledge(src):
                entries.setdefault(entry.id, entry)
        if include_defaults:
            for entry in load_knowledge(DEFAULT_KNOWLEDGE):
                entries.setdefault(entry.id, entry)
        if FALLBACK_ID not in entries:
            entries[FALLBACK_ID] = KnowledgeEntry(
                FALLBACK_ID, (), ("I'm not sure about that. Could you ask it another way?",)
            )
        self.entries: list[KnowledgeEntry] = list(entries.values())
        self._index: _Index | None = None

    def __repr__(self) -> str:
        name = self.persona.name if self.persona else None
        return f"LocalChatModel(persona={name!r}, entries={len(self.entries)})"

    def use_persona(self, persona: Persona) -> None:
        """Speak as ``persona`` from now on, answering from its knowledge file too.

        The dialogue manager calls this on a local model that was made without a persona
        (``chat="local"``), so the persona given to the bot reaches the answers.

        Raises:
            ConfigurationError: the persona's knowledge file cannot be read.
        """
        added = load_knowledge(persona.knowledge) if persona.knowledge is not None else []
        keep = [e for e in self.entries if e.id not in {a.id for a in added}]
        self.persona = persona
        self.entries = added + keep
        self._index = None

    @property
    def capabilities(self) -> ChatCapabilities:
        """Streams, runs offline; no JSON-schema output."""
        return ChatCapabilities(streaming=True, json_schema=False, offline=True)

    # -- retrieval -----------------------------------------------------------------------------

    def _get_index(self) -> _Index:
        if self._index is None:
            self._index = _Index(self.entries)
        return self._index

    def match(
        self, text: str, *, fields: Collection[str] | None = None
    ) -> tuple[KnowledgeEntry, float]:
        """The best entry for ``text`` and its similarity; the fallback entry below threshold.

        With ``fields`` (the template fields known), a best entry whose every answer needs
        another field gives the fallback too: "Nice to meet you, !" is never an answer (nor a
        lesser match on another topic). A question about the user's own name ("What's my
        name?", "Do you know my name?") gets the ``user_name`` entry, similarity 1, and one
        about another of their things ("What's my dog's name?", "How old am I?") the
        ``user_fact`` entry. The user's introduction alone ("I'm Alice") gets the
        ``introduce_user`` entry. One about the avatar's things ("What's your dog's name?") gets the
        best entry whose questions name the thing, else the ``avatar_fact`` entry.
        """
        index = self._get_index()
        known = set(fields) if fields is not None else None
        thing = self._asked_about_avatar(text)
        if USER_NAME_ID in index.by_id and self._asks_own_name(text):
            entry, score = index.by_id[USER_NAME_ID], 1.0
        elif INTRODUCE_USER_ID in index.by_id and self._introduces_user(text):
            entry, score = index.by_id[INTRODUCE_USER_ID], 1.0
        elif USER_FACT_ID in index.by_id and self._asked_about_user(text) is not None:
            entry, score = index.by_id[USER_FACT_ID], 1.0
            known = None if known is None else known | {"asked"}
        elif AVATAR_FACT_ID in index.by_id and thing is not None:
            entry, score = self._about_thing(text, thing, index)
            if entry.id == AVATAR_FACT_ID:
                known = None if known is None else known | {"asked"}
        else:
            name = extract_name(text, _EPOCH)
            ignore = frozenset(_normalize(name).split()) if name else frozenset()
            scores = index.scores(text, ignore)
            best = max(range(len(scores)), key=lambda i: scores[i]) if scores else -1
            if best < 0 or scores[best] < self.threshold:
                return index.by_id[FALLBACK_ID], scores[best] if best >= 0 else 0.0
            entry, score = self.entries[best], scores[best]
        if known is not None and not any(_fields_of(a) <= known for a in entry.answers):
            return index.by_id[FALLBACK_ID], score
        return entry, score

    def _addressed(self, text: str) -> str:
        """``text`` normalised, without the persona's name said before or after it."""
        words = _normalize(text)
        if self.persona is not None:
            avatar = re.escape(_normalize(self.persona.name))
            words = re.sub(rf"^{avatar}\s+|\s+{avatar}$", "", words)
        return words

    def _asks_own_name(self, text: str) -> bool:
        """Whether ``text`` asks for the user's own name, also addressed to the persona."""
        return _ASKS_OWN_NAME.fullmatch(self._addressed(text)) is not None

    def _introduces_user(self, text: str) -> bool:
        """Whether ``text`` is only the user's introduction ("I'm Alice"), maybe addressed."""
        name = extract_name(text, _EPOCH)
        if name is None:
            return False
        said = rf"{_INTRODUCES}{re.escape(_normalize(name))}(?:\s+here)?"
        return re.fullmatch(said, self._addressed(text)) is not None

    def _asked_about_user(self, text: str) -> str | None:
        """What ``text`` asks about the user, turned round ("your dog's name"), else ``None``."""
        words = self._addressed(text)
        for pattern, asked in _ABOUT_USER:
            if (found := pattern.fullmatch(words)) is not None:
                return asked.format(**found.groupdict())
        return None

    def _asked_about_avatar(self, text: str) -> str | None:
        """The thing of the avatar's that ``text`` asks about ("dog"), else ``None``."""
        words = self._addressed(text)
        for pattern in _ABOUT_AVATAR:
            if (found := pattern.fullmatch(words)) is not None:
                return found.group("thing")
        return None

    def _about_thing(self, text: str, thing: str, index: _Index) -> tuple[KnowledgeEntry, float]:
        """The best entry above threshold whose questions name ``thing``, else ``avatar_fact``."""
        noun = thing.split()[-1]
        forms = {noun, f"{noun}'s", f"{noun}s", f"{noun}s'"}
        # "your company's name" scored as "your company name": the questions name the company
        scores = index.scores(re.sub(rf"\b{re.escape(noun)}(?:'s|s')", noun, _normalize(text)))
        named = [i for i, words in enumerate(index.words) if words & forms]
        best = max(named, key=lambda i: scores[i], default=None)
        if best is not None and scores[best] >= self.threshold:
            return self.entries[best], scores[best]
        return index.by_id[AVATAR_FACT_ID], 1.0

    def _asked(self, entry: KnowledgeEntry, text: str) -> str | None:
        """The ``{asked}`` of a ``user_fact`` or ``avatar_fact`` answer to ``text``."""
        if entry.id == USER_FACT_ID:
            return self._asked_about_user(text)
        thing = self._asked_about_avatar(text) if entry.id == AVATAR_FACT_ID else None
        if thing is None:
            return None
        return f"{'an' if thing[0] in 'aeiou' else 'a'} {thing}"

    # -- answering -----------------------------------------------------------------------------

    def _persona_for(self, messages: Sequence[ChatMessage]) -> Persona:
        if self.persona is not None:
            return self.persona
        system = next((m.content for m in messages if m.role == "system"), "")
        name = _PERSONA_NAME.search(system)
        if name is None:
            return DEFAULT_PERSONA
        backstory = _PERSONA_BACKSTORY.search(system)
        return DEFAULT_PERSONA.model_copy(
            update={
                "name": name.group("name").strip(),
                **({"backstory": backstory.group("v").strip()} if backstory else {}),
            }
        )

    def reply(self, messages: Sequence[ChatMessage]) -> str:
        """The answer to the last user message of ``messages`` (what :meth:`complete` returns).

        Raises:
            InputValidationError: there is no user message, or the last one is empty.
        """
        users = [m for m in messages if m.role == "user"]
        if not users or not users[-1].content.strip():
            raise InputValidationError(
                "LocalChatModel needs a non-empty user message to answer", field="messages"
            )
        text = users[-1].content
        fields, facts = self.template_fields(messages)
        turn = sum(1 for m in messages if m.role == "assistant")

        parts = [p for p in _SENTENCE_END.split(text.strip()) if p.strip()] or [text]
        matched: list[KnowledgeEntry] = []
        for part in parts if len(parts) > 1 else [text]:
            entry, _ = self.match(part, fields=fields.keys())
            if entry.id != FALLBACK_ID and entry not in matched:
                matched.append(entry)
                if (asked := self._asked(entry, part)) is not None:
                    fields["asked"] = asked
        if len(parts) > 1 and not matched:
            entry, _ = self.match(text, fields=fields.keys())
            if entry.id != FALLBACK_ID:
                matched.append(entry)
        greet = False
        if len(matched) > 1 and any(e.id == GREETING_ID for e in matched):
            matched = [e for e in matched if e.id != GREETING_ID]
            greet = True
        if not matched:
            matched = [self._unmatched(users[-1])]

        # Asked their name, a user who gave it hears it back, not "You haven't told me".
        answers = [
            self._fill(e, fields, turn, {*facts, *(["user_name"] if e.id == USER_NAME_ID else [])})
            for e in matched[:2]
        ]
        reply = " ".join(a for a in answers if a)
        if greet and not re.match(r"(?i)(hi|hello|hey)\b", reply):
            reply = "Hello! " + reply
        if self.emotion_tags and matched[0].emotion:
            reply = f"[{matched[0].emotion}] {reply}"
        return reply

    def template_fields(
        self, messages: Sequence[ChatMessage]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The answer-template fields a conversation fills, and the user's facts among them.

        Fields: the persona's (``name``, ``backstory``...), ``user_name`` once the user has
        said it (in the messages, or among the facts the dialogue manager passes on), and the
        facts (``date``, ``time``, ``email``, ``phone``) the user gave. When the manager says
        the date and time have passed, ``past`` ("3 pm today") counts as a fact instead of them,
        so an answer that says so wins over one that notes them.
        """
        fields: dict[str, Any] = dict(self._persona_for(messages).template_fields())
        users = [m for m in messages if m.role == "user"]
        told = _told(messages)
        user_name = next(
            (n for m in reversed(users) if (n := extract_name(m.content, _EPOCH)) is not None),
            told.get("name"),
        )
        if user_name:
            fields["user_name"] = user_name
        facts = _facts(told)
        fields.update(facts)
        past = _past(messages, told)
        if past is not None:
            fields["past"] = past
            facts = {k: v for k, v in facts.items() if k not in ("date", "time")}
            facts["past"] = past
        return fields, facts

    def _unmatched(self, message: ChatMessage) -> KnowledgeEntry:
        """The entry for a message no question matched: its intent's, sympathy, or fallback."""
        index = self._get_index()
        if message.intent and message.intent in index.by_intent:
            return index.by_intent[message.intent]
        if message.sentiment == "negative" and SYMPATHY_ID in index.by_id:
            return index.by_id[SYMPATHY_ID]
        return index.by_id[FALLBACK_ID]

    def _fill(
        self, entry: KnowledgeEntry, fields: dict[str, Any], turn: int, facts: set[str]
    ) -> str:
        usable = [a for a in entry.answers if _fields_of(a) <= fields.keys()]
        if usable:  # the answers that use the most of what the user told (a date, a time)
            most = max(len(_fields_of(a) & facts) for a in usable)
            usable = [a for a in usable if len(_fields_of(a) & facts) == most]
        else:  # an answer needs a field we lack: fill what we can, drop the rest
            usable = list(entry.answers)
        pick = usable[(turn + zlib.crc32(entry.id.encode())) % len(usable)]
        return pick.format_map(_Keep(fields)).strip()

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """Return the whole reply to ``messages``."""
        # Matching is CPU work (milliseconds): off the event loop, so other sessions keep moving.
        return await asyncio.to_thread(self.reply, messages)

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        """Yield the reply word by word (each word with its trailing space)."""
        for token in re.findall(r"\S+\s*", await asyncio.to_thread(self.reply, messages)):
            yield token


class _Keep(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


def make_chat(name: str | None = None, **options: Any) -> LocalChatModel:
    """Factory for the spec ``"local"`` or ``"local:<knowledge file>"``.

    Args:
        name: A knowledge file (YAML or Markdown) to answer from, besides the built-in one.
        **options: Passed to :class:`LocalChatModel` (``persona``, ``threshold``...).
    """
    if name:
        extra = options.pop("knowledge", None)
        files: list[str | Path | KnowledgeEntry] = [name]
        if isinstance(extra, str | Path):
            files.append(extra)
        elif extra is not None:
            files.extend(extra)
        options["knowledge"] = files
    return LocalChatModel(**options)
