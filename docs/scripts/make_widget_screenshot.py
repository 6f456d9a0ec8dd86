"""Make docs/img/widget-chat.png and docs/img/widget-embed.png: the chat page mid-reply.

    python docs/scripts/make_widget_screenshot.py

Runs ``avatarkit serve``'s app offline (local chat, eSpeak voice, local renderer) on a free
loopback port and photographs it in Debian's chromium through Playwright.
"""

from __future__ import annotations

import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import uvicorn
from playwright.sync_api import sync_playwright

from avatarkit.server import create_app, default_bot_factory

OUT = Path(__file__).parents[1] / "img"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--autoplay-policy=no-user-gesture-required"]  # fmt: skip


SHOP = """<!doctype html><html><head><title>Acme</title></head>
<body style="margin:0;font-family:system-ui,sans-serif;background:#f6f7f9;color:#222">
<header style="background:#0f766e;color:#fff;padding:18px 32px;font-size:22px">Acme tea</header>
<main style="padding:24px 32px;max-width:520px"><h2>Green tea, 100 g</h2>
<p>Loose-leaf sencha from Shizuoka. Questions? Ask Ava, bottom right.</p></main>
<script src="{url}widget.js" data-label="Ask Ava" data-color="#0f766e" async></script>
</body></html>"""


def host_site(html: str) -> ThreadingHTTPServer:
    """Another web site on this machine (localhost, a different origin) showing the widget."""
    body = html.encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


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
            shop = host_site(SHOP.format(url=url))
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(f"http://localhost:{shop.server_address[1]}/")
            page.get_by_role("button", name="Ask Ava").click()
            frame = page.wait_for_selector("iframe").content_frame()
            assert frame is not None
            frame.wait_for_selector("#dot.online")
            time.sleep(0.5)
            page.screenshot(path=str(OUT / "widget-embed.png"))
            print(OUT / "widget-embed.png")
            shop.shutdown()
            browser.close()
    finally:
        server.should_exit = True
        thread.join()


if __name__ == "__main__":
    main()
