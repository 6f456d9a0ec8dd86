"""One browser tab's conversation over a WebSocket: messages in, reply events out.

The browser sends JSON messages (``say``, ``interrupt``, ``reset``); the server answers with the
events of :meth:`avatarkit.AvatarBot.stream` turned into small JSON messages. Media never travel
inside JSON: each rendered segment is announced as a ``clip`` whose ``url`` points at the
per-session media route, so the browser can start playing the first sentence while the chat
model is still writing the last.

Messages from the server (every one carries ``type`` and ``server_time``, Unix seconds)::

    hello        max_chars, history [{user, assistant}], speech_input, persistent, title,
                 video, avatar
    turn         turn, user                      a reply has started
    text         turn, text, shown_at, shown     a piece of the reply as the model writes it
                                                 (text), and the page's text now: what it
                                                 showed up to shown_at (UTF-16 code units),
                                                 then shown; in the end the final text
    sentence     turn, index, text               a sentence is complete
    audio        turn, index, text, offset, duration, words [[word, start, end], ...]
    expression   turn, time, emotion, intensity
    clip         turn, index, offset, duration, url, mime, has_video
    final        turn, text, durations           the whole reply is written and rendered (text:
                                                 as written, emotion tags out)
    interrupted  turn, heard                      what the dialogue state now holds
    reset                                         the conversation was forgotten
    error        code, message[, retry_after, stage, turn]

``played`` in an ``interrupt`` is seconds on the reply's clock (the first clip starts at 0, each
next one at its ``offset``): only the words finished by then are kept in the dialogue state.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from avatarkit._files import write_bytes_atomic
from avatarkit.animation.expression import without_emotion_tags
from avatarkit.config import get_logger, redact
from avatarkit.dialogue.speakable import code_block_spans
from avatarkit.errors import (
    AvatarKitError,
    ConfigurationError,
    InputValidationError,
    OverloadedError,
    StageError,
)
from avatarkit.streaming import (
    AudioSegment,
    ExpressionChange,
    IdleClip,
    ReplyStream,
    SentenceReady,
    TextDelta,
    TurnComplete,
    VideoSegment,
)
from avatarkit.types import UserInput

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from avatarkit.bot import AvatarBot
    from avatarkit.server.options import ServerOptions
    from avatarkit.server.session import Session, SessionRegistry
    from avatarkit.server.throttle import Throttle

__all__ = ["Conversation", "heard_text", "shown_text", "without_paths"]

_log = get_logger("avatarkit.server")

_MIME = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "aac": "audio/aac",
}


# An absolute file path: POSIX (two or more parts, not inside a URL or a fraction like 3/4)
# or Windows (C:\...). The browser is shown its last part only.
_PATH = re.compile(
    r"(?<![\w.:/~-])(?:/[^\s/'\"`:;,()\[\]{}<>]+){2,}/?"
    r"|\b[A-Za-z]:\\(?:[^\s\\'\"`<>|]+\\)*[^\s\\'\"`<>|]*"
)


def without_paths(text: str) -> str:
    """``text`` with every absolute file path cut to its last part (no server layout shown)."""

    def last_part(match: re.Match[str]) -> str:
        parts = [p for p in re.split(r"[/\\]", match.group()) if p and not p.endswith(":")]
        return parts[-1] if parts else "…"

    return _PATH.sub(last_part, text)


def shown_text(text: str) -> str:
    """What the chat page shows of a reply: the model's text with its emotion tags taken out.

    Code, markdown, links and emoji stay (the voice and the subtitles get the spoken text).
    A tag goes with one space beside it; the rest of its line keeps its spacing (a line left
    blank becomes empty). Fenced code is shown exactly as written (``scores[sad]`` is code).
    """
    return _shown_lines(text).strip()


def _shown_lines(text: str) -> str:
    """:func:`shown_text` before its ends are stripped (line by line, so it can go in parts)."""
    code = code_block_spans(text)
    lines = []
    pos = 0
    for line in text.split("\n"):
        start, pos = pos, pos + len(line) + 1
        if any(a <= start < b for a, b in code):
            lines.append(line)
            continue
        clean = without_emotion_tags(line)
        lines.append(clean if clean.strip() or clean == line else "")
    return "\n".join(lines)


class _LiveText:
    """The page's text of a reply still being written: :func:`shown_text` of what has arrived.

    Sent as edits, so the page shows what ``final`` will, with no tag pattern of its own: keep
    the first ``at`` characters shown (UTF-16 code units, as JavaScript counts), then ``text``.
    Lines that are complete and outside code are settled, so each delta costs about one line.
    """

    def __init__(self) -> None:
        self._written = ""
        self._settled = 0  # a line start outside code in _written: the lines before are final
        self._head = ""  # _shown_lines of the settled lines
        self._shown = ""

    def push(self, delta: str) -> tuple[int, str]:
        """Add ``delta``; return ``(at, text)``: the page's text becomes shown[:at] + text."""
        stable = len(self._head.strip())  # old and new both start with this much
        self._written += delta
        rest = self._written[self._settled :]
        cut = rest.rfind("\n") + 1  # the last line's start; a line after it tells its code state
        if 0 < cut < len(rest) and not any(a <= cut < b for a, b in code_block_spans(rest)):
            self._head += _shown_lines(rest[:cut])
            self._settled += cut
            rest = rest[cut:]
        shown = (self._head + _shown_lines(rest)).strip()
        old, same = self._shown, min(stable, len(self._shown), len(shown))
        while same < len(old) and same < len(shown) and old[same] == shown[same]:
            same += 1
        self._shown = shown
        return len(shown[:same].encode("utf-16-le")) // 2, shown[same:]


