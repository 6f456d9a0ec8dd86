"""Run the chat server with uvicorn, bound to the loopback interface unless told otherwise."""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.applications import Starlette

from avatarkit.config import get_logger
from avatarkit.server.options import ServerOptions

__all__ = ["is_loopback", "serve"]

_log = get_logger("avatarkit.server")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    app: Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServerOptions | None = None,
    **uvicorn_options: Any,
) -> None:
    """Serve ``app`` until interrupted (Ctrl-C).

    Binding anything but a loopback address logs a warning: the chat then answers anyone who
    can reach this machine, spending its backends' quota. Put it behind HTTPS and a login
    before doing that on purpose.

    Args:
        app: The app from :func:`avatarkit.server.create_app`.
        host: Address to bind (default: loopback only).
        port: TCP port.
        options: The app's options (its WebSocket message limit is enforced by uvicorn too).
        **uvicorn_options: Passed to ``uvicorn.run`` (``log_level``, ``ssl_certfile``...).
    """
    import uvicorn

    if not is_loopback(host):
        _log.warning(
            "avatarkit serve is listening on %s: anyone who can reach this address can chat "
            "and spend your backends' quota; use HTTPS and access control in front of it",
            host,
        )
    opts = options or ServerOptions()
    settings: dict[str, Any] = {
        "ws_max_size": opts.max_message_bytes,
        "ws_max_queue": 8,
        "limit_concurrency": 200,
        "h11_max_incomplete_event_size": 16 * 1024,
        "server_header": False,
        "log_level": "info",
    }
    settings.update(uvicorn_options)
    uvicorn.run(app, host=host, port=port, **settings)
