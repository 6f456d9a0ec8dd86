"""Run the chat server with uvicorn, bound to the loopback interface unless told otherwise."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette

from avatarkit.config import get_logger
from avatarkit.errors import ConfigurationError
from avatarkit.server.options import ServerOptions

__all__ = ["check_port", "is_loopback", "serve"]

_log = get_logger("avatarkit.server")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    """Check, before a slow startup, that ``host:port`` can be listened on now.

    Raises:
        ConfigurationError: the port is in use, the address is not this machine's, or the
            port is not allowed (below 1024 without the right).
    """
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in found:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigurationError(f"cannot listen on {shown}: {reason}") from None


def serve(
    app: Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServerOptions | None = None,
    on_ready: Callable[[], None] | None = None,
    **uvicorn_options: Any,
) -> None:
    """Serve ``app`` until interrupted (Ctrl-C).

    Binding anything but a loopback address logs a warning: the chat then answers anyone who
    can reach this machine, spending its backends' quota. Put it behind HTTPS and a login
    before doing that on purpose. Unless ``ServerOptions.allowed_hosts`` says otherwise, the app
    answers to ``host`` as well as to the loopback names (a wildcard bind: to any host name).

    Args:
        app: The app from :func:`avatarkit.server.create_app`.
        host: Address to bind (default: loopback only).
        port: TCP port.
        options: The app's options (its WebSocket message limit is enforced by uvicorn too).
        on_ready: Called once the app has started and the port is listening.
        **uvicorn_options: Passed to ``uvicorn.Config`` (``log_level``, ``ssl_certfile``...).

    Raises:
        SystemExit: the app's startup failed or the port could not be bound (uvicorn logs why).
    """
    import uvicorn

    if not is_loopback(host):
        _log.warning(
            "avatarkit serve is listening on %s: anyone who can reach this address can chat "
            "and spend your backends' quota; use HTTPS and access control in front of it",
            host,
        )
    opts = options or ServerOptions()
    state = getattr(app.state, "avatarkit", None)  # an app from create_app (not a parent app)
    if state is not None:
        state.hosts.bound(host)  # answer to the address it is reached at
    settings: dict[str, Any] = {
        "ws_max_size": opts.max_message_bytes,
        "ws_max_queue": 8,
        "limit_concurrency": 200,
        "h11_max_incomplete_event_size": 16 * 1024,
        "server_header": False,
        "log_level": "info",
    }
    settings.update(uvicorn_options)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_ready is not None:
                on_ready()

    server = Server(uvicorn.Config(app, host=host, port=port, **settings))
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C ends it quietly
        server.run()
    if not server.started:
        sys.exit(3)  # what uvicorn.run does: its STARTUP_FAILURE