class _Say(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["say"]
    text: str


class _Interrupt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["interrupt"]
    turn: str = Field(max_length=64)
    played: float | None = Field(default=None, ge=0.0, le=86_400.0, allow_inf_nan=False)


class _Reset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["reset"]


_Incoming: TypeAdapter[_Say | _Interrupt | _Reset] = TypeAdapter(
    Annotated[_Say | _Interrupt | _Reset, Field(discriminator="type")]
)


def heard_text(segments: list[AudioSegment], played: float | None) -> str:
    """The words of ``segments`` finished by ``played`` seconds on the reply's clock (all if None).

    Segments without word timings count their words as evenly spread over their duration.
    """
    out: list[str] = []
    for seg in segments:
        end = seg.offset + seg.voice.duration
        if played is None or played + 1e-6 >= end:
            out.append(seg.text)
            continue
        if played <= seg.offset:
            break
        if seg.voice.words:
            heard = [w.text for w in seg.voice.words if seg.offset + w.end <= played + 1e-6]
        else:
            words = seg.text.split()
            share = (played - seg.offset) / max(seg.voice.duration, 1e-6)
            heard = words[: int(len(words) * share)]
        if heard:
            out.append(" ".join(heard))
        break
    return " ".join(out)


@dataclass(eq=False)
class _Turn:
    id: str
    user: str
    stream: ReplyStream
    started: dt.datetime
    folder: Path
    """This turn's own media folder (another tab of the session has its own)."""
    task: asyncio.Task[None] | None = None
    segments: list[AudioSegment] = field(default_factory=list)
    complete: bool = False
    text: str = ""
    live: _LiveText = field(default_factory=_LiveText)


class Conversation:
    """Serves one WebSocket: validates and rate-limits messages, streams replies, interrupts.

    Args:
        ws: The accepted WebSocket.
        bot: The bot answering (shared by every session).
        session: This browser's session.
        sessions: Where media are registered for the media route.
        throttle: Messages per browser session.
        client_throttle: Messages per client address.
        client: The client's address, an IPv6 one as its /64 (the key of ``client_throttle``;
            see :func:`~avatarkit.server.throttle.client_key`).
        options: Limits and the page title.
        avatar: The avatar's still exists (``hello`` tells the page to show it).
    """

    def __init__(
        self,
        ws: WebSocket,
        *,
        bot: AvatarBot,
        session: Session,
        sessions: SessionRegistry,
        throttle: Throttle,
        client_throttle: Throttle,
        client: str,
        options: ServerOptions,
        avatar: bool = False,
    ) -> None:
        self.ws = ws
        self.bot = bot
        self.session = session
        self.sessions = sessions
        self.throttle = throttle
        self.client_throttle = client_throttle
        self.client = client
        self.options = options
        self.avatar = avatar
        self.turn: _Turn | None = None
        self._send_lock = asyncio.Lock()
        self._closed = False

    # ------------------------------------------------------------------ plumbing

    async def send(self, kind: str, **fields: Any) -> None:
        """Send one JSON message (nothing once the socket has closed)."""
        if self._closed:
            return
        message = {"type": kind, **fields, "server_time": time.time()}
        async with self._send_lock:
            try:
                await self.ws.send_text(json.dumps(message, ensure_ascii=False))
            except Exception:  # the browser went away mid-send
                self._closed = True

    async def error(self, code: str, message: str, **fields: Any) -> None:
        """Send a typed error the page shows to the user."""
        await self.send("error", code=code, message=without_paths(redact(message)), **fields)

    async def run(self) -> None:
        """Greet the browser, then answer its messages until it disconnects (then: close)."""
        await self.send("hello", **(await self._hello()))
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                raw = message.get("text")
                if raw is None:
                    raw_bytes = message.get("bytes") or b""
                    if len(raw_bytes) > self.options.max_message_bytes:
                        await self._too_large()
                        break
                    raw = raw_bytes.decode("utf-8", "replace")
                if len(raw.encode()) > self.options.max_message_bytes:
                    await self._too_large()
                    break
                await self._handle(raw)
        finally:
            self._closed = True

    async def close(self) -> None:
        """Stop the reply still running (the browser has gone; it heard what was sent)."""
        self._closed = True
        await self._stop(None)

    async def _too_large(self) -> None:
        await self.error(
            "too_large", f"messages are limited to {self.options.max_message_bytes} bytes"
        )
        self._closed = True
        with contextlib.suppress(Exception):
            await self.ws.close(code=1009)

    async def _hello(self) -> dict[str, Any]:
        history: list[dict[str, str]] = []
        if self.bot.dialogue is not None and self.options.history_turns:
            state = await self.bot.dialogue.load(self.session.key)
            history = [
                {"user": t.user, "assistant": shown_text(t.assistant)}
                for t in state.turns[-self.options.history_turns :]
            ]
        return {
            "title": self.options.title or self.bot.persona.name or "avatarkit",
            "max_chars": self.bot.settings.max_input_chars,
            "history": history,
            "speech_input": self.options.speech_input,
            "persistent": self.session.persistent,
            "video": self._renders(),
            "avatar": self.avatar,
        }

    def _renders(self) -> bool:
        return self.bot.renderer is not None and self.bot.voice is not None

    async def _handle(self, raw: str) -> None:
        try:
            message = _Incoming.validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "message"
            await self.error("bad_message", f"{where}: {first.get('msg', 'invalid')}")
            return
        if isinstance(message, _Say):
            await self._say(message.text)
        elif isinstance(message, _Interrupt):
            await self._interrupt(message.turn, message.played)
        else:
            await self._stop(None)
            if self.bot.dialogue is not None:
                await self.bot.dialogue.reset(self.session.key)
            self.sessions.clear(self.session)
            await self.send("reset")

    # ------------------------------------------------------------------ turns

    async def _say(self, text: str) -> None:
        limit = self.bot.settings.max_input_chars
        cleaned = text.strip()
        if not cleaned:
            await self.error("invalid_input", "the message is empty")
            return
        if len(cleaned) > limit:
            await self.error(
                "invalid_input", f"the message is {len(cleaned)} characters; the limit is {limit}"
            )
            return
        # Both budgets are checked before either is spent: a message the session's bucket
        # refuses must not use up its address's (nor the other way round).
        wait = max(self.throttle.wait(self.session.key), self.client_throttle.wait(self.client))
        if wait > 0:
            await self.error(
                "rate_limited",
                f"too many messages; try again in {wait:.0f} s",
                retry_after=round(wait, 2),
            )
            return
        self.throttle.take(self.session.key)
        self.client_throttle.take(self.client)
        await self._stop(None)  # a new message interrupts the reply still running
        folder = self.sessions.new_turn_folder(self.session)
        try:
            user = UserInput(text=cleaned, session_id=self.session.key)
            # the page plays each segment's clip: no joined video (an ffmpeg pass it never shows)
            stream = self.bot.stream(user, render=True, output_dir=folder, join_video=False)
        except (InputValidationError, ConfigurationError) as exc:
            self.sessions.end_turn(self.session, folder)
            code = "invalid_input" if isinstance(exc, InputValidationError) else "failed"
            await self.error(code, str(exc))
            return
        turn = _Turn(
            id=secrets.token_hex(8), user=cleaned, stream=stream,
            started=dt.datetime.now(dt.UTC), folder=folder,
        )  # fmt: skip
        self.turn = turn
        await self.send("turn", turn=turn.id, user=cleaned)
        turn.task = asyncio.get_running_loop().create_task(self._pump(turn))

    async def _pump(self, turn: _Turn) -> None:
        stopped = False
        try:
            async for event in turn.stream:
                await self._forward(turn, event)
        except asyncio.CancelledError:
            stopped = True  # by _stop, which ends the turn once its stream has stopped
            raise
        except StageError as exc:
            cause = exc.__cause__
            code = "overloaded" if isinstance(cause, OverloadedError) else "stage_failed"
            _log.warning("turn failed in %s: %s", exc.stage, exc)
            await self.error(code, str(exc), stage=exc.stage, turn=turn.id)
        except AvatarKitError as exc:
            code = "overloaded" if isinstance(exc, OverloadedError) else "failed"
            await self.error(code, str(exc), turn=turn.id)
        except Exception as exc:
            _log.exception("turn failed")
            await self.error("internal", f"the reply failed ({type(exc).__name__})", turn=turn.id)
        finally:
            if not stopped:  # the stream ran to its end (or failed): it writes nothing more
                self.sessions.end_turn(self.session, turn.folder)
            if self.turn is turn and not turn.complete:
                self.turn = None

    async def _forward(self, turn: _Turn, event: Any) -> None:
        t = turn.id
        if isinstance(event, TextDelta):
            at, shown = turn.live.push(event.text)
            await self.send("text", turn=t, text=event.text, shown_at=at, shown=shown)
        elif isinstance(event, SentenceReady):
            await self.send("sentence", turn=t, index=event.index, text=event.text)
        elif isinstance(event, AudioSegment):
            turn.segments.append(event)
            words = [[w.text, round(w.start, 3), round(w.end, 3)] for w in event.voice.words]
            await self.send("audio", turn=t, index=event.index, text=event.text,
                            offset=round(event.offset, 3),
                            duration=round(event.voice.duration, 3), words=words)  # fmt: skip
            if not self._renders():
                await self._audio_clip(turn, event)
        elif isinstance(event, ExpressionChange):
            e = event.expression
            await self.send("expression", turn=t, time=round(e.time, 3),
                            emotion=str(e.emotion.value), intensity=e.intensity)  # fmt: skip
        elif isinstance(event, VideoSegment):
            video = event.video
            media_id = self.sessions.register(self.session, video.path)
            await self.send("clip", turn=t, index=event.index, offset=round(event.offset, 3),
                            duration=round(video.duration, 3), url=f"media/{media_id}",
                            mime=_MIME.get(video.format, "video/mp4"), has_video=True)  # fmt: skip
        elif isinstance(event, IdleClip):
            media_id = self.sessions.register(self.session, event.video.path)
            await self.send("idle", turn=t, url=f"media/{media_id}",
                            mime=_MIME.get(event.video.format, "video/mp4"))  # fmt: skip
        elif isinstance(event, TurnComplete):
            turn.complete = True
            reply = event.response.dialogue
            written = "" if reply is None else reply.raw_text or reply.text
            turn.text = shown_text(written)  # as written; the subtitles had the spoken text
            durations = {k: round(v, 3) for k, v in event.response.metrics.durations.items()}
            await self.send("final", turn=t, text=turn.text, durations=durations)

    async def _audio_clip(self, turn: _Turn, event: AudioSegment) -> None:
        """Without a renderer, each sentence's speech is served as an audio clip instead."""
        voice = event.voice
        path = turn.folder / f"segment-{event.index:03d}.{voice.format}"
        await asyncio.to_thread(write_bytes_atomic, path, voice.audio)
        media_id = self.sessions.register(self.session, path)
        await self.send("clip", turn=turn.id, index=event.index, offset=round(event.offset, 3),
                        duration=round(voice.duration, 3), url=f"media/{media_id}",
                        mime=_MIME.get(voice.format, "audio/wav"), has_video=False)  # fmt: skip

    async def _interrupt(self, turn_id: str, played: float | None) -> None:
        turn = self.turn
        if turn is None or turn.id != turn_id:
            return  # already finished or replaced: nothing to stop
        heard = await self._stop(played)
        await self.send("interrupted", turn=turn_id, heard=heard)

    async def _stop(self, played: float | None) -> str | None:
        """Stop the running turn; keep in the dialogue state only what was heard."""
        turn, self.turn = self.turn, None
        if turn is None:
            return None
        heard = heard_text(turn.segments, played)
        if turn.complete:
            # Already recorded in full when the reply finished: cut it back to what was heard.
            if played is not None and heard != " ".join(s.text for s in turn.segments):
                await self._amend(turn, heard)
            return heard
        if turn.task is not None and not turn.task.done():
            turn.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await turn.task
        try:
            await turn.stream.interrupt(played=played)
        finally:
            self.sessions.end_turn(self.session, turn.folder)  # stopped: no more writes
        return heard

    async def _amend(self, turn: _Turn, heard: str) -> None:
        """The finished turn was stored in full before TurnComplete: cut it to what was heard."""
        if self.bot.dialogue is not None:
            user = UserInput(text=turn.user, session_id=self.session.key)
            await self.bot.dialogue.amend_last(user, heard)
