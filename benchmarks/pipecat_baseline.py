"""Pipecat in the streaming-latency scenario: the baseline for streaming_latency.py.

Runs under Pipecat's own interpreter (it pins versions avatarkit does not use)::

    python3 -m venv /tmp/pcvenv && /tmp/pcvenv/bin/pip install pipecat-ai==1.14.0
    /tmp/pcvenv/bin/python benchmarks/pipecat_baseline.py

A pipeline ``[FakeLLM, FakeTTS, Sink]`` run by a ``PipelineWorker`` and a ``WorkerRunner``
(Pipecat 1.14's names for the older ``PipelineTask``/``PipelineRunner``, which are deprecated
aliases): ``FakeLLM`` is an ``LLMService`` that answers an ``LLMContextFrame`` with the
scenario's tokens as ``LLMTextFrame``s; ``FakeTTS`` is a ``TTSService`` whose ``run_tts`` sleeps
the voice latency and yields one ``TTSAudioRawFrame``; text reaches it through Pipecat's default
sentence aggregation (``SimpleTextAggregator``, ``TextAggregationMode.SENTENCE``). Prints JSON:

- ``overhead``: first audio frame at the sink minus (first sentence's last token + 150 ms),
  over 20 turns of one running pipeline;
- ``turn_cost``/``turn_cpu``: wall and CPU time of a whole turn with zero-latency fakes
  (context frame in, third audio frame out);
- ``startup``: building the pipeline and starting it until ``on_pipeline_started``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _latency_scenario import (
    RUNS,
    VOICE_LATENCY,
    TokenClock,
    summary,
    tone_pcm,
)

os.environ.setdefault("LOGURU_LEVEL", "WARNING")

from loguru import logger

logger.remove()
logger.add(sys.stderr, level="WARNING")
logging.disable(logging.INFO)

import pipecat  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.services.llm_service import LLMService  # noqa: E402
from pipecat.services.settings import LLMSettings, TTSSettings  # noqa: E402
from pipecat.services.tts_service import TTSService  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

SENTENCES = 3


class FakeLLM(LLMService):  # type: ignore[misc]
    """Streams the scenario's tokens for every LLMContextFrame."""

    def __init__(self, clock: TokenClock, **kwargs: Any) -> None:
        fields = ("model", "system_instruction", "temperature", "max_tokens", "top_p", "top_k",
                  "frequency_penalty", "presence_penalty", "seed", "filter_incomplete_user_turns",
                  "user_turn_completion_config")  # fmt: skip
        super().__init__(settings=LLMSettings(**dict.fromkeys(fields)), **kwargs)
        self.clock = clock

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            async for token in self.clock.tokens():
                await self._push_llm_text(token)
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


class FakeTTS(TTSService):  # type: ignore[misc]
    """Answers each sentence after the voice latency with one audio frame."""

    def __init__(self, latency: float, **kwargs: Any) -> None:
        settings = TTSSettings(model=None, voice=None, language=None)
        super().__init__(sample_rate=16_000, settings=settings, **kwargs)
        self.latency = latency
        self.texts: list[str] = []

    def can_generate_metrics(self) -> bool:
        return False

    async def run_tts(self, text: str, context_id: str) -> Any:
        self.texts.append(text)
        if self.latency:
            await asyncio.sleep(self.latency)
        yield TTSAudioRawFrame(
            audio=tone_pcm(text), sample_rate=16_000, num_channels=1, context_id=context_id
        )


class Sink(FrameProcessor):  # type: ignore[misc]
    """Notes when audio frames arrive at the end of the pipeline."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_times: list[float] = []
        self.turn_done = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self.audio_times.append(time.perf_counter())
            if len(self.audio_times) == SENTENCES:
                self.turn_done.set()
        await self.push_frame(frame, direction)


class Harness:
    """One running pipeline; ``turn()`` sends a context and waits for the three sentences."""

    def __init__(self, *, first: float, gap: float, voice: float) -> None:
        self.clock = TokenClock(first=first, gap=gap)
        self.llm = FakeLLM(self.clock)
        self.tts = FakeTTS(voice)
        self.sink = Sink()
        self.worker = PipelineWorker(
            Pipeline([self.llm, self.tts, self.sink]),
            params=PipelineParams(enable_metrics=False),
            cancel_on_idle_timeout=False,
        )
        self.started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")  # type: ignore[misc]
        async def _started(worker: Any, frame: Any) -> None:
            self.started.set()

        self.runner = WorkerRunner(handle_sigint=False)
        self._run: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        await self.runner.add_workers(self.worker)
        self._run = asyncio.create_task(self.runner.run())
        await asyncio.wait_for(self.started.wait(), 10)

    async def turn(self) -> list[float]:
        self.sink.audio_times = []
        self.sink.turn_done.clear()
        context = LLMContext(messages=[{"role": "user", "content": "Plan my weekend trip."}])
        await self.worker.queue_frame(LLMContextFrame(context=context))
        await asyncio.wait_for(self.sink.turn_done.wait(), 10)
        return list(self.sink.audio_times)

    async def stop(self) -> None:
        await self.worker.queue_frame(EndFrame())
        if self._run is not None:
            await asyncio.wait_for(self._run, 30)


async def main() -> dict[str, Any]:
    # Latency above the ideal, one pipeline, 20 turns (plus one warm-up turn).
    h = Harness(first=0.200, gap=0.033, voice=VOICE_LATENCY)
    await h.start()
    await h.turn()
    overheads = []
    for _ in range(RUNS):
        audio = await h.turn()
        overheads.append(audio[0] - h.clock.ideal_first_audio)
    spoken = list(h.tts.texts[-SENTENCES:])
    await h.stop()

    # Framework cost: zero-latency fakes; startup and per-turn frame passing.
    startups, turns, cpu = [], [], []
    for i in range(5):
        t0 = time.perf_counter()
        z = Harness(first=0.0, gap=0.0, voice=0.0)
        await z.start()
        startups.append(time.perf_counter() - t0)
        await z.turn()  # warm-up
        for _ in range(RUNS if i == 0 else 2):
            t0, c0 = time.perf_counter(), time.process_time()
            await z.turn()
            turns.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        await z.stop()
    return {
        "framework": f"pipecat {pipecat.__version__}",
        "sentences_spoken": spoken,
        "overhead": summary(overheads),
        "turn_cost": summary(turns),
        "turn_cpu": summary(cpu),
        "startup": summary(startups),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
