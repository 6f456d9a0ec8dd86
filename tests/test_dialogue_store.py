"""Dialogue stores: the same contract in memory, as JSON files and in SQLite; restarts and races."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from avatarkit.dialogue.store import (
    DialogueStore,
    InMemoryStore,
    JsonFileStore,
    SQLiteStore,
)
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.types import DialogueState, DialogueTurn, Emotion

STORES = ["memory", "json", "sqlite"]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DialogueStore]:
    if request.param == "memory":
        yield InMemoryStore()
    elif request.param == "json":
        yield JsonFileStore(tmp_path / "sessions")
    else:
        s = SQLiteStore(tmp_path / "db" / "dialogue.sqlite")
        yield s
        await s.aclose()


def _state(session: str, n: int = 1) -> DialogueState:
    return DialogueState(
        session_id=session,
        turns=[
            DialogueTurn(
                user=f"question {i}",
                assistant=f"answer {i}",
                intent="greeting",
                emotion=Emotion.HAPPY,
            )
            for i in range(n)
        ],
        context={"topic": "museums"},
        slots={"date": "2026-03-14", "name": "Ada"},
    )


async def test_unknown_session_loads_empty(store: DialogueStore) -> None:
    state = await store.load("nobody")
    assert state == DialogueState(session_id="nobody")
    assert await store.list_sessions() == []


async def test_round_trip_keeps_everything(store: DialogueStore) -> None:
    original = _state("s1", 3)
    await store.save(original)
    loaded = await store.load("s1")
    assert loaded == original
    assert loaded.turns[2].emotion is Emotion.HAPPY and loaded.slots["name"] == "Ada"


async def test_loaded_state_is_a_copy(store: DialogueStore) -> None:
    await store.save(_state("s1"))
    loaded = await store.load("s1")
    loaded.turns.clear()
    loaded.slots["name"] = "Mallory"
    again = await store.load("s1")
    assert len(again.turns) == 1 and again.slots["name"] == "Ada"


async def test_sessions_are_isolated_and_listed(store: DialogueStore) -> None:
    await store.save(_state("alice", 1))
    await store.save(_state("bob", 2))
    await store.save(_state("alice", 4))  # replaces alice only
    assert len((await store.load("alice")).turns) == 4
    assert len((await store.load("bob")).turns) == 2
    assert await store.list_sessions() == ["alice", "bob"]
    assert await store.delete("alice") is True
    assert await store.delete("alice") is False
    assert await store.list_sessions() == ["bob"]
    assert (await store.load("alice")).turns == []


async def test_odd_session_ids_are_safe(store: DialogueStore) -> None:
    ids = ["../../etc/passwd", "user@example.com", "a/b\\c", "名前", ".hidden"]
    for i, sid in enumerate(ids):
        await store.save(_state(sid, i + 1))
    for i, sid in enumerate(ids):
        assert len((await store.load(sid)).turns) == i + 1
    assert sorted(await store.list_sessions()) == sorted(ids)


@pytest.mark.parametrize("bad", ["", "   ", "x" * 129, "a\nb"])
async def test_bad_session_ids_are_refused(store: DialogueStore, bad: str) -> None:
    with pytest.raises(InputValidationError):
        await store.load(bad)
    with pytest.raises(InputValidationError):
        await store.save(DialogueState(session_id=bad))


async def test_many_tasks_writing_different_sessions(store: DialogueStore) -> None:
    async def writer(i: int) -> None:
        for n in range(1, 6):
            await store.save(_state(f"session-{i}", n))
            assert len((await store.load(f"session-{i}")).turns) == n

    await asyncio.gather(*(writer(i) for i in range(12)))
    assert len(await store.list_sessions()) == 12
    for i in range(12):
        assert len((await store.load(f"session-{i}")).turns) == 5


async def test_json_store_writes_one_readable_file_per_session(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    await store.save(_state("a/b"))
    files = [p.name for p in tmp_path.iterdir()]
    assert files == ["a%2Fb.json"]
    data = json.loads((tmp_path / "a%2Fb.json").read_text())
    assert data["session_id"] == "a/b" and data["slots"]["name"] == "Ada"


LONG_IDS = [
    "山田太郎のディスコードサーバーで話しているユーザーさんです",  # 30 chars, 270 bytes encoded
    "山田太郎のディスコードサーバーで話しているユーザーさんです!",  # same long prefix
    "/" * 128,  # ASCII, but 384 characters percent-encoded
    "名" * 128,
]


async def test_json_store_keeps_long_encoded_ids_under_the_file_name_limit(
    tmp_path: Path,
) -> None:
    store = JsonFileStore(tmp_path)
    for i, sid in enumerate(LONG_IDS):
        await store.save(_state(sid, i + 1))
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == len(LONG_IDS)
    assert all(len(name.encode()) <= 240 for name in names), names
    prefixes = [urllib.parse.unquote(name.split("+")[0], errors="strict") for name in names]
    assert any(len(p) >= 8 and LONG_IDS[0].startswith(p) for p in prefixes)  # recognisable
    for i, sid in enumerate(LONG_IDS):
        loaded = await store.load(sid)
        assert loaded.session_id == sid and len(loaded.turns) == i + 1
    assert await store.list_sessions() == sorted(LONG_IDS)
    assert await store.delete(LONG_IDS[0]) is True
    assert await store.list_sessions() == sorted(LONG_IDS[1:])
    assert (await JsonFileStore(tmp_path).load(LONG_IDS[1])).turns  # a new store finds them


async def test_json_store_reads_files_written_under_the_readable_name(tmp_path: Path) -> None:
    sid = "user-" + "x" * 123  # the longest ASCII id: a readable name, as before
    (tmp_path / f"{sid}.json").write_text(_state(sid, 2).model_dump_json())
    store = JsonFileStore(tmp_path)
    assert store.path_for(sid).name == f"{sid}.json"
    assert len((await store.load(sid)).turns) == 2
    assert await store.list_sessions() == [sid]


async def test_json_store_reports_a_corrupt_file(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path)
    (tmp_path / "s.json").write_text('{"turns": "not a list"}')
    with pytest.raises(ConfigurationError, match="not a valid dialogue state"):
        await store.load("s")


async def test_sqlite_is_a_real_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite"
    store = SQLiteStore(path)
    original = _state("s1", 2)
    await store.save(original)
    await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (raw,) = conn.execute(
            "SELECT state FROM dialogue_sessions WHERE session_id='s1'"
        ).fetchone()
    assert DialogueState.model_validate_json(raw) == original


async def test_sqlite_survives_a_new_store_on_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite"
    first = SQLiteStore(path)
    await first.save(_state("s1", 2))
    await first.aclose()
    with pytest.raises(ConfigurationError, match="closed"):
        await first.load("s1")
    second = SQLiteStore(path)
    assert len((await second.load("s1")).turns) == 2
    await second.aclose()


async def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite"
    a, b = SQLiteStore(path), SQLiteStore(path)
    await a.save(_state("from-a", 1))
    await b.save(_state("from-b", 2))
    assert await a.list_sessions() == ["from-a", "from-b"]
    assert len((await b.load("from-a")).turns) == 1
    await a.aclose()
    await b.aclose()


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not sqlite " * 100)
    with pytest.raises(ConfigurationError, match="cannot open"):
        asyncio.run(SQLiteStore(bogus).load("s"))


# --------------------------------------------------------------------------- restart a real bot

BOT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import datetime as dt
    from avatarkit import _sync
    from avatarkit.bot import AvatarBot
    from avatarkit.dialogue.handler import SlotForm
    from avatarkit.dialogue.local_chat import LocalChatModel
    from avatarkit.dialogue.manager import DialogueManager, Persona
    from avatarkit.dialogue.store import SQLiteStore
    from avatarkit.testing import FakeIntentClassifier, FakePreprocessor

    db, session, text = sys.argv[1:4]
    booking = SlotForm(
        "book_appointment",
        {"date": "Which day would suit you?", "time": "At what time?"},
        submit="You are booked on {date} at {time}, {name}.",
    )
    manager = DialogueManager(
        LocalChatModel(),
        persona=Persona("Ada"),
        store=SQLiteStore(db),
        handlers={"book_appointment": booking},
        clock=lambda: dt.datetime(2026, 11, 27, 10, 0),
    )
    bot = AvatarBot(
        dialogue=manager,
        preprocessor=FakePreprocessor(),
        intent=FakeIntentClassifier({"appointment": "book_appointment"}),
        sentiment=None, voice=None, renderer=None, expression=None,
    )
    reply = bot.respond_sync(text, session_id=session)
    st = _sync.run(manager.load(session))
    print(json.dumps({"reply": reply.dialogue.text, "handled_by": reply.dialogue.handled_by,
                      "turns": [t.user for t in st.turns], "slots": st.slots}))
    """
)


