"""The chat server's app (Starlette TestClient): sessions, validation, limits, media, headers."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

pytest.importorskip("starlette", reason='needs the "serve" extra')

from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from typer.testing import CliRunner

from avatarkit import _sync
from avatarkit.bot import AvatarBot
from avatarkit.config import Settings, register_secret
from avatarkit.dialogue.manager import DialogueManager
from avatarkit.dialogue.store import SQLiteStore
from avatarkit.errors import InputValidationError, ProviderError
from avatarkit.server import ServerOptions, create_app, is_loopback
from avatarkit.server.conversation import heard_text, shown_text
from avatarkit.server.session import SessionRegistry
from avatarkit.server.throttle import Throttle, TokenBucket
from avatarkit.streaming import AudioSegment
from avatarkit.testing import FakeChatModel, FakeVoice, FunctionChatModel, fake_speech
from avatarkit.types import Timeline

LOCAL = "http://127.0.0.1"  # the apps answer to the loopback names unless told otherwise


class Client(TestClient):
    """A TestClient for ``http://127.0.0.1`` (TestClient's own ``testserver`` is a foreign host)."""

    def __init__(self, app: Any, base_url: str = LOCAL, **kwargs: Any) -> None:
        super().__init__(app, base_url=base_url, **kwargs)

    def websocket_connect(self, url: str, *args: Any, **kwargs: Any) -> Any:
        base = str(self.base_url).replace("http", "ws", 1)
        return super().websocket_connect(urljoin(base + "/", url), *args, **kwargs)


REPLY = "Hello there. I am a test avatar. Nice to meet you."
SECRET = "sk-widget-SECRET-0123456789abcdef"


def make_bot(
    data: Path, chat: Any = None, *, max_chars: int = 200, renderer: Any = None
) -> AvatarBot:
    dialogue = DialogueManager(
        chat=chat or FakeChatModel(REPLY), store=SQLiteStore(data / "conversations.db")
    )
    return AvatarBot(
        dialogue=dialogue, voice=FakeVoice(), renderer=renderer, preprocessor=None,
        intent=None, sentiment=None, expression=None,
        settings=Settings(max_input_chars=max_chars),
    )  # fmt: skip


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "serve"


@pytest.fixture
def client(data: Path) -> Iterator[TestClient]:
    bot = make_bot(data)
    with Client(create_app(lambda: bot, data_dir=data)) as c:
        yield c


def until(ws: Any, *kinds: str) -> list[dict[str, Any]]:
    """Messages up to and including the first of ``kinds``."""
    out = []
    while True:
        message = ws.receive_json()
        out.append(message)
        if message["type"] in kinds:
            return out


def stored(
    data: Path, until_: Callable[[dict[str, list[tuple[str, str]]]], bool] = bool
) -> dict[str, list[tuple[str, str]]]:
    """Turns per stored session, once ``until_`` holds (the server saves right after "final")."""
    store = SQLiteStore(data / "conversations.db")

    async def read() -> dict[str, list[tuple[str, str]]]:
        return {
            sid: [(t.user, t.assistant) for t in (await store.load(sid)).turns]
            for sid in await store.list_sessions()
        }

    deadline = time.monotonic() + 5
    while not until_(state := _sync.run(read())) and time.monotonic() < deadline:
        time.sleep(0.05)
    return state


# ---------------------------------------------------------------------- pages and headers


