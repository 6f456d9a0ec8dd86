"""Turn metrics as OpenTelemetry spans, collected with the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from avatarkit.bot import AvatarBot
from avatarkit.testing import FakeChatModel, FakeRenderer, FakeVoice

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")


@pytest.fixture(scope="module")
def exporter() -> Iterator[object]:
    from opentelemetry import trace

    memory = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    yield memory


async def test_one_span_per_provider_call_and_stage_with_cache_hits(
    exporter: object, tmp_path: Path
) -> None:
    memory: in_memory.InMemorySpanExporter = exporter  # type: ignore[assignment]
    bot = AvatarBot(
        chat=FakeChatModel("Nice to meet you."), voice=FakeVoice(), renderer=FakeRenderer(),
        image="test", preprocessor="test", intent="test", sentiment="test", expression="test",
        cache=tmp_path,
    )  # fmt: skip
    first = await bot.respond("Hello!", session_id="s1")
    memory.clear()
    second = await bot.respond("Hello!", session_id="s1")
    spans = {s.name: s for s in memory.get_finished_spans()}

    # Provider calls: one span each, named role.method, with the backend's class.
    ours = ("avatarkit.stage", "avatarkit.cache", "avatarkit.turn")
    calls = {n: s for n, s in spans.items() if not n.startswith(ours)}
    assert set(calls) == {f"avatarkit.{k}" for k in second.metrics.provider_calls}
    chat = next(s for n, s in calls.items() if n.startswith("avatarkit.chat."))
    assert chat.attributes["avatarkit.role"] == "chat"
    assert chat.attributes["avatarkit.backend"] == "FakeChatModel"
    # The reply was cached by the first turn: no voice or render call, two cache hits.
    assert "avatarkit.voice.synthesize" not in spans and "avatarkit.renderer.render" not in spans
    assert spans["avatarkit.cache.voice"].attributes["avatarkit.cache.hit"] is True
    assert spans["avatarkit.cache.renderer"].attributes["avatarkit.backend"] == "FakeRenderer"
    assert first.metrics.provider_calls["voice.synthesize"] == 1

    # One span per stage, all children of the turn span, which carries the turn's metrics.
    turn = spans["avatarkit.turn"]
    stages = [s for s in spans.values() if s.name.startswith("avatarkit.stage.")]
    marks = {"first_token", "first_audio", "first_video"}  # times to first result, not stages
    assert {s.attributes["avatarkit.stage"] for s in stages} == set(
        second.metrics.durations
    ) - marks
    d = second.metrics.durations
    assert 0 < d["first_token"] < d["first_audio"] <= d["first_video"] <= second.metrics.total
    assert all(s.parent is not None and s.parent.span_id == turn.context.span_id for s in stages)
    assert turn.attributes["avatarkit.session"] == "s1"
    assert turn.attributes["avatarkit.cache.hits"] == second.metrics.cache_hits == 3
    assert turn.attributes["avatarkit.provider_calls"] == sum(
        second.metrics.provider_calls.values()
    )
    assert turn.attributes["avatarkit.duration.render"] == second.metrics.durations["render"]
