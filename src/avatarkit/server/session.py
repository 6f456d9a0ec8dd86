"""Browser sessions of the chat server: who is talking, and the media their replies made.

A browser holds only a random token in an httponly cookie. The server never stores that token:
the session's key (its dialogue session id and media folder name) is the token's SHA-256, so a
copy of the conversation database cannot be used to take over a browser's conversation.

Each reply's clips are written to a folder of their own under one media root made for this
server run; they are served by unguessable ids (128 random bits) that map to files this registry
wrote, so a media URL can never name any other file, and only to the cookie of the session that
made them. Only the last few turns' media are kept per session. Sessions in use (an open
connection, a running turn) stay in memory; of the others only the most recently used are kept.
The media root is removed when the server stops (or, if its lifespan never ran, when the
registry is collected or the process exits), and the roots a crashed run left are removed when
the next one starts (conversations themselves live in the bot's dialogue store).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import tempfile
import time
import weakref
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

from avatarkit.config import get_logger
from avatarkit.errors import InputValidationError, OverloadedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, so no sweeping either
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Session",
    "SessionRegistry",
    "TooManyConnectionsError",
    "TurnMedia",
    "sweep_media_roots",
]

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{22}")
_ROOT = re.compile(r"media-[a-z0-9_]{8}")  # what tempfile.mkdtemp(prefix="media-") makes
_LOCK = ".lock"  # held (flock) for as long as the run that made the root lives
_log = get_logger("avatarkit.server")


def _lock_root(root: Path) -> int | None:
    """Make ``root``'s lock file, already locked (the name appears only once held)."""
    if fcntl is None:
        return None
    fd, temp = tempfile.mkstemp(prefix=".lock-", dir=root)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(temp, root / _LOCK)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_root(root: Path, fd: int | None) -> None:
    """Delete a media root and let go of its lock (close, a finalizer, or exit)."""
    shutil.rmtree(root, ignore_errors=True)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def sweep_media_roots(data_dir: Path, *, before: float, keep: Path | None = None) -> list[Path]:
    """Delete the media roots a crashed run left in ``data_dir``; the folders deleted.

    Only folders named as this registry names them, holding its lock file, made before
    ``before`` (Unix seconds) and whose lock no running server holds (their run has ended
    without cleaning up) are touched.
    """
    if fcntl is None:
        return []
    swept: list[Path] = []
    for folder in data_dir.iterdir():
        lock = folder / _LOCK
        if folder == keep or not _ROOT.fullmatch(folder.name) or folder.is_symlink():
            continue
        try:
            if not folder.is_dir() or not lock.is_file() or lock.stat().st_mtime >= before:
                continue
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # refused: a live server holds it
        except OSError:
            os.close(fd)
            continue
        _remove_root(folder, fd)
        swept.append(folder)
    if swept:
        _log.info("removed %d media folder(s) left by an earlier run", len(swept))
    return swept


class TooManyConnectionsError(OverloadedError):
    """A session, or a client address, has as many connections open as it may."""


@dataclass(eq=False)
class TurnMedia:
    """One turn's media folder and the ids it serves."""

    folder: Path
    ids: list[str] = field(default_factory=list)
    running: bool = True
    """The turn is still writing into ``folder`` (its files are never deleted meanwhile)."""


@dataclass(eq=False)
class Session:
    """One browser's conversation: its key and the media of its latest turns."""

    key: str
    """SHA-256 of the cookie token (hex, 32 characters): the dialogue session id."""
    folder: Path
    """Where this session's reply media are written."""
    persistent: bool = True
    """False for a connection-only session (the browser sent no usable cookie)."""
    turns: deque[TurnMedia] = field(default_factory=deque)
    """The turns whose media are still kept, oldest first."""
    connections: int = 0
    """Open connections (browser tabs) using this session."""

    def __repr__(self) -> str:
        return f"Session(key={self.key[:8]}…, turns={len(self.turns)})"

    @property
    def in_use(self) -> bool:
        """A connection is open or a turn is running: the session may not be evicted."""
        return self.connections > 0 or any(turn.running for turn in self.turns)


