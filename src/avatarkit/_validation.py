"""Building wire models from the caller's settings, with the caller's kind of error."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from avatarkit.errors import InputValidationError

M = TypeVar("M", bound=BaseModel)


def build(wire: type[M], provider: str, /, **fields: Any) -> M:
    """``wire(**fields)``; a field it refuses is an :class:`InputValidationError` naming it.

    Adapters check their settings this way before any request is sent. The error is raised
    outside pydantic's handler, so the refused value (possibly a secret) is not chained to it.
    """
    try:
        return wire(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        problem = f"bad {provider} setting {where}: {first['msg']}"
    raise InputValidationError(problem, field=field)
