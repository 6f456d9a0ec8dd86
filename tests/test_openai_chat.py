"""OpenAIChat against a real HTTP server on 127.0.0.1 that speaks OpenAI's wire format.

The server is the standard library's ``http.server`` in a thread. Each test scripts the answers
it gives, in order, and then checks the exact requests it received.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import gc
import json
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("openai")

from avatarkit.errors import (
    AuthenticationError,
    ContentModerationError,
    InputValidationError,
    MissingKeyError,
    ProviderConnectionError,
    ProviderStatusError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
)
from avatarkit.ports import ChatModel
from avatarkit.providers.openai_chat import OpenAIChat, make_chat
from avatarkit.types import ChatMessage

# unclosed sockets or files are errors here, not warnings left to the garbage collector
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

KEY = "sk-test-0123456789abcdef"
MESSAGES = [
    ChatMessage(role="system", content="You are Ava."),
    ChatMessage(role="user", content="Hi! Who are you?"),
]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    events: list[str] | None = None  # SSE data payloads, sent one by one
    delay: float = 0.0
    raw: bytes | None = None  # an event-stream body sent as is (``event:`` lines, no [DONE])
    trickle: float = 0.0  # seconds between 10-byte pieces of ``body``
    event_delay: float = 0.0  # seconds between two of ``events``


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeOpenAI:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                with outer.lock:
                    outer.seen.append(
                        Seen(
                            "POST",
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw) if raw else None,
                        )
                    )
                    reply = outer.replies.pop(0) if outer.replies else Reply(status=599)
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.raw is not None:
                    if "Content-Type" not in reply.headers:
                        self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(reply.raw)
                    self.close_connection = True
                    return
                if reply.events is None:
                    if "Content-Type" not in reply.headers:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    step = 10 if reply.trickle else max(len(reply.body), 1)
                    for i in range(0, len(reply.body), step):
                        self.wfile.write(reply.body[i : i + step])
                        self.wfile.flush()
                        time.sleep(reply.trickle)
                    return
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for data in reply.events:
                    self.wfile.write(f"data: {data}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(reply.event_delay)
                self.close_connection = True

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (the timeout test) is not a server failure

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def chat(self, **kw: Any) -> OpenAIChat:
        kw.setdefault("api_key", KEY)
        kw.setdefault("max_retries", 0)
        return OpenAIChat("gpt-test", base_url=self.base_url, **kw)


def _running() -> Iterator[FakeOpenAI]:
    srv = FakeOpenAI()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.server.shutdown()
        srv.server.server_close()
        srv.thread.join(5)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    yield from _running()


def completion(text: str, finish: str = "stop") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-test",
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        }
    ).encode()


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-2",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "gpt-test",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            "usage": None,
        }
    )


def error_body(message: str, type_: str, code: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()


# --------------------------------------------------------------------------- success paths


async def test_complete_sends_documented_request_and_returns_text(server: FakeOpenAI) -> None:
    server.replies.append(
        Reply(body=completion("I'm Ava, nice to meet you."), headers={"x-request-id": "req_1"})
    )
    chat = server.chat(temperature=0.2, max_tokens=50, extra_body={"seed": 7})
    assert isinstance(chat, ChatModel)

    text = await chat.complete(MESSAGES)

    assert text == "I'm Ava, nice to meet you."
    [req] = server.seen
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json"
    assert req.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are Ava."},
            {"role": "user", "content": "Hi! Who are you?"},
        ],
        "temperature": 0.2,
        "max_tokens": 50,
        "seed": 7,
    }
    await chat.aclose()


async def test_stream_yields_deltas_until_done(server: FakeOpenAI) -> None:
    server.replies.append(
        Reply(
            events=[
                chunk({"role": "assistant", "content": ""}),
                chunk({"content": "Hello"}),
                chunk({"content": " there."}),
                chunk({"content": " I'm Ava."}),
                chunk({}, finish="stop"),
                json.dumps(  # stream_options.include_usage: a last chunk with no choices
                    {
                        "id": "chatcmpl-2",
                        "object": "chat.completion.chunk",
                        "created": 1_700_000_000,
                        "model": "gpt-test",
                        "choices": [],
                        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15},
                    }
                ),
                "[DONE]",
            ]
        )
    )
    chat = server.chat()
    # the understanding stage's labels ride on the message but never go over the wire
    hinted = [*MESSAGES[:-1], MESSAGES[-1].model_copy(
        update={"intent": "ask_about_avatar", "sentiment": "positive"})]  # fmt: skip

    deltas = [d async for d in chat.stream(hinted)]

    assert deltas == ["Hello", " there.", " I'm Ava."]
    [req] = server.seen
    assert req.body["stream"] is True
    assert req.body["messages"][-1] == {"role": "user", "content": "Hi! Who are you?"}


async def test_429_with_retry_after_is_waited_out_then_succeeds(server: FakeOpenAI) -> None:
    server.replies += [
        Reply(
            status=429,
            headers={"Retry-After": "1"},
            body=error_body("Rate limit reached", "requests", "rate_limit_exceeded"),
        ),
        Reply(body=completion("Second time lucky.")),
    ]
    chat = server.chat(max_retries=2)

    start = time.monotonic()
    text = await chat.complete(MESSAGES)
    elapsed = time.monotonic() - start

    assert text == "Second time lucky."
    assert len(server.seen) == 2
    assert server.seen[0].body == server.seen[1].body
    assert elapsed >= 0.9, "the SDK must honour Retry-After: 1"


async def test_429_when_retries_run_out_is_a_rate_limit_error(server: FakeOpenAI) -> None:
    server.replies.append(
        Reply(
            status=429,
            headers={"Retry-After": "7", "x-request-id": "req_rl"},
            body=error_body("Rate limit reached", "requests", "rate_limit_exceeded"),
        )
    )
    with pytest.raises(RateLimitError) as info:
        await server.chat().complete(MESSAGES)
    err = info.value
    assert err.status == 429 and err.retryable and err.retry_after == 7.0
    assert err.request_id == "req_rl" and err.code == "rate_limit_exceeded"
    assert "Rate limit reached" in str(err)


async def test_insufficient_quota_is_not_retryable(server: FakeOpenAI) -> None:
    server.replies.append(
        Reply(
            status=429,
            body=error_body("You exceeded your quota", "insufficient_quota", "insufficient_quota"),
        )
    )
    with pytest.raises(QuotaExceededError) as info:
        await server.chat().complete(MESSAGES)
    assert info.value.retryable is False


async def test_500_is_a_retryable_status_error(server: FakeOpenAI) -> None:
    server.replies.append(
        Reply(
            status=500,
            headers={"x-request-id": "req_500"},
            body=error_body("The server had an error", "server_error"),
        )
    )
    with pytest.raises(ProviderStatusError) as info:
        await server.chat().complete(MESSAGES)
    err = info.value
    assert err.status == 500 and err.retryable and err.request_id == "req_500"
    assert "The server had an error" in str(err)


async def test_500_then_success_is_retried_by_the_sdk(server: FakeOpenAI) -> None:
    server.replies += [
        Reply(
            status=500, headers={"retry-after-ms": "10"}, body=error_body("oops", "server_error")
        ),
        Reply(body=completion("Recovered.")),
    ]
    assert await server.chat(max_retries=1).complete(MESSAGES) == "Recovered."
    assert len(server.seen) == 2


async def test_malformed_json_body_is_a_typed_error(server: FakeOpenAI) -> None:
    server.replies.append(Reply(body=b'{"id": "chatcmpl-1", "choices": [ oops'))
    with pytest.raises(ProviderStatusError) as info:
        await server.chat().complete(MESSAGES)
    assert info.value.code == "malformed_response"


async def test_body_without_choices_is_a_typed_error(server: FakeOpenAI) -> None:
    server.replies.append(Reply(body=b'{"id": "x", "object": "chat.completion"}'))
    with pytest.raises(ProviderStatusError) as info:
        await server.chat().complete(MESSAGES)
    assert info.value.code == "malformed_response"


async def test_mid_stream_error_event_raises_after_the_first_deltas(server: FakeOpenAI) -> None:
    server.replies.append(
        Reply(
            events=[
                chunk({"role": "assistant", "content": "Partial"}),
                chunk({"content": " answer"}),
                json.dumps(
                    {
                        "error": {
                            "message": "The model overloaded",
                            "type": "server_error",
                            "code": None,
                        }
                    }
                ),
                chunk({"content": " never sent"}),
                "[DONE]",
            ]
        )
    )
    got: list[str] = []
    with pytest.raises(ProviderStatusError) as info:
        async for delta in server.chat().stream(MESSAGES):
            got.append(delta)
    assert got == ["Partial", " answer"]
    assert "The model overloaded" in str(info.value)
    assert info.value.retryable is True


async def test_malformed_stream_event_is_a_typed_error(server: FakeOpenAI) -> None:
    server.replies.append(Reply(events=[chunk({"content": "Hi"}), "{not json", "[DONE]"]))
    with pytest.raises(ProviderStatusError) as info:
        _ = [d async for d in server.chat().stream(MESSAGES)]
    assert info.value.code == "malformed_response"


async def test_content_filter_finish_reason_is_a_moderation_error(server: FakeOpenAI) -> None:
    server.replies.append(
        Reply(events=[chunk({"content": "I"}), chunk({}, finish="content_filter"), "[DONE]"])
    )
    with pytest.raises(ContentModerationError):
        _ = [d async for d in server.chat().stream(MESSAGES)]


# --------------------------------------------------------------------------- keys and setup


async def test_refused_key_never_appears_in_the_error(server: FakeOpenAI) -> None:
    # A hostile or careless server echoes the key back in its message.
    server.replies.append(
        Reply(
            status=401,
            body=error_body(
                f"Incorrect API key provided: {KEY}.", "invalid_request_error", "invalid_api_key"
            ),
        )
    )
    chat = server.chat()
    with pytest.raises(AuthenticationError) as info:
        await chat.complete(MESSAGES)
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)
    assert KEY not in repr(chat)
    # nor in the traceback an app logs or a tracer records, nor anywhere down the chain
    assert KEY not in "".join(traceback.format_exception(info.value))
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert info.value.status == 401 and info.value.retryable is False


async def test_timeout_is_a_provider_timeout(server: FakeOpenAI) -> None:
    server.replies.append(Reply(body=completion("late"), delay=1.0))
    with pytest.raises(ProviderTimeoutError):
        await server.chat(timeout=0.2).complete(MESSAGES)


async def test_refused_connection_is_a_connection_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chat = OpenAIChat("m", api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    with pytest.raises(ProviderConnectionError) as info:
        await chat.complete(MESSAGES)
    assert info.value.retryable is True


async def test_empty_messages_fail_before_any_request(server: FakeOpenAI) -> None:
    with pytest.raises(InputValidationError):
        await server.chat().complete([])
    assert server.seen == []


def test_key_from_environment_and_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingKeyError) as info:
        OpenAIChat()
    assert "OPENAI_API_KEY" in str(info.value)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    chat = make_chat("gpt-4o")
    assert chat.model == "gpt-4o"
    assert KEY not in repr(chat)


async def test_local_server_needs_no_key(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.replies.append(Reply(body=completion("ok")))
    chat = OpenAIChat("llama3.2", base_url=server.base_url, max_retries=0)
    assert chat.capabilities.offline is True
    assert await chat.complete(MESSAGES) == "ok"
    assert server.seen[0].body["model"] == "llama3.2"


async def test_complete_json_sends_the_schema(server: FakeOpenAI) -> None:
    server.replies.append(Reply(body=completion('{"intent": "greeting"}')))
    schema = {
        "type": "object",
        "properties": {"intent": {"type": "string"}},
        "required": ["intent"],
    }
    result = await server.chat().complete_json(MESSAGES, schema, name="intent")
    assert result == {"intent": "greeting"}
    fmt = server.seen[0].body["response_format"]
    assert fmt == {
        "type": "json_schema",
        "json_schema": {"name": "intent", "schema": schema, "strict": True},
    }


# --------------------------------------------------------------------------- event loops


def test_usable_from_one_event_loop_after_another(server: FakeOpenAI) -> None:
    # a script or notebook calling asyncio.run once per turn: each run is a new loop
    server.replies += [
        Reply(body=completion("One.")),
        Reply(body=completion("Two.")),
        Reply(events=[chunk({"content": "Three."}, finish="stop"), "[DONE]"]),
    ]
    chat = server.chat()

    async def streamed_then_closed() -> list[str]:
        deltas = [d async for d in chat.stream(MESSAGES)]
        await chat.aclose()
        return deltas

    assert asyncio.run(chat.complete(MESSAGES)) == "One."
    assert asyncio.run(chat.complete(MESSAGES)) == "Two."
    assert asyncio.run(streamed_then_closed()) == ["Three."]
    assert len(server.seen) == 3
    # the clients of the closed loops were let go, and aclose() closed the last one
    assert not chat._clients


def test_a_loop_that_ends_without_aclose_closes_its_connections(server: FakeOpenAI) -> None:
    # asyncio.run once per turn and never aclose(): each loop's connection is closed as that
    # loop ends, not whenever the garbage collector finds it ("unclosed transport")
    server.replies += [
        Reply(body=completion("One.")),
        Reply(events=[chunk({"content": "Two."}, finish="stop"), "[DONE]"]),
    ]
    chat = server.chat()

    async def streamed(chat: OpenAIChat) -> list[str]:
        return [d async for d in chat.stream(MESSAGES)]

    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert asyncio.run(chat.complete(MESSAGES)) == "One."
        assert asyncio.run(streamed(chat)) == ["Two."]
        del chat
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_bot_answers_through_one_event_loop_after_another(server: FakeOpenAI) -> None:
    from avatarkit import AvatarBot
    from avatarkit.testing import (
        FakeExpressionPolicy,
        FakeIntentClassifier,
        FakePreprocessor,
        FakeSentimentAnalyzer,
        FakeVoice,
    )

    server.replies += [Reply(body=completion("First.")), Reply(body=completion("Second."))]
    bot = AvatarBot(
        chat=server.chat(),
        voice=FakeVoice(),
        renderer=None,
        preprocessor=FakePreprocessor(),
        intent=FakeIntentClassifier(),
        sentiment=FakeSentimentAnalyzer(),
        expression=FakeExpressionPolicy(),
    )
    assert asyncio.run(bot.respond("Hello")).dialogue.text == "First."
    assert asyncio.run(bot.respond("Again")).dialogue.text == "Second."


async def test_aclose_then_used_again_opens_a_new_client(server: FakeOpenAI) -> None:
    server.replies += [Reply(body=completion("Before.")), Reply(body=completion("After."))]
    chat = server.chat()
    assert await chat.complete(MESSAGES) == "Before."
    await chat.aclose()
    await chat.aclose()  # twice is harmless
    assert await chat.complete(MESSAGES) == "After."
    await chat.aclose()


# --------------------------------------------------------------------------- redirects


@pytest.fixture
def other_server() -> Iterator[FakeOpenAI]:
    yield from _running()


async def test_redirect_to_another_origin_carries_no_credentials(
    server: FakeOpenAI, other_server: FakeOpenAI
) -> None:
    # Azure-style "api-key" and a proxy's token ride in default_headers
    headers = {"api-key": KEY, "X-Proxy-Token": "tok-123456", "X-Trace": "t1"}
    server.replies.append(
        Reply(status=307, headers={"Location": other_server.base_url + "/chat/completions"})
    )
    other_server.replies.append(Reply(body=completion("Moved.")))
    chat = server.chat(default_headers=headers, organization="org-1", project="proj-1")

    assert await chat.complete(MESSAGES) == "Moved."

    [home] = server.seen
    assert home.headers["api-key"] == KEY and home.headers["x-proxy-token"] == "tok-123456"
    assert home.headers["openai-organization"] == "org-1"
    [away] = other_server.seen
    assert away.body == home.body
    for name in ("api-key", "x-proxy-token", "x-trace", "authorization", "openai-organization",
                 "openai-project"):  # fmt: skip
        assert name not in away.headers, name
    assert KEY not in json.dumps(away.headers)
    await chat.aclose()


async def test_redirect_within_the_same_origin_keeps_the_headers(server: FakeOpenAI) -> None:
    server.replies += [
        Reply(status=307, headers={"Location": server.base_url + "/chat/completions?moved=1"}),
        Reply(body=completion("Same place.")),
    ]
    chat = server.chat(default_headers={"api-key": KEY})
    assert await chat.complete(MESSAGES) == "Same place."
    assert [s.headers["api-key"] for s in server.seen] == [KEY, KEY]
    assert server.seen[1].headers["authorization"] == f"Bearer {KEY}"
    await chat.aclose()


# --------------------------------------------------------------------------- error bodies


@pytest.mark.parametrize(
    ("status", "body", "content_type", "error", "words"),
    [
        # Ollama and LM Studio put the reason in a bare string
        (404, {"error": 'model "llama9" not found, try pulling it first'}, None,
         ProviderStatusError, 'model "llama9" not found, try pulling it first'),
        (400, {"error": "No models loaded. Please load a model."}, None,
         ProviderStatusError, "No models loaded. Please load a model."),
        # FastAPI-style servers
        (404, {"detail": "Not Found"}, None, ProviderStatusError, "Not Found"),
        (422, {"detail": [{"loc": ["body", "messages"], "msg": "Field required",
                           "type": "missing"}]}, None,
         ProviderStatusError, "body.messages: Field required"),
        # a proxy's plain-text page
        (502, "upstream connect error", "text/plain", ProviderStatusError,
         "upstream connect error"),
        (400, {"error": {"message": "Your request was rejected by the safety system.",
                         "type": "image_generation_user_error", "code": "moderation_blocked"}},
         None, ContentModerationError, "rejected by the safety system"),
        (402, {"error": {"message": "Payment required"}}, None, QuotaExceededError,
         "Payment required"),
        (451, {"error": {"message": "Unavailable for legal reasons"}}, None,
         ContentModerationError, "Unavailable for legal reasons"),
    ],
)  # fmt: skip
async def test_error_bodies_of_compatible_servers_keep_their_reason(
    server: FakeOpenAI,
    status: int,
    body: object,
    content_type: str | None,
    error: type[Exception],
    words: str,
) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    server.replies.append(Reply(status=status, headers=headers, body=raw))
    with pytest.raises(error) as info:
        await server.chat().complete(MESSAGES)
    assert type(info.value) is error
    assert words in str(info.value)
    assert info.value.status == status  # type: ignore[attr-defined]


async def test_insufficient_quota_is_asked_once_however_many_retries(server: FakeOpenAI) -> None:
    quota = error_body("You exceeded your quota", "insufficient_quota", "insufficient_quota")
    server.replies += [Reply(status=429, body=quota)] * 3
    with pytest.raises(QuotaExceededError) as info:
        await server.chat(max_retries=2).complete(MESSAGES)
    assert len(server.seen) == 1, "a used-up quota does not clear by retrying"
    assert info.value.code == "insufficient_quota" and info.value.retryable is False


async def test_insufficient_quota_in_a_stream_request_is_asked_once(server: FakeOpenAI) -> None:
    quota = error_body("You exceeded your quota", "insufficient_quota", "insufficient_quota")
    server.replies += [Reply(status=429, body=quota)] * 3
    with pytest.raises(QuotaExceededError):
        _ = [d async for d in server.chat(max_retries=2).stream(MESSAGES)]
    assert len(server.seen) == 1


async def test_retry_after_as_an_http_date(server: FakeOpenAI) -> None:
    when = email.utils.format_datetime(
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30), usegmt=True
    )
    server.replies.append(
        Reply(status=429, headers={"Retry-After": when}, body=error_body("Slow down", "requests"))
    )
    with pytest.raises(RateLimitError) as info:
        await server.chat().complete(MESSAGES)
    assert info.value.retry_after is not None and 25 <= info.value.retry_after <= 31


async def test_a_bare_string_error_that_echoes_the_key_is_redacted(server: FakeOpenAI) -> None:
    server.replies.append(Reply(status=404, body=json.dumps({"error": f"no key {KEY}"}).encode()))
    with pytest.raises(ProviderStatusError) as info:
        await server.chat().complete(MESSAGES)
    assert "no key" in str(info.value) and KEY not in str(info.value)


# --------------------------------------------------------------------------- answer shapes


def sse(*payloads: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return b"".join(f"{head}data: {json.dumps(p)}\n\n".encode() for p in payloads)


async def test_stream_skips_chunks_without_choices(server: FakeOpenAI) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    server.replies.append(
        Reply(
            raw=sse(
                {"choices": [{"index": 0, "delta": {"content": "Hello"}}]},
                {"object": "chat.completion.chunk"},  # a keep-alive
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"id": "x", "object": "chat.completion.chunk", "usage": usage},  # no "choices"
            )
            + b"data: [DONE]\n\n"
        )
    )
    assert [d async for d in server.chat().stream(MESSAGES)] == ["Hello"]


@pytest.mark.parametrize(
    ("raw", "error", "words"),
    [
        (sse({"message": "The engine stalled", "type": "server_error"}, event="error"),
         ProviderStatusError, "The engine stalled"),
        (sse({"error": "model crashed"}), ProviderStatusError, "model crashed"),
        (sse({"error": {"message": "Too many", "code": "rate_limit_exceeded"}}),
         RateLimitError, "Too many"),
    ],
)  # fmt: skip
async def test_stream_error_payloads_raise_the_mapped_error(
    server: FakeOpenAI, raw: bytes, error: type[Exception], words: str
) -> None:
    first = sse({"choices": [{"index": 0, "delta": {"content": "x"}}]})
    server.replies.append(Reply(raw=first + raw))
    got: list[str] = []
    with pytest.raises(error) as info:
        async for delta in server.chat().stream(MESSAGES):
            got.append(delta)
    assert got == ["x"]
    assert type(info.value) is error and words in str(info.value)


LEGACY = json.dumps(
    {"object": "text_completion", "choices": [{"index": 0, "text": "Hi", "finish_reason": "stop"}]}
).encode()


async def test_a_choice_without_a_message_is_a_typed_error(server: FakeOpenAI) -> None:
    server.replies += [Reply(body=LEGACY), Reply(body=LEGACY)]
    chat = server.chat()
    with pytest.raises(ProviderStatusError) as info:
        await chat.complete(MESSAGES)
    assert info.value.code == "malformed_response" and "no message" in str(info.value)
    with pytest.raises(ProviderStatusError) as info:
        await chat.complete_json(MESSAGES, {"type": "object"})
    assert info.value.code == "malformed_response" and "no message" in str(info.value)


async def test_stream_chunks_without_an_index_are_the_first_choice(server: FakeOpenAI) -> None:
    # Ollama and some proxies leave "index" out
    server.replies.append(
        Reply(
            raw=sse(
                {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "hi"}}]},
                {"choices": [{"delta": {"content": " there"}}]},
                {"choices": [{"index": 1, "delta": {"content": " (second choice)"}}]},
            )
            + b"data: [DONE]\n\n"
        )
    )
    assert [d async for d in server.chat().stream(MESSAGES)] == ["hi", " there"]


@pytest.mark.parametrize(
    ("reply", "code", "words"),
    [
        (Reply(headers={"Content-Type": "text/html"}, body=b"<html>Please log in</html>"),
         "malformed_response", "text/html"),
        (Reply(raw=b"data: [DONE]\n\n"), "empty_response", "no streamed content"),
        (Reply(raw=sse({"choices": [{"index": 1, "delta": {"content": "x"}}]})),
         "empty_response", "no streamed content"),
    ],
)  # fmt: skip
async def test_stream_with_nothing_streamed_is_an_error_not_an_empty_reply(
    server: FakeOpenAI, reply: Reply, code: str, words: str
) -> None:
    server.replies.append(reply)
    with pytest.raises(ProviderStatusError) as info:
        _ = [d async for d in server.chat().stream(MESSAGES)]
    assert "no streamed content" in str(info.value) and words in str(info.value)
    assert info.value.code == code and info.value.status == 200


async def test_stream_of_an_empty_reply_that_finished_is_empty(server: FakeOpenAI) -> None:
    server.replies.append(
        Reply(events=[chunk({"role": "assistant", "content": ""}), chunk({}, "stop"), "[DONE]"])
    )
    assert [d async for d in server.chat().stream(MESSAGES)] == []


async def test_stream_ignored_by_the_server_reads_its_one_json_completion(
    server: FakeOpenAI,
) -> None:
    server.replies.append(Reply(body=completion("Hello there.")))
    assert [d async for d in server.chat().stream(MESSAGES)] == ["Hello there."]
    assert server.seen[0].body["stream"] is True


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        (error_body("Overloaded", "server_error"), ProviderStatusError, "Overloaded"),
        (LEGACY, ProviderStatusError, "no message"),
        (b"{not json", ProviderStatusError, "not valid JSON"),
        (completion("", finish="content_filter"), ContentModerationError, "content filter"),
    ],
)
async def test_stream_ignored_by_the_server_with_a_bad_json_answer(
    server: FakeOpenAI, body: bytes, error: type[Exception], words: str
) -> None:
    server.replies.append(Reply(body=body))
    with pytest.raises(error) as info:
        _ = [d async for d in server.chat().stream(MESSAGES)]
    assert type(info.value) is error and words in str(info.value)


# --------------------------------------------------------------------------- the whole-call timeout


async def test_timeout_bounds_a_body_that_trickles_in(server: FakeOpenAI) -> None:
    # every piece comes well within the read timeout, the whole body takes ~3 s
    server.replies.append(Reply(body=completion("Slowly."), trickle=0.1))
    start = time.monotonic()
    with pytest.raises(ProviderTimeoutError) as info:
        await server.chat(timeout=0.5).complete(MESSAGES)
    assert time.monotonic() - start < 1.5
    assert "0.5" in str(info.value)


async def test_timeout_bounds_a_stream_that_trickles_in(server: FakeOpenAI) -> None:
    server.replies.append(
        Reply(events=[chunk({"content": f"{i} "}) for i in range(12)], event_delay=0.15)
    )
    got: list[str] = []
    start = time.monotonic()
    with pytest.raises(ProviderTimeoutError):
        async for delta in server.chat(timeout=0.6).stream(MESSAGES):
            got.append(delta)
    assert time.monotonic() - start < 1.5
    assert 1 <= len(got) < 12
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_the_consumers_own_time_between_deltas_is_not_the_servers(
    server: FakeOpenAI,
) -> None:
    # an app that plays each sentence before asking for the next: the stream's deadline must
    # neither fire in the app's own awaits nor count them
    server.replies.append(
        Reply(events=[*(chunk({"content": f"{i} "}) for i in range(4)), chunk({}, "stop")])
    )
    got: list[str] = []
    async for delta in server.chat(timeout=0.5).stream(MESSAGES):
        got.append(delta)
        await asyncio.sleep(0.25)  # 1 s in all, twice the timeout
    assert got == ["0 ", "1 ", "2 ", "3 "]


async def test_an_error_object_in_a_200_answer_keeps_its_reason(server: FakeOpenAI) -> None:
    server.replies.append(Reply(body=error_body("The model is overloaded", "server_error")))
    with pytest.raises(ProviderStatusError) as info:
        await server.chat().complete(MESSAGES)
    assert "The model is overloaded" in str(info.value) and info.value.retryable is True
