"""The ``openai`` provider: chat (official SDK), speech and images (plain HTTP).

Spec examples: ``"openai:gpt-4o-mini"`` (chat); ``"openai:alloy"`` (a voice), ``"openai:tts-1"``
(a speech model, voice alloy) or ``"openai:tts-1-hd:nova"`` (model and voice) for speech;
``"openai:gpt-image-1"`` (image). Any OpenAI-compatible server works through ``base_url=``.
"""

from __future__ import annotations

from avatarkit.registry import Provider, lazy_factory

__all__ = ["provider"]

provider = Provider(
    "openai",
    chat=lazy_factory("avatarkit.providers.openai_chat:make_chat"),
    voice=lazy_factory("avatarkit.providers.openai_media:make_voice"),
    image=lazy_factory("avatarkit.providers.openai_media:make_image"),
    description="OpenAI chat, speech and images; any OpenAI-compatible server via base_url",
    extra="openai",
    requires=("openai",),
    env_key="OPENAI_API_KEY",
)
"""The ``openai`` provider."""