def test_page_sets_an_httponly_session_cookie_and_a_strict_csp(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    token = client.cookies["avatarkit_session"]
    assert SessionRegistry.is_token(token)
    csp = r.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'self'" in csp and "connect-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in r.text and "onclick" not in r.text  # no inline script at all
    # The same browser keeps its session.
    client.get("/")
    assert client.cookies["avatarkit_session"] == token


@pytest.mark.parametrize("video", [False, True], ids=["audio-only", "video"])
def test_the_page_references_no_missing_resource(data: Path, video: bool) -> None:
    import re

    from avatarkit.render.local import LocalRenderer

    bot = make_bot(data, renderer=LocalRenderer(size=64) if video else None)
    with Client(create_app(lambda: bot, data_dir=data)) as c:
        page = c.get("/").text
        assert re.search(r'<link rel="icon" href="data:,">', page)  # no /favicon.ico request
        for url in re.findall(r'(?:src|href)="([^"]+)"', page):
            if not url.startswith("data:"):
                assert c.get(url).status_code == 200, url
        assert "avatar.png" not in page  # asked for by the script, only if there is one
        css = c.get("/static/chat.css").text
        assert all(".has-avatar" in line for line in css.splitlines() if "avatar.png" in line)
        with c.websocket_connect("/ws") as ws:
            hello = ws.receive_json()
        assert hello["avatar"] is video and hello["video"] is video
        assert c.get("/avatar.png").status_code == (200 if video else 404)


def test_a_missing_avatar_image_is_not_retried_by_every_connection(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avatarkit.errors import ProviderError

    bot = make_bot(data)
    calls: list[int] = []

    async def failing() -> Any:  # an image generator that is down (each call may cost quota)
        calls.append(1)
        raise ProviderError("image service unavailable", provider="acme")

    monkeypatch.setattr(bot, "avatar_image", failing)
    with Client(create_app(lambda: bot, data_dir=data)) as c:
        for _ in range(3):
            with c.websocket_connect("/ws") as ws:
                assert ws.receive_json()["avatar"] is False
    assert len(calls) <= 2  # the warm-up's try, then one for the hellos of the next minute


def test_embed_page_may_be_framed_only_by_the_configured_sites(data: Path) -> None:
    bot = make_bot(data)
    options = ServerOptions(embed_origins=("https://shop.example",))
    with Client(create_app(lambda: bot, data_dir=data, options=options)) as c:
        assert (
            "frame-ancestors 'self' https://shop.example"
            in c.get("/embed").headers["content-security-policy"]
        )
        assert "frame-ancestors 'self'" in c.get("/").headers["content-security-policy"]
        assert "frame-ancestors 'none'" in c.get("/healthz").headers["content-security-policy"]
        widget = c.get("/widget.js")
        assert widget.headers["content-type"].startswith("text/javascript")
        assert widget.headers["cross-origin-resource-policy"] == "cross-origin"
        assert "iframe" in widget.text and "embed" in widget.text


@pytest.mark.parametrize(
    "origin", ["https://x.example; script-src *", "javascript:alert(1)", "", "'self'"]
)
def test_embed_origins_must_be_origins(origin: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        ServerOptions(embed_origins=(origin,))


def test_embed_cookie_over_https_is_partitioned_and_cross_site(data: Path) -> None:
    bot = make_bot(data)
    with Client(create_app(lambda: bot, data_dir=data), base_url="https://localhost") as c:
        cookie = c.get("/embed").headers["set-cookie"]
        assert "Secure" in cookie and "SameSite=none" in cookie and "Partitioned" in cookie
        assert "SameSite=lax" in c.get("/").headers["set-cookie"]


def test_no_key_reaches_any_page_or_message(data: Path) -> None:
    register_secret(SECRET)

    def leaky(messages: Any) -> str:
        raise ProviderError(f"upstream refused key {SECRET}", provider="acme")

    bot = make_bot(data, FunctionChatModel(leaky))
    with Client(create_app(lambda: bot, data_dir=data)) as c:
        bodies = [c.get(p).text for p in ("/", "/embed", "/widget.js", "/static/chat.js",
                                          "/static/chat.css", "/healthz")]  # fmt: skip
        with c.websocket_connect("/ws") as ws:
            bodies.append(str(ws.receive_json()))
            ws.send_json({"type": "say", "text": "hi"})
            messages = until(ws, "error", "final")
        bodies += [str(m) for m in messages]
    assert messages[-1]["type"] == "error" and messages[-1]["code"] == "stage_failed"
    assert all(SECRET not in body for body in bodies)
    assert "[REDACTED]" in messages[-1]["message"] or "***" in messages[-1]["message"]


# ---------------------------------------------------------------------- conversation


def test_a_turn_streams_events_and_persists_per_cookie_session(
    client: TestClient, data: Path
) -> None:
    client.get("/")
    with client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and hello["persistent"] and hello["history"] == []
        assert hello["max_chars"] == 200 and hello["title"] == "Ava"  # the persona's name
        ws.send_json({"type": "say", "text": "  Hi there!  "})
        messages = until(ws, "final")
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "turn" and messages[0]["user"] == "Hi there!"
    assert kinds.count("sentence") == 3 and kinds.count("clip") == 3 and kinds[-1] == "final"
    assert messages[-1]["text"] == REPLY
    audio = [m for m in messages if m["type"] == "audio"]
    assert " ".join(a["text"] for a in audio) == REPLY
    assert all(isinstance(a["words"], list) and a["words"] for a in audio)
    clips = [m for m in messages if m["type"] == "clip"]
    assert [c["offset"] for c in clips] == [a["offset"] for a in audio]
    media = client.get(clips[0]["url"])  # relative to the page: /media/<id>
    assert media.status_code == 200 and media.headers["content-type"] == "audio/wav"
    assert media.content[:4] == b"RIFF"
    # The conversation is kept under the hashed cookie, and comes back on the next connection.
    token = client.cookies["avatarkit_session"]
    (key,) = stored(data, lambda s: any(s.values()))
    assert key == SessionRegistry.key_for(token) and token not in key
    assert stored(data)[key] == [("Hi there!", REPLY)]  # saved in full: nothing interrupted
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json()["history"] == [{"user": "Hi there!", "assistant": REPLY}]


WRITTEN = (
    '[happy] Here is how:\n\n```python\ndef greet(name):\n    return f"Hi {name}"\n```\n\n'
    "See **the docs** at [this page](https://example.com/docs) 🙂 *smiles* <b>bold</b>"
)
SHOWN = (
    'Here is how:\n\n```python\ndef greet(name):\n    return f"Hi {name}"\n```\n\n'
    "See **the docs** at [this page](https://example.com/docs) 🙂 <b>bold</b>"
)  # as written, emotion tags out: code, its indentation, markdown, links, emoji and markup kept


def test_the_reply_shown_is_what_the_model_wrote_and_the_speech_what_was_said(
    data: Path,
) -> None:
    # The voice (and the subtitles, from `audio`) get the spoken text: no code, no markdown,
    # no emoji. The chat bubble keeps what the model wrote, in `final` and after a reload.
    bot = make_bot(data, FakeChatModel(WRITTEN), max_chars=200)
    with Client(create_app(lambda: bot, data_dir=data)) as c:
        c.get("/")
        with c.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_json({"type": "say", "text": "How do I greet someone in Python?"})
            messages = until(ws, "final")
        written = "".join(m["text"] for m in messages if m["type"] == "text")
        assert written == WRITTEN  # the stream's deltas, which the page shows (tags taken out)
        spoken = " ".join(m["text"] for m in messages if m["type"] == "audio")
        assert "greet" not in spoken and "```" not in spoken and "🙂" not in spoken
        assert "**" not in spoken and "https" not in spoken and "[" not in spoken
        assert spoken.startswith("Here is how:") and "the docs" in spoken
        assert messages[-1]["text"] == SHOWN
        stored(data, lambda s: any(s.values()))
        with c.websocket_connect("/ws") as ws:
            history = ws.receive_json()["history"]
    assert history == [{"user": "How do I greet someone in Python?", "assistant": SHOWN}]


LIVE = (
    "[note] 🙂 Keep this. *smiles* Hi [emotion: happy] there [Sad]!\n"
    "```py\nx[sad] = 1  # [happy]\n```\nName:    Ava  *grins*  here 👋🏽 [happy]"
)


def test_the_text_shown_while_a_reply_streams_is_the_final_texts_way_there(data: Path) -> None:
    # The page's live text came from its own tag pattern, so it differed from `final`: it hid
    # "[note]", showed "*smiles*" and "[emotion: happy]", and took tags out of code. Each
    # `text` now says what to show (`shown_text` of the reply so far) as an edit of the last.
    bot = make_bot(data, FakeChatModel(LIVE), max_chars=400)
    with Client(create_app(lambda: bot, data_dir=data)) as c:
        c.get("/")
        with c.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_json({"type": "say", "text": "hi"})
            messages = until(ws, "final")
    written, page = "", ""
    for m in (m for m in messages if m["type"] == "text"):
        written += m["text"]
        kept = page.encode("utf-16-le")[: 2 * m["shown_at"]].decode("utf-16-le")  # as JS slices
        page = kept + m["shown"]
        assert page == shown_text(written), written
    assert written == LIVE
    assert page == messages[-1]["text"] == shown_text(LIVE)
    assert page.startswith("[note] 🙂 Keep this. Hi there!\n```py\nx[sad] = 1  # [happy]\n")


def test_the_live_text_is_the_shown_text_so_far_however_the_reply_is_split() -> None:
    from avatarkit.server.conversation import _LiveText

    reply = LIVE + "\n\n```\nopen [sad]\n" + "tail  [happy]  end"  # a block left open, too
    for i in range(len(reply) + 1):
        for j in (i, min(len(reply), i + 1), min(len(reply), i + 7)):
            live, page, start = _LiveText(), "", 0
            for end in (i, j, len(reply)):
                (at, shown), start = live.push(reply[start:end]), end
                page = page.encode("utf-16-le")[: 2 * at].decode("utf-16-le") + shown
                assert page == shown_text(reply[:end]), (i, j, end)


def test_another_browser_does_not_see_the_conversation(client: TestClient, data: Path) -> None:
    client.get("/")
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "say", "text": "my secret plan"})
        until(ws, "final")
    other = Client(client.app)
    other.get("/")
    with other.websocket_connect("/ws") as ws:
        assert ws.receive_json()["history"] == []


def test_without_a_cookie_the_conversation_lasts_one_connection(
    client: TestClient, data: Path
) -> None:
    with client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert hello["persistent"] is False
        ws.send_json({"type": "say", "text": "hello"})
        until(ws, "final")
    assert stored(data, lambda s: not s) == {}  # forgotten once the socket has closed


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "say", "text": ""}, "invalid_input"),
        ({"type": "say", "text": "   \n\t "}, "invalid_input"),
        ({"type": "say", "text": "x" * 201}, "invalid_input"),
        ({"type": "say"}, "bad_message"),
        ({"type": "say", "text": 42}, "bad_message"),
        ({"type": "say", "text": "hi", "extra": 1}, "bad_message"),
        ({"type": "shout", "text": "hi"}, "bad_message"),
        ({"type": "interrupt", "turn": "t", "played": -1}, "bad_message"),
        (["say", "hi"], "bad_message"),
    ],
)
def test_bad_input_gets_a_typed_error_and_nothing_runs(data: Path, message: Any, code: str) -> None:
    chat = FakeChatModel(REPLY)
    bot = make_bot(data, chat)
    with Client(create_app(lambda: bot, data_dir=data)) as c, c.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json(message)
        error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == code, error
        ws.send_json({"type": "say", "text": "still here?"})  # the socket stays usable
        assert until(ws, "final")[-1]["text"] == REPLY
    assert len(chat.calls) == 1


