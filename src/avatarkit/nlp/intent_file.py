"""The intent file: intents with descriptions, examples, keywords and regex patterns.

Written in YAML (``intents: {name: {description, keywords, patterns, exclude, examples}}``) or
built in Python (``IntentFile(intents=[IntentSpec(...)])``). ``load_intents()`` with no argument
returns the default file shipped in ``avatarkit/data/intents.yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from avatarkit.errors import ConfigurationError
from avatarkit.types import OUT_OF_SCOPE

__all__ = ["OUT_OF_SCOPE", "IntentFile", "IntentSpec", "load_intents"]

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class IntentSpec(BaseModel):
    """One intent: what it means and how to recognise it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    """Identifier: lowercase letters, digits and underscores (``book_appointment``)."""
    description: str = ""
    """One sentence, shown to the LLM classifier."""
    examples: tuple[str, ...] = ()
    """Training utterances for the statistical and embedding classifiers."""
    keywords: tuple[str, ...] = ()
    """Words or phrases matched whole and case-insensitively (also by stem) by the rules."""
    patterns: tuple[str, ...] = ()
    """Python regular expressions searched case-insensitively by the rules."""
    exclude: tuple[str, ...] = ()
    """Python regular expressions that rule the intent out: where one matches a text or a
    clause (case-insensitively, typographic quotes read as ASCII), the rules, TF-IDF and
    embedding classifiers score it 0."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"intent name {v!r} must match {_NAME_RE.pattern}")
        return v

    @field_validator("examples", "keywords")
    @classmethod
    def _strip(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(s.strip() for s in v if s.strip())

    @field_validator("patterns", "exclude")
    @classmethod
    def _check_patterns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"bad regex {p!r}: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _check_oos(self) -> IntentSpec:
        if self.name == OUT_OF_SCOPE and (self.keywords or self.patterns or self.exclude):
            raise ValueError(
                f"{OUT_OF_SCOPE!r} takes examples only, no keywords, patterns or exclude"
            )
        return self


class IntentFile(BaseModel):
    """A set of intents; ``out_of_scope`` examples (optional) teach classifiers what to reject."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    language: str = "en"
    """Language of the examples and keywords (for stemming)."""
    intents: tuple[IntentSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_unique(self) -> IntentFile:
        names = [i.name for i in self.intents]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"intent names must be unique; repeated: {', '.join(dupes)}")
        if not [n for n in names if n != OUT_OF_SCOPE]:
            raise ValueError("the file declares no intent besides out_of_scope")
        return self

    @property
    def names(self) -> list[str]:
        """Names of the real intents (``out_of_scope`` excluded), in file order."""
        return [i.name for i in self.intents if i.name != OUT_OF_SCOPE]

    @property
    def out_of_scope_examples(self) -> tuple[str, ...]:
        """Examples declared for ``out_of_scope`` (may be empty)."""
        return next((i.examples for i in self.intents if i.name == OUT_OF_SCOPE), ())

    def with_intents(self, *specs: IntentSpec) -> IntentFile:
        """A copy with ``specs`` added; one named like an existing intent replaces it.

        ``load_intents().with_intents(IntentSpec(name="opening_hours", ...))`` keeps the
        shipped intents and adds your own.
        """
        added = {spec.name: spec for spec in specs}
        kept = tuple(i for i in self.intents if i.name not in added)
        return self.model_copy(update={"intents": kept + tuple(added.values())})

    def get(self, name: str) -> IntentSpec:
        """The intent called ``name``.

        Raises:
            KeyError: no such intent.
        """
        for spec in self.intents:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<mapping>") -> IntentFile:
        """Build from the YAML layout (``intents`` a mapping name → fields, or a list).

        Raises:
            ConfigurationError: the content does not describe a valid intent file.
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"intent file {source}: top level must be a mapping")
        raw = dict(data)
        intents = raw.get("intents")
        if isinstance(intents, Mapping):
            raw["intents"] = [{"name": name, **(fields or {})} for name, fields in intents.items()]
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                + (
                    " (YAML reads bare yes/no/on/off as booleans: quote them)"
                    if isinstance(e.get("input"), bool)
                    else ""
                )
                for e in exc.errors()
            )
            raise ConfigurationError(f"intent file {source} is invalid: {problems}") from exc


def load_intents(source: str | Path | IntentFile | Mapping[str, Any] | None = None) -> IntentFile:
    """Load an intent file: a YAML path, a mapping, an ``IntentFile``, or ``None`` for the default.

    Raises:
        ConfigurationError: the file is missing, is not YAML, or is not a valid intent file.
    """
    if isinstance(source, IntentFile):
        return source
    if isinstance(source, Mapping):
        return IntentFile.from_mapping(source)
    if source is None:
        text = resources.files("avatarkit").joinpath("data/intents.yaml").read_text("utf-8")
        name = "avatarkit/data/intents.yaml"
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigurationError(f"intent file {path} does not exist")
        text = path.read_text("utf-8")
        name = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"intent file {name} is not valid YAML: {exc}") from exc
    return IntentFile.from_mapping(data or {}, source=name)
