"""The ``local`` provider: every role offline, with no keys, on the CPU.

Each factory imports its domain module only when a spec selects it, so listing providers stays
cheap. The local voice is eSpeak NG (the ``espeak`` provider), reached through the registry.
"""

from __future__ import annotations

from typing import Any

from avatarkit.registry import Provider, default_registry, lazy_factory

__all__ = ["provider"]


def _voice(name: str | None = None, **options: Any) -> Any:
    spec = f"espeak:{name}" if name else "espeak"
    return default_registry.create("voice", spec, **options)


provider = Provider(
    "local",
    preprocessor=lazy_factory("avatarkit.nlp.preprocess:make_preprocessor"),
    intent=lazy_factory("avatarkit.nlp.intent:make_intent"),
    sentiment=lazy_factory("avatarkit.nlp.sentiment:make_sentiment"),
    chat=lazy_factory("avatarkit.dialogue.local_chat:make_chat"),
    voice=_voice,
    image=lazy_factory("avatarkit.render.procedural:ProceduralImageGenerator"),
    renderer=lazy_factory("avatarkit.render.local:LocalRenderer"),
    expression=lazy_factory("avatarkit.animation.expression:LocalExpressionPolicy"),
    description="Offline defaults: eSpeak NG voice, procedural face renderer, local NLP/dialogue",
    offline=True,
)
"""The ``local`` provider (spec ``"local"`` for any role)."""