@pytest.mark.parametrize("played", ["NaN", "Infinity", "-Infinity"])
def test_played_must_be_a_finite_number(client: TestClient, played: str) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_text(f'{{"type": "interrupt", "turn": "t", "played": {played}}}')
        error = ws.receive_json()
    assert error["code"] == "bad_message" and "finite number" in error["message"], error
    assert "86400" not in error["message"]


def test_invalid_json_is_refused(client: TestClient) -> None:
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_text("{not json")
        assert ws.receive_json()["code"] == "bad_message"


def test_oversized_websocket_message_closes_the_socket(data: Path) -> None:
    bot = make_bot(data)
    options = ServerOptions(max_message_bytes=2048)
    with Client(create_app(lambda: bot, data_dir=data, options=options)) as c:
        with c.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_json({"type": "say", "text": "y" * 3000})
            error = ws.receive_json()
            assert error["code"] == "too_large"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
        assert closed.value.code == 1009


def test_rate_limit_is_a_token_bucket_per_session(data: Path) -> None:
    chat = FakeChatModel(REPLY)
    bot = make_bot(data, chat)
    options = ServerOptions(messages_per_minute=1, burst=2)
    with Client(create_app(lambda: bot, data_dir=data, options=options)) as c:
        c.get("/")
        with c.websocket_connect("/ws") as ws:
            ws.receive_json()
            for _ in range(2):
                ws.send_json({"type": "say", "text": "hi"})
                until(ws, "final")
            ws.send_json({"type": "say", "text": "hi again"})
            error = ws.receive_json()
        assert error["type"] == "error" and error["code"] == "rate_limited"
        assert 50 < error["retry_after"] <= 60
        other = Client(c.app)  # another browser has its own bucket
        other.get("/")
        with other.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_json({"type": "say", "text": "hi"})
            assert until(ws, "final", "error")[-1]["type"] == "final"
    assert len(chat.calls) == 3


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=0.5, burst=2, clock=lambda: now[0])
    assert bucket.take() == 0 and bucket.take() == 0
    assert bucket.take() == pytest.approx(2.0)
    now[0] = 1.0
    assert bucket.take() == pytest.approx(1.0)
    now[0] = 2.0
    assert bucket.take() == 0
    throttle = Throttle(per_minute=60, burst=1, max_keys=2, clock=lambda: now[0])
    assert throttle.take("a") == 0 and throttle.take("a") > 0
    throttle.take("b"), throttle.take("c")  # "a" is dropped: least recently used
    assert throttle.take("a") == 0
    with pytest.raises(InputValidationError):
        TokenBucket(rate=0, burst=1)


# ---------------------------------------------------------------------- interrupting


def _segments(*texts: str) -> list[AudioSegment]:
    out, offset = [], 0.0
    for i, text in enumerate(texts):
        voice = fake_speech(text)
        timeline = Timeline(text=text, duration=voice.duration, words=voice.words)
        out.append(AudioSegment(index=i, text=text, offset=offset, voice=voice, timeline=timeline))
        offset += voice.duration
    return out


def test_heard_text_keeps_only_finished_words() -> None:
    segs = _segments("One two three.", "Four five.")
    first = segs[0].voice
    assert heard_text(segs, None) == "One two three. Four five."
    assert heard_text(segs, 0.0) == ""
    assert heard_text(segs, first.words[1].end + 0.01) == "One two"
    assert heard_text(segs, first.duration + 0.01) == "One two three."
    assert heard_text(segs, first.duration + segs[1].voice.words[0].end) == "One two three. Four"


def test_interrupt_mid_reply_records_only_what_was_heard(data: Path) -> None:
    chat = FakeChatModel("One two three four. Five six seven eight. Nine ten.", token_delay=0.05)
    bot = make_bot(data, chat)
    with Client(create_app(lambda: bot, data_dir=data)) as c:
        c.get("/")
        with c.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_json({"type": "say", "text": "count"})
            messages = until(ws, "audio")
            turn, audio = messages[0]["turn"], messages[-1]
            played = audio["words"][1][2] + 0.01  # the second word has just finished
            ws.send_json({"type": "interrupt", "turn": turn, "played": played})
            rest = until(ws, "interrupted")
            assert rest[-1]["heard"] == "One two"
            assert all(m["type"] != "final" for m in rest)
            ws.send_json({"type": "interrupt", "turn": turn, "played": 9})  # stale: ignored
            ws.send_json({"type": "say", "text": "again"})
            assert until(ws, "turn")[-1]["type"] == "turn"
            until(ws, "final")
    (turns,) = stored(data, lambda s: len(next(iter(s.values()), [])) == 2).values()
    assert turns == [
        ("count", "One two"),
        ("again", "One two three four. Five six seven eight. Nine ten."),
    ]


def test_interrupt_after_the_reply_finished_cuts_the_stored_turn(data: Path) -> None:
    bot = make_bot(data)
    with Client(create_app(lambda: bot, data_dir=data)) as c:
        c.get("/")
        with c.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_json({"type": "say", "text": "hello"})
            messages = until(ws, "final")
            turn = messages[0]["turn"]
            first = next(m for m in messages if m["type"] == "audio")
            ws.send_json({"type": "interrupt", "turn": turn, "played": first["duration"] + 0.01})
            assert until(ws, "interrupted")[-1]["heard"] == "Hello there."
    (turns,) = stored(data).values()
    assert turns == [("hello", "Hello there.")]


def test_reset_forgets_the_conversation(client: TestClient, data: Path) -> None:
    client.get("/")
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "say", "text": "remember me"})
        clips = [m for m in until(ws, "final") if m["type"] == "clip"]
        ws.send_json({"type": "reset"})
        until(ws, "reset")
    assert stored(data, lambda s: not s) == {}
    assert client.get(clips[0]["url"]).status_code == 404


@pytest.mark.parametrize("video", [False, True], ids=["audio-only", "video"])
def test_new_chat_in_one_tab_does_not_break_the_reply_playing_in_another(
    data: Path, video: bool
) -> None:
    from avatarkit.render.local import LocalRenderer

    chat = FakeChatModel(REPLY, token_delay=0.05)
    bot = make_bot(data, chat, renderer=LocalRenderer(size=64) if video else None)
    with Client(create_app(lambda: bot, data_dir=data)) as c:
        c.get("/")
        with c.websocket_connect("/ws") as tab1, c.websocket_connect("/ws") as tab2:
            tab1.receive_json(), tab2.receive_json()
            tab1.send_json({"type": "say", "text": "tell me"})
            messages = until(tab1, "clip")
            tab2.send_json({"type": "reset"})  # "New chat" in the other tab, mid-reply
            assert until(tab2, "reset")[-1]["type"] == "reset"
            messages += until(tab1, "final", "error")
            assert messages[-1]["type"] == "final", messages[-1]
            audio = sorted(m["index"] for m in messages if m["type"] == "audio")
            clips = [m for m in messages if m["type"] == "clip"]
            assert sorted(m["index"] for m in clips) == audio == [0, 1, 2]
            assert all(c.get(m["url"]).status_code == 200 for m in clips)
            tab2.send_json({"type": "reset"})  # the reply has ended: now its media go
            until(tab2, "reset")
            assert all(c.get(m["url"]).status_code == 404 for m in clips)


def test_error_messages_carry_no_server_paths(data: Path) -> None:
    from avatarkit.server.conversation import without_paths

    where = data / "media-x1" / "0123abcd" / "segment-001.mp4"

    def failing(messages: Any) -> str:
        raise ProviderError(f"cannot open {where}: No such file or directory", provider="acme")

    bot = make_bot(data, FunctionChatModel(failing))
    with Client(create_app(lambda: bot, data_dir=data)) as c, c.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "say", "text": "hi"})
        error = until(ws, "error", "final")[-1]
    assert error["type"] == "error" and "segment-001.mp4" in error["message"]
    assert str(data) not in error["message"] and "/media-x1/" not in error["message"]
    assert without_paths("'/usr/lib/x.so' and C:\\Users\\me\\f.txt") == "'x.so' and f.txt"
    kept = "see https://example.com/a/b, 50/min, and/or 3/4 of /ws"
    assert without_paths(kept) == kept


