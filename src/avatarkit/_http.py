"""The shared HTTP layer: one httpx client per event loop, retries, deadlines and error mapping.

Every HTTP adapter sends through :class:`HttpClient`, so all of them time out, retry (429 and 5xx,
honouring ``Retry-After``, jittered exponential backoff, a total deadline), map failures to
``avatarkit.errors`` and keep keys out of logs the same way. Tests pass ``transport=``
(``httpx.MockTransport``) to run the real stack with no network.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from avatarkit.config import get_logger, redact, redact_http_logs, register_url_secrets
from avatarkit.errors import (
    AuthenticationError,
    ContentModerationError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "ClientPerLoop",
    "ConnectOptions",
    "HttpClient",
    "aclosing_iter",
    "error_for",
    "map_status_error",
    "parse_retry_after",
]

_log = get_logger("avatarkit.http")

T = TypeVar("T")
R = TypeVar("R")
C = TypeVar("C")

REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-trace-id", "x-amzn-requestid")


@dataclass(frozen=True)
class ConnectOptions:
    """Timeouts and retry policy for one call (pass ``options=`` to override per call)."""

    timeout: float = 60.0
    """Seconds one attempt may take (read/write/pool)."""
    connect_timeout: float = 10.0
    max_retries: int = 3
    """Retries after the first attempt, for retryable errors only."""
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    deadline: float = 180.0
    """Seconds the whole call may take, retries and waits included."""
    max_retry_after: float = 120.0
    """A server asking to wait longer than this ends the call instead."""

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.connect_timeout <= 0 or self.deadline <= 0:
            raise ValueError("timeouts and deadline must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")


DEFAULT_OPTIONS = ConnectOptions()

ErrorClassifier = Callable[[httpx.Response, ProviderError], ProviderError]
"""Adapter hook: refine the generic error for a response (vendor codes, body messages)."""


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def _request_id(response: httpx.Response) -> str | None:
    for h in REQUEST_ID_HEADERS:
        if h in response.headers:
            return redact(response.headers[h])
    return None


def _body_message(response: httpx.Response) -> tuple[str, str | None]:
    """A readable message and code from common error-body shapes, secrets redacted.

    Redacted before it is cut short: a key cut in two no longer matches the key it is.
    """
    message, code = _body_details(response)
    return redact(message)[:300], (redact(code) if code else None)


def _body_details(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, httpx.ResponseNotRead):
        text = response.text[:4096] if response.is_stream_consumed or not response.is_closed else ""
        return (text.strip() or response.reason_phrase or "error"), None
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        if isinstance(err, dict):
            msg = (
                err.get("message") or err.get("description") or err.get("msg") or err.get("detail")
            )
            code = err.get("code") or err.get("status") or err.get("kind") or err.get("type")
            return str(msg or json.dumps(err)), (str(code) if code else None)
        if isinstance(err, list) and err:  # FastAPI/ElevenLabs 422: [{"loc","msg","type"}]
            first = err[0]
            if isinstance(first, dict):
                loc = ".".join(str(p) for p in first.get("loc", []))
                kind = first.get("type")
                return f"{loc}: {first.get('msg', '')}".strip(": "), (str(kind) if kind else None)
        return str(err), None
    return str(body), None


def map_status_error(provider: str, response: httpx.Response) -> ProviderError:
    """The most specific avatarkit error for a non-success response."""
    status = response.status_code
    message, code = _body_message(response)
    kw: dict[str, Any] = {
        "provider": provider,
        "status": status,
        "request_id": _request_id(response),
        "code": code,
    }
    if status == 429:
        return RateLimitError(message, retry_after=parse_retry_after(response.headers), **kw)
    if status in (401, 403):
        return AuthenticationError(message, **kw)
    if status == 402:
        return QuotaExceededError(message, **kw)
    if status == 451:
        return ContentModerationError(message, **kw)
    if status == 408:
        return ProviderTimeoutError(message, **kw)
    retryable = status >= 500 or response.headers.get("x-should-retry") == "true"
    if response.headers.get("x-should-retry") == "false":
        retryable = False
    return ProviderStatusError(
        message, retryable=retryable, retry_after=parse_retry_after(response.headers), **kw
    )


def error_for(
    provider: str,
    response: httpx.Response,
    cls: type[ProviderError],
    *,
    message: str | None = None,
    code: str | None = None,
    retryable: bool | None = None,
) -> ProviderError:
    """An error of class ``cls`` for ``response`` (for ``classify=`` hooks retyping an error)."""
    body_message, body_code = _body_message(response)
    return cls(
        redact(message or body_message),
        provider=provider,
        status=response.status_code,
        request_id=_request_id(response),
        code=code or body_code,
        retryable=retryable,
        retry_after=parse_retry_after(response.headers),
    )


def _maybe_cut_short(response: httpx.Response, data: str | bytes) -> bool:
    """Whether a dropped connection may have cut ``data`` (a body that ends mid-JSON) short.

    Only where the body's end was the connection closing: with a ``Content-Length``, chunked
    framing or HTTP/2, httpx raises on a drop, so a body that arrived is the whole answer. An
    empty body was not cut mid-way either.
    """
    if not data.strip():
        return False
    if response.http_version not in ("HTTP/1.0", "HTTP/1.1"):
        return False
    framing = response.headers.get("transfer-encoding", "").lower()
    return "content-length" not in response.headers and "chunked" not in framing


def _map_transport_error(provider: str, exc: httpx.HTTPError) -> ProviderError:
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeoutError(f"no answer in time ({type(exc).__name__})", provider=provider)
    return ProviderConnectionError(
        f"connection failed: {type(exc).__name__}: {redact(str(exc)) or 'no detail'}",
        provider=provider,
    )


class _Wait:
    """Honour the server's Retry-After; otherwise jittered exponential backoff."""

    def __init__(self, options: ConnectOptions) -> None:
        self._backoff = wait_random_exponential(
            multiplier=options.backoff_initial, max=options.backoff_max
        )

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))


