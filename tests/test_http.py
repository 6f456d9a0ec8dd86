from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from avatarkit._http import ConnectOptions, HttpClient, parse_retry_after
from avatarkit.errors import (
    AuthenticationError,
    ProviderConnectionError,
    ProviderStatusError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
)

# unclosed sockets or files are errors here, not warnings left to the garbage collector
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

FAST = ConnectOptions(max_retries=3, backoff_initial=0.01, backoff_max=0.05, deadline=5.0)


def client(handler, **kw) -> HttpClient:  # type: ignore[no-untyped-def]
    return HttpClient(
        "acme",
        "https://api.acme.test/v1",
        transport=httpx.MockTransport(handler),
        options=kw.pop("options", FAST),
        **kw,
    )


async def test_retries_429_honouring_retry_after_then_succeeds() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(
                429, headers={"Retry-After": "0.2"}, json={"error": {"message": "slow down"}}
            )
        return httpx.Response(200, json={"ok": True})

    resp = await client(handler).request("POST", "/things", json={"a": 1})
    assert resp.json() == {"ok": True}
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.19


async def test_5xx_is_retried_until_attempts_run_out() -> None:
    n = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal n
        n += 1
        return httpx.Response(
            503, json={"error": {"message": "overloaded"}}, headers={"x-request-id": "req_123"}
        )

    with pytest.raises(ProviderStatusError) as info:
        await client(handler).request("GET", "/x")
    assert n == 4  # first try + 3 retries
    assert info.value.status == 503 and info.value.retryable
    assert info.value.request_id == "req_123"
    assert "overloaded" in str(info.value) and "req_123" in str(info.value)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {"detail": {"status": "invalid_api_key", "message": "bad key"}}, AuthenticationError),
        (
            402,
            {"kind": "InsufficientCreditsError", "description": "not enough credits"},
            QuotaExceededError,
        ),
        (400, {"error": {"message": "no", "code": "bad_request"}}, ProviderStatusError),
    ],
)
async def test_4xx_is_final_and_mapped(status: int, body: dict, error: type) -> None:
    n = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal n
        n += 1
        return httpx.Response(status, json=body)

    with pytest.raises(error) as info:
        await client(handler).request("GET", "/x")
    assert n == 1
    assert not info.value.retryable
    assert info.value.status == status


async def test_connection_errors_are_retried_and_mapped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ProviderConnectionError):
        await client(
            handler, options=ConnectOptions(max_retries=1, backoff_initial=0.01, deadline=2)
        ).request("GET", "/")


async def test_total_deadline_ends_retries_with_a_timeout_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "0.3"})

    t0 = time.monotonic()
    with pytest.raises((ProviderTimeoutError, RateLimitError)):
        await client(handler, options=ConnectOptions(max_retries=50, deadline=1.0)).request(
            "GET", "/"
        )
    assert time.monotonic() - t0 < 1.5


async def test_retry_after_longer_than_allowed_is_not_waited_for() -> None:
    n = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal n
        n += 1
        return httpx.Response(429, headers={"Retry-After": "600"})

    with pytest.raises(RateLimitError) as info:
        await client(handler).request("GET", "/")
    assert n == 1 and info.value.retry_after == 600


async def test_stream_reads_chunks_and_retries_before_first_byte() -> None:
    n = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal n
        n += 1
        if n == 1:
            return httpx.Response(500)
        return httpx.Response(200, content=b"line1\nline2\n")

    async with client(handler).stream("POST", "/s") as resp:
        lines = [line async for line in resp.aiter_lines()]
    assert lines == ["line1", "line2"] and n == 2


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({}) is None
    assert (
        parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
        == 10.0
    )


async def test_a_malformed_success_is_retried_only_where_asking_again_costs_nothing() -> None:
    # a 200 means the work was done (and billed): a POST is not sent again because its answer
    # had the wrong shape; a GET (a status poll, say) is
    from pydantic import BaseModel

    class Answer(BaseModel):
        audio_base64: str

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(200, content=b"ID3 mp3 bytes, not the JSON asked for")

    for method in ("POST", "GET"):
        with pytest.raises(ProviderStatusError) as info:
            await client(handler).request_json(method, "/tts", Answer)
        assert info.value.code == "invalid_response"
    assert seen == ["POST"] + ["GET"] * 4


async def _chunks(n: int, size: int = 10):  # type: ignore[no-untyped-def]
    for i in range(n):
        yield bytes([65 + i]) * size