# ---------------------------------------------------------------------- media and limits


@pytest.mark.parametrize(
    "path",
    [
        "/media/../../etc/passwd",
        "/media/..%2F..%2Fetc%2Fpasswd",
        "/media/%2e%2e%2fconversations.db",
        "/media/AAAAAAAAAAAAAAAAAAAAAA",
        "/media/conversations.db",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2Fapp.py",
    ],
)
def test_media_and_static_routes_cannot_leave_their_folder(
    client: TestClient, data: Path, path: str
) -> None:
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert b"import" not in r.content and b"SQLite" not in r.content


def test_media_are_served_only_to_the_session_that_made_them(
    client: TestClient, data: Path
) -> None:
    client.get("/")
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "say", "text": "tell me a secret"})
        url = next(m["url"] for m in until(ws, "final") if m["type"] == "clip")
    assert client.get(url).status_code == 200
    assert client.get(url, headers={"range": "bytes=0-9"}).status_code == 206  # <video> seeks
    other = Client(client.app)
    other.get("/")  # another browser, with a cookie of its own
    assert other.get(url).status_code == 404
    assert Client(client.app).get(url).status_code == 404  # no cookie at all
    # A browser that keeps no cookie (a cross-site iframe over plain HTTP) has a session for
    # its connection only: its media are served by their unguessable URL alone.
    with Client(client.app).websocket_connect("/ws") as ws:
        assert ws.receive_json()["persistent"] is False
        ws.send_json({"type": "say", "text": "hi"})
        url = next(m["url"] for m in until(ws, "final") if m["type"] == "clip")
        assert Client(client.app).get(url).status_code == 200


def test_session_registry_serves_only_files_it_made(tmp_path: Path) -> None:
    registry = SessionRegistry(tmp_path, keep_turns=2)
    token = registry.new_token()
    session = registry.get(token)
    outside = tmp_path / "secret.txt"
    outside.write_text("no")
    with pytest.raises(InputValidationError):
        registry.register(session, outside)
    with pytest.raises(InputValidationError):
        registry.get("not a token")
    ids = []
    for _ in range(3):
        folder = registry.new_turn_folder(session)
        (folder / "clip.mp4").write_bytes(b"video")
        ids.append(registry.register(session, folder / "clip.mp4"))
        registry.end_turn(session, folder)
    assert registry.media(ids[0], token=token) is None  # the oldest turn's media expired
    kept = registry.media(ids[2], token=token)
    assert kept is not None and kept.read_bytes() == b"video"
    assert registry.media(ids[2], token=None) is None
    assert registry.media(ids[2], token=registry.new_token()) is None  # not this session's
    registry.close()
    assert not registry.root.exists() and outside.exists()


def test_made_up_session_cookies_evict_no_live_session(data: Path) -> None:
    # Connections with random well-formed tokens that send nothing must neither push a live
    # session out of memory (deleting its media) nor be kept themselves.
    bot = make_bot(data)
    options = ServerOptions(max_sessions=3)
    with Client(create_app(lambda: bot, data_dir=data, options=options)) as c:
        c.get("/")
        attacker = Client(c.app)

        def made_up() -> dict[str, str]:
            return {"cookie": f"avatarkit_session={SessionRegistry.new_token()}"}

        with c.websocket_connect("/ws") as victim:
            victim.receive_json()
            victim.send_json({"type": "say", "text": "hi"})
            url = next(m["url"] for m in until(victim, "final") if m["type"] == "clip")
            for _ in range(10):  # one after another
                with attacker.websocket_connect("/ws", headers=made_up()) as ws:
                    ws.receive_json()
            assert c.get(url).status_code == 200
            with contextlib.ExitStack() as held:  # all open at once
                for _ in range(5):
                    held.enter_context(attacker.websocket_connect("/ws", headers=made_up()))
                assert c.get(url).status_code == 200
        registry = c.app.state.avatarkit.sessions
        assert len(registry) == 1  # the victim's; the made-up ones were never kept
        assert c.get(url).status_code == 200


def test_one_address_cannot_open_sessions_without_limit(data: Path) -> None:
    # Past max_sessions_per_client live sessions, an address's next session is refused (a
    # typed error, then close code 1013 with a reason), evicting no one: the sessions already
    # open, the address's own further tabs and other addresses carry on.
    bot = make_bot(data)
    options = ServerOptions(max_sessions_per_client=2)

    def cookie(token: str) -> dict[str, str]:
        return {"cookie": f"avatarkit_session={token}"}

    with Client(create_app(lambda: bot, data_dir=data, options=options)) as c:
        c.get("/")
        neighbour = Client(c.app, client=("203.0.113.7", 40000))
        neighbour.get("/")
        attacker = Client(c.app, client=("198.51.100.9", 40000))
        registry = c.app.state.avatarkit.sessions
        first, second, third = (SessionRegistry.new_token() for _ in range(3))
        with contextlib.ExitStack() as held:
            victim = held.enter_context(c.websocket_connect("/ws"))
            other = held.enter_context(neighbour.websocket_connect("/ws"))
            for ws in (victim, other):
                assert ws.receive_json()["type"] == "hello"
            for token in (first, second, first):  # two sessions, one of them in two tabs
                ws = held.enter_context(attacker.websocket_connect("/ws", headers=cookie(token)))
                assert ws.receive_json()["type"] == "hello"
            for token in (third, None):  # a third session, or a connection-only one
                headers = cookie(token) if token else {}
                with attacker.websocket_connect("/ws", headers=headers) as refused:
                    error = refused.receive_json()
                    with pytest.raises(WebSocketDisconnect) as closed:
                        refused.receive_json()
                assert error["type"] == "error" and error["code"] == "too_many_sessions"
                assert "2 chat sessions" in error["message"]
                assert closed.value.code == 1013 and "too many sessions" in closed.value.reason
            assert len(registry) == 4  # the refused ones were never made
            for ws in (victim, other):  # the other users' sessions carry on
                ws.send_json({"type": "say", "text": "hi"})
                assert until(ws, "final", "error")[-1]["type"] == "final"
        # their connections ended: the address may open a new session again
        with attacker.websocket_connect("/ws", headers=cookie(third)) as ws:
            assert ws.receive_json()["type"] == "hello"


def _refused(ws: Any) -> tuple[dict[str, Any], WebSocketDisconnect]:
    """The error a refused connection gets, and how it was closed."""
    error = ws.receive_json()
    assert error["type"] == "error", error  # not a hello (nor any wait for a close)
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return error, closed.value


