"""Named prompt presets for avatar pictures, such as the seed's fantasy portrait."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from avatarkit.errors import InputValidationError
from avatarkit.types import AvatarPrompt

__all__ = ["PRESETS", "PromptPreset", "get_preset"]

LONG_NEGATIVE = (
    "(worst quality, low quality:1.4), lowres, blurry, out of focus, jpeg artifacts, "
    "noise, grainy, oversaturated, deformed, disfigured, distorted face, asymmetric eyes, "
    "cross-eyed, lazy eye, bad anatomy, bad proportions, gross proportions, malformed, "
    "mutated, mutation, ugly, poorly drawn face, poorly drawn hands, extra fingers, "
    "fused fingers, too many fingers, missing fingers, extra limbs, missing limbs, "
    "extra arms, extra legs, long neck, cloned face, duplicate, two heads, multiple people, "
    "(profile, side view, looking away:1.2), open mouth, teeth, tongue, hand on face, "
    "hair over face, mask, sunglasses, cropped, out of frame, cut off, watermark, signature, "
    "text, logo, username, frame, border, cartoon, 3d render, doll, plastic skin"
)
"""The kind of long negative prompt web UI users paste under every portrait."""


@dataclass(frozen=True)
class PromptPreset:
    """A ready prompt, negative prompt and settings; ``{token}`` stands for a personal token."""

    name: str
    prompt: str
    negative: str
    steps: int = 30
    guidance: float = 7.0
    width: int = 512
    height: int = 512
    sampler: str = "DPM++ 2M Karras"
    description: str = ""
    default_token: str = "a"
    """Fills ``{token}`` when no trigger token is given (``a person``)."""

    def to_prompt(
        self, token: str | None = None, *, seed: int | None = None, **overrides: Any
    ) -> AvatarPrompt:
        """The preset as an :class:`~avatarkit.AvatarPrompt`.

        Args:
            token: Your embedding's or DreamBooth model's trigger word (``bennycheung``);
                the preset's generic subject when None.
            seed: Fixed seed, or None for a random one.
            **overrides: Any other AvatarPrompt field (``steps``, ``width``…).
        """
        word = (token or self.default_token).strip()
        if not word:
            raise InputValidationError("the trigger token must not be empty", field="token")
        fields: dict[str, Any] = {
            "prompt": self.prompt.format(token=word),
            "negative": self.negative,
            "seed": seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "style": {"sampler": self.sampler, "preset": self.name},
        }
        fields.update(overrides)
        return AvatarPrompt(**fields)


PRESETS: dict[str, PromptPreset] = {
    p.name: p
    for p in [
        PromptPreset(
            name="fantasy-portrait",
            prompt=(
                "portrait of {token} person as a fantasy character, head and shoulders, "
                "(facing the camera, looking at the viewer:1.2), symmetrical face, "
                "neutral expression, mouth closed, detailed eyes, elegant leather and silver "
                "armor, flowing cloak, soft rim light, misty enchanted forest background, "
                "highly detailed, intricate, digital painting, concept art, smooth, "
                "(sharp focus:1.1), cinematic lighting, 8k"
            ),
            negative=LONG_NEGATIVE,
            description="The seed's avatar: you, as a fantasy character, ready to animate.",
        ),
        PromptPreset(
            name="studio-portrait",
            prompt=(
                "professional studio headshot of {token} person, (facing the camera:1.2), "
                "neutral expression, mouth closed, soft box lighting, plain grey background, "
                "85mm lens, photorealistic, detailed skin, sharp focus"
            ),
            negative=LONG_NEGATIVE,
            description="A photoreal head-and-shoulders shot (what SadTalker-like renderers want).",
        ),
    ]
}
"""The presets by name."""


def get_preset(name: str) -> PromptPreset:
    """The preset called ``name``.

    Raises:
        InputValidationError: no such preset (with a suggestion when one is close).
    """
    try:
        return PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InputValidationError(
            f"unknown preset {name!r}.{hint} Presets: {', '.join(sorted(PRESETS))}",
            field="preset",
        ) from None
