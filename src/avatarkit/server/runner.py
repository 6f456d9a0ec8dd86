"""Run the chat server with uvicorn, bound to the loopback interface unless told otherwise."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from starlette.applications import Starlette

from avatarkit.config import get_logger
from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.server.options import ServerOptions

__all__ = ["bind_sockets", "is_loopback", "serve"]

_log = get_logger("avatarkit.server")
_BACKLOG = 2048  # uvicorn's default


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_sockets(host: str = "127.0.0.1", port: int = 8000) -> list[socket.socket]:
    """Bind and listen on ``host:port`` now, for :func:`serve` to serve on.

    Checking the port and taking it are one step: from here on no other process can take it
    (connections made before the server starts wait in the backlog). Every address ``host``
    resolves to gets a socket, as uvicorn would bind them; port 0 takes a free port, the same
    for each (``sockets[0].getsockname()[1]``).

    Raises:
        InputValidationError: ``port`` is not a whole number from 0 to 65535, or ``host`` is
            empty.
        ConfigurationError: the port is in use, ``host`` is no address of this machine or no
            known name, or the port is not allowed (below 1024 without the right).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputValidationError(
            f"port must be a whole number from 0 to 65535, got {port!r}", field="port"
        )
    if not host.strip():
        raise InputValidationError(
            "the host is empty: give 127.0.0.1 for this machine only, or 0.0.0.0 for every "
            "network interface",
            field="host",
        )
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sockets: list[socket.socket] = []
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            if os.name == "posix":  # as asyncio and uvicorn: a restart reuses the port at once
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # the port the first address got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(_BACKLOG)  # bound but not listening, it could still be shared
    except OSError as exc:
        for sock in sockets:
            sock.close()
        reason = exc.strerror or str(exc)
        raise ConfigurationError(f"cannot listen on {shown}: {reason}") from None
    return sockets


def serve(
    app: Starlette,
    *,
    host: str | None = None,
    port: int = 8000,
    sockets: Sequence[socket.socket] | None = None,
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
        host: Address to bind (default: loopback only), or the name ``sockets`` are bound to.
        port: TCP port (0: a free one).
        sockets: Sockets from :func:`bind_sockets` to serve on instead of binding here (closed
            when this returns).
        options: The app's options (its WebSocket message limit is enforced by uvicorn too).
        on_ready: Called once the app has started and the port is listening.
        **uvicorn_options: Passed to ``uvicorn.Config`` (``log_level``, ``ssl_certfile``...).

    Raises:
        ConfigurationError: the port could not be bound (see :func:`bind_sockets`).
        SystemExit: the app's startup failed (uvicorn logs why).
    """
    import uvicorn

    if sockets is None:
        host = "127.0.0.1" if host is None else host
        sockets = bind_sockets(host, port)
    elif host is None:
        host = str(sockets[0].getsockname()[0])
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
    port = sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                # uvicorn says where it listens only for the sockets it bound itself
                logging.getLogger("uvicorn.error").info(
                    "Uvicorn running on http%s://%s:%d (Press CTRL+C to quit)",
                    "s" if self.config.ssl else "", shown, port,
                )  # fmt: skip
                if on_ready is not None:
                    on_ready()

    server = Server(uvicorn.Config(app, host=host, port=port, **settings))
    try:
        with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C ends it quietly
            server.run(sockets=list(sockets))
    finally:
        for sock in sockets:  # ours now: closed however the serving ended
            sock.close()
    if not server.started:
        sys.exit(3)  # what uvicorn.run does: its STARTUP_FAILURE
