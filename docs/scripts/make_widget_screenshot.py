"""Make docs/img/widget-chat.png and docs/img/widget-embed.png: the chat page mid-reply.

    python docs/scripts/make_widget_screenshot.py

Runs ``avatarkit serve``'s app offline (local chat, eSpeak voice, local renderer) on a free
loopback port and photographs it in Debian's chromium through Playwright.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from avatarkit.server import create_app, default_bot_factory

OUT = Path(__file__).parents[1] / "img"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--autoplay-policy=no-user-gesture-required"]  # fmt: skip


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="avatarkit-shot-"))
    app = create_app(default_bot_factory(data_dir=data), data_dir=data)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 760, "height": 900})
            page.goto(url)
            page.wait_for_selector("#dot.online")
            page.fill("#text", "Hi! Who are you?")
            page.press("#text", "Enter")
            page.wait_for_function(
                "() => { const v = document.querySelector('video.clip.front');"
                " return v && v.currentTime > 0.9; }",
                timeout=30_000,
            )
            page.screenshot(path=str(OUT / "widget-chat.png"))
            print(OUT / "widget-chat.png")
            browser.close()
    finally:
        server.should_exit = True
        thread.join()


if __name__ == "__main__":
    main()
