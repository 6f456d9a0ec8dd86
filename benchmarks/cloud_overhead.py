"""What avatarkit's cloud layer adds on top of the network, measured side by side in one run.

1. Per-request overhead of HttpClient (retries, deadline, error mapping, header hook) against a
   bare httpx.AsyncClient, both talking to the same local HTTP server on 127.0.0.1.
2. Client-side work of ElevenLabsVoice.synthesize for long text (sentence split, JSON decode,
   alignment → word timings, audio joining) with the service replaced by an in-memory transport.

    python benchmarks/cloud_overhead.py
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np

from avatarkit._http import HttpClient
from avatarkit.providers.elevenlabs import ElevenLabsVoice

N = 300


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # no keep-alive: avoids delayed-ACK stalls
        self.end_headers()
        self.wfile.write(body)


async def timed(fn, n: int = N) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


async def http_overhead() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        async with httpx.AsyncClient(base_url=url) as raw:
            ours = HttpClient("bench", url, headers={"xi-api-key": "bench-key-123456"})

            async def bare() -> None:
                (await raw.get("/x")).raise_for_status()

            async def layered() -> None:
                await ours.request("GET", "/x")

            await timed(bare, 20)
            await timed(layered, 20)
            a_runs, b_runs = [], []
            for _ in range(6):  # interleaved, so load on the shared machine hits both alike
                a_runs.append(await timed(bare, N // 6))
                b_runs.append(await timed(layered, N // 6))
            a, b = statistics.median(a_runs), statistics.median(b_runs)
            await ours.aclose()
    finally:
        httpd.shutdown()
        httpd.server_close()
    print(f"GET on 127.0.0.1, median of {N}: httpx {a:.2f} ms, HttpClient {b:.2f} ms, "
          f"ratio {b / a:.2f}")  # fmt: skip


async def elevenlabs_client_side() -> None:
    sentence = "The quick brown fox jumps over the lazy dog near the river bank. "
    text = (sentence * 400).strip()  # about 26,000 characters: three requests at 10,000
    pcm = (np.zeros(16000 * 20, dtype="<i2")).tobytes()  # 20 s of PCM per request

    def handler(request: httpx.Request) -> httpx.Response:
        chunk = json.loads(request.content)["text"]
        step = 20.0 / len(chunk)
        import base64

        return httpx.Response(200, json={
            "audio_base64": base64.b64encode(pcm).decode(),
            "alignment": {
                "characters": list(chunk),
                "character_start_times_seconds": [i * step for i in range(len(chunk))],
                "character_end_times_seconds": [(i + 1) * step for i in range(len(chunk))],
            },
        })  # fmt: skip

    voice = ElevenLabsVoice(api_key="bench-key-123456", output_format="pcm_16000",
                            transport=httpx.MockTransport(handler))  # fmt: skip
    await voice.synthesize(sentence)
    t0 = time.perf_counter()
    out = await voice.synthesize(text)
    dt = time.perf_counter() - t0
    print(f"ElevenLabs client side for {len(text):,} chars ({voice.estimate_cost(text).requests} "
          f"requests, {len(out.words):,} words, {out.duration:.0f} s audio): {dt * 1000:.0f} ms, "
          f"{dt / out.duration * 1000:.1f} ms per second of speech")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(http_overhead())
    asyncio.run(elevenlabs_client_side())