class SessionRegistry:
    """Sessions by cookie token, and the media files their replies made.

    A connection uses its session through :meth:`open` and :meth:`release`. A session in use
    (an open connection, a running turn) is never evicted. Once unused, it is kept only if its
    replies made media, and of those only the ``max_sessions`` most recently used: so
    connections with made-up tokens that never send a message leave nothing behind, and cannot
    push anyone else's session out. Nor can one client address open sessions without limit:
    past ``max_sessions_per_client`` open at once, its next is refused; nor connections, past
    ``max_connections_per_client``; nor one session, past ``max_connections_per_session``.

    Args:
        data_dir: Folder under which this server run makes its media root.
        max_sessions: Unused sessions kept in memory; beyond it the least recently used is
            dropped (its media deleted; its conversation stays in the dialogue store).
        keep_turns: Turns per session whose media stay servable.
        max_sessions_per_client: Sessions one client address may have open at once (None:
            no limit).
        max_connections_per_session: Connections (tabs) one session may have open at once,
            from any address (None: no limit).
        max_connections_per_client: Connections one client address may have open at once,
            across its sessions (None: no limit).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        max_sessions: int = 1000,
        keep_turns: int = 4,
        max_sessions_per_client: int | None = None,
        max_connections_per_session: int | None = None,
        max_connections_per_client: int | None = None,
    ) -> None:
        caps = (max_sessions_per_client, max_connections_per_session, max_connections_per_client)
        if max_sessions < 1 or keep_turns < 1 or any(c is not None and c < 1 for c in caps):
            raise InputValidationError(
                "max_sessions, keep_turns, max_sessions_per_client, max_connections_per_session "
                "and max_connections_per_client must be >= 1"
            )
        data_dir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        self.root = Path(tempfile.mkdtemp(prefix="media-", dir=data_dir)).resolve()
        lock = _lock_root(self.root)
        # The root goes with the registry: on close(), when it is collected, or at exit (a
        # mounted app's lifespan never runs, so close() may never be called).
        self._finalizer = weakref.finalize(self, _remove_root, self.root, lock)
        sweep_media_roots(self.root.parent, before=started, keep=self.root)
        self.max_sessions = max_sessions
        self.keep_turns = keep_turns
        self.max_sessions_per_client = max_sessions_per_client
        self.max_connections_per_session = max_connections_per_session
        self.max_connections_per_client = max_connections_per_client
        self._sessions: dict[str, Session] = {}
        self._by_client: dict[str, Counter[str]] = {}  # address: its connections per session
        self._idle: OrderedDict[str, Session] = OrderedDict()  # not in use: least recent first
        self._media: dict[str, tuple[Session, Path]] = {}

    def __repr__(self) -> str:
        return f"SessionRegistry(sessions={len(self._sessions)}, media={len(self._media)})"

    # ------------------------------------------------------------------ tokens and sessions

    @staticmethod
    def new_token() -> str:
        """A fresh cookie token: 256 random bits, URL-safe."""
        return secrets.token_urlsafe(32)

    @staticmethod
    def is_token(value: str | None) -> bool:
        """Whether ``value`` has the shape of a token this server hands out."""
        return value is not None and _TOKEN.fullmatch(value) is not None

    @staticmethod
    def key_for(token: str) -> str:
        """The session key of a token (what the dialogue store and the media folder see)."""
        return hashlib.sha256(token.encode()).hexdigest()[:32]

    def get(self, token: str, *, persistent: bool = True) -> Session:
        """The session of ``token``, made on first use (raises on a malformed token).

        A session got this way (not through :meth:`open`) counts as unused: it may be evicted.
        """
        session = self._lookup(token, persistent)
        if not session.in_use:
            self._keep_idle(session)
        return session

    def open(self, token: str, *, persistent: bool = True, client: str | None = None) -> Session:
        """A connection (from address ``client``) starts using the session of ``token``.

        The session is made on first use, and not evicted until every connection has called
        :meth:`release` (with the same ``client``).

        Raises:
            InputValidationError: a malformed token.
            TooManyConnectionsError: ``client`` has ``max_connections_per_client`` connections
                open already, or the session ``max_connections_per_session``.
            OverloadedError: ``client`` has ``max_sessions_per_client`` sessions open already,
                and this would be one more (nothing is made or evicted, either way).
        """
        session = self._lookup(token, persistent, client, opening=True)
        session.connections += 1
        if client is not None:
            self._by_client.setdefault(client, Counter())[session.key] += 1
        self._idle.pop(session.key, None)
        return session

    def release(self, session: Session, *, client: str | None = None) -> None:
        """A connection opened with :meth:`open` has ended."""
        session.connections = max(0, session.connections - 1)
        if client is not None and (live := self._by_client.get(client)) is not None:
            live[session.key] -= 1
            if live[session.key] <= 0:
                del live[session.key]
            if not live:
                del self._by_client[client]
        self._settle(session)

    def _lookup(
        self, token: str, persistent: bool, client: str | None = None, *, opening: bool = False
    ) -> Session:
        if not self.is_token(token):
            raise InputValidationError("malformed session token", field="session")
        key = self.key_for(token)
        if opening:
            self._check_caps(key, client)
        session = self._sessions.get(key)
        if session is None:
            session = Session(key=key, folder=self.root / key, persistent=persistent)
            self._sessions[key] = session
        return session

    def _check_caps(self, key: str, client: str | None) -> None:
        """Refuse one more connection to session ``key`` from ``client`` past any cap."""
        live = self._by_client.get(client, Counter()) if client is not None else Counter()
        per_client = self.max_connections_per_client
        if per_client is not None and live.total() >= per_client:
            raise TooManyConnectionsError(
                f"{per_client} chat connections are open from this address already, the most "
                "allowed; close a tab to open another"
            )
        limit = self.max_sessions_per_client
        if limit is not None and key not in live and len(live) >= limit:
            raise OverloadedError(
                f"{limit} chat sessions are open from this address already, the most allowed; "
                "close one to start another"
            )
        per_session = self.max_connections_per_session
        session = self._sessions.get(key)
        if per_session is not None and session is not None and session.connections >= per_session:
            raise TooManyConnectionsError(
                f"{per_session} chat connections are open for this session already, the most "
                "allowed; close a tab to open another"
            )

    def _settle(self, session: Session) -> None:
        """Keep a session no longer in use (least recent dropped); without media, drop it."""
        if session.in_use or self._sessions.get(session.key) is not session:
            return
        if not session.turns:  # it never made anything: nothing to keep
            self.forget(session)
            return
        self._keep_idle(session)

    def _keep_idle(self, session: Session) -> None:
        """Count ``session`` as the most recently used of the unused ones; drop the oldest."""
        self._idle[session.key] = session
        self._idle.move_to_end(session.key)
        self._evict()

    def _evict(self) -> None:
        while len(self._idle) > self.max_sessions:
            _, old = self._idle.popitem(last=False)
            self.forget(old)

    def __len__(self) -> int:
        return len(self._sessions)

    # ------------------------------------------------------------------ media

    def new_turn_folder(self, session: Session) -> Path:
        """A fresh folder for one turn's media, running until :meth:`end_turn`.

        The oldest turns beyond ``keep_turns`` go, except those still running.
        """
        folder = session.folder / secrets.token_hex(8)
        folder.mkdir(parents=True)
        session.turns.append(TurnMedia(folder))
        self._idle.pop(session.key, None)
        self._trim(session)
        return folder

    def end_turn(self, session: Session, folder: Path) -> None:
        """The turn writing into ``folder`` has ended: its media may expire from now on."""
        for turn in session.turns:
            if turn.folder == folder:
                turn.running = False
        self._trim(session)
        self._settle(session)

    def _trim(self, session: Session) -> None:
        excess = len(session.turns) - self.keep_turns
        if excess <= 0:
            return
        kept: deque[TurnMedia] = deque()
        for turn in session.turns:  # oldest first
            if excess > 0 and not turn.running:
                self._drop_turn(turn)
                excess -= 1
            else:
                kept.append(turn)
        session.turns = kept

    def register(self, session: Session, path: Path) -> str:
        """Make ``path`` (a file in one of the session's turn folders) servable; its media id.

        Raises:
            InputValidationError: ``path`` is not inside a kept turn folder of this session.
        """
        resolved = path.resolve()
        for turn in reversed(session.turns):
            if resolved.is_relative_to(turn.folder.resolve()) and resolved.is_file():
                media_id = secrets.token_urlsafe(16)
                self._media[media_id] = (session, resolved)
                turn.ids.append(media_id)
                return media_id
        raise InputValidationError("media outside the session's turn folders", field="path")

    def media(self, media_id: str, *, token: str | None) -> Path | None:
        """The file of ``media_id`` for the browser holding ``token``, or None.

        None when the id is malformed, unknown, expired or gone, or is another session's: a
        session's media go only to the cookie that made them. A connection-only session's
        browser keeps no cookie: its media are served by their unguessable id alone.
        """
        if _MEDIA_ID.fullmatch(media_id) is None:
            return None
        entry = self._media.get(media_id)
        if entry is None:
            return None
        session, path = entry
        if session.persistent and (token is None or self.key_for(token) != session.key):
            return None
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def clear(self, session: Session) -> None:
        """Delete the media of ``session``'s finished turns ("New chat").

        A turn still running (in another tab of the same browser) keeps its folder and media:
        that tab is still writing and playing them. They expire like any turn's, later.
        """
        for turn in session.turns:
            if not turn.running:
                self._drop_turn(turn)
        session.turns = deque(turn for turn in session.turns if turn.running)
        with contextlib.suppress(OSError):
            session.folder.rmdir()
        self._settle(session)

    def forget(self, session: Session) -> None:
        """Drop ``session`` from memory with all its media (it ended, or was evicted)."""
        while session.turns:
            self._drop_turn(session.turns.popleft())
        with contextlib.suppress(OSError):
            session.folder.rmdir()
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
            self._idle.pop(session.key, None)

    def _drop_turn(self, turn: TurnMedia) -> None:
        for media_id in turn.ids:
            self._media.pop(media_id, None)
        shutil.rmtree(turn.folder, ignore_errors=True)

    def close(self) -> None:
        """Forget every session and remove this run's media root."""
        self._sessions.clear()
        self._idle.clear()
        self._by_client.clear()
        self._media.clear()
        self._finalizer()
