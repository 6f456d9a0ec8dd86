"""Fault injection against a real HTTP server on 127.0.0.1: every failure ends in
success-after-retry or a typed error within its deadline, and no partial file is left behind."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from _cloud_helpers import alignment_for, b64, mp3_bytes, pcm_bytes, png_bytes
from avatarkit._http import ConnectOptions, HttpClient
from avatarkit.errors import (
    ProviderConnectionError,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
)
from avatarkit.providers.automatic1111 import A1111ImageGenerator
from avatarkit.providers.did import DIDRenderer
from avatarkit.providers.elevenlabs import ElevenLabsVoice
from avatarkit.types import AvatarImage, AvatarPrompt, Timeline, VoiceOutput

# unclosed sockets or files are errors here, not warnings left to the garbage collector
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

OPTS = ConnectOptions(
    timeout=0.5, connect_timeout=0.5, max_retries=3, backoff_initial=0.02, backoff_max=0.1,
    deadline=3.0,
)  # fmt: skip
SLACK = 1.5
"""Seconds of scheduling slack on time bounds: the test machine is shared and often loaded."""


@dataclass
class Act:
    """One scripted answer."""

    kind: str = "ok"  # ok | reset | slow | trickle | truncate | stream-reset | unframed
    status: int = 200
    body: bytes = b"{}"
    headers: dict[str, str] | None = None
    delay: float = 0.0


def ok_json(obj: Any, status: int = 200, **headers: str) -> Act:
    return Act(
        status=status,
        body=json.dumps(obj).encode(),
        headers={"Content-Type": "application/json", **headers},
    )


class Server:
    """A scripted HTTP/1.1 server: each path answers its queue of acts, repeating the last one."""

    def __init__(self) -> None:
        self.script: dict[str, list[Act]] = {}
        self.hits: dict[str, int] = {}
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?")[0]
                server.hits[path] = server.hits.get(path, 0) + 1
                queue = server.script.get(path) or [Act(status=404, body=b'{"detail":"no script"}')]
                act = queue.pop(0) if len(queue) > 1 else queue[0]
                if act.kind == "reset":
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                    return
                if act.kind == "slow" and server.stop.wait(act.delay):
                    return
                self.send_response(act.status)
                for k, v in (act.headers or {}).items():
                    self.send_header(k, v)
                cut = act.kind in ("truncate", "stream-reset")
                declared = len(act.body) * 2 if cut else len(act.body)
                if act.kind != "unframed":  # unframed: the body ends where the connection closes
                    self.send_header("Content-Length", str(declared))
                self.send_header("Connection", "close")
                self.end_headers()
                if act.kind == "trickle":
                    for i in range(len(act.body)):
                        if server.stop.wait(act.delay):
                            return
                        self.wfile.write(act.body[i : i + 1])
                        self.wfile.flush()
                elif act.kind == "stream-reset":
                    self.wfile.write(act.body)
                    self.wfile.flush()
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                else:
                    self.wfile.write(act.body)
                self.close_connection = True

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def do_DELETE(self) -> None:
                self._serve()

            def finish(self) -> None:
                with contextlib.suppress(OSError):
                    super().finish()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def client(server: Server, **changes: Any) -> HttpClient:
    from dataclasses import replace

    return HttpClient("fault", server.url, options=replace(OPTS, **changes))


class Clock:
    def __enter__(self) -> Clock:
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.t0


# --------------------------------------------------------------------------- the HTTP layer


async def test_429_with_retry_after_waits_then_succeeds(server: Server) -> None:
    server.script["/x"] = [
        ok_json({"detail": "slow down"}, 429, **{"Retry-After": "0.3"}),
        ok_json({"ok": 1}),
    ]
    with Clock() as c:
        r = await client(server).request("GET", "/x")
    assert r.json() == {"ok": 1} and server.hits["/x"] == 2
    assert 0.3 <= c.elapsed < 0.3 + SLACK


async def test_429_without_retry_after_backs_off_then_succeeds(server: Server) -> None:
    server.script["/x"] = [ok_json({}, 429), ok_json({}, 429), ok_json({"ok": 1})]
    with Clock() as c:
        r = await client(server).request("GET", "/x")
    assert r.json() == {"ok": 1} and server.hits["/x"] == 3 and c.elapsed < OPTS.deadline + SLACK


async def test_429_asking_past_the_deadline_fails_at_once(server: Server) -> None:
    server.script["/x"] = [ok_json({"detail": "later"}, 429, **{"Retry-After": "30"})]
    with Clock() as c, pytest.raises(RateLimitError) as info:
        await client(server, max_retry_after=60).request("GET", "/x")
    assert info.value.retry_after == 30 and server.hits["/x"] == 1
    assert c.elapsed < 5  # did not sleep the 30 s it asked for


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_then_success(server: Server, status: int) -> None:
    server.script["/x"] = [Act(status=status, body=b"<html>Bad Gateway</html>"), ok_json({"ok": 1})]
    r = await client(server).request("POST", "/x", json={"a": 1})
    assert r.json() == {"ok": 1} and server.hits["/x"] == 2


async def test_persistent_503_ends_typed_after_max_retries(server: Server) -> None:
    server.script["/x"] = [ok_json({"error": {"message": "overloaded"}}, 503)]
    with Clock() as c, pytest.raises(ProviderStatusError, match="overloaded") as info:
        await client(server).request("GET", "/x")
    assert info.value.status == 503 and info.value.retryable
    assert server.hits["/x"] == OPTS.max_retries + 1 and c.elapsed < OPTS.deadline + SLACK


async def test_connection_reset_then_success(server: Server) -> None:
    server.script["/x"] = [Act(kind="reset"), Act(kind="reset"), ok_json({"ok": 1})]
    r = await client(server).request("GET", "/x")
    assert r.json() == {"ok": 1} and server.hits["/x"] == 3


async def test_persistent_reset_is_a_connection_error(server: Server) -> None:
    server.script["/x"] = [Act(kind="reset")]
    with Clock() as c, pytest.raises(ProviderConnectionError):
        await client(server).request("GET", "/x")
    assert server.hits["/x"] == OPTS.max_retries + 1 and c.elapsed < OPTS.deadline + SLACK


async def test_nothing_listening_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    http = HttpClient("fault", f"http://127.0.0.1:{port}", options=OPTS)
    with Clock() as c, pytest.raises(ProviderConnectionError):
        await http.request("GET", "/x")
    assert c.elapsed < OPTS.deadline + SLACK


async def test_slow_answer_past_the_attempt_timeout_then_success(server: Server) -> None:
    server.script["/x"] = [Act(kind="slow", delay=1.0, body=b"{}"), ok_json({"ok": 1})]
    with Clock() as c:
        r = await client(server).request("GET", "/x")
    assert r.json() == {"ok": 1} and 0.5 <= c.elapsed < 0.5 + SLACK


async def test_always_slow_ends_at_the_deadline(server: Server) -> None:
    server.script["/x"] = [Act(kind="slow", delay=5.0)]
    with Clock() as c, pytest.raises(ProviderTimeoutError):
        await client(server, timeout=0.4, deadline=1.0).request("GET", "/x")
    assert c.elapsed < 1.0 + SLACK


async def test_trickling_body_cannot_outlast_the_deadline(server: Server) -> None:
    # Each byte arrives within the per-read timeout, so only the total deadline stops it.
    server.script["/x"] = [Act(kind="trickle", body=b"x" * 100, delay=0.1)]
    with Clock() as c, pytest.raises(ProviderTimeoutError, match="deadline"):
        await client(server, timeout=0.5, deadline=1.0).request("GET", "/x")
    assert c.elapsed < 1.0 + SLACK


async def test_malformed_json_is_retried_then_typed(server: Server) -> None:
    server.script["/x"] = [Act(body=b'{"voices": [', headers={"Content-Type": "application/json"})]
    with pytest.raises(ProviderStatusError) as info:
        await client(server).request_json("GET", "/x", dict)
    assert info.value.code == "invalid_response"
    assert server.hits["/x"] == OPTS.max_retries + 1


async def test_keys_do_not_follow_a_redirect_to_another_origin(server: Server) -> None:
    other = Server()
    try:
        seen: list[str | None] = []
        other.script["/landing"] = [ok_json({"ok": 1})]
        server.script["/x"] = [
            Act(status=302, body=b"", headers={"Location": other.url + "/landing"})
        ]
        server.script["/y"] = [Act(status=302, body=b"", headers={"Location": "/z"})]
        server.script["/z"] = [ok_json({"ok": 2})]
        orig = other.httpd.RequestHandlerClass._serve  # type: ignore[attr-defined]

        def spy(handler: BaseHTTPRequestHandler) -> None:
            seen.append(handler.headers.get("xi-api-key"))
            orig(handler)

        other.httpd.RequestHandlerClass._serve = spy  # type: ignore[attr-defined]
        http = HttpClient("fault", server.url, headers={"xi-api-key": "k-123456789"}, options=OPTS)
        assert (await http.request("GET", "/x")).json() == {"ok": 1}
        assert seen == [None]
        assert (await http.request("GET", "/y")).json() == {"ok": 2}  # same origin: kept
    finally:
        other.close()


# --------------------------------------------------------------------------- ElevenLabs


def el(server: Server, **kw: Any) -> ElevenLabsVoice:
    return ElevenLabsVoice(api_key="el-fault-key-123456", base_url=server.url, options=OPTS, **kw)


TTS = "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM"


def el_answer(text: str, seconds: float = 0.3) -> Act:
    audio = b64(pcm_bytes(seconds, 16000))
    return ok_json({"audio_base64": audio, "alignment": alignment_for(text, seconds)})


async def test_elevenlabs_truncated_audio_is_retried(server: Server) -> None:
    audio = mp3_bytes(0.5)
    server.script[TTS] = [Act(kind="truncate", body=audio[:1000]), Act(body=audio)]
    out = await el(server, timestamps=False).synthesize("Hello.")
    assert out.audio == audio and server.hits[TTS] == 2


async def test_elevenlabs_truncated_audio_every_time_is_typed(server: Server) -> None:
    server.script[TTS] = [Act(kind="truncate", body=mp3_bytes(0.5)[:1000])]
    with Clock() as c, pytest.raises(ProviderConnectionError):
        await el(server, timestamps=False).synthesize("Hello.")
    assert c.elapsed < OPTS.deadline + SLACK


async def test_elevenlabs_timestamps_json_cut_by_a_dropped_connection_is_retried(
    server: Server,
) -> None:
    # no Content-Length: the body ends where the connection closed, so a cut JSON may be a drop
    path = TTS + "/with-timestamps"
    server.script[path] = [
        Act(kind="unframed", body=b'{"audio_base64": "AAAA", "alignm'),
        el_answer("Hello."),
    ]
    out = await el(server, output_format="pcm_16000").synthesize("Hello.")
    assert [w.text for w in out.words] == ["Hello"] and server.hits[path] == 2


async def test_elevenlabs_complete_but_cut_json_is_not_billed_again(server: Server) -> None:
    # the answer arrived whole (its Content-Length): the server sent it cut, and the
    # characters were billed; asking again would bill them again, and likely get the same
    path = TTS + "/with-timestamps"
    server.script[path] = [Act(body=b'{"audio_base64": "AAAA", "alignm'), el_answer("Hello.")]
    with pytest.raises(ProviderStatusError) as info:
        await el(server, output_format="pcm_16000").synthesize("Hello.")
    assert info.value.code == "invalid_response" and not info.value.retryable
    assert server.hits[path] == 1


async def test_elevenlabs_stream_broken_midway_is_typed(server: Server) -> None:
    line = json.dumps(
        {"audio_base64": b64(pcm_bytes(0.2, 16000)), "alignment": alignment_for("Hi.", 0.2)}
    )
    server.script[TTS + "/stream/with-timestamps"] = [
        Act(kind="stream-reset", body=(line + "\n").encode() * 2)
    ]
    with Clock() as c, pytest.raises(ProviderConnectionError):
        await el(server, output_format="pcm_16000", streamed=True).synthesize("Hi.")
    assert c.elapsed < OPTS.deadline + SLACK


async def test_elevenlabs_429_then_success_through_concurrency_cap(server: Server) -> None:
    server.script[TTS + "/with-timestamps"] = [
        ok_json({"detail": {"status": "too_many_concurrent_requests", "message": "busy"}}, 429),
        el_answer("Hi."),
    ]
    out = await el(server, output_format="pcm_16000", max_concurrency=1).synthesize("Hi.")
    assert out.duration == pytest.approx(0.3)


# --------------------------------------------------------------------------- D-ID


def did_ok(server: Server, result_path: str = "/result.mp4") -> None:
    server.script["/images"] = [ok_json({"url": "s3://bucket/img.png", "id": "img_1"}, 201)]
    server.script["/audios"] = [ok_json({"url": "s3://bucket/a.mp3", "id": "aud_1"}, 201)]
    server.script["/talks"] = [ok_json({"id": "tlk_1", "object": "talk", "status": "created"}, 201)]
    server.script["/talks/tlk_1"] = [
        ok_json({"id": "tlk_1", "status": "started"}),
        ok_json({"id": "tlk_1", "status": "done", "result_url": server.url + result_path}),
    ]


def did(server: Server, **kw: Any) -> DIDRenderer:
    kw.setdefault("poll_interval", 0.02)
    return DIDRenderer(api_key="user:did-fault-key", base_url=server.url, options=OPTS, **kw)


def photo() -> AvatarImage:
    return AvatarImage(data=png_bytes(), width=64, height=80)


def voice() -> VoiceOutput:
    return VoiceOutput(audio=mp3_bytes(0.5), format="mp3", sample_rate=44100, duration=0.5)


async def test_did_talk_that_never_finishes(server: Server, tmp_path: Path) -> None:
    did_ok(server)
    server.script["/talks/tlk_1"] = [ok_json({"id": "tlk_1", "status": "started"})]
    with Clock() as c, pytest.raises(ProviderTimeoutError, match="not finished"):
        await did(server, render_deadline=0.6).render(
            photo(), voice(), Timeline(), output=tmp_path / "v.mp4"
        )
    assert 0.6 <= c.elapsed < 0.6 + SLACK
    assert list(tmp_path.iterdir()) == []


async def test_did_truncated_video_leaves_no_file(server: Server, tmp_path: Path) -> None:
    did_ok(server)
    server.script["/result.mp4"] = [Act(kind="truncate", body=b"\x00" * 5000)]
    with Clock() as c, pytest.raises(ProviderConnectionError):
        await did(server).render(photo(), voice(), Timeline(), output=tmp_path / "v.mp4")
    assert c.elapsed < OPTS.deadline + SLACK
    assert list(tmp_path.iterdir()) == []


async def test_did_download_recovers_after_a_reset(server: Server, tmp_path: Path) -> None:
    did_ok(server)
    server.script["/result.mp4"] = [Act(kind="reset"), Act(body=b"video-bytes")]
    video = await did(server).render(photo(), voice(), Timeline(), output=tmp_path / "v.mp4")
    assert video.path.read_bytes() == b"video-bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


async def test_did_5xx_on_create_then_success(server: Server, tmp_path: Path) -> None:
    did_ok(server)
    server.script["/talks"].insert(
        0, ok_json({"kind": "InternalServerError", "description": "oops"}, 500)
    )
    server.script["/result.mp4"] = [Act(body=b"video")]
    await did(server).render(photo(), voice(), Timeline(), output=tmp_path / "v.mp4")
    assert server.hits["/talks"] == 2


async def test_did_empty_create_answer_does_not_make_another_talk(
    server: Server, tmp_path: Path
) -> None:
    # a 201 with Content-Length: 0 is complete, not cut short: POST /talks is not sent again
    did_ok(server)
    server.script["/talks"] = [Act(status=201, body=b"")]
    with pytest.raises(ProviderStatusError) as info:
        await did(server).render(photo(), voice(), Timeline(), output=tmp_path / "v.mp4")
    assert info.value.status == 201 and not info.value.retryable
    assert server.hits["/talks"] == 1


async def test_did_poll_survives_a_malformed_status(server: Server, tmp_path: Path) -> None:
    did_ok(server)
    server.script["/talks/tlk_1"].insert(0, Act(body=b"<html>gateway</html>"))
    server.script["/result.mp4"] = [Act(body=b"video")]
    await did(server).render(photo(), voice(), Timeline(), output=tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == b"video"


# --------------------------------------------------------------------------- AUTOMATIC1111


async def test_a1111_502_then_image(server: Server) -> None:
    info = {"seed": 5, "sd_model_name": "m"}
    server.script["/sdapi/v1/txt2img"] = [
        Act(status=502, body=b"Bad Gateway"),
        ok_json({"images": [b64(png_bytes())], "parameters": {}, "info": json.dumps(info)}),
    ]
    server.script["/sdapi/v1/progress"] = [Act(kind="reset")]  # progress failures are ignored
    img = await A1111ImageGenerator(server.url, options=OPTS, poll_interval=0.05).generate(
        AvatarPrompt("a face")
    )
    assert img.provenance["seed"] == 5 and server.hits["/sdapi/v1/txt2img"] == 2


async def test_a1111_slow_generation_ends_at_deadline(server: Server) -> None:
    server.script["/sdapi/v1/txt2img"] = [Act(kind="slow", delay=5.0)]
    server.script["/sdapi/v1/progress"] = [
        ok_json({"progress": 0.1, "state": {"sampling_step": 1, "sampling_steps": 30}})
    ]
    from dataclasses import replace

    g = A1111ImageGenerator(
        server.url, options=replace(OPTS, timeout=5.0, deadline=0.8), poll_interval=0.1
    )
    seen: list[tuple[int, int]] = []
    with Clock() as c, pytest.raises(ProviderTimeoutError):
        await g.generate(AvatarPrompt("a face"), progress=lambda d, t: seen.append((d, t)))
    assert c.elapsed < 1.0 + SLACK
    assert (1, 30) in seen  # progress was reported while it waited
