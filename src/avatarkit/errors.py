"""The one exception hierarchy of avatarkit.

```
AvatarKitError
├── ConfigurationError            bad setup: fix code or environment, retrying won't help
│   ├── MissingKeyError           an API key is needed and none was given
│   ├── UnknownProviderError      a spec string names no installed provider
│   └── MissingExtraError         the backend needs an optional extra: pip install "avatarkit[x]"
├── InputValidationError          the caller's input is unusable (empty text, too long, bad image)
├── ProviderError                 a backend failed; carries provider, status, request_id, retryable
│   ├── RateLimitError            429 / too many concurrent requests (retryable)
│   ├── QuotaExceededError        out of credits or quota (402, quota_exceeded)
│   ├── AuthenticationError       the key was refused (401/403)
│   ├── ContentModerationError    the provider refused the content (451, content_filter)
│   ├── ProviderTimeoutError      no answer in time, or the total deadline passed
│   ├── ProviderConnectionError   the connection failed or broke (retryable)
│   ├── ProviderStatusError       any other non-success answer (5xx retryable, 4xx final)
│   └── AllBackendsFailedError    every backend of a fallback chain failed; .errors has each
├── OverloadedError               too many calls already waiting for a backend (backpressure)
├── StageError                    a stage failed; .stage names it, .partial keeps what succeeded
└── CancelledByUser               a long job (render, diffusion) was cancelled through its token
```
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = [
    "AllBackendsFailedError",
    "AuthenticationError",
    "AvatarKitError",
    "CancelledByUser",
    "ConfigurationError",
    "ContentModerationError",
    "InputValidationError",
    "MissingExtraError",
    "MissingKeyError",
    "OverloadedError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "QuotaExceededError",
    "RateLimitError",
    "StageError",
    "UnknownProviderError",
]


class AvatarKitError(Exception):
    """Root of every error avatarkit raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and copy without calling ``__init__`` again (its arguments differ per class).

        The attributes (``message``, ``provider``, ``stage``, ``partial``...) travel as state,
        so every subclass round-trips through pickle, ``copy`` and process pools. The
        ``__cause__`` travels too when it pickles itself; otherwise it is left out (its text
        is in the message already).
        """
        state = dict(vars(self))
        cause = self.__cause__
        if cause is not None and _round_trips(cause):
            state["__cause__"] = cause
        return (_rebuild, (type(self), self.args), state)


def _rebuild(cls: type[AvatarKitError], args: tuple[Any, ...]) -> AvatarKitError:
    """An instance of ``cls`` with ``args`` and no ``__init__`` run; pickle then sets its state."""
    return cls.__new__(cls, *args)


def _round_trips(value: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(value))
    except Exception:  # any failure to pickle or unpickle: the value stays behind
        return False
    return True


class ConfigurationError(AvatarKitError):
    """The setup is wrong: a missing key, an unknown provider, a missing extra."""


class MissingKeyError(ConfigurationError):
    """A backend needs an API key and neither an argument nor the environment gave one."""

    def __init__(self, provider: str, env_var: str) -> None:
        super().__init__(
            f"{provider} needs an API key: pass api_key=... or set the environment variable "
            f"{env_var}. To run offline with no key, use the local defaults (e.g. voice='espeak') "
            f"or the fakes in avatarkit.testing (spec 'test')."
        )
        self.provider = provider
        self.env_var = env_var


class UnknownProviderError(ConfigurationError):
    """A spec string names a provider that is not installed."""

    def __init__(self, name: str, known: list[str], suggestion: str | None = None) -> None:
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(
            f"Unknown provider {name!r}.{hint} Installed providers: {', '.join(sorted(known))}. "
            "Run `avatarkit providers` to see which are usable here."
        )
        self.name = name
        self.known = known
        self.suggestion = suggestion


class MissingExtraError(ConfigurationError):
    """A backend needs an optional dependency that is not installed."""

    def __init__(self, what: str, extra: str, missing: str | None = None) -> None:
        verb = "are" if missing and "," in missing else "is"
        detail = f" ({missing} {verb} not installed)" if missing else ""
        super().__init__(
            f'{what} needs the "{extra}" extra{detail}: pip install "avatarkit[{extra}]"'
        )
        self.extra = extra
        self.missing = missing


class InputValidationError(AvatarKitError, ValueError):
    """The caller's input cannot be used; nothing was sent to any backend."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ProviderError(AvatarKitError):
    """A backend answered with an error or could not be reached.

    Attributes:
        provider: The provider's name, e.g. ``"elevenlabs"``.
        status: The HTTP status, when there was a response.
        request_id: The provider's request id, for support tickets.
        retryable: Whether trying again later may succeed.
        code: The provider's own error code (``quota_exceeded``, ``InsufficientCreditsError``...).
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        parts = [f"{provider}: {message}"]
        if status is not None:
            parts.append(f"(HTTP {status}")
            parts[-1] += f", request id {request_id})" if request_id else ")"
        elif request_id:
            parts.append(f"(request id {request_id})")
        super().__init__(" ".join(parts))
        self.provider = provider
        self.status = status
        self.request_id = request_id
        self.retryable = self.default_retryable if retryable is None else retryable
        self.code = code
        self.retry_after = retry_after


class RateLimitError(ProviderError):
    """Too many requests right now; retried automatically with backoff."""

    default_retryable = True


class QuotaExceededError(ProviderError):
    """The account is out of credits or quota; retrying will not help."""


class AuthenticationError(ProviderError):
    """The provider refused the key."""


class ContentModerationError(ProviderError):
    """The provider refused the text, image or audio on content grounds."""


class ProviderTimeoutError(ProviderError):
    """No answer within the timeout, or the call's total deadline passed."""

    default_retryable = True


