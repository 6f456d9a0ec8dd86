"""The chat server's ASGI app (Starlette): pages, the widget script, media and the WebSocket.

Routes::

    GET  /            the chat page (sets the httponly session cookie)
    GET  /embed       the same page for the widget's iframe (framable by ``embed_origins``)
    GET  /widget.js   the embeddable widget: a floating button that opens /embed in an iframe
    GET  /avatar.png  the avatar's still, shown between clips
    GET  /media/{id}  one reply segment, for its session's cookie (ids are unguessable and
                      expire with the turn)
    GET  /static/...  the page's script and style sheet
    GET  /healthz     liveness
    WS   /ws          the conversation (see :mod:`avatarkit.server.conversation`)

Requests for a host name that is not the server's own are refused (``allowed_hosts``: DNS
rebinding). Every response carries a Content-Security-Policy (pages: scripts, styles and media
only from this server, no inline script; everything else: nothing at all), ``nosniff`` and
``Referrer-Policy: no-referrer``. Request bodies are refused (the app takes none; 413), long
URLs too (414). The pages hold no configuration and no secret: keys stay in the server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from avatarkit._files import probe_writable
from avatarkit.config import get_logger
from avatarkit.errors import ConfigurationError, OverloadedError
from avatarkit.server.conversation import Conversation
from avatarkit.server.options import ServerOptions, normalize_host
from avatarkit.server.session import SessionRegistry, TooManyConnectionsError
from avatarkit.server.throttle import Throttle, client_key

if TYPE_CHECKING:
    from avatarkit.bot import AvatarBot
    from avatarkit.dialogue.persona import Persona

__all__ = ["check_data_dir", "create_app", "default_bot_factory", "default_data_dir"]

_log = get_logger("avatarkit.server")
STATIC = Path(__file__).with_name("static")
MAX_URL_CHARS = 2048

_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "object-src 'none'; frame-ancestors {ancestors}"
)
_DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def default_data_dir() -> Path:
    """``~/.local/share/avatarkit/serve``: conversations and this run's media."""
    return Path("~/.local/share/avatarkit/serve").expanduser()


