"""Find backends by spec string (``"openai:gpt-4o-mini"``, ``"espeak:en-us+f3"``, ``"local"``).

Providers, built-in and third-party alike, are entry points in the group ``avatarkit.providers``;
each points at a :class:`Provider` with one factory per role it fills. Listing reads only package
metadata; a provider's module is imported when a spec first selects it, and one broken provider
never stops the others. ``AVATARKIT_PROVIDERS=builtin`` restricts loading to avatarkit's own.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from avatarkit.config import get_logger, redact
from avatarkit.errors import (
    AvatarKitError,
    ConfigurationError,
    MissingExtraError,
    UnknownProviderError,
)
from avatarkit.ports import ROLES, Role

__all__ = [
    "ENTRY_POINT_GROUP",
    "Provider",
    "ProviderStatus",
    "Registry",
    "create",
    "lazy_factory",
    "parse_spec",
]

ENTRY_POINT_GROUP = "avatarkit.providers"
_log = get_logger("avatarkit.registry")

Factory = Callable[..., Any]
"""``factory(name, **options)`` → a backend; ``name`` is the part after the colon, or None."""


@dataclass(frozen=True)
class Provider:
    """A provider: one factory per role it fills, plus what it needs to run.

    Example (in a third-party package, listed in its ``avatarkit.providers`` entry points)::

        provider = Provider("myvoice", voice=lambda name, **kw: MyVoice(name or "default", **kw))
    """

    name: str
    preprocessor: Factory | None = None
    intent: Factory | None = None
    sentiment: Factory | None = None
    chat: Factory | None = None
    voice: Factory | None = None
    image: Factory | None = None
    renderer: Factory | None = None
    expression: Factory | None = None
    description: str = ""
    extra: str | None = None
    """The avatarkit extra that installs its dependencies, e.g. ``"openai"``."""
    requires: tuple[str, ...] = ()
    """Importable module names it needs (checked without importing them)."""
    env_key: str | None = None
    """Environment variable holding its API key, when it needs one."""
    offline: bool = False
    """Works with no network."""
    default_roles: tuple[Role, ...] = field(default=())
    """Roles for which a bare ``"<name>"`` spec is meaningful (informational)."""

    @property
    def roles(self) -> tuple[Role, ...]:
        """The roles this provider fills."""
        return tuple(r for r in ROLES if getattr(self, r) is not None)

    def factory(self, role: Role) -> Factory:
        """The factory for ``role``.

        Raises:
            ConfigurationError: the provider does not fill that role.
        """
        fn: Factory | None = getattr(self, role)
        if fn is None:
            raise ConfigurationError(
                f"provider {self.name!r} has no {role!r} backend; it offers: "
                f"{', '.join(self.roles) or 'nothing'}"
            )
        return fn

    def missing(self) -> list[str]:
        """Required modules that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


@dataclass(frozen=True)
class ProviderStatus:
    """One row of ``avatarkit providers``: a provider and whether it is usable here."""

    name: str
    distribution: str
    roles: tuple[str, ...]
    usable: bool
    reason: str = ""
    offline: bool = False


def lazy_factory(target: str) -> Factory:
    """A factory that imports ``"module:attr"`` on first use, so listing providers stays cheap.

    ``attr`` is called as ``attr(name, **options)`` when it is a ``make_*`` function, and as
    ``attr(**options)`` when it is a class, which takes no name: a spec that gives one
    (``"local:format=gif"``) is refused rather than ignored.

    Raises:
        ConfigurationError: a name given for a class.
    """
    module, _, attr = target.partition(":")

    def factory(name: str | None = None, **options: Any) -> Any:
        obj = getattr(importlib.import_module(module), attr)
        if attr.startswith("make_"):
            return obj(name, **options)
        if name is not None:
            raise ConfigurationError(
                f"{attr} takes no name after ':' (got {redact(name)!r}); pass its settings as "
                "options instead"
            )
        return obj(**options)

    factory.__doc__ = f"Build {target} (imported on first use)."
    return factory


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"provider:name"`` at the first colon; a bare ``"provider"`` gives ``name=None``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(f"a provider spec must be a non-empty string, got {spec!r}")
    provider, sep, name = spec.strip().partition(":")
    if not provider:
        raise ConfigurationError(f"provider spec {redact(spec)!r} has no provider name before ':'")
    return provider.lower(), (name or None) if sep else None


class Registry:
    """Providers by name, from entry points and from :meth:`register`."""

    def __init__(self, group: str = ENTRY_POINT_GROUP) -> None:
        self._group = group
        self._lock = threading.RLock()
        self._loaded: dict[str, Provider] = {}
        self._manual: dict[str, Provider] = {}

    def _entry_points(self) -> dict[str, list[EntryPoint]]:
        only_builtin = os.environ.get("AVATARKIT_PROVIDERS", "").strip().lower() == "builtin"
        found: dict[str, list[EntryPoint]] = {}
        for ep in entry_points(group=self._group):
            dist = ep.dist.name if ep.dist else ""
            if only_builtin and dist != "avatarkit":
                continue
            found.setdefault(ep.name.lower(), []).append(ep)
        return found

    def names(self) -> list[str]:
        """Every provider name, without importing any provider."""
        with self._lock:
            return sorted(set(self._entry_points()) | set(self._manual))

    def register(self, provider: Provider, *, replace: bool = False) -> None:
        """Add a provider at runtime (tests, notebooks). A taken name needs ``replace=True``."""
        key = provider.name.lower()
        with self._lock:
            if not replace and (key in self._manual or key in self._entry_points()):
                raise ConfigurationError(f"a provider named {key!r} is already registered")
            self._manual[key] = provider
            self._loaded.pop(key, None)

    def unregister(self, name: str) -> None:
        """Remove a provider added with :meth:`register`."""
        with self._lock:
            self._manual.pop(name.lower(), None)
            self._loaded.pop(name.lower(), None)

    def get(self, name: str) -> Provider:
        """Load (once) and return the provider called ``name``.

        Raises:
            UnknownProviderError: no such provider (with a suggestion when one is close).
            MissingExtraError: its module needs an extra that is not installed.
            ConfigurationError: two distributions claim the name, or its module fails to load.
        """
        key = name.lower()
        with self._lock:
            if key in self._manual:
                return self._manual[key]
            if key in self._loaded:
                return self._loaded[key]
            eps = self._entry_points()
            if key not in eps:
                known = sorted(set(eps) | set(self._manual))
                close = difflib.get_close_matches(key, known, n=1)
                raise UnknownProviderError(name, known, close[0] if close else None)
            if len(eps[key]) > 1:
                dists = sorted({ep.dist.name if ep.dist else "?" for ep in eps[key]})
                raise ConfigurationError(
                    f"provider name {key!r} is claimed by several distributions: "
                    f"{', '.join(dists)}; uninstall one of them"
                )
            provider = self._load(eps[key][0])
            self._loaded[key] = provider
            return provider

    def _load(self, ep: EntryPoint) -> Provider:
        dist = ep.dist.name if ep.dist else "unknown distribution"
        try:
            obj = ep.load()
        except AvatarKitError:
            raise
        except ImportError as exc:
            if (exc.name or "").split(".")[0] in ("avatarkit", ep.module.split(".")[0]):
                raise ConfigurationError(
                    f"provider {ep.name!r} from {dist} is broken: {exc}"
                ) from exc
            raise MissingExtraError(
                f"provider {ep.name!r} (from {dist})", ep.name, missing=exc.name
            ) from exc
        except Exception as exc:
            raise ConfigurationError(
                f"provider {ep.name!r} from {dist} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        if callable(obj) and not isinstance(obj, Provider):
            obj = obj()
        if not isinstance(obj, Provider):
            raise ConfigurationError(
                f"entry point {ep.name!r} of {dist} is {type(obj).__name__}, "
                "not an avatarkit.registry.Provider"
            )
        return obj

    def create(self, role: Role, spec: str, **options: Any) -> Any:
        """Build the ``role`` backend a spec names, e.g. ``create("voice", "espeak:en-us")``."""
        provider_name, name = parse_spec(spec)
        provider = self.get(provider_name)
        factory = provider.factory(role)
        missing = provider.missing()
        if missing:
            raise MissingExtraError(
                f"provider {provider.name!r}", provider.extra or provider.name, ", ".join(missing)
            )
        try:
            return factory(name, **options)
        except AvatarKitError:
            raise
        except (TypeError, ValueError) as exc:  # a bad option or name, in a third-party factory
            raise ConfigurationError(
                f"{role} {spec!r} could not be created: {type(exc).__name__}: {exc}"
            ) from exc

    def status(self, names: Iterable[str] | None = None) -> list[ProviderStatus]:
        """Which providers load and have what they need here (keys, extras)."""
        rows: list[ProviderStatus] = []
        eps = self._entry_points()
        for name in names if names is not None else self.names():
            dists = {ep.dist.name if ep.dist else "?" for ep in eps.get(name, [])}
            dist = ", ".join(sorted(dists)) or "(registered at runtime)"
            try:
                p = self.get(name)
            except AvatarKitError as exc:
                rows.append(ProviderStatus(name, dist, (), False, str(exc)))
                continue
            reason = ""
            if p.missing():
                reason = f'missing {", ".join(p.missing())}: pip install "avatarkit[{p.extra}]"'
            elif p.env_key and not os.environ.get(p.env_key):
                reason = f"set {p.env_key}"
            rows.append(ProviderStatus(name, dist, p.roles, not reason, reason, p.offline))
        return rows


default_registry = Registry()
"""The process-wide registry used by AvatarBot and the CLI."""


def create(role: Role, spec: str, **options: Any) -> Any:
    """Build a backend from a spec with the default registry; see :meth:`Registry.create`."""
    return default_registry.create(role, spec, **options)
