"""Chat completions through the official ``openai`` package, for OpenAI or any compatible server.

Any server that speaks OpenAI's ``/chat/completions`` (Ollama, vLLM, llama.cpp's server, LM
Studio...) works through ``base_url``. The SDK does the retrying (429 but ``insufficient_quota``,
408, 409, 5xx and broken connections, honouring ``Retry-After``) within ``timeout``; every SDK
exception comes out as the matching :mod:`avatarkit.errors` class, error bodies read as the
plain-HTTP adapters read them, and the API key never appears in a repr, a log line or an error,
nor (with the other ``default_headers``) in a request redirected to another origin. Each event
loop gets its own SDK client, so one object serves one ``asyncio.run()`` after another.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import SecretStr

from avatarkit._http import ClientPerLoop, parse_retry_after
from avatarkit.config import get_logger, redact, register_url_secrets, resolve_key
from avatarkit.errors import (
    AuthenticationError,
    ConfigurationError,
    ContentModerationError,
    InputValidationError,
    MissingExtraError,
    MissingKeyError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
)
from avatarkit.ports import ChatCapabilities
from avatarkit.types import ChatMessage

try:
    import openai
    from openai.types.chat import ChatCompletion
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("the OpenAI chat model", "openai", "openai") from _exc

__all__ = ["DEFAULT_OPENAI_MODEL", "OpenAIChat", "make_chat"]

_log = get_logger("avatarkit.providers.openai_chat")

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
"""Model used by the spec ``"openai"`` with no model name."""

T = TypeVar("T")
PROVIDER = "openai"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def _error_details(body: object) -> tuple[str | None, str | None, str | None]:
    """``(message, code, type)`` from an error body, or ``None`` for each part it lacks.

    Reads OpenAI's ``{"error": {"message", "type", "code"}}`` (or its inside, which the SDK
    hands over), Ollama's and LM Studio's ``{"error": "<text>"}``, FastAPI's ``{"detail": ...}``
    and a plain-text body. The code and type are redacted here; the message is redacted by the
    caller (the server's words: a careless one echoes the key in any of them).
    """
    if isinstance(body, Mapping):
        if body.get("error"):
            body = body["error"]
        elif body.get("detail") and not body.get("message"):
            body = body["detail"]
    if isinstance(body, list) and body and isinstance(body[0], Mapping):  # FastAPI's 422
        first = body[0]
        where = ".".join(str(part) for part in first.get("loc") or ())
        text = f"{where}: {first.get('msg') or ''}".strip(": ")
        kind = first.get("type")
        return text or None, None, redact(str(kind)) if kind is not None else None
    if isinstance(body, str):
        return body.strip() or None, None, None
    if not isinstance(body, Mapping):
        return None, None, None
    message = None
    for name in ("message", "description", "msg", "detail"):
        value = body.get(name)
        if isinstance(value, str) and value.strip():
            message = value
            break
    code, kind = body.get("code"), body.get("type")
    return (
        message,
        redact(str(code)) if code is not None else None,
        redact(str(kind)) if kind is not None else None,
    )


def _server_words(message: str | None, fallback: str) -> str:
    """The server's message redacted, then cut short (a key cut in two would escape redaction)."""
    return redact(message)[:300] if message else fallback


_QUOTA_CODES = {"insufficient_quota"}
_MODERATION_CODES = {"content_filter", "content_policy_violation", "moderation_blocked"}


async def _quota_is_final(response: Any) -> None:
    """Tell the SDK not to retry a 429 ``insufficient_quota``: waiting never refills a quota.

    The SDK retries every 429 unless the answer carries ``x-should-retry: false``, its own
    switch for this; the header is added here, before the SDK decides.
    """
    if response.status_code != 429 or "x-should-retry" in response.headers:
        return
    await response.aread()
    try:
        body = json.loads(response.content)
    except ValueError:
        return
    _, code, kind = _error_details(body)
    if {code, kind} & _QUOTA_CODES:
        response.headers["x-should-retry"] = "false"


async def _mapped(call: Awaitable[T]) -> T:
    """Await an SDK call; its failure becomes the matching avatarkit error.

    The SDK's exception is neither the cause nor the context of the error raised: its text
    quotes the server's answer, and a careless server echoes the key there. Tracebacks, error
    trackers and tracing spans show the whole chain.
    """
    try:
        return await call
    except (openai.OpenAIError, ValueError) as exc:
        failure = map_openai_error(exc)
    raise failure  # outside the handler: no __context__


def map_openai_error(exc: BaseException, *, provider: str = PROVIDER) -> ProviderError:
    """The avatarkit error for an ``openai`` SDK exception (or a malformed-body decode error)."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderTimeoutError("the request timed out", provider=provider)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderConnectionError(
            f"could not reach the server ({redact(str(exc.__cause__ or exc))})", provider=provider
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        headers = exc.response.headers
        message, code, kind = _error_details(exc.body)
        text = _server_words(message, f"the server answered HTTP {status}")
        request_id = getattr(exc, "request_id", None) or headers.get("x-request-id")
        request_id = redact(request_id) if request_id else None
        retry_after = parse_retry_after(headers)
        common: dict[str, Any] = {"provider": provider, "status": status, "request_id": request_id}
        if {code, kind} & _QUOTA_CODES:
            return QuotaExceededError(text, code=code or kind, **common)
        if status == 402:
            return QuotaExceededError(text, code=code, **common)
        if status == 429:
            return RateLimitError(text, code=code, retry_after=retry_after, **common)
        if status in (401, 403):
            return AuthenticationError(text, code=code, **common)
        if code in _MODERATION_CODES or status == 451:
            return ContentModerationError(text, code=code, **common)
        if status == 408:
            return ProviderTimeoutError(text, code=code, retry_after=retry_after, **common)
        retryable = status >= 500 or status == 409 or headers.get("x-should-retry") == "true"
        return ProviderStatusError(
            text,
            code=code,
            retryable=retryable and headers.get("x-should-retry") != "false",
            retry_after=retry_after,
            **common,
        )
    if isinstance(exc, openai.APIResponseValidationError):
        return ProviderStatusError(
            "the server's answer does not have the chat-completion shape",
            provider=provider,
            status=exc.status_code,
            code="malformed_response",
        )
    if isinstance(exc, openai.APIError):  # e.g. an {"error": ...} event in the middle of a stream
        return _in_band_error(exc.body, exc.message, provider=provider)
    if isinstance(exc, ValueError):  # json.JSONDecodeError and friends: a body that is not JSON
        return ProviderStatusError(
            f"the server's answer is not valid JSON ({redact(str(exc))[:200]})",
            provider=provider,
            code="malformed_response",
        )
    return ProviderError(redact(str(exc)), provider=provider)


def _in_band_error(
    body: object, fallback: str | None = None, *, provider: str = PROVIDER
) -> ProviderError:
    """The error for an error object inside a successful answer (a stream event, a 200 body)."""
    message, code, kind = _error_details(body)
    text = _server_words(message or fallback, "the server reported an error")
    if {code, kind} & _QUOTA_CODES:
        return QuotaExceededError(text, provider=provider, code=code or kind)
    if code == "rate_limit_exceeded" or kind == "rate_limit_exceeded":
        return RateLimitError(text, provider=provider, code=code)
    if code in _MODERATION_CODES:
        return ContentModerationError(text, provider=provider, code=code)
    return ProviderStatusError(
        text,
        provider=provider,
        code=code or kind,
        retryable=kind in ("server_error", "internal_error"),
    )


def _first_message(response: object) -> tuple[Any, str | None]:
    """The first choice's message and finish reason, or ProviderStatusError naming what lacks."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        extra = getattr(response, "model_extra", None) or {}
        if extra.get("error"):  # {"error": {...}} with HTTP 200
            raise _in_band_error(extra)
        raise ProviderStatusError(
            "the answer has no choices", provider=PROVIDER, code="malformed_response"
        )
    choice = choices[0]
    message = getattr(choice, "message", None)
    if message is None:
        problem = "the answer's choice has no message"
        if getattr(choice, "text", None) is not None:
            problem += " (it is a text completion: base_url must serve /chat/completions)"
        raise ProviderStatusError(problem, provider=PROVIDER, code="malformed_response")
    finish = getattr(choice, "finish_reason", None)
    return message, finish if isinstance(finish, str) else None


def _reply_text(response: object) -> str:
    """The text of a chat completion's first choice (its refusal when it has no content)."""
    message, finish = _first_message(response)
    content = getattr(message, "content", None)
    if finish == "content_filter" and not content:
        raise ContentModerationError(
            "the reply was withheld by the content filter", provider=PROVIDER
        )
    text = content or getattr(message, "refusal", None)
    if not isinstance(text, str):
        raise ProviderStatusError(
            "the answer has no text content", provider=PROVIDER, code="empty_response"
        )
    return text


def _error_payload(chunk: object) -> ProviderError | None:
    """The error a streamed chunk without choices reports, or ``None`` (usage, a keep-alive).

    The SDK raises for ``{"error": ...}`` itself; an ``event: error`` whose data is the error
    object (``{"message": ...}``) comes through as a chunk with no choices.
    """
    extra = getattr(chunk, "model_extra", None) or {}
    if not any(extra.get(name) for name in ("error", "message", "detail")):
        return None
    return _in_band_error(extra)


def _media_type(response: Any) -> str:
    """The response's media type, lower case and without parameters (``""`` when untyped)."""
    value = str(response.headers.get("content-type") or "")
    return redact(value.split(";")[0].strip().lower())[:100]


def _request_id(response: Any) -> str | None:
    value = response.headers.get("x-request-id")
    return redact(str(value)) if value else None


async def _whole_completion(response: Any) -> object:
    """A whole chat completion read from a response that was to be an event stream.

    Raises:
        ProviderError: the body broke off, or is an error or not a chat completion.
        ValueError: the body is not JSON (mapped by the caller).
    """
    failure: ProviderError | None = None
    try:
        await response.aread()
    except Exception as exc:  # the HTTP library's own error (httpx2 for openai 3, else httpx)
        kind = type(exc).__name__
        failure = (
            ProviderTimeoutError(f"the answer did not arrive in time ({kind})", provider=PROVIDER)
            if "Timeout" in kind
            else ProviderConnectionError(f"the answer broke off ({kind})", provider=PROVIDER)
        )
    if failure is not None:
        raise failure  # outside the handler: its text may quote the URL
    body = json.loads(response.content)
    if isinstance(body, Mapping) and body.get("error"):
        raise _in_band_error(body)
    if not isinstance(body, dict):
        raise ProviderStatusError(
            "the server's answer is not a chat completion",
            provider=PROVIDER,
            status=response.status_code,
            code="malformed_response",
        )
    return ChatCompletion.construct(**body)


class _ServerTime:
    """The seconds the server has left to answer: ``timeout`` for the whole call.

    Only the time spent waiting on the server counts. In ``stream()`` each wait for the next
    chunk gets its own ``asyncio.timeout`` of what is left, closed before the chunk is yielded:
    a timeout open across ``yield`` would fire in the caller's code between chunks and cancel
    the caller's task.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.left = seconds

    async def wait(self, step: Awaitable[T]) -> T:
        start = time.monotonic()
        scope = asyncio.timeout(max(0.0, self.left))
        try:
            async with scope:
                return await step
        except TimeoutError:
            if not scope.expired():
                raise
        finally:
            self.left -= time.monotonic() - start
        raise ProviderTimeoutError(  # outside the handler: nothing to chain
            f"no complete answer within timeout={self.seconds:g}s", provider=PROVIDER
        )


class OpenAIChat:
    """A chat model served over OpenAI's chat-completions API.

    Args:
        model: The model name (``"gpt-4o-mini"``; for Ollama e.g. ``"llama3.2"``).
        api_key: The key; defaults to the ``OPENAI_API_KEY`` environment variable. May be
            omitted for a ``base_url`` that needs none (a local server).
        base_url: Any OpenAI-compatible server, e.g. ``"http://localhost:11434/v1"`` (Ollama).
            Defaults to ``OPENAI_BASE_URL`` or OpenAI's API.
        organization: ``OpenAI-Organization`` header.
        project: ``OpenAI-Project`` header.
        timeout: Seconds the server may take over the whole call, its retries included
            (connecting takes at most 10 of them). For ``stream()`` the time the caller
            spends between two deltas does not count.
        max_retries: Retries the SDK makes on 408/409/429/5xx and connection errors.
        temperature: Sampling temperature (0-2); server default when ``None``.
        max_tokens: Longest reply in tokens (sent as ``max_completion_tokens``, or as
            ``max_tokens`` to servers other than OpenAI's).
        extra_body: More JSON fields for every request (``{"seed": 7}``, vendor options).
        default_headers: More headers for every request.

    Raises:
        MissingKeyError: no key was given or found and ``base_url`` is OpenAI's.
        ConfigurationError: ``model`` is empty or an option is out of range.
    """

    def __init__(
        self,
        model: str = DEFAULT_OPENAI_MODEL,
        *,
        api_key: str | SecretStr | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        temperature: float | None = None,
        max_tokens: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError("OpenAIChat needs a model name, e.g. 'gpt-4o-mini'")
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries}")
        if temperature is not None and not 0.0 <= temperature <= 2.0:
            raise ConfigurationError(f"temperature must be within [0, 2], got {temperature}")
        if max_tokens is not None and max_tokens < 1:
            raise ConfigurationError(f"max_tokens must be >= 1, got {max_tokens}")
        self.model = model.strip()
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "").strip() or None
        register_url_secrets(self.base_url)
        try:
            key = resolve_key(PROVIDER, api_key, "OPENAI_API_KEY")
        except MissingKeyError:
            if self.base_url is None or self._is_openai:
                raise
            key = SecretStr("no-key-needed")  # local servers ignore the Authorization header
        self._key = key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self.timeout = timeout
        self._client_options: dict[str, Any] = {
            "base_url": self.base_url,
            "organization": organization,
            "project": project,
            "timeout": openai.Timeout(timeout, connect=min(10.0, timeout)),
            "max_retries": max_retries,
            "default_headers": dict(default_headers or {}),
        }
        # One SDK client per event loop: its connections belong to the loop that opened them,
        # and a second asyncio.run() would otherwise reuse them on a closed loop.
        self._clients = ClientPerLoop(self._new_client, openai.AsyncOpenAI.close)
        # the headers a request to another origin (a redirect) must not carry
        self._own_headers = {"authorization", "openai-organization", "openai-project"} | {
            name.lower() for name in default_headers or {}
        }
        self._home: tuple[str, str, int | None] | None = None

    def __repr__(self) -> str:
        base_url = redact(self.base_url) if self.base_url else None
        return f"OpenAIChat(model={self.model!r}, base_url={base_url!r})"

    @property
    def _is_openai(self) -> bool:
        host = urlsplit(self.base_url).hostname if self.base_url else "api.openai.com"
        return bool(host) and str(host).endswith("openai.com")

    @property
    def capabilities(self) -> ChatCapabilities:
        """Streams; follows JSON schemas; offline only when the server is on this machine."""
        host = urlsplit(self.base_url).hostname if self.base_url else None
        return ChatCapabilities(streaming=True, json_schema=True, offline=host in _LOCAL_HOSTS)

    # -- clients -------------------------------------------------------------------------------

    def _new_client(self) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(
            api_key=self._key.get_secret_value(),
            http_client=openai.DefaultAsyncHttpxClient(
                event_hooks={"request": [self._keep_headers_home], "response": [_quota_is_final]}
            ),
            **self._client_options,
        )
        home = client.base_url
        self._home = (home.scheme, home.host, home.port)
        return client

    async def _keep_headers_home(self, request: Any) -> None:
        """Drop our headers (keys among them) from a request to another origin (a redirect).

        The HTTP client drops ``Authorization`` on a cross-origin redirect but forwards the
        other headers: an Azure-style ``api-key`` or a proxy's token in ``default_headers``.
        """
        url = request.url
        if (url.scheme, url.host, url.port) == self._home:
            return
        for name in self._own_headers:
            request.headers.pop(name, None)

    async def aclose(self) -> None:
        """Close the HTTP connections of the running loop.

        The object stays usable: a later call opens new connections. A loop that ends through
        ``asyncio.run`` or ``asyncio.Runner`` closes its connections itself.
        """
        await self._clients.aclose()

    # -- requests ------------------------------------------------------------------------------

    def _params(self, messages: Sequence[ChatMessage]) -> dict[str, Any]:
        if not messages:
            raise InputValidationError("messages must not be empty", field="messages")
        wire: list[dict[str, Any]] = []
        for m in messages:
            if not isinstance(m, ChatMessage):
                raise InputValidationError(
                    f"messages must be ChatMessage objects, got {type(m).__name__}",
                    field="messages",
                )
            item: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.name:
                item["name"] = m.name
            wire.append(item)
        params: dict[str, Any] = {"model": self.model, "messages": wire}
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            key = "max_completion_tokens" if self._is_openai else "max_tokens"
            params[key] = self.max_tokens
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params

    async def complete(self, messages: Sequence[ChatMessage]) -> str:
        """Return the whole reply to ``messages``.

        Raises:
            InputValidationError: ``messages`` is empty.
            ContentModerationError: the reply was stopped by the content filter.
            ProviderTimeoutError: no whole answer within ``timeout``.
            ProviderStatusError: the answer is not a chat completion (``malformed_response``).
            ProviderError: the request failed (a subclass says how).
        """
        params = self._params(messages)
        client = await self._clients.get()
        call = _mapped(client.chat.completions.create(**params))
        response = await _ServerTime(self.timeout).wait(call)
        return _reply_text(response)

    async def stream(self, messages: Sequence[ChatMessage]) -> AsyncIterator[str]:
        """Yield the reply as text deltas as the server sends them.

        A server that ignores ``stream=true`` and answers one JSON completion gives its text as
        one delta.

        Raises:
            InputValidationError: ``messages`` is empty.
            ContentModerationError: the content filter stopped the reply.
            ProviderTimeoutError: the server took more than ``timeout`` in all.
            ProviderStatusError: the server sent no content and no finish reason (a proxy's
                HTML page, an empty stream).
            ProviderError: the request failed, or the server sent an error event mid-stream.
        """
        params = self._params(messages)
        client = await self._clients.get()
        server_time = _ServerTime(self.timeout)
        stream = await server_time.wait(
            _mapped(client.chat.completions.create(**params, stream=True))
        )
        response = stream.response
        content_type = _media_type(response)
        failure: ProviderError | None = None
        streamed = finished = False
        try:
            if content_type == "application/json" or content_type.endswith("+json"):
                # the server ignored stream=true and answered with the whole completion
                text = _reply_text(await server_time.wait(_whole_completion(response)))
                if text:
                    yield text
                return
            while True:
                try:
                    chunk = await server_time.wait(anext(stream))
                except StopAsyncIteration:
                    break
                choices = getattr(chunk, "choices", None)
                if not choices:  # usage (stream_options.include_usage), a keep-alive, an error
                    error = _error_payload(chunk)
                    if error is not None:
                        raise error
                    continue
                if not isinstance(choices, list):
                    raise ProviderStatusError(
                        "a streamed chunk's choices are not a list",
                        provider=PROVIDER,
                        code="malformed_response",
                    )
                for choice in choices:
                    if getattr(choice, "index", None) not in (0, None):  # no index: Ollama's
                        continue
                    content = getattr(getattr(choice, "delta", None), "content", None)
                    if isinstance(content, str) and content:
                        streamed = True
                        yield content
                    finish = getattr(choice, "finish_reason", None)
                    finished = finished or bool(finish)
                    if finish == "content_filter":
                        raise ContentModerationError(
                            "the content filter stopped the reply", provider=PROVIDER
                        )
        except (openai.OpenAIError, ValueError) as exc:
            failure = map_openai_error(exc)
        finally:
            await stream.close()
        if failure is not None:
            raise failure  # outside the handler: see _mapped
        if not streamed and not finished:
            # A proxy's HTML page, or an event stream with nothing in it: an error, not an empty
            # reply (a reply that is empty on purpose still says how it finished)
            event_stream = content_type == "text/event-stream"
            what = "" if event_stream else f" (its answer is {content_type or 'untyped'})"
            raise ProviderStatusError(
                f"the server sent no streamed content{what}",
                provider=PROVIDER,
                status=response.status_code,
                request_id=_request_id(response),
                code="empty_response" if event_stream else "malformed_response",
            )

    async def complete_json(
        self, messages: Sequence[ChatMessage], schema: Mapping[str, Any], *, name: str = "answer"
    ) -> Any:
        """Return the reply parsed as JSON, constrained to ``schema`` (``response_format``).

        Raises:
            ProviderStatusError: the reply is not valid JSON.
        """
        params = self._params(messages)
        params["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": dict(schema), "strict": True},
        }
        client = await self._clients.get()
        call = _mapped(client.chat.completions.create(**params))
        response = await _ServerTime(self.timeout).wait(call)
        message, _ = _first_message(response)
        content = getattr(message, "content", None)
        try:
            return json.loads(content if isinstance(content, str) else "")
        except ValueError as exc:
            raise ProviderStatusError(
                "the reply is not the JSON the schema asked for",
                provider=PROVIDER,
                code="malformed_response",
            ) from exc


def make_chat(name: str | None = None, **options: Any) -> OpenAIChat:
    """Factory for the spec ``"openai"`` or ``"openai:<model>"``; ``options`` go to OpenAIChat."""
    model = options.pop("model", None)
    return OpenAIChat(name or model or DEFAULT_OPENAI_MODEL, **options)