def check_data_dir(data_dir: str | Path) -> Path:
    """Make the data folder if needed and check a file can be written in it.

    A bad folder then stops the server at startup, instead of failing every conversation.

    Returns:
        The folder, ``~`` expanded.

    Raises:
        ConfigurationError: it is a file, or it cannot be made or written (read-only...).
    """
    folder = Path(data_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigurationError(f"the data folder {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe_writable(folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigurationError(f"cannot write the data folder {folder}: {reason}") from None
    return folder


def default_bot_factory(
    *,
    chat: str = "local",
    voice: str = "local",
    renderer: str | None = "local",
    size: int = 320,
    data_dir: str | Path | None = None,
    persona: Persona | None = None,
) -> Callable[[], AvatarBot]:
    """A factory for the bot ``avatarkit serve`` runs: conversations in SQLite under ``data_dir``.

    Args:
        chat: Chat model spec.
        voice: Voice spec.
        renderer: Renderer spec, or None for speech without video.
        size: Video edge in pixels for the ``local`` renderer (small is quick to render).
        data_dir: Folder for ``conversations.db`` (default: :func:`default_data_dir`).
        persona: Who the avatar is.
    """

    def make() -> AvatarBot:
        from avatarkit.bot import AvatarBot
        from avatarkit.dialogue.manager import DialogueManager
        from avatarkit.dialogue.persona import Persona
        from avatarkit.dialogue.store import SQLiteStore
        from avatarkit.registry import default_registry, parse_spec

        folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
        dialogue = DialogueManager(
            chat=default_registry.create("chat", chat),
            persona=persona or Persona(),
            store=SQLiteStore(folder / "conversations.db"),
        )
        backend: Any = renderer
        if renderer is not None and parse_spec(renderer)[0] == "local":
            backend = default_registry.create("renderer", renderer, size=size)
        return AvatarBot(
            dialogue=dialogue,
            voice=voice,
            renderer=backend,
            limits={"renderer": 2, "voice": 4},
            max_waiting=32,
        )

    return make


class _Hosts:
    """The host names the app answers to (``ServerOptions.allowed_hosts``): DNS rebinding.

    A page on a foreign site whose name an attacker points at this server sends that name in
    ``Host`` (and a matching ``Origin``): only a list of the server's own names tells them apart.
    """

    def __init__(self, allowed: tuple[str, ...] | None) -> None:
        self.configured = allowed is not None
        self.patterns = set(LOOPBACK_HOSTS if allowed is None else allowed)

    def bound(self, host: str) -> None:
        """The server listens on ``host``: without a configured list, answer to it too.

        A wildcard bind (``0.0.0.0``, ``::``) has no one name: any host is then accepted.
        """
        if self.configured:
            return
        try:
            wildcard = host == "" or ipaddress.ip_address(host.strip("[]")).is_unspecified
        except ValueError:
            wildcard = False
        if wildcard:
            self.patterns.add("*")
            return
        with contextlib.suppress(ValueError):
            self.patterns.add(normalize_host(host))

    def allows(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header is for this server."""
        if "*" in self.patterns:
            return True
        if not header:
            return False
        name = header.strip().lower()
        if name.startswith("["):  # [v6]:port
            name = name[: name.find("]") + 1]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        elif ":" in name:
            return False
        name = name.removesuffix(".")
        if name in self.patterns:
            return True
        return any(p.startswith("*.") and name.endswith(p[1:]) for p in self.patterns)


class _State:
    """What every route shares: the bot (made once, on first need), sessions and throttles."""

    def __init__(
        self, bot_factory: Callable[[], AvatarBot], data_dir: Path, options: ServerOptions
    ) -> None:
        self.bot_factory = bot_factory
        self.data_dir = data_dir
        self.options = options
        self.hosts = _Hosts(options.allowed_hosts)
        self.throttle = Throttle(options.messages_per_minute, options.burst)
        self.client_throttle = Throttle(options.client_messages_per_minute, options.client_burst)
        self._bot: AvatarBot | None = None
        self._bot_lock = asyncio.Lock()
        self._sessions: SessionRegistry | None = None
        self._no_avatar_until = 0.0

    @property
    def sessions(self) -> SessionRegistry:
        """Made at startup, or on first need where the lifespan does not run (a mounted app)."""
        if self._sessions is None:
            self._sessions = SessionRegistry(
                self.data_dir, max_sessions=self.options.max_sessions,
                keep_turns=self.options.keep_turns,
                max_sessions_per_client=self.options.max_sessions_per_client,
                max_connections_per_session=self.options.max_connections_per_session,
                max_connections_per_client=self.options.max_connections_per_client,
            )  # fmt: skip
        return self._sessions

    async def bot(self) -> AvatarBot:
        async with self._bot_lock:
            if self._bot is None:
                self._bot = await asyncio.to_thread(self.bot_factory)
            return self._bot

    async def has_avatar(self) -> bool:
        """Whether the avatar's still (``/avatar.png``) exists.

        A failure is remembered for a minute, so that connections do not each retry making it
        (spending an image generator's quota).
        """
        now = time.monotonic()
        if now < self._no_avatar_until:
            return False
        bot = await self.bot()
        try:
            await bot.avatar_image()
        except Exception:
            self._no_avatar_until = now + 60.0
            return False
        return True

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(check_data_dir, self.data_dir)  # a bad folder stops startup
        await asyncio.to_thread(lambda: self.sessions)  # its media root; an old run's swept
        bot = await self.bot()
        if bot.renderer is not None:
            with contextlib.suppress(Exception):  # warm up: the still, made once
                await bot.avatar_image()
        if bot.preprocessor is not None:
            with contextlib.suppress(Exception):  # the language's word lists: 0.2–1.6 s
                await bot.preprocessor.preprocess("Hello there, how are you today?")
        if self.options.freeze_gc_after_warmup:
            gc.collect()
            gc.freeze()  # what lives as long as the server is no longer scanned by the GC
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # its HTTP clients, its store: let go
                await bot.aclose()
            if self._sessions is not None:
                self._sessions.close()
                self._sessions = None


class _Guard:
    """Refuses foreign hosts, bodies and long URLs; adds security headers to HTTP responses."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, hosts: _Hosts) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not self.hosts.allows(Headers(scope=scope).get("host")):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})  # the server answers 403
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.setdefault("content-security-policy", _DEFAULT_CSP)
                out.setdefault("x-content-type-options", "nosniff")
                out.setdefault("referrer-policy", "no-referrer")
                out.setdefault("cross-origin-resource-policy", "same-origin")
            await send(message)

        headers = Headers(scope=scope)
        length = headers.get("content-length", "0")
        url_chars = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if not self.hosts.allows(headers.get("host")):
            reply: Response = PlainTextResponse("unknown host", status_code=400)
        elif not length.isdigit() or int(length) > self.max_body_bytes:
            reply = PlainTextResponse("request body too large", status_code=413)
        elif "transfer-encoding" in headers:  # a body of unknown length: this app takes none
            reply = PlainTextResponse("chunked request bodies are not accepted", status_code=413)
        elif url_chars > MAX_URL_CHARS:
            reply = PlainTextResponse("URL too long", status_code=414)
        else:
            await self.app(scope, receive, send_secured)
            return
        await reply(scope, receive, send_secured)  # refusals carry the same headers


async def _refuse(ws: WebSocket, error: str, message: str, *, code: int, reason: str) -> None:
    """Tell an accepted WebSocket why it is refused (an ``error`` message), then close it."""
    with contextlib.suppress(Exception):  # the browser may have gone already
        await ws.send_json({"type": "error", "code": error, "message": message,
                            "server_time": time.time()})  # fmt: skip
        await ws.close(code=code, reason=reason)


def create_app(
    bot_factory: Callable[[], AvatarBot] | None = None,
    *,
    data_dir: str | Path | None = None,
    options: ServerOptions | None = None,
) -> Starlette:
    """The chat server as an ASGI app (run it with uvicorn, or ``avatarkit serve``).

    Args:
        bot_factory: Makes the one :class:`~avatarkit.AvatarBot` every session talks to
            (called once, at startup). Default: :func:`default_bot_factory` (offline backends,
            conversations in SQLite under ``data_dir``).
        data_dir: Folder for the conversation database and this run's reply media.
        options: Limits, cookie and embedding policy.

    Example:
        ```python
        from avatarkit.server import create_app, default_bot_factory

        app = create_app(default_bot_factory(chat="openai:gpt-4o-mini"))
        # uvicorn.run(app, host="127.0.0.1", port=8000)
        ```
    """
    opts = options or ServerOptions()
    folder = Path(data_dir).expanduser() if data_dir else default_data_dir()
    state = _State(bot_factory or default_bot_factory(data_dir=folder), folder, opts)
    page_html = (STATIC / "chat.html").read_bytes()
    widget_js = (STATIC / "widget.js").read_bytes()
    embedders = " ".join(opts.embed_origins) if opts.embed_origins else ""
    if "*" in opts.embed_origins:
        embedders = "*"

    def page(request: Request, ancestors: str, *, embedded: bool) -> Response:
        response = Response(page_html, media_type="text/html; charset=utf-8")
        response.headers.update({
            "content-security-policy": _PAGE_CSP.format(ancestors=ancestors),
            "permissions-policy": "microphone=(self), camera=(), geolocation=()",
            "cache-control": "no-store",
        })  # fmt: skip
        token = request.cookies.get(opts.cookie_name)
        if not SessionRegistry.is_token(token):
            token = SessionRegistry.new_token()
        https = request.url.scheme == "https"
        cross_site = embedded and https
        response.set_cookie(
            opts.cookie_name, token or "", max_age=opts.cookie_max_age, path="/",
            httponly=True, secure=https, samesite="none" if cross_site else "lax",
        )  # fmt: skip
        if cross_site:
            # A cross-site iframe gets its cookie only as SameSite=None; Secure, and
            # Partitioned (CHIPS) keeps it to that one embedding site. Added by hand: the
            # standard library writes the attribute only from Python 3.14 on.
            name, value = response.raw_headers[-1]
            response.raw_headers[-1] = (name, value + b"; Partitioned")
        return response

    async def index(request: Request) -> Response:
        return page(request, "'self'", embedded=False)

    async def embed(request: Request) -> Response:
        return page(request, f"'self' {embedders}".strip(), embedded=True)

    async def widget(request: Request) -> Response:
        return Response(
            widget_js,
            media_type="text/javascript; charset=utf-8",
            headers={
                "cache-control": "public, max-age=300",
                "access-control-allow-origin": "*",
                "cross-origin-resource-policy": "cross-origin",
            },
        )

    async def avatar(request: Request) -> Response:
        bot = await state.bot()
        try:
            image = await bot.avatar_image()
        except ConfigurationError:
            return PlainTextResponse("no avatar image", status_code=404)
        return Response(
            image.data,
            media_type=f"image/{image.format}",
            headers={"cache-control": "public, max-age=3600"},
        )

    async def media(request: Request) -> Response:
        token = request.cookies.get(opts.cookie_name)  # same origin: <video> sends it too
        path = state.sessions.media(str(request.path_params["media_id"]), token=token)
        if path is None:
            return PlainTextResponse("not found", status_code=404)
        kind = {".mp4": "video/mp4", ".webm": "video/webm", ".wav": "audio/wav",
                ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".opus": "audio/ogg"}  # fmt: skip
        return FileResponse(
            path,
            media_type=kind.get(path.suffix, "application/octet-stream"),
            headers={"cache-control": "private, max-age=3600"},
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def socket(ws: WebSocket) -> None:
        origin = ws.headers.get("origin")
        host = ws.headers.get("host", "")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            # Browsers always send Origin: a page from another site may not drive this chat.
            await ws.close(code=1008)
            return
        sessions = state.sessions
        token = ws.cookies.get(opts.cookie_name)
        persistent = SessionRegistry.is_token(token)
        bot = await state.bot()
        avatar = await state.has_avatar()
        # The client, for the per-address caps and message budget: an IPv6 host by its /64.
        address = client_key(ws.client.host) if ws.client else None  # None: no per-address cap
        client = address or "unknown"
        await ws.accept()
        # Opened, the session is not evicted while this connection lasts; released (below, in
        # end), it is kept only if it made media: a made-up token that sends nothing leaves
        # nothing behind. One address has at most max_sessions_per_client open and
        # max_connections_per_client connections; one session max_connections_per_session.
        try:
            session = sessions.open(token if persistent and token else sessions.new_token(),
                                    persistent=persistent, client=address)  # fmt: skip
        except TooManyConnectionsError as exc:
            await _refuse(ws, "too_many_connections", str(exc), code=1013,
                          reason="too many connections")  # fmt: skip
            return
        except OverloadedError as exc:
            await _refuse(ws, "too_many_sessions", str(exc), code=1013,
                          reason="too many sessions from this address")  # fmt: skip
            return
        conversation = Conversation(
            ws, bot=bot, session=session, sessions=sessions, throttle=state.throttle,
            client_throttle=state.client_throttle, client=client, options=opts, avatar=avatar,
        )  # fmt: skip

        async def end() -> None:
            try:
                await conversation.close()
            finally:
                sessions.release(session, client=address)
            if not persistent:  # a connection-only conversation ends with its connection
                sessions.forget(session)
                if bot.dialogue is not None:
                    await bot.dialogue.reset(session.key)

        try:
            await conversation.run()
        finally:
            # Shielded: even when this handler is cancelled, the dialogue state is settled.
            ending = asyncio.ensure_future(end())
            with contextlib.suppress(Exception):
                await asyncio.shield(ending)

    routes = [
        Route("/", index),
        Route("/embed", embed),
        Route("/widget.js", widget),
        Route("/avatar.png", avatar),
        Route("/media/{media_id}", media),
        Route("/healthz", health),
        WebSocketRoute("/ws", socket),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=state.lifespan,
        middleware=[Middleware(_Guard, max_body_bytes=opts.max_body_bytes, hosts=state.hosts)],
    )
    app.state.avatarkit = state
    return app
