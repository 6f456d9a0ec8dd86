"""The chat widget server: ``avatarkit serve`` (needs the ``serve`` extra: Starlette, uvicorn).

A web page where people talk to the avatar (typing, or speaking where the browser can), whose
replies play as video with subtitles while they are still being written; an embeddable
``<script>`` widget for other sites. See ``docs/widget.md``.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from avatarkit.errors import MissingExtraError

    raise MissingExtraError("avatarkit.server", "serve", "starlette") from exc

from avatarkit.server.app import check_data_dir, create_app, default_bot_factory, default_data_dir
from avatarkit.server.options import ServerOptions
from avatarkit.server.runner import bind_sockets, is_loopback, serve

__all__ = [
    "ServerOptions",
    "bind_sockets",
    "check_data_dir",
    "create_app",
    "default_bot_factory",
    "default_data_dir",
    "is_loopback",
    "serve",
]