@asynccontextmanager
async def aclosing_iter(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """``contextlib.aclosing`` for iterators typed as a plain ``AsyncIterator``.

    httpx's ``aiter_bytes()``/``aiter_lines()`` are generators: closed when the block ends,
    even when it is left early, rather than whenever the garbage collector gets to them.
    """
    try:
        yield iterator
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


@dataclass
class _Held(Generic[C]):
    client: C
    guard: AsyncGenerator[None, None] | None = None


class ClientPerLoop(Generic[C]):
    """One async client per event loop, closed by :meth:`aclose` or as its loop shuts down.

    A client's connections belong to the loop that opened them. Each loop's client is closed on
    that loop when it runs ``shutdown_asyncgens()``, as ``asyncio.run``, ``asyncio.Runner`` and
    pytest-asyncio do before closing it, so its sockets do not wait for the garbage collector.
    A loop closed without that (``loop.close()`` alone) cannot run the close any more: its
    client is let go at the next call, and the garbage collector frees its sockets.

    Args:
        make: Makes a client (called on the loop that will use it).
        close: Closes a client.
    """

    def __init__(self, make: Callable[[], C], close: Callable[[C], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._held: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Held[C]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()  # one object may serve loops in several threads

    def __len__(self) -> int:
        """How many loops hold a client now."""
        return len(self._held)

    async def get(self) -> C:
        """The running loop's client, made on first use."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._let_go_of_closed_loops()
            held = self._held.get(loop)
            if held is not None:
                return held.client
            held = _Held(self._make())
            self._held[loop] = held
        # an async generator started on the loop is closed by its shutdown_asyncgens(); the
        # first step runs to the yield without suspending, so no other call sees it unstarted
        held.guard = self._guard(loop, held)
        await anext(held.guard)
        return held.client

    async def aclose(self) -> None:
        """Close the running loop's client; a later :meth:`get` makes a new one."""
        with self._lock:
            self._let_go_of_closed_loops()
            held = self._held.pop(asyncio.get_running_loop(), None)
        if held is not None and held.guard is not None:
            with suppress(RuntimeError):  # already closing: the loop is shutting down
                await held.guard.aclose()

    async def _guard(
        self, loop: asyncio.AbstractEventLoop, held: _Held[C]
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                if self._held.get(loop) is held:
                    del self._held[loop]
            try:
                await self._close(held.client)
            except Exception as exc:  # at the loop's shutdown nobody is left to tell
                _log.debug("closing a client failed: %s", redact(repr(exc)))

    def _let_go_of_closed_loops(self) -> None:
        for loop in [loop for loop in self._held if loop.is_closed()]:
            del self._held[loop]


class _DeadlineStream(httpx.AsyncByteStream):
    """A response body whose every read must end before ``deadline`` (a ``time.monotonic()``).

    The timeout covers one read at a time and is never held while the chunk is with the
    consumer, so it cannot fire into the consumer's own code.
    """

    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        deadline: float,
        error: Callable[[], ProviderTimeoutError],
    ) -> None:
        self._inner = inner
        self._deadline = deadline
        self._error = error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async with aclosing_iter(aiter(self._inner)) as chunks:
            while True:
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise self._error()
                timer = asyncio.timeout(left)
                try:
                    async with timer:
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    if timer.expired():
                        raise self._error() from exc
                    raise
                yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class HttpClient:
    """An authenticated client for one provider's HTTP API.

    Args:
        provider: Name used in errors and logs.
        base_url: The API's root URL.
        headers: Headers for every request (keys included: they are never logged).
        transport: An ``httpx.AsyncBaseTransport`` to use instead of the network (tests).
        options: Default timeouts and retry policy.
        classify: Adapter hook refining errors from vendor-specific bodies.
        auth: Optional httpx auth (e.g. ``httpx.BasicAuth``).
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        options: ConnectOptions = DEFAULT_OPTIONS,
        classify: ErrorClassifier | None = None,
        auth: httpx.Auth | None = None,
    ) -> None:
        self.provider = provider
        redact_http_logs()
        register_url_secrets(base_url)
        self.base_url = base_url.rstrip("/")
        self.options = options
        self._headers = dict(headers or {})
        self._transport = transport
        self._classify = classify
        self._auth = auth
        self._clients = ClientPerLoop(self._new_client, httpx.AsyncClient.aclose)

    def __repr__(self) -> str:
        return f"HttpClient(provider={self.provider!r}, base_url={redact(self.base_url)!r})"

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            transport=self._transport,
            auth=self._auth,
            follow_redirects=True,
            event_hooks={"request": [self._keep_headers_home]},
        )

    async def _keep_headers_home(self, request: httpx.Request) -> None:
        """Drop our headers (keys among them) from requests to another origin (redirects).

        httpx strips ``Authorization`` on a cross-origin redirect but forwards custom headers
        such as ``xi-api-key``.
        """
        home = httpx.URL(self.base_url) if self.base_url else None
        if home is None or (request.url.scheme, request.url.host, request.url.port) == (
            home.scheme,
            home.host,
            home.port,
        ):
            return
        for name in self._headers:
            request.headers.pop(name, None)

    async def aclose(self) -> None:
        """Close the client bound to the running loop (a later call opens a new one).

        A loop that ends through ``asyncio.run`` or ``asyncio.Runner`` closes its client itself.
        """
        await self._clients.aclose()

    def _timeout(self, options: ConnectOptions, remaining: float) -> httpx.Timeout:
        per_try = max(0.001, min(options.timeout, remaining))
        return httpx.Timeout(per_try, connect=min(options.connect_timeout, per_try))

    def _error(self, response: httpx.Response) -> ProviderError:
        err = map_status_error(self.provider, response)
        return self._classify(response, err) if self._classify else err

    def _retrying(self, options: ConnectOptions) -> AsyncRetrying:
        def _log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            _log.warning(
                "%s: attempt %d failed (%s); retrying in %.2fs",
                self.provider,
                state.attempt_number,
                exc,
                wait,
            )

        def _retryable(exc: BaseException) -> bool:
            return (
                isinstance(exc, ProviderError)
                and exc.retryable
                and (exc.retry_after is None or exc.retry_after <= options.max_retry_after)
            )

        return AsyncRetrying(
            stop=stop_after_attempt(options.max_retries + 1) | stop_before_delay(options.deadline),
            wait=_Wait(options),
            retry=retry_if_exception(_retryable),
            before_sleep=_log_retry,
            reraise=True,
        )

    async def request(
        self, method: str, path: str, *, options: ConnectOptions | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send a request with retries; return the successful (2xx) response, read in full.

        ``kwargs`` go to ``httpx.AsyncClient.request`` (``json=``, ``params=``, ``files=``...).

        Raises:
            ProviderError: the most specific subclass, after retries where they apply.
        """
        opts = options or self.options
        return await self._retried(
            opts, lambda remaining: self._send_once(method, path, opts, remaining, kwargs)
        )

    async def _retried(self, opts: ConnectOptions, once: Callable[[float], Awaitable[R]]) -> R:
        """``once(seconds left)`` within the call's deadline, retried as ``opts`` says."""
        async with self._deadline(opts):
            start = time.monotonic()
            async for attempt in self._retrying(opts):
                with attempt:
                    return await once(opts.deadline - (time.monotonic() - start))
        raise AssertionError("unreachable")  # pragma: no cover

    async def request_json(
        self,
        method: str,
        path: str,
        model: type[T],
        *,
        options: ConnectOptions | None = None,
        **kwargs: Any,
    ) -> T:
        """Send a request and validate its JSON body as ``model``, inside the retry loop.

        A body that is not JSON or does not fit ``model`` ends as a typed error. It is retried
        like a 5xx for GET and HEAD, and for other methods only when the JSON was cut short: a
        request that got a success answer has done (and been billed for) its work already.

        Raises:
            ProviderStatusError: the body never validated (``code="invalid_response"``).
            ProviderError: the most specific subclass for other failures.
        """
        _, parsed = await self.request_parsed(method, path, model, options=options, **kwargs)
        return parsed

    async def request_parsed(
        self,
        method: str,
        path: str,
        model: type[T],
        *,
        options: ConnectOptions | None = None,
        **kwargs: Any,
    ) -> tuple[httpx.Response, T]:
        """Like :meth:`request_json`, also returning the response (for its headers)."""
        opts = options or self.options
        adapter: TypeAdapter[T] = TypeAdapter(model)
        async with self._deadline(opts):
            start = time.monotonic()
            async for attempt in self._retrying(opts):
                with attempt:
                    remaining = opts.deadline - (time.monotonic() - start)
                    response = await self._send_once(method, path, opts, remaining, kwargs)
                    return response, self.parse(response, adapter)
        raise AssertionError("unreachable")  # pragma: no cover

    def parse(self, response: httpx.Response, adapter: TypeAdapter[T]) -> T:
        """Validate a response body with ``adapter``; a bad body raises a retryable error."""
        return self.parse_line(response, response.content, adapter)

    def parse_line(self, response: httpx.Response, data: str | bytes, adapter: TypeAdapter[T]) -> T:
        """Validate one JSON document (a body, or one line of NDJSON) from ``response``.

        A body that does not validate raises ``ProviderStatusError(code="invalid_response")``,
        retryable for GET and HEAD, and for other methods only when a dropped connection may
        have cut it (see :func:`_maybe_cut_short`).
        """
        try:
            return adapter.validate_json(data)
        except ValidationError as exc:
            errors = exc.errors()
            if not data.strip():
                detail = "the body is empty"
            elif errors:
                where = ".".join(str(p) for p in errors[0]["loc"])
                detail = f"{where}: {errors[0]['msg']}" if where else errors[0]["msg"]
            else:
                detail = str(exc)
            truncated = (
                bool(errors)
                and errors[0]["type"] == "json_invalid"
                and "EOF" in errors[0]["msg"]
                and _maybe_cut_short(response, data)
            )
        # raised outside the handler: pydantic's error quotes the raw answer, which may echo a
        # key, so it must be neither the cause nor the context of this one
        raise ProviderStatusError(
            f"unexpected response body ({redact(detail)[:200]})",
            provider=self.provider,
            status=response.status_code,
            request_id=_request_id(response),
            code="invalid_response",
            # asking again is free for a GET (a poll). Other requests that got a success answer
            # were done, and billed, already: asked again only when a dropped connection may
            # have cut the answer, not when it arrived whole but unusable (empty, the wrong
            # kind, or cut by the server itself: each would be billed again, and likely come
            # back the same)
            retryable=truncated or response.request.method in ("GET", "HEAD"),
        )

    async def _send_once(
        self,
        method: str,
        path: str,
        opts: ConnectOptions,
        remaining: float,
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        client = await self._clients.get()
        t0 = time.monotonic()
        try:
            response = await client.request(
                method, path, timeout=self._timeout(opts, remaining), **kwargs
            )
        except httpx.HTTPError as exc:
            raise _map_transport_error(self.provider, exc) from exc
        _log.debug(
            "%s %s %s -> %d in %.0f ms (request id %s)",
            self.provider,
            method,
            redact(str(response.request.url)),
            response.status_code,
            (time.monotonic() - t0) * 1000,
            _request_id(response),
        )
        if response.is_error:
            raise self._error(response)
        return response

    @asynccontextmanager
    async def stream(
        self, method: str, path: str, *, options: ConnectOptions | None = None, **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        """Open a streaming response; retries apply until the first byte, not after.

        The call's deadline covers the whole stream, but it is checked at each read of the body
        rather than held over the caller: time the caller spends between reads (playing audio,
        say) is never interrupted, and once the deadline has passed the next read raises
        ``ProviderTimeoutError``. Errors while reading the body are mapped to ProviderError
        subclasses.
        """
        opts = options or self.options
        start = time.monotonic()
        async with self._deadline(opts):  # the opening only: nothing is yielded inside it
            response: httpx.Response | None = None
            async for attempt in self._retrying(opts):
                with attempt:
                    remaining = opts.deadline - (time.monotonic() - start)
                    response = await self._open_stream(method, path, opts, remaining, kwargs)
        assert response is not None
        try:
            if isinstance(response.stream, httpx.AsyncByteStream):
                response.stream = _DeadlineStream(
                    response.stream, start + opts.deadline, lambda: self._deadline_error(opts)
                )
            yield response
        except httpx.HTTPError as exc:
            raise _map_transport_error(self.provider, exc) from exc
        finally:
            await response.aclose()

    async def download(
        self, url: str, *, max_bytes: int, options: ConnectOptions | None = None
    ) -> bytes:
        """``GET url`` (absolute, or a path under the base URL): its body, up to ``max_bytes``.

        Retried like :meth:`request`, within the call's deadline; our headers (keys among them)
        are not sent to another origin.

        Raises:
            ProviderStatusError: the body is larger than ``max_bytes`` (``code="too_large"``).
            ProviderError: the most specific subclass for other failures.
        """
        opts = options or self.options
        return await self._retried(
            opts, lambda remaining: self._read_limited(url, opts, remaining, max_bytes)
        )

    async def _read_limited(
        self, url: str, opts: ConnectOptions, remaining: float, max_bytes: int
    ) -> bytes:
        response = await self._open_stream("GET", url, opts, remaining, {})
        try:
            declared = response.headers.get("content-length", "")
            too_large = declared.isdigit() and int(declared) > max_bytes
            body = bytearray()
            if not too_large:
                async with aclosing_iter(response.aiter_bytes()) as chunks:
                    async for chunk in chunks:
                        body += chunk
                        if len(body) > max_bytes:
                            too_large = True
                            break
            if too_large:
                raise ProviderStatusError(
                    f"the download is larger than {max_bytes} bytes",
                    provider=self.provider,
                    status=response.status_code,
                    request_id=_request_id(response),
                    code="too_large",
                )
            return bytes(body)
        except httpx.HTTPError as exc:
            raise _map_transport_error(self.provider, exc) from exc
        finally:
            await response.aclose()

    async def _open_stream(
        self,
        method: str,
        path: str,
        opts: ConnectOptions,
        remaining: float,
        kwargs: dict[str, Any],
    ) -> httpx.Response:
        client = await self._clients.get()
        try:
            request = client.build_request(
                method, path, timeout=self._timeout(opts, remaining), **kwargs
            )
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _map_transport_error(self.provider, exc) from exc
        if response.is_error:
            try:
                await response.aread()
            except httpx.HTTPError as exc:
                raise _map_transport_error(self.provider, exc) from exc
            finally:
                await response.aclose()
            raise self._error(response)
        return response

    @asynccontextmanager
    async def _deadline(self, opts: ConnectOptions) -> AsyncIterator[None]:
        """The call's deadline over a block that must not yield to a caller (see ``stream``)."""
        try:
            async with asyncio.timeout(opts.deadline):
                yield
        except TimeoutError as exc:
            raise self._deadline_error(opts) from exc

    def _deadline_error(self, opts: ConnectOptions) -> ProviderTimeoutError:
        return ProviderTimeoutError(
            f"gave up after the call's deadline of {opts.deadline:g}s", provider=self.provider
        )

    def with_options(self, **changes: Any) -> ConnectOptions:
        """A copy of this client's options with ``changes`` applied (for ``options=``)."""
        return replace(self.options, **changes)
