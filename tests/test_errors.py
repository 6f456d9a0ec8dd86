"""Every avatarkit error survives pickle and copy with its attributes (process pools, Ray)."""

from __future__ import annotations

import copy
import inspect
import pickle
import threading
from collections.abc import Callable
from typing import Any

import pytest

import avatarkit.errors as errors_module
from avatarkit.animation.viseme import UnknownPhonemeError
from avatarkit.errors import (
    AvatarKitError,
    MissingExtraError,
    QuotaExceededError,
    RateLimitError,
    StageError,
)
from avatarkit.imaging.portrait import NotRendererReadyError
from avatarkit.types import DialogueResponse, Response, UserInput

# One value per constructor parameter name; a new error class whose constructor takes a
# parameter not listed here fails test_every_error_class_is_covered until one is added.
SAMPLES: dict[str, Any] = {
    "message": "boom",
    "provider": "elevenlabs",
    "status": 429,
    "request_id": "req-42",
    "retryable": True,
    "code": "too_many_requests",
    "retry_after": 1.5,
    "env_var": "ELEVENLABS_API_KEY",
    "name": "elevnlabs",
    "known": ["espeak", "elevenlabs"],
    "suggestion": "elevenlabs",
    "what": "ElevenLabsVoice",
    "extra": "cloud",
    "missing": "httpx",
    "field": "text",
    "stage": "voice",
    "cause": RateLimitError("slow down", provider="elevenlabs", status=429, retry_after=2.0),
    "partial": Response(input=UserInput(text="hi"), dialogue=DialogueResponse(text="Hello")),
    "phoneme": "ʘ",
    "segment": "ʘ",
    "seeds_tried": [1, 2],
    "reasons": {1: ["eyes closed"], 2: ["no face"]},
    "role": "voice",
    "errors": [
        ("ElevenLabsVoice", RateLimitError("slow down", provider="elevenlabs", retry_after=2.0)),
        ("EspeakVoice", QuotaExceededError("out of credits", provider="openai", status=429)),
    ],
}

ERROR_CLASSES = sorted(
    (
        cls
        for cls in vars(errors_module).values()
        if isinstance(cls, type)
        and issubclass(cls, BaseException)
        and cls.__module__ == errors_module.__name__
    ),
    key=lambda c: c.__name__,
)
# Subclasses defined elsewhere in the package, with constructors of their own.
OTHER_CLASSES: list[type[AvatarKitError]] = [UnknownPhonemeError, NotRendererReadyError]


def _build(cls: type[BaseException]) -> BaseException:
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(cls).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        assert name in SAMPLES, f"add a sample value for {cls.__name__}'s parameter {name!r}"
        kwargs[name] = SAMPLES[name]
    return cls(**kwargs)


def _comparable(value: Any) -> Any:
    """``value`` with exceptions (which compare by identity) as their type and text."""
    if isinstance(value, BaseException):
        return (type(value), str(value))
    if isinstance(value, (list, tuple)):
        return [_comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    return value


def _same(a: BaseException, b: BaseException) -> None:
    assert type(b) is type(a)
    assert str(b) == str(a)
    assert b.args == a.args
    assert _comparable(vars(b)) == _comparable(vars(a))
    if a.__cause__ is None:
        assert b.__cause__ is None
    else:
        assert type(b.__cause__) is type(a.__cause__)
        assert str(b.__cause__) == str(a.__cause__)


def test_every_error_class_is_covered() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert names == set(errors_module.__all__)
    for cls in [*ERROR_CLASSES, *OTHER_CLASSES]:
        _build(cls)


COPIERS: dict[str, Callable[[Any], Any]] = {
    "pickle": lambda e: pickle.loads(pickle.dumps(e)),
    "pickle-protocol-2": lambda e: pickle.loads(pickle.dumps(e, protocol=2)),
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
}


@pytest.mark.parametrize("how", sorted(COPIERS))
@pytest.mark.parametrize("cls", [*ERROR_CLASSES, *OTHER_CLASSES], ids=lambda c: c.__name__)
def test_error_round_trips_with_its_attributes(cls: type[BaseException], how: str) -> None:
    original = _build(cls)
    again = COPIERS[how](original)
    _same(original, again)


def test_provider_error_keeps_every_attribute_through_pickle() -> None:
    err = RateLimitError(
        "slow down", provider="openai", status=429, request_id="r1", code="rate", retry_after=3.0
    )
    again = pickle.loads(pickle.dumps(err))
    assert (again.provider, again.status, again.request_id, again.code) == (
        "openai",
        429,
        "r1",
        "rate",
    )
    assert again.retry_after == 3.0 and again.retryable is True
    assert again.message == err.message and str(again) == str(err)


def test_stage_error_keeps_stage_partial_and_cause() -> None:
    partial = Response(input=UserInput(text="hi"), dialogue=DialogueResponse(text="Hello"))
    err = StageError("voice", RuntimeError("tts down"), partial=partial)
    err.add_note("while speaking")
    again = pickle.loads(pickle.dumps(err))
    assert again.stage == "voice" and again.partial == partial
    assert isinstance(again.__cause__, RuntimeError) and str(again.__cause__) == "tts down"
    assert again.__notes__ == ["while speaking"]
    assert str(again) == "stage 'voice' failed: tts down"


class _Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def test_stage_error_with_an_unpicklable_cause_still_pickles() -> None:
    err = StageError("render", _Unpicklable())
    again = pickle.loads(pickle.dumps(err))
    assert again.stage == "render" and again.__cause__ is None
    assert str(again) == "stage 'render' failed: holds a lock"


def test_a_stage_error_whose_cause_has_no_message_names_the_cause() -> None:
    # an adapter's asyncio.wait_for raises TimeoutError() with no text
    assert str(StageError("voice", TimeoutError())) == "stage 'voice' failed: TimeoutError"
    assert str(StageError("dialogue", NotImplementedError())) == (
        "stage 'dialogue' failed: NotImplementedError"
    )


def test_a_missing_extra_error_reads_right_for_one_or_several_packages() -> None:
    one = MissingExtraError("provider 'openai'", "openai", "openai")
    assert str(one) == (
        "provider 'openai' needs the \"openai\" extra (openai is not installed): "
        'pip install "avatarkit[openai]"'
    )
    several = MissingExtraError("provider 'transformers'", "nlp", "torch, transformers")
    assert "(torch, transformers are not installed)" in str(several)
