"""Where conversations live between turns: in memory, one JSON file per session, or SQLite.

Every store speaks the same small async protocol, :class:`DialogueStore`. ``load`` of an unknown
session returns a fresh, empty :class:`~avatarkit.types.DialogueState`, so a bot never has to
ask whether a session exists. Stores hand out copies: changing a loaded state changes nothing
until it is saved.

:class:`SQLiteStore` is the one to use when a bot must survive a restart: a real file database
(stdlib ``sqlite3`` in WAL mode), each session one row, every call run in a worker thread so the
event loop never blocks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import sqlite3
import threading
import urllib.parse
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import ValidationError

from avatarkit._files import write_bytes_atomic
from avatarkit.config import get_logger
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.types import DialogueState

__all__ = [
    "MAX_SESSION_ID_CHARS",
    "DialogueStore",
    "InMemoryStore",
    "JsonFileStore",
    "SQLiteStore",
    "check_session_id",
]

MAX_SESSION_ID_CHARS = 128
"""Longest session id a store accepts."""

_log = get_logger("avatarkit.dialogue.store")

_NAME_MAX = 255
"""Longest file name, in bytes, that common file systems (ext4, APFS, NTFS...) take."""
_STEM_MAX = _NAME_MAX - len(".") - len(".json") - len(".XXXXXXXX.part")
"""Longest readable file stem: the atomic write's temporary ``.<name>.json.XXXXXXXX.part``
must fit too."""
_HASHED_PREFIX = 90
"""Characters of the encoded id kept in front of the hash when the whole does not fit."""
_HASH_MARK = "+"
"""Separates prefix and hash; percent-encoding never leaves a ``+``, so readable names lack it."""


def check_session_id(session_id: str) -> str:
    """Return ``session_id`` when it is usable as a key, else raise.

    Raises:
        InputValidationError: it is not a string, is empty or blank, is longer than
            :data:`MAX_SESSION_ID_CHARS`, or contains control characters or lone
            surrogates.
    """
    if not isinstance(session_id, str) or not session_id.strip():
        raise InputValidationError(
            f"a session id must be a non-empty string, got {session_id!r}", field="session_id"
        )
    if len(session_id) > MAX_SESSION_ID_CHARS:
        raise InputValidationError(
            f"a session id may have at most {MAX_SESSION_ID_CHARS} characters, "
            f"got {len(session_id)}",
            field="session_id",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in session_id):
        raise InputValidationError(
            "a session id must not contain control characters", field="session_id"
        )
    if any(0xD800 <= ord(c) <= 0xDFFF for c in session_id):  # not encodable as UTF-8
        raise InputValidationError(
            "a session id must be valid Unicode text (it holds a lone surrogate)",
            field="session_id",
        )
    return session_id


@runtime_checkable
class DialogueStore(Protocol):
    """Keeps each session's :class:`~avatarkit.types.DialogueState` between turns."""

    async def load(self, session_id: str) -> DialogueState:
        """Return the saved state of ``session_id``, or a new empty one."""
        ...

    async def save(self, state: DialogueState) -> None:
        """Store ``state`` under ``state.session_id``, replacing what was there."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Forget ``session_id``; return whether it existed."""
        ...

    async def list_sessions(self) -> list[str]:
        """Every stored session id, sorted."""
        ...


class InMemoryStore:
    """Sessions in a dict: fast, and gone when the process ends."""

    def __init__(self) -> None:
        self._states: dict[str, DialogueState] = {}

    def __repr__(self) -> str:
        return f"InMemoryStore(sessions={len(self._states)})"

    async def load(self, session_id: str) -> DialogueState:
        """Return a copy of the saved state of ``session_id``, or a new empty one."""
        check_session_id(session_id)
        state = self._states.get(session_id)
        if state is None:
            return DialogueState(session_id=session_id)
        return state.model_copy(deep=True)

    async def save(self, state: DialogueState) -> None:
        """Store a copy of ``state``."""
        check_session_id(state.session_id)
        self._states[state.session_id] = state.model_copy(deep=True)

    async def delete(self, session_id: str) -> bool:
        """Forget ``session_id``; return whether it existed."""
        check_session_id(session_id)
        return self._states.pop(session_id, None) is not None

    async def list_sessions(self) -> list[str]:
        """Every stored session id, sorted."""
        return sorted(self._states)


