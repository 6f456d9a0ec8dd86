"""Who the avatar is: name, backstory, speaking style, picture prompt and knowledge file.

A persona becomes the chat model's system prompt (:meth:`Persona.system_prompt`) and fills the
local responder's templates (``{name}``, ``{backstory}``...). Keep it in YAML beside your bot::

    name: Ada
    backstory: A museum guide who loves early computers.
    style: warm, curious, short sentences
    avatar_prompt: a friendly woman in her thirties, portrait, soft light
    knowledge: ada_faq.md        # relative to this YAML file
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from avatarkit.errors import ConfigurationError
from avatarkit.types import AvatarPrompt, Emotion

__all__ = ["DEFAULT_PERSONA", "PAST_NOTE", "USER_FACTS", "Persona"]

USER_FACTS = "What you know about the user so far"
"""How the system prompt introduces the slots the conversation has filled (``key: value; ...``)."""

PAST_NOTE = "The date and time the user gave have already passed"
"""How the system prompt says that the slots' date (and time) lie in the past, followed by
`` (it is now YYYY-MM-DD HH:MM).``"""


class Persona(BaseModel):
    """The avatar's character, as the dialogue layer uses it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="Ava", min_length=1, max_length=80)
    """What the avatar calls itself."""
    backstory: str = (
        "I am a friendly virtual assistant with an animated face and a voice of my own. "
        "I like to help people and to have a good conversation."
    )
    """Who the avatar is, in its own words or in the third person."""
    style: str = "warm, clear and concise; short sentences that sound good spoken aloud"
    """How it talks; goes into the system prompt."""
    avatar_prompt: str = "a friendly person, portrait, looking at the camera"
    """The prompt its picture is made from (see :class:`~avatarkit.types.AvatarPrompt`)."""
    knowledge: Path | None = None
    """A Q&A file (YAML or Markdown) the local responder answers from."""
    language: str = "en"
    """Language it answers in (BCP-47)."""
    instructions: str = ""
    """Extra rules appended to the system prompt (topics to avoid, the company's name...)."""
    emotion_tags: bool = False
    """Ask the chat model to mark feelings with tags like ``[happy]`` (stripped before speech)."""
    max_reply_sentences: int = Field(default=3, ge=1, le=50)
    """Ask for at most this many sentences per reply (spoken replies should be short)."""

    def __init__(self, name: str | None = None, /, **data: Any) -> None:
        if name is not None:
            data["name"] = name
        super().__init__(**data)

    @field_validator("avatar_prompt", mode="before")
    @classmethod
    def _prompt_to_str(cls, value: Any) -> Any:
        return value.prompt if isinstance(value, AvatarPrompt) else value

    def system_prompt(self) -> str:
        """The chat model's system prompt for this persona."""
        parts = [
            f"You are {self.name}, an animated avatar who talks with people out loud.",
            f"Backstory: {self.backstory.strip()}",
            f"Speaking style: {self.style.strip().rstrip('.')}.",
            f"Answer in at most {self.max_reply_sentences} sentences of plain spoken text: "
            "no markdown, no lists, no emoji, no stage directions.",
        ]
        if self.language and not self.language.lower().startswith("en"):
            parts.append(f"Always answer in the language with tag {self.language!r}.")
        if self.emotion_tags:
            tags = " ".join(f"[{e.value}]" for e in Emotion)
            parts.append(
                f"You may start a sentence with one emotion tag from: {tags}. "
                "Use a tag only when the feeling changes."
            )
        if self.instructions.strip():
            parts.append(self.instructions.strip())
        return "\n".join(parts)

    def template_fields(self) -> dict[str, str]:
        """Values for ``{placeholders}`` in knowledge-file answers."""
        return {
            "name": self.name,
            "backstory": self.backstory.strip(),
            "style": self.style.strip(),
            "language": self.language,
        }

    @classmethod
    def from_yaml(cls, path: str | Path) -> Persona:
        """Load a persona from a YAML file; a relative ``knowledge`` path is taken from its folder.

        Raises:
            ConfigurationError: the file is missing, is not YAML, or holds unknown or invalid
                fields.
        """
        file = Path(path).expanduser()
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigurationError(f"persona file {file} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"persona file {file} is not valid YAML: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigurationError(f"persona file {file} must hold a mapping of fields")
        knowledge = data.get("knowledge")
        if isinstance(knowledge, str) and knowledge and not Path(knowledge).is_absolute():
            data["knowledge"] = (file.parent / knowledge).resolve()
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigurationError(f"persona file {file} is invalid:\n{exc}") from exc


DEFAULT_PERSONA = Persona()
"""The persona used when none is given."""
