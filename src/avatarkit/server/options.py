"""Settings of the chat server: limits, the session cookie and who may embed the widget."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ServerOptions"]

_ORIGIN = re.compile(r"\*|https?://(\*\.)?[A-Za-z0-9.-]+(:(\d{1,5}|\*))?")
_HOST = re.compile(r"\*|(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class ServerOptions(BaseModel):
    """Limits and policies of ``avatarkit serve``.

    The input length limit is the bot's ``Settings.max_input_chars``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str | None = Field(default=None, max_length=80)
    """Shown in the chat page's header (default: the persona's name)."""
    messages_per_minute: float = Field(default=12.0, gt=0)
    """Messages a browser session may send per minute, on average (token bucket)."""
    burst: int = Field(default=4, ge=1)
    """Messages a session may send back to back before the average applies."""
    client_messages_per_minute: float = Field(default=40.0, gt=0)
    """Messages per minute from one client address across all its sessions."""
    client_burst: int = Field(default=10, ge=1)
    """Back-to-back messages allowed from one client address."""
    max_message_bytes: int = Field(default=16_384, ge=1024)
    """Largest WebSocket message accepted; larger closes the socket (code 1009)."""
    max_body_bytes: int = Field(default=16_384, ge=0)
    """Largest HTTP request body accepted (413 above)."""
    max_sessions: int = Field(default=1000, ge=1)
    """Browser sessions kept in memory once no connection uses them (least recently used
    dropped with their media; conversations stay). Sessions in use are never dropped."""
    max_sessions_per_client: int = Field(default=20, ge=1)
    """Sessions one client address may have open (connected) at once. A connection that would
    open one more is refused (error ``too_many_sessions``, then close code 1013) and evicts no
    one; more tabs of a session the address already has open do not count again."""
    max_connections_per_session: int = Field(default=10, ge=1)
    """Connections (browser tabs) one session may have open at once. One more is refused
    (error ``too_many_connections``, then close code 1013); the tabs open carry on."""
    max_connections_per_client: int = Field(default=50, ge=1)
    """Connections one client address may have open at once, all its sessions' tabs together
    (a quarter of the 200 :func:`serve` accepts at once). One more is refused likewise."""
    keep_turns: int = Field(default=4, ge=1)
    """Turns per session whose video segments stay servable."""
    history_turns: int = Field(default=20, ge=0)
    """Earlier turns shown when a browser comes back to its conversation."""
    embed_origins: tuple[str, ...] = ("http://localhost:*", "http://127.0.0.1:*")
    """Origins allowed to frame the chat (CSP ``frame-ancestors`` of ``/embed``): sites that
    may show the widget. ``("*",)`` allows any site."""
    allowed_hosts: tuple[str, ...] | None = None
    """Host names the server answers to (the ``Host`` header, port aside): names and addresses
    (``chat.example.com``, ``192.168.1.5``, ``[::1]``), ``*.example.com`` for its subdomains, or
    ``*`` for any. Requests for any other host are refused (400; a WebSocket: 403), which stops
    DNS rebinding: a foreign page whose name points at this server cannot talk to it. Default
    (None): ``localhost``, ``127.0.0.1`` and ``[::1]``, plus the address :func:`serve` binds; a
    wildcard bind (``0.0.0.0``, ``::``) accepts any host. Behind a reverse proxy, list the public
    name the proxy forwards (the list replaces the default)."""
    cookie_name: str = Field(default="avatarkit_session", pattern=r"^[A-Za-z0-9_]{1,40}$")
    """Name of the httponly session cookie."""
    cookie_max_age: int = Field(default=30 * 24 * 3600, ge=60)
    """Seconds the session cookie (and so the conversation) lasts in the browser."""
    speech_input: bool = True
    """Offer a microphone button where the browser has the Web Speech API."""
    freeze_gc_after_warmup: bool = True
    """After warm-up, move everything alive (models, word lists, the bot) out of the garbage
    collector's reach with :func:`gc.freeze`: full collections then scan only what turns
    create, instead of pausing every session for about 57 ms. It acts on the whole process."""

    @field_validator("embed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin like https://www.example.com, "
                    "http://localhost:*, https://*.example.com or *"
                )
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        return tuple(normalize_host(host) for host in value)


def normalize_host(host: str) -> str:
    """A host name as the allowed-hosts check compares it: lower case, IPv6 in brackets.

    Raises:
        ValueError: not a host name, an IP address or a ``*.`` pattern (a port, a scheme...).
    """
    name = re.sub(r"(?<=[a-z0-9])\.$", "", host.strip().lower())  # the root's dot
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if ":" in bare:
        try:
            return f"[{ipaddress.IPv6Address(bare)}]"
        except ValueError:
            pass
    elif _HOST.fullmatch(name):
        return name
    raise ValueError(
        f"{host!r} is not a host name like chat.example.com, 192.168.1.5, [::1], "
        "*.example.com or * (no scheme, no port)"
    )