class JsonFileStore:
    """One indented JSON file per session in a folder, each written atomically.

    Readable and diffable; fine for a handful of sessions. The file name is the session id,
    percent-encoded so any id is a safe, visible name (``"a/b"`` → ``a%2Fb.json``). An id whose
    encoded name would pass the file system's 255-byte limit (30 CJK characters already do:
    9 bytes each) is cut to its first whole characters (at most 90 bytes encoded), then ``+``
    and a hash of the id; ``list_sessions`` reads such an id back from the file, which holds it.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigurationError(f"JsonFileStore: {self.folder} exists and is not a folder")

    def __repr__(self) -> str:
        return f"JsonFileStore({str(self.folder)!r})"

    def path_for(self, session_id: str) -> Path:
        """The file that holds ``session_id``."""
        check_session_id(session_id)
        name = urllib.parse.quote(session_id, safe="")
        if name.startswith("."):  # no hidden files, no "..": a leading dot is encoded too
            name = "%2E" + name[1:]
        if len(name) > _STEM_MAX:
            name = _hashed_name(session_id)
        return self.folder / (name + ".json")

    async def load(self, session_id: str) -> DialogueState:
        """Read the session's file, or return a new empty state when there is none.

        Raises:
            ConfigurationError: the file exists but does not hold a dialogue state.
        """
        path = self.path_for(session_id)
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return DialogueState(session_id=session_id)
        try:
            return DialogueState.model_validate_json(raw)
        except ValidationError as exc:
            raise ConfigurationError(
                f"JsonFileStore: {path} is not a valid dialogue state ({exc.error_count()} "
                "problems); move it away to start the session afresh"
            ) from exc

    async def save(self, state: DialogueState) -> None:
        """Write ``state`` to its file atomically (a temporary file, then one rename)."""
        path = self.path_for(state.session_id)
        data = state.model_dump_json(indent=2).encode()
        await asyncio.to_thread(write_bytes_atomic, path, data)

    async def delete(self, session_id: str) -> bool:
        """Remove the session's file; return whether it existed."""
        path = self.path_for(session_id)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True

    async def list_sessions(self) -> list[str]:
        """Every session with a file in the folder, sorted."""

        def _scan() -> list[str]:
            if not self.folder.is_dir():
                return []
            ids: list[str] = []
            for p in self.folder.glob("*.json"):
                stem = p.name[: -len(".json")]
                if p.name.startswith("."):
                    continue
                if _HASH_MARK not in stem:
                    ids.append(urllib.parse.unquote(stem))
                elif (sid := _stored_id(p)) is not None:
                    ids.append(sid)
            return sorted(ids)

        return await asyncio.to_thread(_scan)


def _hashed_name(session_id: str) -> str:
    """A short file stem for an id whose encoding is too long: a readable prefix and a hash."""
    prefix = ""
    for char in session_id:  # whole characters only: the prefix still decodes
        piece = urllib.parse.quote(char, safe="")
        if len(prefix) + len(piece) > _HASHED_PREFIX:
            break
        prefix += piece
    if prefix.startswith("."):
        prefix = "%2E" + prefix[1:]
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:32]
    return f"{prefix}{_HASH_MARK}{digest}"


def _stored_id(path: Path) -> str | None:
    """The session id a hashed-name file holds; ``None`` (and a warning) when it is unreadable."""
    try:
        sid = json.loads(path.read_bytes()).get("session_id")
    except (OSError, ValueError, AttributeError) as exc:
        _log.warning("JsonFileStore: skipped %s: %s", path, exc)
        return None
    if not isinstance(sid, str):
        _log.warning("JsonFileStore: skipped %s: it names no session_id", path)
        return None
    return sid


