"""The ``local`` provider: every role offline, with no keys, on the CPU.

Each factory imports its domain module only when a spec selects it, so listing providers stays
cheap. The local voice is eSpeak NG (the ``espeak`` provider), reached through the registry.
"""

from __future__ import annotations

import importlib
from typing import Any

from avatarkit.registry import Factory, Provider, default_registry

__all__ = ["provider"]


def _lazy(target: str) -> Factory:
    module, _, attr = target.partition(":")

    def factory(name: str | None = None, **options: Any) -> Any:
        obj = getattr(importlib.import_module(module), attr)
        return obj(name, **options) if attr.startswith("make_") else obj(**options)

    factory.__doc__ = f"Build {target} (imported on first use)."
    return factory


def _voice(name: str | None = None, **options: Any) -> Any:
    spec = f"espeak:{name}" if name else "espeak"
    return default_registry.create("voice", spec, **options)


provider = Provider(
    "local",
    preprocessor=_lazy("avatarkit.nlp.preprocess:make_preprocessor"),
    intent=_lazy("avatarkit.nlp.intent:make_intent"),
    sentiment=_lazy("avatarkit.nlp.sentiment:make_sentiment"),
    chat=_lazy("avatarkit.dialogue.local_chat:make_chat"),
    voice=_voice,
    image=_lazy("avatarkit.render.procedural:ProceduralImageGenerator"),
    renderer=_lazy("avatarkit.render.local:LocalRenderer"),
    expression=_lazy("avatarkit.animation.expression:LocalExpressionPolicy"),
    description="Offline defaults: eSpeak NG voice, procedural face renderer, local NLP/dialogue",
    offline=True,
)
"""The ``local`` provider (spec ``"local"`` for any role)."""
