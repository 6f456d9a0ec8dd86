"""API keys never show in reprs, logs, errors or saved files."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from avatarkit._http import ConnectOptions, HttpClient
from avatarkit.config import redact, resolve_key
from avatarkit.errors import MissingKeyError, ProviderError
from avatarkit.testing import fake_speech
from avatarkit.types import DialogueResponse, Response, UserInput

KEY = "sk-test-SECRET-0123456789abcdef"


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_API_KEY", raising=False)
    with pytest.raises(MissingKeyError, match="ACME_API_KEY"):
        resolve_key("acme", None, "ACME_API_KEY")


def test_key_from_environment_is_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", KEY)
    key = resolve_key("acme", None, "ACME_API_KEY")
    assert key.get_secret_value() == KEY
    assert KEY not in repr(key) and KEY not in str(key)


async def test_key_never_in_logs_errors_reprs_or_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = resolve_key("acme", KEY, "ACME_API_KEY")

    def handler(request: httpx.Request) -> httpx.Response:
        # A careless server echoes the credentials back in its error body.
        auth = request.headers["authorization"]
        if request.url.path.endswith("/retry"):
            return httpx.Response(503, json={"error": {"message": f"overloaded for {auth}"}})
        return httpx.Response(400, json={"error": {"message": f"bad request with key {KEY}"}})

    http = HttpClient(
        "acme",
        "https://api.acme.test",
        headers={"Authorization": f"Bearer {key.get_secret_value()}"},
        transport=httpx.MockTransport(handler),
        options=ConnectOptions(max_retries=1, backoff_initial=0.01, deadline=3),
    )
    caplog.set_level(logging.DEBUG, logger="avatarkit")
    with pytest.raises(ProviderError) as retry_err:
        await http.request("GET", "/retry")
    with pytest.raises(ProviderError) as final_err:
        await http.request("GET", "/final")
    logging.getLogger("avatarkit.http").info("sending with %s", KEY)

    assert caplog.records, "expected log records from retries"
    for text in (
        caplog.text,
        str(retry_err.value),
        str(final_err.value),
        repr(final_err.value),
        repr(http),
    ):
        assert KEY not in text
    voice = fake_speech("Hello")
    resp = Response(
        input=UserInput(text="hi", metadata={"note": "x"}),
        voice=voice,
        dialogue=DialogueResponse(text="Hello"),
    )
    for path in resp.save(tmp_path).values():
        assert KEY.encode() not in path.read_bytes()


def test_redact_masks_auth_headers_even_unregistered() -> None:
    assert redact("Authorization: Bearer abc.def-123") == "Authorization: Bearer ***"
    assert "zzzz-unregistered" not in redact("xi-api-key: zzzz-unregistered")