def test_one_session_cannot_open_connections_without_limit(data: Path) -> None:
    # Tabs of one session count once toward max_sessions_per_client, but the session itself
    # may have at most max_connections_per_session open: the rest are refused as the session
    # cap refuses (a typed error, close code 1013), and the tabs already open carry on.
    bot = make_bot(data)
    options = ServerOptions(max_sessions_per_client=1)
    allowed = 10  # the default max_connections_per_session
    with Client(create_app(lambda: bot, data_dir=data, options=options)) as c:
        c.get("/")
        neighbour = Client(c.app, client=("203.0.113.7", 40000))
        neighbour.get("/")
        with contextlib.ExitStack() as held:
            tabs, refusals = [], []
            for _ in range(30):
                ws = held.enter_context(c.websocket_connect("/ws"))
                first = ws.receive_json()
                if first["type"] == "hello":
                    tabs.append(ws)
                    continue
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_json()
                refusals.append((first, closed.value))
            assert len(tabs) == allowed and len(refusals) == 30 - allowed
            assert options.max_connections_per_session == allowed
            for error, closed in refusals:
                assert error["type"] == "error" and error["code"] == "too_many_connections"
                assert f"{allowed} chat connections are open for this session" in error["message"]
                assert closed.code == 1013 and "too many connections" in closed.reason
            with neighbour.websocket_connect("/ws") as other:  # another address: its own
                assert other.receive_json()["type"] == "hello"
            tabs[0].send_json({"type": "say", "text": "hi"})
            assert until(tabs[0], "final", "error")[-1]["type"] == "final"
            tabs[-1].close()  # a tab closes: another may open
            session = c.app.state.avatarkit.sessions.get(c.cookies["avatarkit_session"])
            deadline = time.monotonic() + 5
            while session.connections >= allowed and time.monotonic() < deadline:
                time.sleep(0.01)
            with c.websocket_connect("/ws") as again:
                assert again.receive_json()["type"] == "hello"


def test_one_address_cannot_open_connections_without_limit(data: Path) -> None:
    # Across its sessions, one address has at most max_connections_per_client connections.
    bot = make_bot(data)
    options = ServerOptions(max_connections_per_client=3, max_connections_per_session=2)
    mine, theirs = SessionRegistry.new_token(), SessionRegistry.new_token()
    with Client(create_app(lambda: bot, data_dir=data, options=options)) as c:
        attacker = Client(c.app, client=("198.51.100.9", 40000))
        neighbour = Client(c.app, client=("203.0.113.7", 40000))
        with contextlib.ExitStack() as held:
            for token in (mine, mine, theirs):
                headers = {"cookie": f"avatarkit_session={token}"}
                ws = held.enter_context(attacker.websocket_connect("/ws", headers=headers))
                assert ws.receive_json()["type"] == "hello"
            for headers in ({"cookie": f"avatarkit_session={theirs}"}, {}):
                with attacker.websocket_connect("/ws", headers=headers) as ws:
                    error, closed = _refused(ws)
                assert error["code"] == "too_many_connections" and closed.code == 1013
                assert "3 chat connections are open from this address" in error["message"]
            with neighbour.websocket_connect("/ws") as ws:
                assert ws.receive_json()["type"] == "hello"
            assert len(c.app.state.avatarkit.sessions) == 2  # the refused made no session


def test_registry_caps_the_connections_of_a_session_and_of_an_address(tmp_path: Path) -> None:
    from avatarkit.server.session import TooManyConnectionsError

    registry = SessionRegistry(
        tmp_path, max_connections_per_session=2, max_connections_per_client=3
    )
    mine, other = registry.new_token(), registry.new_token()
    tab = registry.open(mine, client="198.51.100.9")
    registry.open(mine, client="203.0.113.7")  # a session's tabs count from any address
    with pytest.raises(TooManyConnectionsError, match="2 chat connections are open for this"):
        registry.open(mine, client="192.0.2.1")
    assert tab.connections == 2
    registry.open(other, client="198.51.100.9")
    registry.open(other, client="198.51.100.9")
    fresh = registry.new_token()
    with pytest.raises(TooManyConnectionsError, match="3 chat connections are open from this"):
        registry.open(fresh, client="198.51.100.9")
    assert len(registry) == 2  # nothing made for the refused
    registry.release(tab, client="198.51.100.9")
    assert registry.open(fresh, client="198.51.100.9").connections == 1
    assert registry.open(mine, client="192.0.2.1") is tab
    for bad in ({"max_connections_per_session": 0}, {"max_connections_per_client": 0}):
        with pytest.raises(InputValidationError, match="max_connections_per"):
            SessionRegistry(tmp_path, **bad)  # type: ignore[arg-type]
    registry.close()


def test_registry_caps_the_sessions_open_from_one_address(tmp_path: Path) -> None:
    from avatarkit.errors import OverloadedError

    registry = SessionRegistry(tmp_path, max_sessions_per_client=1)
    mine, other = registry.new_token(), registry.new_token()
    tab1 = registry.open(mine, client="198.51.100.9")
    assert registry.open(mine, client="198.51.100.9") is tab1  # another tab: no new session
    with pytest.raises(OverloadedError, match="1 chat sessions are open from this address"):
        registry.open(other, client="198.51.100.9")
    assert len(registry) == 1 and registry.open(other, client="203.0.113.7").connections == 1
    registry.release(tab1, client="198.51.100.9")
    with pytest.raises(OverloadedError):  # one tab of it is still open
        registry.open(other, client="198.51.100.9")
    registry.release(tab1, client="198.51.100.9")
    assert registry.open(other, client="198.51.100.9").connections == 2
    with pytest.raises(InputValidationError, match="max_sessions_per_client"):
        SessionRegistry(tmp_path, max_sessions_per_client=0)
    registry.close()


def test_registry_evicts_only_idle_sessions(tmp_path: Path) -> None:
    registry = SessionRegistry(tmp_path, max_sessions=1)
    tokens: dict[str, str] = {}

    def opened() -> Any:
        token = registry.new_token()
        session = registry.open(token)
        tokens[session.key] = token
        return session

    def served(session: Any, media_id: str) -> bool:
        return registry.media(media_id, token=tokens[session.key]) is not None

    def with_media(session: Any) -> str:
        folder = registry.new_turn_folder(session)
        (folder / "clip.wav").write_bytes(b"RIFF")
        return registry.register(session, folder / "clip.wav")

    connected = opened()
    connected_id = with_media(connected)
    registry.end_turn(connected, connected.turns[-1].folder)
    busy = opened()
    busy_id = with_media(busy)  # its turn is still running...
    registry.release(busy)  # ...when its connection goes
    for _ in range(5):  # never sent a message: dropped when the connection ends
        registry.release(opened())
    assert len(registry) == 2
    idle = [opened() for _ in range(2)]
    idle_ids = [with_media(s) for s in idle]
    for session in idle:
        registry.end_turn(session, session.turns[-1].folder)
        registry.release(session)
    # One idle session is kept (max_sessions): the least recently used goes; sessions in use
    # (a connection, a running turn) are never evicted, however many there are.
    assert len(registry) == 3 and not served(idle[0], idle_ids[0])
    assert served(idle[1], idle_ids[1])
    assert served(connected, connected_id) and served(busy, busy_id)
    registry.end_turn(busy, busy.turns[-1].folder)  # idle now: the other idle one is older
    assert len(registry) == 2 and not served(idle[1], idle_ids[1])
    assert served(busy, busy_id)
    registry.close()


MOUNTED = """
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient
from test_server import LOCAL, REPLY, make_bot
from avatarkit.server import create_app

data = Path(sys.argv[1])
bot = make_bot(data)
parent = Starlette(routes=[Mount("/chat", app=create_app(lambda: bot, data_dir=data))])
with TestClient(parent, base_url=LOCAL) as c:  # runs the parent's lifespan, not the chat's
    c.get("/chat/")
    with c.websocket_connect("ws://127.0.0.1/chat/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "say", "text": "hi"})
        while (m := ws.receive_json())["type"] != "final":
            if m["type"] == "clip":
                assert c.get("/chat/" + m["url"]).status_code == 200
    print(*sorted(p.name for p in data.glob("media-*")))
"""


def test_a_mounted_app_leaves_no_media_behind(data: Path) -> None:
    # Starlette runs no lifespan of a mounted app: its media root must go all the same.
    data.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    here = Path(__file__).parents[1]
    run = subprocess.run([sys.executable, "-c", MOUNTED, str(data)], capture_output=True,
                         text=True, env=env, timeout=120, cwd=here)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("media-")  # it had one while serving
    assert list(data.glob("media-*")) == []