_SCHEMA = """
CREATE TABLE IF NOT EXISTS dialogue_sessions (
    session_id TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""


class SQLiteStore:
    """Sessions as rows of a SQLite file: survives restarts, shared safely by many tasks.

    Uses the standard library's ``sqlite3`` in WAL mode (readers never wait for the writer) with
    a busy timeout, so several processes may also share the file. One connection serves the
    store; calls run in worker threads, one at a time, behind a lock.

    Args:
        path: The database file; created with its folder when missing. ``":memory:"`` gives
            a private in-memory database (for tests).
        timeout: Seconds to wait for another process's write lock.
    """

    def __init__(self, path: str | Path, *, timeout: float = 10.0) -> None:
        self.path = path if str(path) == ":memory:" else Path(path).expanduser()
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- connection ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise ConfigurationError(f"{self!r} is closed")
        if self._conn is None:
            if isinstance(self.path, Path):
                if self.path.exists() and self.path.is_dir():
                    raise ConfigurationError(f"SQLiteStore: {self.path} is a folder, not a file")
                self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(
                    str(self.path), timeout=self._timeout, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_SCHEMA)
                conn.commit()
            except sqlite3.DatabaseError as exc:
                raise ConfigurationError(
                    f"SQLiteStore: cannot open {self.path} as a SQLite database: {exc}"
                ) from exc
            self._conn = conn
        return self._conn

    def _run_load(self, session_id: str) -> str | None:
        with self._lock:
            row = (
                self._connect()
                .execute("SELECT state FROM dialogue_sessions WHERE session_id = ?", (session_id,))
                .fetchone()
            )
        return None if row is None else str(row[0])

    def _run_save(self, session_id: str, payload: str) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._lock:
            conn = self._connect()
            with conn:  # one transaction, committed on success, rolled back on error
                conn.execute(
                    "INSERT INTO dialogue_sessions (session_id, state, updated_at) "
                    "VALUES (?, ?, ?) ON CONFLICT(session_id) DO UPDATE SET "
                    "state = excluded.state, updated_at = excluded.updated_at",
                    (session_id, payload, now),
                )

    def _run_delete(self, session_id: str) -> bool:
        with self._lock:
            conn = self._connect()
            with conn:
                cur = conn.execute(
                    "DELETE FROM dialogue_sessions WHERE session_id = ?", (session_id,)
                )
        return cur.rowcount > 0

    def _run_list(self) -> list[str]:
        with self._lock:
            rows = (
                self._connect()
                .execute("SELECT session_id FROM dialogue_sessions ORDER BY session_id")
                .fetchall()
            )
        return [str(r[0]) for r in rows]

    # -- protocol ------------------------------------------------------------------------------

    async def load(self, session_id: str) -> DialogueState:
        """Return the saved state of ``session_id``, or a new empty one.

        Raises:
            ConfigurationError: the row does not hold a dialogue state.
        """
        check_session_id(session_id)
        raw = await asyncio.to_thread(self._run_load, session_id)
        if raw is None:
            return DialogueState(session_id=session_id)
        try:
            return DialogueState.model_validate_json(raw)
        except ValidationError as exc:
            raise ConfigurationError(
                f"SQLiteStore: session {session_id!r} in {self.path} is not a valid dialogue "
                f"state ({exc.error_count()} problems)"
            ) from exc

    async def save(self, state: DialogueState) -> None:
        """Insert or replace the session's row in one transaction."""
        check_session_id(state.session_id)
        payload = state.model_dump_json()
        await asyncio.to_thread(self._run_save, state.session_id, payload)

    async def delete(self, session_id: str) -> bool:
        """Delete the session's row; return whether it existed."""
        check_session_id(session_id)
        return await asyncio.to_thread(self._run_delete, session_id)

    async def list_sessions(self) -> list[str]:
        """Every stored session id, sorted."""
        return await asyncio.to_thread(self._run_list)

    def close(self) -> None:
        """Close the database connection; later calls raise ConfigurationError."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._closed = True

    async def aclose(self) -> None:
        """Close the database connection (async form of :meth:`close`)."""
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
