"""Settings and API keys: keys come from arguments or the environment and never show anywhere."""

from __future__ import annotations

import logging
import os
import re
import threading
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from avatarkit.errors import MissingKeyError

__all__ = [
    "Settings",
    "get_logger",
    "redact",
    "redact_http_logs",
    "register_secret",
    "register_url_secrets",
    "resolve_key",
]

_secrets: set[str] = set()
_secrets_lock = threading.Lock()

# A library configures no output: without a handler of the app's, Python's last-resort handler
# would print every warning to stderr, even for failures the caller catches and handles.
logging.getLogger("avatarkit").addHandler(logging.NullHandler())


class Settings(BaseModel):
    """Limits and defaults shared by a bot's stages."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_input_chars: int = Field(default=4000, gt=0)
    """Longest user input accepted; longer input raises InputValidationError before any call."""
    max_speech_chars: int = Field(default=20_000, gt=0)
    """Longest reply text sent to a voice."""
    render: bool = True
    """Render a video for each reply (off: audio and timeline only). Frame size and rate are
    the renderer's own options, e.g. ``renderer=LocalRenderer(size=256, fps=30)``."""


def resolve_key(provider: str, api_key: str | SecretStr | None, env_var: str) -> SecretStr:
    """Return the key from ``api_key`` or ``env_var``, registered for redaction.

    Raises:
        MissingKeyError: neither gave a non-empty key.
    """
    raw = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    if not raw:
        raw = os.environ.get(env_var, "").strip()
    if not raw:
        raise MissingKeyError(provider, env_var)
    register_secret(raw)
    return SecretStr(raw)


def register_secret(value: str) -> None:
    """Remember ``value`` so that ``redact`` and avatarkit's log filter hide it.

    Also puts the filter on the HTTP libraries' loggers (:func:`redact_http_logs`).
    """
    if len(value) >= 6:
        with _secrets_lock:
            _secrets.add(value)
    redact_http_logs()


def register_url_secrets(url: str | None) -> None:
    """Register the credential in ``url``'s user-info as a secret.

    That is the password (``http://user:PASSWORD@host``), or without one the user name when it
    looks like a token (``https://sk-...@host``: a key prefix, 32+ characters, or letters and
    digits mixed like hex), as written and percent-decoded (as sent). ``redact`` masks either
    inside URLs anyway; registered, it is also masked where a server echoes it on its own. A
    plain user name (``deploy``, ``admin123``) is not: it would be masked in every log line.
    """
    match = _URL_USERINFO_RE.search(url or "")
    if match:
        user, _, password = match.group(2).partition(":")
        if not password and not _looks_like_token(unquote(user)):
            return
        secret = password or user
        for value in {secret, unquote(secret)}:
            register_secret(value)


def _looks_like_token(value: str) -> bool:
    """Whether a URL's user name looks like a credential rather than a person's or bot's name.

    True for a known key prefix (``sk-``, ``ghp_``, ``github_pat_``, ``glpat-``, ``hf_``,
    ``xoxb-``, ``AKIA``...), for 32 characters or more, for all hex of 16 or more or all digits
    of 12 or more, and for 10 or more in which letters and digits alternate at least 3 times
    (hex, base62: ``a3f9c2e71b``). ``admin123``, ``deploy``,
    ``ci-bot-2024`` and ``jane@corp.com`` are names.
    """
    if value.startswith(_TOKEN_PREFIXES) or len(value) >= 32:
        return True
    if re.fullmatch(r"[0-9a-fA-F]{16,}|\d{12,}", value):  # a hex digest, a numeric id
        return True
    return len(value) >= 10 and len(_LETTER_DIGIT_SWITCH_RE.findall(value)) >= 3