def test_media_of_a_crashed_run_are_swept_at_startup(data: Path) -> None:
    data.mkdir(parents=True)
    crash = (
        "import os, sys; from pathlib import Path; "
        "from avatarkit.server.session import SessionRegistry; "
        "r = SessionRegistry(Path(sys.argv[1])); "
        "f = r.new_turn_folder(r.get(r.new_token())); (f / 'clip.mp4').write_bytes(b'x'); "
        "print(r.root.name); os._exit(9)"  # killed: nothing cleaned up
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", crash, str(data)], capture_output=True,
                         text=True, env=env, timeout=60)  # fmt: skip
    stale = data / run.stdout.strip()
    assert run.returncode == 9 and stale.is_dir()
    live = SessionRegistry(data)  # another server on the same folder, still running
    theirs = [data / "media-abcdefgh", data / "media-NOTOURS", data / "media"]
    for folder in theirs:  # folders this server's naming did not make (no lock file)
        (folder / "x").mkdir(parents=True)
    (data / "media-12345678").write_text("a file")
    fresh = SessionRegistry(data)
    assert not stale.exists()  # the crashed run's
    assert live.root.is_dir() and fresh.root.is_dir()  # a running server's, and its own
    assert all(folder.is_dir() for folder in theirs) and (data / "media-12345678").is_file()
    live.close()
    root = fresh.root
    del fresh
    gc.collect()  # dropped without close(): its folder goes with it
    assert not root.exists() and not live.root.exists()


def test_request_bodies_and_long_urls_are_refused(client: TestClient) -> None:
    assert client.post("/", content=b"x" * 20_000).status_code == 413
    assert client.get("/", headers={"content-length": "999999999"}).status_code == 413
    assert client.get("/?" + "q" * 3000).status_code == 414
    chunked = client.post("/", content=iter([b"x"]))  # no length: sent chunked
    assert chunked.status_code == 413
    assert client.post("/").status_code == 405


def test_refusals_carry_the_security_headers_too(client: TestClient) -> None:
    refused = [
        client.post("/", content=b"x" * 20_000),
        client.post("/", content=iter([b"x"])),
        client.get("/?" + "q" * 3000),
        client.get("/nope"),
    ]
    assert [r.status_code for r in refused] == [413, 413, 414, 404]
    for r in refused:
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["cross-origin-resource-policy"] == "same-origin"


def test_websocket_from_another_site_is_refused(client: TestClient) -> None:
    client.get("/")
    evil = {"origin": "http://evil.example"}
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/ws", headers=evil),
    ):
        pass
    assert refused.value.code == 1008
    with client.websocket_connect("/ws", headers={"origin": LOCAL}) as ws:
        assert ws.receive_json()["type"] == "hello"


def test_only_the_servers_own_host_names_are_answered(client: TestClient) -> None:
    # DNS rebinding: a foreign page whose name resolves to this server sends its own name as
    # Host and a matching Origin; the Origin check alone lets it through.
    rebound = {"host": "evil.test:8000", "origin": "http://evil.test:8000"}
    refused = client.get("/", headers={"host": "evil.test:8000"})
    assert refused.status_code == 400 and "set-cookie" not in refused.headers
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert client.get("/healthz", headers={"host": "evil.test"}).status_code == 400
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect("/ws", headers=rebound),
    ):
        pass
    assert closed.value.code == 1008
    for host in ("localhost:8000", "127.0.0.1", "LOCALHOST.", "[::1]:8000"):
        assert client.get("/healthz", headers={"host": host}).status_code == 200, host
        with client.websocket_connect(
            "/ws", headers={"host": host, "origin": f"http://{host}"}
        ) as ws:
            assert ws.receive_json()["type"] == "hello"


def test_allowed_hosts_can_be_configured_for_a_proxy(data: Path) -> None:
    bot = make_bot(data)
    options = ServerOptions(allowed_hosts=("Chat.Example.com", "*.apps.example", "::1"))
    assert options.allowed_hosts == ("chat.example.com", "*.apps.example", "[::1]")
    with Client(create_app(lambda: bot, data_dir=data, options=options)) as c:
        for host, status in [("chat.example.com", 200), ("chat.example.com:443", 200),
                             ("eu.apps.example", 200), ("apps.example", 400),
                             ("evilapps.example", 400), ("[::1]", 200), ("127.0.0.1", 400),
                             ("", 400), ("a:b:c", 400)]:  # fmt: skip
            assert c.get("/healthz", headers={"host": host}).status_code == status, host
    with Client(create_app(lambda: bot, data_dir=data, options=ServerOptions(
        allowed_hosts=("*",)
    ))) as c:  # fmt: skip
        assert c.get("/healthz", headers={"host": "anything.example"}).status_code == 200
    for bad in ("http://chat.example.com", "chat.example.com:443", "a b", "*.", "[nope]"):
        with pytest.raises(ValueError, match="is not a host name"):
            ServerOptions(allowed_hosts=(bad,))


@pytest.mark.parametrize(
    ("bind", "host", "status"),
    [("192.168.1.5", "192.168.1.5:8000", 200), ("192.168.1.5", "evil.test", 400),
     ("127.0.0.2", "127.0.0.2", 200), ("0.0.0.0", "my-laptop.lan", 200),
     ("::", "anything.example", 200), ("::1", "[::1]", 200)],
)  # fmt: skip
def test_serve_answers_to_the_address_it_binds(
    data: Path, monkeypatch: pytest.MonkeyPatch, bind: str, host: str, status: int
) -> None:
    import uvicorn

    from avatarkit.server import runner, serve

    loopback = runner.bind_sockets
    # no server, no address of another machine: just the setup
    monkeypatch.setattr(runner, "bind_sockets", lambda host, port: loopback("127.0.0.1", 0))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    bot = make_bot(data)
    app = create_app(lambda: bot, data_dir=data)
    with pytest.raises(SystemExit):  # "never started"
        serve(app, host=bind, port=8000)
    with Client(app) as c:
        assert c.get("/healthz", headers={"host": host}).status_code == status


def test_video_segments_are_served_as_mp4(data: Path) -> None:
    from avatarkit.render.local import LocalRenderer

    bot = make_bot(data, renderer=LocalRenderer(size=64))
    with Client(create_app(lambda: bot, data_dir=data)) as c:
        c.get("/")
        assert c.get("/avatar.png").headers["content-type"] == "image/png"
        with c.websocket_connect("/ws") as ws:
            assert ws.receive_json()["video"] is True
            ws.send_json({"type": "say", "text": "hi"})
            clips = [m for m in until(ws, "final") if m["type"] == "clip"]
        assert len(clips) == 3 and all(m["has_video"] and m["mime"] == "video/mp4" for m in clips)
        r = c.get(clips[0]["url"], headers={"range": "bytes=0-99"})
        assert r.status_code == 206 and len(r.content) == 100  # seekable: range requests
        assert b"ftyp" in c.get(clips[0]["url"]).content[:16]


