"""The chat page in a real headless Chromium: type, watch and hear the reply stream, interrupt.

Needs Debian's ``chromium`` (``/usr/bin/chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package, which drives it through its executable path (no downloaded
browser). Skipped, with the reason, where either is missing.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from _server_helpers import fast_bot, running_server
from avatarkit import _sync
from avatarkit.dialogue.store import SQLiteStore

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip

REPLY = (
    "Hello, it is lovely to meet you. I am a small avatar drawn from simple shapes. "
    "I speak each sentence as soon as it is written. Ask me anything you like."
)
LONG_REPLY = (
    "Let me tell you a rather long story about the sea. The waves roll in all day and all "
    "night. Sailors have told tales of it for a thousand years. Some of them are even true."
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium: apt-get install chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("serve")
    bot = fast_bot(data, [REPLY, LONG_REPLY], token_delay=0.12)
    with running_server(bot, data) as url:
        yield url, data


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@contextmanager
def _host_site(html: str) -> Iterator[str]:
    """Another web site on this machine (a page on another origin that embeds the widget)."""
    body = html.encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{httpd.server_address[1]}/shop.html"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _console_errors(page: Any) -> list[str]:
    """What the page reports as failing: script errors, console errors, HTTP errors."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return errors


def _trace(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("() => JSON.parse(JSON.stringify(window.avatarkitChat))")
    return result


def _front_video(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(
        """() => { const v = document.querySelector('video.clip.front');
        return v ? {t: v.currentTime, paused: v.paused, muted: v.muted, volume: v.volume,
                    audioBytes: v.webkitAudioDecodedByteCount, w: v.videoWidth} : null; }"""
    )
    return result


def test_reply_streams_plays_with_audio_and_subtitles_then_interrupt(
    server: tuple[str, Path], browser: Any
) -> None:
    url, data = server
    page = browser.new_page(viewport={"width": 760, "height": 900})
    errors = _console_errors(page)
    page.goto(url)
    page.wait_for_selector("#dot.online", timeout=10_000)

    # 1. Type a message: the first sentence plays while the rest is still being written.
    page.fill("#text", "Hello avatar, who are you?")
    page.press("#text", "Enter")
    page.wait_for_function(
        "() => { const v = document.querySelector('video.clip.front');"
        " return v && !v.paused && v.currentTime > 0.25; }",
        timeout=20_000,
    )
    first = _front_video(page)
    time.sleep(0.4)
    later = _front_video(page)
    assert later is not None and first is not None
    assert later["t"] > first["t"] or later["t"] < first["t"] - 0.1  # advanced (or next clip)
    assert not later["muted"] and later["volume"] > 0
    assert later["audioBytes"] > 0, "the reply video has an audio track that is being decoded"
    assert later["w"] > 0
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "widget-chat.png"
    page.screenshot(path=str(shot))
    print(f"\nscreenshot: {shot}")

    page.wait_for_function(
        "() => window.avatarkitChat.events.some(e => e.kind === 'finished')", timeout=30_000
    )
    trace = _trace(page)
    (turn_id,) = trace["final"]
    final = trace["final"][turn_id]
    assert final["text"] == REPLY
    # Subtitles showed every sentence, in order, and nothing else.
    assert " ".join(trace["subtitles"]) == REPLY
    assert len(trace["subtitles"]) == 4
    # Playback began before the server had finished the reply (its last clip and TurnComplete).
    clips = [e for e in trace["events"] if e["kind"] == "clip"]
    assert trace["firstPlay"][turn_id] < max(c["serverTime"] for c in clips)
    assert trace["firstPlay"][turn_id] < final["serverTime"]
    sent = next(e["at"] for e in trace["events"] if e["kind"] == "turn")
    print(
        f"first sentence playing after {trace['firstPlay'][turn_id] - sent:.0f} ms; "
        f"last clip sent after {max(c['serverTime'] for c in clips) - sent:.0f} ms, "
        f"reply complete after {final['serverTime'] - sent:.0f} ms"
    )
    # Every segment played to its end, one after another.
    ended = [e for e in trace["events"] if e["kind"] == "ended"]
    assert [e["index"] for e in ended] == [0, 1, 2, 3]
    # No gap: each next clip was loaded before the last ended, and starts right after it.
    assert not [e for e in trace["events"] if e["kind"] == "gap"]
    # The avatar's idle loop arrived, to bridge any wait for a clip still rendering.
    assert [e for e in trace["events"] if e["kind"] == "idle"]
    playing = {e["index"]: e["at"] for e in trace["events"] if e["kind"] == "playing"}
    handover = [playing[e["index"] + 1] - e["at"] for e in ended[:-1]]
    print(f"clip hand-over (ms): {handover}")
    assert max(handover) < 400
    assert page.inner_text(".msg.bot:last-child") == REPLY

    # 2. Interrupt the next reply mid-sentence: playback stops; only what was heard is kept.
    page.fill("#text", "Tell me a story")
    page.press("#text", "Enter")
    page.wait_for_function(
        "() => { const v = document.querySelector('video.clip.front');"
        " return v && !v.paused && v.currentTime > 0.6; }",
        timeout=20_000,
    )
    page.focus("#stop")  # from the keyboard: focus moves on to the message box
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg.bot.cut", timeout=5_000)
    assert page.evaluate("() => document.activeElement.id") == "text"
    time.sleep(0.8)
    state = page.evaluate(
        "() => Array.from(document.querySelectorAll('video.clip'))"
        ".map(v => ({paused: v.paused, src: v.getAttribute('src')}))"
    )
    assert all(v["paused"] and not v["src"] for v in state), state
    assert page.is_hidden("#stop")
    trace = _trace(page)
    second = next(t for t in trace["final"] if t != turn_id) if len(trace["final"]) > 1 else None
    interrupt = next(e for e in trace["events"] if e["kind"] == "interrupt")
    assert interrupt["played"] > 0.5
    playing_after = [
        e for e in trace["events"]
        if e["kind"] == "playing" and e["turn"] == interrupt["turn"] and e["at"] > interrupt["at"]
    ]  # fmt: skip
    assert playing_after == [] and second in (None, interrupt["turn"])
    heard = page.inner_text(".msg.bot.cut")
    assert heard and LONG_REPLY.startswith(heard.split()[0])
    assert len(heard) < len(LONG_REPLY)

    # The server's dialogue state holds exactly what the browser had played.
    store = SQLiteStore(data / "conversations.db")

    def stored() -> list[str]:
        async def turns() -> list[str]:
            sessions = await store.list_sessions()
            assert len(sessions) == 1
            return [t.assistant for t in (await store.load(sessions[0])).turns]

        return _sync.run(turns())

    deadline = time.monotonic() + 5
    while stored()[-1] != heard and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stored() == [REPLY, heard]
    assert errors == []

    # 3. The conversation survives a reload (cookie session → SQLite).
    page.reload()
    page.wait_for_selector("#dot.online", timeout=10_000)
    assert page.locator(".msg.past").all_inner_texts() == [
        "Hello avatar, who are you?",
        REPLY,
        "Tell me a story",
        heard,
    ]
    page.close()


def test_audio_only_chat_plays_and_requests_nothing_missing(tmp_path: Path, browser: Any) -> None:
    from avatarkit.bot import AvatarBot
    from avatarkit.dialogue.manager import DialogueManager
    from avatarkit.testing import FakeChatModel

    dialogue = DialogueManager(
        chat=FakeChatModel("Hi there."), store=SQLiteStore(tmp_path / "conversations.db")
    )
    bot = AvatarBot(dialogue=dialogue, voice="espeak", renderer=None, preprocessor=None,
                    intent=None, sentiment=None)  # fmt: skip
    with running_server(bot, tmp_path) as url:
        page = browser.new_page(viewport={"width": 760, "height": 900})
        errors = _console_errors(page)
        page.goto(url)
        page.wait_for_selector("#dot.online", timeout=10_000)
        assert page.is_hidden("#still")  # no avatar image: none asked for
        page.fill("#text", "Hello")
        page.press("#text", "Enter")
        page.wait_for_function(
            "() => window.avatarkitChat.events.some(e => e.kind === 'finished')", timeout=20_000
        )
        assert _trace(page)["subtitles"] == ["Hi there."]
        page.close()
    assert errors == []  # no /favicon.ico, no /avatar.png, no script error


def test_the_bubble_keeps_the_code_the_model_wrote_and_the_subtitles_the_speech(
    tmp_path: Path, browser: Any
) -> None:
    from avatarkit.bot import AvatarBot
    from avatarkit.dialogue.manager import DialogueManager
    from avatarkit.testing import FakeChatModel

    written = (
        "[happy] Try this:\n```python\nfor i in range(3):\n    print(i)\n```\n"
        "It prints **three** numbers <img src=x onerror=alert(1)> 🙂"
    )
    shown = written.removeprefix("[happy] ")  # as written, the emotion tag out
    dialogue = DialogueManager(
        chat=FakeChatModel(written), store=SQLiteStore(tmp_path / "conversations.db")
    )
    bot = AvatarBot(dialogue=dialogue, voice="espeak", renderer=None, preprocessor=None,
                    intent=None, sentiment=None)  # fmt: skip
    with running_server(bot, tmp_path) as url:
        page = browser.new_page(viewport={"width": 760, "height": 900})
        errors = _console_errors(page)
        page.goto(url)
        page.wait_for_selector("#dot.online", timeout=10_000)
        page.fill("#text", "Show me a loop")
        page.press("#text", "Enter")
        page.wait_for_function(
            "() => window.avatarkitChat.events.some(e => e.kind === 'finished')", timeout=20_000
        )
        bubble = page.locator(".msg.bot").last
        assert bubble.inner_text() == shown  # the code stays once the reply is final
        assert bubble.locator("*").count() == 0  # set as text: no element made of the reply
        subtitles = " ".join(_trace(page)["subtitles"])  # the spoken version
        assert subtitles.startswith("Try this:") and "range" not in subtitles
        assert "**" not in subtitles and "🙂" not in subtitles
        page.reload()
        page.wait_for_selector("#dot.online", timeout=10_000)
        assert page.locator(".msg.past").all_inner_texts() == ["Show me a loop", shown]
        assert page.locator(".msg.past *").count() == 0
        page.close()
    assert errors == []


def test_the_bubble_shows_the_final_text_as_it_streams(tmp_path: Path, browser: Any) -> None:
    # The page took tags out of the live text with its own pattern: "[note]" vanished while
    # the reply streamed and came back at the end; "*smiles*" showed until it ended.
    from avatarkit.bot import AvatarBot
    from avatarkit.dialogue.manager import DialogueManager
    from avatarkit.server.conversation import shown_text
    from avatarkit.testing import FakeChatModel

    written = (
        "[note] 🙂 Keep this. *smiles* Hi [emotion: happy] there [Sad]!\n"
        "```py\nx[sad] = 1\n```\nName:    Ava  *grins*  here 👋🏽"
    )
    dialogue = DialogueManager(
        chat=FakeChatModel(written, token_delay=0.02),
        store=SQLiteStore(tmp_path / "conversations.db"),
    )
    bot = AvatarBot(dialogue=dialogue, voice="espeak", renderer=None, preprocessor=None,
                    intent=None, sentiment=None)  # fmt: skip
    with running_server(bot, tmp_path) as url:
        page = browser.new_page(viewport={"width": 760, "height": 900})
        errors = _console_errors(page)
        page.goto(url)
        page.wait_for_selector("#dot.online", timeout=10_000)
        page.evaluate(
            """() => { window.shown = [];
            new MutationObserver(() => {
              const b = document.querySelector('.msg.bot:last-child');
              if (b && b.textContent !== window.shown.at(-1)) window.shown.push(b.textContent);
            }).observe(document.getElementById('log'), {childList: true, subtree: true,
                                                        characterData: true}); }"""
        )
        page.fill("#text", "Say it")
        page.press("#text", "Enter")
        page.wait_for_function(
            "() => window.avatarkitChat.events.some(e => e.kind === 'finished')", timeout=20_000
        )
        shown: list[str] = page.evaluate("() => window.shown")
        page.close()
    final = shown_text(written)
    assert final.startswith("[note] 🙂 Keep this. Hi there!\n```py\nx[sad] = 1\n```\nName:    ")
    on_the_way = {shown_text(written[:i]) for i in range(len(written) + 1)}
    assert len(shown) > 5 and shown[-1] == final
    assert [s for s in shown if s not in on_the_way] == []  # each step: the final text so far
    assert errors == []


def test_widget_script_opens_the_chat_on_another_site(
    server: tuple[str, Path], browser: Any
) -> None:
    url, _ = server
    html = (
        "<!doctype html><html><head><title>Shop</title></head>"
        "<body style='font-family:sans-serif;background:#fafafa'>"
        "<h1>Acme shop</h1><p>Some products.</p>"
        f"<script src='{url}widget.js' data-label='Ask Ava' data-color='#0f766e' async></script>"
        "</body></html>"
    )
    page = browser.new_page(viewport={"width": 900, "height": 760})
    with _host_site(html) as host_page:  # another site (localhost, not 127.0.0.1)
        page.goto(host_page)
        button = page.get_by_role("button", name="Ask Ava")
        button.click()
        frame_el = page.wait_for_selector("iframe[title='Ask Ava']")
        frame = frame_el.content_frame()
        assert frame is not None
        frame.wait_for_selector("#dot.online", timeout=10_000)
        assert frame.url == url + "embed#accent=0f766e"  # the widget's colour, carried over
        assert frame.evaluate("() => document.body.classList.contains('embedded')")
        time.sleep(0.3)
        shot = ARTIFACTS / "widget-embed.png"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(shot))
        print(f"\nscreenshot: {shot}")
        button.click()
        assert page.is_hidden("iframe[title='Ask Ava']")
        page.close()
