"""Chat widget latency: how soon the first sentence plays, streamed vs waiting for the whole reply.

    python benchmarks/widget_latency.py

Runs ``avatarkit serve``'s app offline (eSpeak voice, local renderer at the serve default of
320 px) on a loopback port and drives it from Debian's chromium (Playwright), with two chat
models: the local one (answers at once) and the same answers written at a cloud LLM's pace
(20 words/s). Prints, side by side in one run, per prompt (after one warm-up turn):
- the reply's length in seconds of speech;
- streamed: ms from pressing Enter to the first sentence playing in the browser, and to the
  server finishing the whole reply (last clip and TurnComplete);
- not streamed: ms for ``bot.respond()`` to produce the whole video with the same backends
  (what a page that waits for the full reply waits before playing anything), and the ratio;
- the longest hand-over between consecutive clips (ms from one clip's ``ended`` to the next
  one's ``playing``) and the gaps (the next clip was not ready when one ended).
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from playwright.sync_api import sync_playwright

from avatarkit.bot import AvatarBot
from avatarkit.dialogue.manager import DialogueManager
from avatarkit.dialogue.store import SQLiteStore
from avatarkit.registry import create
from avatarkit.server import create_app

PROMPTS = ["Hi! Who are you?", "What can you do?", "Tell me something about yourself."]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking",
        "--autoplay-policy=no-user-gesture-required"]  # fmt: skip


class PacedChat:
    """The local chat model's answers, written word by word at ``words_per_second``."""

    def __init__(self, inner: Any, words_per_second: float) -> None:
        self.inner = inner
        self.delay = 1.0 / words_per_second

    @property
    def capabilities(self) -> Any:
        return self.inner.capabilities

    async def complete(self, messages: Sequence[Any]) -> str:
        text: str = await self.inner.complete(messages)
        await asyncio.sleep(self.delay * len(text.split()))
        return text

    async def stream(self, messages: Sequence[Any]) -> AsyncIterator[str]:
        text = await self.inner.complete(messages)
        for piece in re.findall(r"\S+\s*", text):
            await asyncio.sleep(self.delay)
            yield piece


def make_bot(folder: Path, pace: float | None) -> AvatarBot:
    chat = create("chat", "local")
    dialogue = DialogueManager(
        chat=PacedChat(chat, pace) if pace else chat,
        store=SQLiteStore(folder / "conversations.db"),
    )
    return AvatarBot(dialogue=dialogue, voice="local",
                     renderer=create("renderer", "local", size=320))  # fmt: skip


def run(label: str, pace: float | None, browser: Any, data: Path) -> None:
    app = create_app(lambda: make_bot(data / f"{label}-a", pace), data_dir=data / f"{label}-a")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
    baseline = make_bot(data / f"{label}-b", pace)
    baseline.respond_sync("Hello", session_id="warm-up")
    page = browser.new_page()
    try:
        page.goto(url)
        page.wait_for_selector("#dot.online")
        print(f"\n{label}")
        for i, prompt in enumerate(["Hello", *PROMPTS]):
            page.fill("#text", prompt)
            sent = page.evaluate("Date.now()")
            page.press("#text", "Enter")
            page.wait_for_function(
                "() => window.avatarkitChat.events.some(e => e.kind === 'finished'"
                f" && e.at > {sent})",
                timeout=120_000,
            )
            if i == 0:
                continue  # warm-up turn
            trace = page.evaluate("window.avatarkitChat")
            turn = next(e["turn"] for e in trace["events"]
                        if e["kind"] == "turn" and e["at"] >= sent)  # fmt: skip
            events = [e for e in trace["events"] if e.get("turn") == turn]
            first = trace["firstPlay"][turn] - sent
            complete = trace["final"][turn]["serverTime"] - sent
            ended = {e["index"]: e["at"] for e in events if e["kind"] == "ended"}
            playing = {e["index"]: e["at"] for e in events if e["kind"] == "playing"}
            handover = max((playing[i + 1] - t for i, t in ended.items() if i + 1 in playing),
                           default=0.0)  # fmt: skip
            gaps = sum(e["kind"] == "gap" for e in events)
            t0 = time.perf_counter()
            reply = baseline.respond_sync(prompt, session_id="bench")
            whole = (time.perf_counter() - t0) * 1000
            speech = reply.voice.duration if reply.voice else 0.0
            print(f"{prompt:<36}{speech:>9.1f}{first:>10.0f}ms{complete:>8.0f}ms"
                  f"{whole:>9.0f}ms{whole / first:>6.1f}x"
                  f"{handover:>9.0f}ms{gaps:>6}")  # fmt: skip
    finally:
        page.close()
        server.should_exit = True
        thread.join()


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="avatarkit-bench-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, no GPU; "
          f"load average {os.getloadavg()[0]:.1f}; video 320 px, 25 fps")  # fmt: skip
    print(f"{'prompt':<36}{'speech s':>9}{'first play':>12}{'complete':>10}"
          f"{'respond()':>11}{'ratio':>7}{'hand-over':>11}{'gaps':>6}")  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        run("local chat (answers at once)", None, browser, data)
        run("the same answers at 20 words/s (a cloud LLM's pace)", 20.0, browser, data)
        browser.close()


if __name__ == "__main__":
    main()
