"""avatarkit: animated AI avatars that answer in their own voice, lips in sync.

```python
import avatarkit as ak

bot = ak.AvatarBot()                      # local defaults: offline, no keys
reply = bot.respond_sync("Hi! Who are you?")
reply.save("out/")                        # speech.wav, video.mp4, avatar.png, timeline.json
```

Names are imported on first use, so ``import avatarkit`` stays fast and pulls in no heavy stack.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from avatarkit.errors import (
    AllBackendsFailedError,
    AuthenticationError,
    AvatarKitError,
    CancelledByUser,
    ConfigurationError,
    ContentModerationError,
    InputValidationError,
    MissingExtraError,
    MissingKeyError,
    OverloadedError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    StageError,
    UnknownProviderError,
)

if TYPE_CHECKING:
    from avatarkit.bot import AvatarBot
    from avatarkit.config import Settings
    from avatarkit.dialogue.manager import DialogueManager, Persona
    from avatarkit.registry import Provider, create
    from avatarkit.types import (
        AvatarImage,
        AvatarPose,
        AvatarPrompt,
        AvatarVideo,
        ChatMessage,
        DialogueResponse,
        DialogueState,
        Emotion,
        FacialExpression,
        Intent,
        IntentPrediction,
        LipSync,
        PhonemeTiming,
        ProcessedText,
        Response,
        Sentiment,
        Timeline,
        UserInput,
        VisemeCue,
        VoiceOutput,
        WordTiming,
    )

try:
    __version__ = version("avatarkit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

_LAZY: dict[str, str] = {
    "AvatarBot": "avatarkit.bot",
    "Settings": "avatarkit.config",
    "DialogueManager": "avatarkit.dialogue.manager",
    "Persona": "avatarkit.dialogue.manager",
    "Provider": "avatarkit.registry",
    "create": "avatarkit.registry",
    **{
        name: "avatarkit.types"
        for name in (
            "AvatarImage",
            "AvatarPose",
            "AvatarPrompt",
            "AvatarVideo",
            "ChatMessage",
            "DialogueResponse",
            "DialogueState",
            "Emotion",
            "FacialExpression",
            "Intent",
            "IntentPrediction",
            "LipSync",
            "PhonemeTiming",
            "ProcessedText",
            "Response",
            "Sentiment",
            "Timeline",
            "UserInput",
            "VisemeCue",
            "VoiceOutput",
            "WordTiming",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'avatarkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AllBackendsFailedError",
    "AuthenticationError",
    "AvatarBot",
    "AvatarImage",
    "AvatarKitError",
    "AvatarPose",
    "AvatarPrompt",
    "AvatarVideo",
    "CancelledByUser",
    "ChatMessage",
    "ConfigurationError",
    "ContentModerationError",
    "DialogueManager",
    "DialogueResponse",
    "DialogueState",
    "Emotion",
    "FacialExpression",
    "InputValidationError",
    "Intent",
    "IntentPrediction",
    "LipSync",
    "MissingExtraError",
    "MissingKeyError",
    "OverloadedError",
    "Persona",
    "PhonemeTiming",
    "ProcessedText",
    "Provider",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "QuotaExceededError",
    "RateLimitError",
    "Response",
    "Sentiment",
    "Settings",
    "StageError",
    "Timeline",
    "UnknownProviderError",
    "UserInput",
    "VisemeCue",
    "VoiceOutput",
    "WordTiming",
    "__version__",
    "create",
]