class ProviderConnectionError(ProviderError):
    """The connection could not be made or broke mid-answer."""

    default_retryable = True


class ProviderStatusError(ProviderError):
    """Any other error status: 5xx are retryable, 4xx are final."""


class AllBackendsFailedError(ProviderError):
    """Every backend of a fallback chain (:mod:`avatarkit.fallback`) failed.

    Attributes:
        role: The role the chain fills (``"voice"``...).
        errors: Each backend's error, in the order they were tried.
    """

    def __init__(self, role: str, errors: list[tuple[str, BaseException]]) -> None:
        detail = "; ".join(f"{name}: {str(exc) or type(exc).__name__}" for name, exc in errors)
        delays = [d for _, e in errors if (d := getattr(e, "retry_after", None)) is not None]
        super().__init__(
            f"every {role} backend failed: {detail}",
            provider="fallback",
            retryable=any(_retryable(e) for _, e in errors),
            retry_after=min(delays) if delays else None,
        )
        self.role = role
        self.errors = tuple(e for _, e in errors)

    def __reduce__(self) -> tuple[Any, ...]:
        """As every error's; a backend's error that cannot pickle travels as a RuntimeError."""
        rebuild, args, state = super().__reduce__()
        state["errors"] = tuple(
            e if _round_trips(e) else RuntimeError(f"{type(e).__name__}: {e}") for e in self.errors
        )
        return rebuild, args, state


def _retryable(error: BaseException) -> bool:
    if isinstance(error, ProviderError):
        return error.retryable
    return isinstance(error, (OSError, TimeoutError))  # a connection or a deadline


class StageError(AvatarKitError):
    """A stage of a turn failed; the results of the stages before it are kept.

    Attributes:
        stage: The failed stage's name (``"voice"``, ``"render"``...).
        partial: What the turn produced before the failure (usually an
            ``avatarkit.Response`` with the later fields left empty).
    """

    def __init__(self, stage: str, cause: BaseException, partial: Any = None) -> None:
        super().__init__(f"stage {stage!r} failed: {str(cause) or type(cause).__name__}")
        self.stage = stage
        self.partial = partial
        self.__cause__ = cause


class OverloadedError(AvatarKitError):
    """Too many calls are already queued for a backend; shed load and try again shortly."""


class CancelledByUser(AvatarKitError):
    """A long-running job was cancelled through its cancellation token."""
