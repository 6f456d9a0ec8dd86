"""Shared fixtures for the cloud adapter tests: realistic media bytes and a recording transport."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from PIL import Image, PngImagePlugin

from avatarkit._http import ConnectOptions

FAST = ConnectOptions(
    timeout=2.0, connect_timeout=1.0, max_retries=3, backoff_initial=0.01, backoff_max=0.05,
    deadline=5.0,
)  # fmt: skip


def tone(seconds: float, rate: int) -> np.ndarray:
    n = round(seconds * rate)
    return (0.3 * np.sin(np.arange(n) * 2 * np.pi * 220 / rate)).astype(np.float32)


def mp3_bytes(seconds: float, rate: int = 44100) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, rate), rate, format="MP3")
    return buf.getvalue()


def pcm_bytes(seconds: float, rate: int) -> bytes:
    return (tone(seconds, rate) * 32767).astype("<i2").tobytes()


def png_bytes(width: int = 64, height: int = 80, parameters: str | None = None) -> bytes:
    im = Image.new("RGB", (width, height), (200, 150, 120))
    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def alignment_for(text: str, seconds: float) -> dict[str, list[Any]]:
    """A character alignment spreading ``text`` evenly over ``seconds``."""
    step = seconds / max(len(text), 1)
    return {
        "characters": list(text),
        "character_start_times_seconds": [round(i * step, 4) for i in range(len(text))],
        "character_end_times_seconds": [round((i + 1) * step, 4) for i in range(len(text))],
    }


Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@dataclass
class Recorder:
    """An httpx.MockTransport handler that records every request it answers."""

    handler: Handler
    requests: list[httpx.Request] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        result = self.handler(request)
        if not isinstance(result, httpx.Response):
            result = await result
        return result

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def json(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


def multipart_fields(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    """Parse a multipart/form-data request body into {name: (filename, content)}."""
    ctype = request.headers["content-type"]
    assert ctype.startswith("multipart/form-data; boundary=")
    boundary = ctype.split("boundary=")[1].encode()
    out: dict[str, tuple[str | None, bytes]] = {}
    for part in request.content.split(b"--" + boundary):
        if b"\r\n\r\n" not in part:
            continue
        head, _, body = part.partition(b"\r\n\r\n")
        disp = [h for h in head.decode().split("\r\n") if h.lower().startswith("content-disposi")]
        if not disp:
            continue
        attrs = dict(a.strip().split("=", 1) for a in disp[0].split(";")[1:] if "=" in a)
        name = attrs["name"].strip('"')
        filename = attrs.get("filename", "").strip('"') or None
        out[name] = (filename, body[:-2] if body.endswith(b"\r\n") else body)
    return out


@dataclass
class Playback:
    """What :func:`play` saw: chunks received, and at which one its own wait was cancelled."""

    chunks: int = 0
    cancelled_at: list[int] = field(default_factory=list)


async def play(stream: AsyncIterator[Any], playback: Playback) -> None:
    """Consume ``stream`` as a player would, 0.15 s a chunk; the stream's error propagates."""
    import asyncio

    async for _ in stream:
        playback.chunks += 1
        try:
            await asyncio.sleep(0.15)  # the app plays the chunk
        except asyncio.CancelledError:
            playback.cancelled_at.append(playback.chunks)
            raise
