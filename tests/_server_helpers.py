"""A real avatarkit chat server on 127.0.0.1 (uvicorn in a thread) with fast offline backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from avatarkit.bot import AvatarBot
from avatarkit.dialogue.manager import DialogueManager
from avatarkit.dialogue.store import SQLiteStore
from avatarkit.render.local import LocalRenderer
from avatarkit.server import ServerOptions, create_app
from avatarkit.testing import FakeChatModel


def fast_bot(
    data_dir: Path, replies: str | Sequence[str], *, token_delay: float = 0.0, size: int = 128
) -> AvatarBot:
    """eSpeak voice, local renderer at a small size, a scripted chat model; SQLite sessions."""
    dialogue = DialogueManager(
        chat=FakeChatModel(replies, token_delay=token_delay),
        store=SQLiteStore(data_dir / "conversations.db"),
    )
    return AvatarBot(
        dialogue=dialogue,
        voice="espeak",
        renderer=LocalRenderer(size=size),
        preprocessor=None,
        intent=None,
        sentiment=None,
    )


@contextmanager
def running_server(
    bot: AvatarBot, data_dir: Path, options: ServerOptions | None = None
) -> Iterator[str]:
    """Serve ``bot`` on an ephemeral loopback port; yields the base URL (ends with ``/``)."""
    import uvicorn

    app = create_app(lambda: bot, data_dir=data_dir, options=options)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="avatarkit-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    sockets: Any = server.servers[0].sockets
    port = sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