def _run_bot(tmp_path: Path, db: Path, session: str, text: str) -> dict[str, object]:
    script = tmp_path / "bot_turn.py"
    script.write_text(BOT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run(
        [sys.executable, str(script), str(db), session, text],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_restarted_bot_continues_the_same_conversation(tmp_path: Path) -> None:
    db = tmp_path / "bot.sqlite"
    # Process 1: the user gives a name and starts booking; the form asks for the day.
    first = _run_bot(tmp_path, db, "visitor-1", "My name is Grace and I need an appointment")
    assert first["reply"] == "Which day would suit you?"
    assert first["handled_by"] == "handler:book_appointment"
    # Another visitor, in between, on the same database.
    other = _run_bot(tmp_path, db, "visitor-2", "hello")
    assert other["turns"] == ["hello"]
    # Process 2 (a fresh interpreter): the form resumes where it stopped, with the name kept.
    second = _run_bot(tmp_path, db, "visitor-1", "tomorrow at 3pm please")
    assert second["reply"] == "You are booked on 2026-11-28 at 15:00, Grace."
    assert second["turns"] == [
        "My name is Grace and I need an appointment",
        "tomorrow at 3pm please",
    ]
    assert second["slots"] == {"name": "Grace"}  # the form's own slots are cleared on submit


def test_a_session_id_with_a_lone_surrogate_is_refused() -> None:
    from avatarkit.dialogue.store import check_session_id
    from avatarkit.errors import InputValidationError

    with pytest.raises(InputValidationError, match="surrogate"):
        check_session_id("a\ud800")