# ---------------------------------------------------------------------- CLI and packaging


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_serve_command_warns_when_binding_beyond_this_machine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import avatarkit.server as server
    from avatarkit.cli import app

    calls: list[dict[str, Any]] = []

    def fake_serve(app: Any, **kw: Any) -> None:
        calls.append({**kw, "port": kw["sockets"][0].getsockname()[1]})
        kw["on_ready"]()
        for sock in kw["sockets"]:
            sock.close()

    bound: list[tuple[str, int]] = []
    real_bind = server.bind_sockets

    def bind_loopback(host: str, port: int) -> Any:  # 8000 may be taken, 0.0.0.0 too wide
        bound.append((host, port))
        return real_bind("127.0.0.1", 0)

    monkeypatch.setattr(server, "serve", fake_serve)
    monkeypatch.setattr(server, "bind_sockets", bind_loopback)
    runner = CliRunner()
    args = ["serve", "--chat", "test", "--voice", "test", "--renderer", "none",
            "--data-dir", str(tmp_path)]  # fmt: skip
    quiet = runner.invoke(app, args)
    assert quiet.exit_code == 0, quiet.output
    assert bound[-1] == ("127.0.0.1", 8000) and calls[-1]["host"] == "127.0.0.1"
    port = calls[-1]["port"]
    assert "WARNING" not in quiet.output and f"http://127.0.0.1:{port}/" in quiet.output
    loud = runner.invoke(app, [*args, "--host", "0.0.0.0", "--port", "9000"])
    assert loud.exit_code == 0 and "WARNING" in loud.output and calls[-1]["host"] == "0.0.0.0"
    assert bound[-1] == ("0.0.0.0", 9000)
    bad = runner.invoke(app, ["serve", "--chat", "nosuchprovider", "--data-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "nosuchprovider" in bad.output and len(calls) == 2


SERVE = ["serve", "--chat", "test", "--voice", "test", "--renderer", "none"]


@pytest.fixture
def not_served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``avatarkit serve`` runs no server; the calls it would have made."""
    import avatarkit.server as server

    calls: list[dict[str, Any]] = []

    def not_serve(app: Any, **kw: Any) -> None:
        calls.append(kw)
        for sock in kw["sockets"]:  # what serve() does with the sockets it is given
            sock.close()

    monkeypatch.setattr(server, "serve", not_serve)
    return calls


def test_serve_command_refuses_a_data_dir_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, not_served: list[dict[str, Any]]
) -> None:
    import errno
    import os
    import tempfile

    from avatarkit.cli import app

    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    result = CliRunner().invoke(app, [*SERVE, "--data-dir", str(afile)])
    assert result.exit_code == 2, result.output
    assert f"error: the data folder {afile} is a file, not a folder" in result.output
    result = CliRunner().invoke(app, [*SERVE, "--data-dir", str(afile / "sub")])
    assert result.exit_code == 2 and "Not a directory" in result.output

    readonly = tmp_path / "ro"
    readonly.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args: Any, dir: Any = None, **kwargs: Any) -> Any:  # a read-only file system
        if dir is not None and Path(dir).is_relative_to(readonly):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    result = CliRunner().invoke(app, [*SERVE, "--data-dir", str(readonly / "d")])
    assert result.exit_code == 2, result.output
    assert f"error: cannot write the data folder {readonly / 'd'}: Read-only" in result.output
    assert "http://" not in result.output and not_served == []


def test_an_app_with_a_data_dir_it_cannot_write_fails_at_startup(tmp_path: Path) -> None:
    from avatarkit.errors import ConfigurationError

    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    bot = make_bot(tmp_path)
    client = Client(create_app(lambda: bot, data_dir=afile))
    with pytest.raises(ConfigurationError, match="is a file"), client:
        pass


def test_serve_command_shows_a_bad_option_without_pydantic_text(
    tmp_path: Path, not_served: list[dict[str, Any]]
) -> None:
    from avatarkit.cli import app

    args = [*SERVE, "--data-dir", str(tmp_path), "--embed-origin", "not a url"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error: --embed-origin: 'not a url' is not an origin like https://" in result.output
    assert "validation error" not in result.output and "pydantic" not in result.output
    result = CliRunner().invoke(app, [*SERVE, "--data-dir", str(tmp_path), "--title", "x" * 81])
    assert result.exit_code == 2 and "error: --title: " in result.output
    assert not_served == []


def test_serve_command_shows_its_address_only_once_listening(
    tmp_path: Path, not_served: list[dict[str, Any]]
) -> None:
    import socket

    from avatarkit.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [*SERVE, "--data-dir", str(tmp_path), "--port", str(port)]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.output
    assert "http://" not in result.output and not_served == []
    result = CliRunner().invoke(app, args)  # the port is free again; the server "never starts"
    assert result.exit_code == 0 and len(not_served) == 1
    assert "http://" not in result.output  # printed by on_ready, once listening


@pytest.mark.parametrize(
    ("host", "why"),
    [("192.0.2.1", "Cannot assign requested address"), ("no-such-host.invalid", "not known")],
    ids=["not-this-machines", "no-such-name"],
)
def test_serve_command_refuses_a_host_it_cannot_listen_on(
    tmp_path: Path, not_served: list[dict[str, Any]], host: str, why: str
) -> None:
    from avatarkit.cli import app

    args = [*SERVE, "--data-dir", str(tmp_path), "--host", host, "--port", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"error: cannot listen on {host}:0: " in result.output and why in result.output
    assert "Traceback" not in result.output and not_served == []


def test_serve_command_serves_on_the_socket_it_bound_at_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The port is taken when it is checked and kept till the server runs on it: no other
    # process can take it in between (not even one with SO_REUSEADDR, as uvicorn binds), and
    # port 0 gets a real free port, the one the user is shown.
    import signal
    import socket
    import threading
    import urllib.request

    import avatarkit.server as server
    from avatarkit.cli import app

    real_serve = server.serve
    answers: list[bytes] = []

    def serve_then_stop(app_: Any, **kw: Any) -> None:
        port = kw["sockets"][0].getsockname()[1]
        assert port != 0
        with socket.socket() as rival, pytest.raises(OSError, match="in use"):
            rival.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            rival.bind(("127.0.0.1", port))
        shown = kw["on_ready"]

        def ask_then_stop() -> None:  # from a thread: on_ready runs on the server's loop
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    answers.append(r.read())
            finally:
                os.kill(os.getpid(), signal.SIGINT)  # and stop (as Ctrl-C would)

        def ready() -> None:
            shown()
            threading.Thread(target=ask_then_stop, daemon=True).start()

        real_serve(app_, **{**kw, "on_ready": ready, "log_level": "warning"})

    monkeypatch.setattr(server, "serve", serve_then_stop)
    result = CliRunner().invoke(app, [*SERVE, "--data-dir", str(tmp_path), "--port", "0"])
    assert result.exit_code == 0, result.output
    assert answers == [b'{"ok":true}']
    (port,) = re.findall(r"avatarkit chat: http://127\.0\.0\.1:(\d+)/", result.output)
    assert port != "0" and f"http://127.0.0.1:{port}/widget.js" in result.output


def test_serve_calls_on_ready_once_the_port_listens(tmp_path: Path) -> None:
    import signal
    import socket

    from avatarkit.errors import ConfigurationError
    from avatarkit.server import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bot = make_bot(tmp_path)
    app = create_app(lambda: bot, data_dir=tmp_path)
    seen: list[bool] = []

    def ready() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            seen.append(True)  # listening already
        signal.raise_signal(signal.SIGINT)  # and stop (as Ctrl-C would)

    serve(app, port=port, on_ready=ready, log_level="warning")
    assert seen == [True]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}: "):
            serve(app, port=port, on_ready=ready, log_level="critical")
    with pytest.raises(InputValidationError, match="port must be"):
        serve(app, port=70_000, on_ready=ready)
    assert seen == [True]


def test_import_avatarkit_does_not_load_the_web_stack() -> None:
    code = "import sys, avatarkit; assert not {'starlette', 'uvicorn'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("freeze", [True, False])
def test_the_warmed_up_heap_is_frozen_out_of_garbage_collection(data: Path, freeze: bool) -> None:
    # with the NLP models loaded a full collection scans ~130,000 objects, 57 ms during which
    # every session waits; frozen after warm-up, the objects that live as long as the server
    # are no longer scanned
    import gc

    gc.unfreeze()
    bot = make_bot(data)
    options = ServerOptions(freeze_gc_after_warmup=freeze)
    try:
        with Client(create_app(lambda: bot, data_dir=data, options=options)):
            assert (gc.get_freeze_count() > 0) is freeze
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),  # IPv4: the whole address
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),  # IPv6: its /64
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4-mapped: the IPv4 address
        ("::1", "::/64"),
        ("testclient", "testclient"),  # not an address: as given
    ],
)
def test_client_key_groups_ipv6_by_its_64_prefix(address: str, key: str) -> None:
    from avatarkit.server.throttle import client_key

    assert client_key(address) == key


def test_an_ipv6_client_cannot_rotate_its_64_around_the_per_address_limits(data: Path) -> None:
    # One IPv6 host owns a whole /64: a new address in it is the same client, for the session
    # cap and for the address's message budget. Another /64 is another client; an IPv4 client
    # seen as IPv4-mapped IPv6 is that IPv4 client.
    bot = make_bot(data)
    options = ServerOptions(max_sessions_per_client=1, client_messages_per_minute=1, client_burst=1)

    def at(host: str) -> Client:
        c = Client(app, client=(host, 40000))
        c.get("/")  # its own cookie: its own session
        return c

    app = create_app(lambda: bot, data_dir=data, options=options)
    with Client(app):
        first = at("2001:db8:0:1::a")
        with first.websocket_connect("/ws") as ws:
            assert ws.receive_json()["type"] == "hello"
            ws.send_json({"type": "say", "text": "hi"})
            assert until(ws, "final", "error")[-1]["type"] == "final"  # the /64's one message
            with at("2001:db8:0:1:ffff::b").websocket_connect("/ws") as same:
                error, closed = _refused(same)
            assert error["code"] == "too_many_sessions" and closed.code == 1013
            with at("2001:db8:0:2::a").websocket_connect("/ws") as other:
                assert other.receive_json()["type"] == "hello"
            v4 = at("198.51.100.9")
            with v4.websocket_connect("/ws") as plain:
                assert plain.receive_json()["type"] == "hello"
                mapped = Client(app, client=("::ffff:198.51.100.9", 40000), cookies=v4.cookies)
                with mapped.websocket_connect("/ws") as tab:  # its second tab: allowed
                    assert tab.receive_json()["type"] == "hello"
                mapped.cookies.clear()
                mapped.get("/")
                with mapped.websocket_connect("/ws") as refused:  # a second session: not
                    assert _refused(refused)[0]["code"] == "too_many_sessions"
        with at("2001:db8:0:1:eeee::c").websocket_connect("/ws") as again:
            assert again.receive_json()["type"] == "hello"  # the first's session has closed
            again.send_json({"type": "say", "text": "hi"})  # but its /64's budget is spent
            assert again.receive_json()["code"] == "rate_limited"


def test_a_refused_message_spends_no_token_of_either_bucket(data: Path) -> None:
    # A session past its own budget must not drain its address's budget with refused
    # messages: a second session from the same address still gets its turn.
    chat = FakeChatModel(REPLY)
    bot = make_bot(data, chat)
    options = ServerOptions(messages_per_minute=1, burst=1, client_messages_per_minute=1,
                            client_burst=2)  # fmt: skip
    with Client(create_app(lambda: bot, data_dir=data, options=options)) as c:
        c.get("/")
        with c.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_json({"type": "say", "text": "hi"})
            until(ws, "final")
            for _ in range(5):  # refused by the session's bucket: the address's is untouched
                ws.send_json({"type": "say", "text": "again"})
                assert ws.receive_json()["code"] == "rate_limited"
        other = Client(c.app)
        other.get("/")
        with other.websocket_connect("/ws") as ws:
            ws.receive_json()
            ws.send_json({"type": "say", "text": "hi"})
            assert until(ws, "final", "error")[-1]["type"] == "final"
            ws.send_json({"type": "say", "text": "hi"})  # both budgets are spent now
            assert ws.receive_json()["code"] == "rate_limited"
    assert len(chat.calls) == 2


def test_throttle_wait_reports_without_spending() -> None:
    now = [0.0]
    throttle = Throttle(per_minute=60, burst=1, clock=lambda: now[0])
    assert throttle.wait("a") == 0 and throttle.wait("a") == 0  # nothing spent
    assert throttle.take("a") == 0
    assert throttle.wait("a") == pytest.approx(1.0) and throttle.take("a") == pytest.approx(1.0)
    now[0] = 1.0
    assert throttle.wait("a") == 0 and throttle.take("a") == 0


def test_serve_command_passes_allowed_hosts_and_refuses_a_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, not_served: list[dict[str, Any]]
) -> None:
    import avatarkit.server as server
    from avatarkit.cli import app

    made: list[Any] = []
    real = server.create_app
    monkeypatch.setattr(
        server, "create_app", lambda *a, **kw: made.append(kw["options"]) or real(*a, **kw)
    )
    args = [*SERVE, "--data-dir", str(tmp_path), "--allowed-host", "Chat.Example.com"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert made[0].allowed_hosts == ("chat.example.com",) and len(not_served) == 1
    bad = CliRunner().invoke(app, [*SERVE, "--data-dir", str(tmp_path), "--allowed-host", "a b"])
    assert bad.exit_code == 2 and "error: --allowed-host: " in bad.output


def test_the_server_closes_its_bot_at_shutdown(tmp_path: Path) -> None:
    bot = make_bot(tmp_path)
    closed: list[bool] = []
    real = bot.aclose

    async def counting_aclose() -> None:
        closed.append(True)
        await real()

    bot.aclose = counting_aclose  # type: ignore[method-assign]
    with Client(create_app(lambda: bot, data_dir=tmp_path)) as client:
        assert client.get("/").status_code == 200
        assert closed == []
    assert closed == [True]


def test_the_reply_shown_keeps_fenced_code_exactly_as_written() -> None:
    written = "[happy] Here:\n```python\nscores[sad] += 1\nprint(a*sigh*b)\n```\n*smiles* Done."
    assert shown_text(written) == (
        "Here:\n```python\nscores[sad] += 1\nprint(a*sigh*b)\n```\nDone."
    )
    # a block the model left open runs to the end, as the voice reads it
    assert shown_text("Open:\n```\nx[sad] = 1") == "Open:\n```\nx[sad] = 1"


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("[happy] Name:    Ava\nAge:     3  [sad]  years", "Name:    Ava\nAge:     3   years"),
        ("List:\n  - a  *smiles*\tb    c", "List:\n  - a  b    c"),  # the indent and every gap kept
        ("Sure [happy]!  Go   on.", "Sure!  Go   on."),  # the space before it, at punctuation
        ("x  =  1 [happy][sad] y  =  2", "x  =  1 y  =  2"),  # tags side by side: one space
        ("Done. [happy]\n[sad]\nNext  line", "Done.\n\nNext  line"),
    ],
)
def test_taking_a_tag_out_keeps_the_spacing_of_the_rest_of_its_line(
    written: str, shown: str
) -> None:
    # the page shows replies with their spacing (white-space: pre-wrap): a tag and one space
    # beside it go, the rest of the line stays as the model wrote it
    assert shown_text(written) == shown


def test_serve_command_refuses_an_empty_host(
    tmp_path: Path, not_served: list[dict[str, Any]]
) -> None:
    # it used to listen on every interface and show http://:PORT/ as the address
    from avatarkit.cli import app

    args = [*SERVE, "--data-dir", str(tmp_path), "--host", " ", "--port", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "host is empty" in result.output and "0.0.0.0" in result.output
    assert "Traceback" not in result.output and not_served == []