def redact(text: str) -> str:
    """``text`` with every secret replaced by ``***``.

    Masks registered secrets, bearer/basic/xi-api-key credentials, a URL's user-info (its
    password, ``http://user:***@host``, or without one its user name, a token:
    ``https://***@host``) and the values of query parameters named like a credential
    (``?api_key=***``, ``access_token``, ``X-Amz-Signature``...), registered or not.
    """
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, "***")
    text = _URL_USERINFO_RE.sub(_masked_userinfo, text)
    text = _SECRET_PARAM_RE.sub(r"\1***", text)
    return _AUTH_RE.sub(r"\1***", text)


def _masked_userinfo(match: re.Match[str]) -> str:
    """``scheme://user:***@`` with a password, else ``scheme://***@`` (the user name is a token)."""
    user, colon, password = match.group(2).partition(":")
    if password:
        return f"{match.group(1)}{user}:***@"
    return f"{match.group(1)}***{colon}@" if user else match.group(0)


_TOKEN_PREFIXES = (
    "sk-", "sk_", "pk_", "rk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-",
    "hf_", "xoxa-", "xoxb-", "xoxp-", "xoxs-", "AKIA", "ASIA", "eyJ",
)  # fmt: skip
"""Prefixes of well-known API keys and tokens (OpenAI, Stripe, GitHub, GitLab, Hugging Face,
Slack, AWS, a JWT)."""
_LETTER_DIGIT_SWITCH_RE = re.compile(r"(?=[a-z][0-9]|[0-9][a-z])", re.IGNORECASE)
"""Each place where a letter and a digit meet."""
_AUTH_RE = re.compile(r"((?:Bearer|Basic|xi-api-key:?)\s+)[^\s'\",}]+", re.IGNORECASE)
_URL_USERINFO_RE = re.compile(r"(\b[a-z][a-z0-9+.-]*://)([^\s/?#'\"]*)@", re.IGNORECASE)
"""``scheme://`` (group 1), then the user-info (group 2) up to the authority's last ``@``."""
_SECRET_PARAM_RE = re.compile(
    r"([?&;][^\s=&#'\"]*?(?:key|token|secret|passw|pwd|signature|sig|auth|credential)"
    r"[^\s=&#'\"]*=)[^\s&#'\"]+",
    re.IGNORECASE,
)
"""A query parameter whose name says credential (group 1: ``?name=``), then its value."""


class RedactingFilter(logging.Filter):
    """Logging filter that removes registered secrets from every record avatarkit logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record: the handler reports it, as it would unfiltered
            return True
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


_HTTP_LOGGERS = (
    "httpx", "httpx2", "openai", "openai._base_client", "openai._response",
    "openai._legacy_response",
    *(f"{core}{part}" for core in ("httpcore", "httpcore2")
      for part in ("", ".connection", ".http11", ".http2", ".proxy", ".socks")),
)  # fmt: skip
"""Loggers of the HTTP libraries avatarkit's adapters send through (a logger's filter sees only
the records logged on it, not those of its children, so each module's logger is listed)."""

_http_logs_redacted = False


def redact_http_logs() -> None:
    """Put the redacting filter on the loggers of httpx, httpx2, httpcore(2) and openai.

    httpx logs each request's URL at INFO, and the URL may carry a password
    (``https://user:PASSWORD@host``) or a signature (``?X-Amz-Signature=...``). avatarkit does
    it when it first registers a key or builds an HTTP client, so ``import avatarkit`` leaves
    other libraries' logging alone; no handler is added. Calling it again does nothing.
    """
    global _http_logs_redacted
    if _http_logs_redacted:
        return
    with _secrets_lock:
        for name in _HTTP_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, RedactingFilter) for f in logger.filters):
                logger.addFilter(RedactingFilter())
        _http_logs_redacted = True


def get_logger(name: str) -> logging.Logger:
    """An avatarkit logger whose records pass through the redacting filter.

    (Logger filters do not apply to records propagated from child loggers, so every module's
    logger gets its own.) avatarkit adds no handler but a ``NullHandler`` on ``"avatarkit"``:
    records show once the application configures logging (``logging.basicConfig()``).
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger
