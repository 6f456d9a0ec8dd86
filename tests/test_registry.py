from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from avatarkit.errors import ConfigurationError, MissingExtraError, UnknownProviderError
from avatarkit.registry import Provider, Registry, parse_spec
from avatarkit.testing import FakeVoice


def test_parse_spec_splits_at_first_colon() -> None:
    assert parse_spec("openai:gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert parse_spec("automatic1111:http://127.0.0.1:7860") == (
        "automatic1111",
        "http://127.0.0.1:7860",
    )
    assert parse_spec("local") == ("local", None)
    with pytest.raises(ConfigurationError):
        parse_spec("")
    with pytest.raises(ConfigurationError):
        parse_spec(":model")


def test_builtin_test_provider_fills_every_role() -> None:
    reg = Registry()
    voice = reg.create("voice", "test")
    assert isinstance(voice, FakeVoice)
    assert set(reg.get("test").roles) == {
        "preprocessor",
        "intent",
        "sentiment",
        "chat",
        "voice",
        "image",
        "renderer",
        "expression",
    }


def test_unknown_provider_suggests_the_closest_name() -> None:
    reg = Registry()
    with pytest.raises(UnknownProviderError) as info:
        reg.create("voice", "tset:x")
    assert info.value.suggestion == "test"
    assert "Did you mean 'test'" in str(info.value)


def test_missing_role_is_a_configuration_error() -> None:
    reg = Registry()
    reg.register(Provider("onlychat", chat=lambda name, **kw: object()))
    with pytest.raises(ConfigurationError, match="no 'voice' backend"):
        reg.create("voice", "onlychat")


def test_register_refuses_taken_names_unless_replacing() -> None:
    reg = Registry()
    with pytest.raises(ConfigurationError, match="already registered"):
        reg.register(Provider("test"))
    reg.register(Provider("test", voice=lambda name, **kw: "mine"), replace=True)
    assert reg.create("voice", "test") == "mine"
    reg.unregister("test")
    assert isinstance(reg.create("voice", "test"), FakeVoice)


def test_missing_requirement_names_the_extra() -> None:
    reg = Registry()
    reg.register(
        Provider(
            "heavy",
            image=lambda name, **kw: object(),
            extra="diffusers",
            requires=("surely_not_installed_mod",),
        )
    )
    with pytest.raises(MissingExtraError, match=r"avatarkit\[diffusers\]"):
        reg.create("image", "heavy")


def _install_dist(site: Path, dist: str, module: str, body: str, entry: str) -> None:
    """Lay out an installed distribution (what pip would write) in ``site``."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[avatarkit.providers]\n{entry}\n")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("thirdparty_")]:
            del sys.modules[name]


def test_third_party_distribution_registers_a_backend_by_entry_point(site: Path) -> None:
    _install_dist(
        site,
        "avatarkit_echo",
        "thirdparty_echo",
        """
        from avatarkit.registry import Provider
        from avatarkit.testing import FakeVoice

        class EchoVoice(FakeVoice):
            def __init__(self, name):
                super().__init__()
                self.name = name

        provider = Provider("echo", voice=lambda name, **kw: EchoVoice(name or "default"))
    """,
        "echo = thirdparty_echo:provider",
    )
    reg = Registry()
    assert "echo" in reg.names()
    assert "thirdparty_echo" not in sys.modules  # listing imports nothing
    voice = reg.create("voice", "echo:loud")
    assert type(voice).__name__ == "EchoVoice" and voice.name == "loud"
    status = {row.name: row for row in reg.status()}
    assert status["echo"].usable and status["echo"].distribution == "avatarkit_echo"


def test_broken_provider_does_not_break_the_others(site: Path) -> None:
    _install_dist(
        site,
        "avatarkit_broken",
        "thirdparty_broken",
        "raise RuntimeError('kaput')\n",
        "broken = thirdparty_broken:provider",
    )
    reg = Registry()
    with pytest.raises(ConfigurationError, match="kaput"):
        reg.create("voice", "broken")
    assert isinstance(reg.create("voice", "test"), FakeVoice)
    status = {row.name: row for row in reg.status()}
    assert not status["broken"].usable and "kaput" in status["broken"].reason


def test_duplicate_provider_names_across_distributions_are_an_error(site: Path) -> None:
    _install_dist(
        site,
        "avatarkit_dup",
        "thirdparty_dup",
        "from avatarkit.testing import provider\n",
        "test = thirdparty_dup:provider",
    )
    reg = Registry()
    with pytest.raises(ConfigurationError, match="claimed by several distributions"):
        reg.get("test")


def test_builtin_only_mode_skips_third_party(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_dist(
        site,
        "avatarkit_echo2",
        "thirdparty_echo2",
        "from avatarkit.testing import provider\n",
        "echo2 = thirdparty_echo2:provider",
    )
    assert "echo2" in Registry().names()
    monkeypatch.setenv("AVATARKIT_PROVIDERS", "builtin")
    assert "echo2" not in Registry().names()
    assert "test" in Registry().names()


def test_a_factory_refusing_its_options_gives_a_configuration_error() -> None:
    from avatarkit.errors import ConfigurationError
    from avatarkit.registry import Provider, Registry

    def make_voice(name: str | None = None) -> object:
        if name not in (None, "low"):
            raise ValueError(f"unknown pitch {name!r}")
        return object()

    registry = Registry()
    registry.register(Provider("beep", voice=make_voice))
    with pytest.raises(ConfigurationError, match=r"voice 'beep:high' could not be created.*pitch"):
        registry.create("voice", "beep:high")
    with pytest.raises(ConfigurationError, match="unexpected keyword"):
        registry.create("voice", "beep", colour="red")


def test_a_malformed_spec_with_a_password_in_it_is_not_echoed() -> None:
    from avatarkit.errors import ConfigurationError
    from avatarkit.registry import parse_spec

    with pytest.raises(ConfigurationError) as info:
        parse_spec(":http://admin:sk-SECRET123@gpu-box:7860")
    assert "sk-SECRET123" not in str(info.value)


@pytest.mark.parametrize(
    ("role", "spec"),
    [("renderer", "local:format=gif"), ("image", "local:seed=3"), ("expression", "local:calm")],
)
def test_a_name_given_to_a_provider_that_takes_none_is_refused_not_ignored(
    role: str, spec: str
) -> None:
    # "local:format=gif" used to render MP4 without a word
    from avatarkit.registry import default_registry

    with pytest.raises(ConfigurationError, match="takes no name after ':'"):
        default_registry.create(role, spec)