async def test_stream_deadline_is_checked_per_read_and_never_cancels_the_consumer() -> None:
    # the deadline used to be an asyncio.timeout held open while the body was read: it fired
    # into whatever the consumer awaited between chunks (playing audio, say)
    http = client(lambda r: httpx.Response(200, content=_chunks(10)),
                  options=ConnectOptions(deadline=0.5))  # fmt: skip
    got: list[bytes] = []
    interrupted = []
    t0 = time.monotonic()
    with pytest.raises(ProviderTimeoutError, match="deadline"):
        async with http.stream("GET", "/s") as resp:
            async for chunk in resp.aiter_bytes():
                try:
                    await asyncio.sleep(0.2)  # the consumer's own work
                except asyncio.CancelledError:
                    interrupted.append(time.monotonic() - t0)
                    raise
                got.append(chunk)
    assert not interrupted
    assert 2 <= len(got) < 10  # read until the deadline passed, then the next read failed
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_stream_deadline_still_ends_a_read_that_hangs() -> None:
    async def stalls():  # type: ignore[no-untyped-def]
        yield b"first"
        await asyncio.sleep(5)
        yield b"never"

    http = client(lambda r: httpx.Response(200, content=stalls()),
                  options=ConnectOptions(deadline=0.3))  # fmt: skip
    t0 = time.monotonic()
    got: list[bytes] = []
    with pytest.raises(ProviderTimeoutError, match="deadline"):
        async with http.stream("GET", "/s") as resp:
            async for chunk in resp.aiter_bytes():
                got.append(chunk)
    assert got == [b"first"] and time.monotonic() - t0 < 1.5
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("body", [b"", b'{"id": "tlk_1", "status": "cre'])
async def test_a_complete_but_unusable_success_is_not_sent_again_when_billed(body: bytes) -> None:
    # a 201 with Content-Length: 0 (or a JSON the server itself cut) arrived whole: the talk
    # was created, and billed; sending the POST again would make (and bill) another each time
    from pydantic import BaseModel

    class Talk(BaseModel):
        id: str

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(201, content=body)  # framed by its Content-Length

    for method in ("POST", "GET"):
        with pytest.raises(ProviderStatusError) as info:
            await client(handler).request_json(method, "/talks", Talk)
        assert info.value.code == "invalid_response" and info.value.status == 201
        assert info.value.retryable == (method == "GET")
        if not body:
            assert "empty" in str(info.value)
    assert seen == ["POST"] + ["GET"] * 4  # a poll is free to ask again


async def test_json_cut_by_a_closing_connection_is_asked_again() -> None:
    # without a Content-Length or chunked framing the body ends where the connection closed:
    # a drop midway looks like the end, so the cut JSON is treated as a broken connection
    from pydantic import BaseModel

    class Talk(BaseModel):
        id: str

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) == 1:
            return httpx.Response(201, stream=httpx.ByteStream(b'{"id": "tl'))
        return httpx.Response(201, json={"id": "tlk_1"})

    assert (await client(handler).request_json("POST", "/talks", Talk)).id == "tlk_1"
    assert seen == ["POST", "POST"]


@pytest.mark.parametrize("declared", [True, False])
async def test_download_stops_at_its_size_limit(declared: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if declared:
            return httpx.Response(200, content=b"x" * 5000)
        return httpx.Response(200, content=_chunks(50, size=100))  # chunked, no length

    http = client(handler)
    assert len(await http.download("https://files.test/a", max_bytes=5000)) == 5000
    with pytest.raises(ProviderStatusError, match="larger than 1000 bytes") as info:
        await http.download("https://files.test/a", max_bytes=1000)
    assert info.value.code == "too_large" and not info.value.retryable


class _CountingTransport(httpx.MockTransport):
    """A MockTransport that counts how often a client closed it."""

    def __init__(self) -> None:
        super().__init__(lambda request: httpx.Response(200, json={"ok": True}))
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


def test_a_loop_that_ends_without_aclose_closes_its_client() -> None:
    # a script calling asyncio.run once per call and never aclose(): each loop's client (its
    # connections) is closed as that loop ends, not whenever the garbage collector finds it
    transport = _CountingTransport()
    http = HttpClient("acme", "https://api.acme.test/v1", transport=transport, options=FAST)

    async def call() -> object:
        return (await http.request("GET", "/x")).json()

    assert asyncio.run(call()) == {"ok": True}
    assert transport.closed == 1
    assert asyncio.run(call()) == {"ok": True}  # the next loop opens a client of its own
    assert transport.closed == 2


async def test_aclose_closes_the_running_loops_client_once_and_stays_usable() -> None:
    transport = _CountingTransport()
    http = HttpClient("acme", "https://api.acme.test/v1", transport=transport, options=FAST)
    await http.request("GET", "/x")
    await http.aclose()
    await http.aclose()  # twice is harmless
    assert transport.closed == 1
    assert (await http.request("GET", "/x")).json() == {"ok": True}
    await http.aclose()
    assert transport.closed == 2
