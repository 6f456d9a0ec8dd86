"""API keys never show in reprs, logs, errors or saved files."""

from __future__ import annotations

import logging
import socket
import traceback
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel, TypeAdapter

from avatarkit._http import ConnectOptions, HttpClient
from avatarkit.config import redact, register_url_secrets, resolve_key
from avatarkit.errors import InputValidationError, MissingKeyError, ProviderError
from avatarkit.testing import fake_speech
from avatarkit.types import ChatMessage, DialogueResponse, Response, UserInput

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


def _everything_about(err: BaseException) -> str:
    """What an app's logs, error trackers and traces can show of an error: its whole chain,
    causes and contexts alike (some trackers show a context even when it is suppressed)."""
    parts = ["".join(traceback.format_exception(err))]
    link: BaseException | None = err
    while link is not None:
        attributes = {k: v for k, v in vars(link).items() if not k.startswith("_")}
        parts += [str(link), repr(link.args), repr(attributes)]
        link = link.__cause__ or link.__context__
    return "\n".join(parts)


def _echoing_client(handler: object) -> HttpClient:
    key = resolve_key("acme", KEY, "ACME_API_KEY")
    return HttpClient(
        "acme",
        "https://api.acme.test",
        headers={"xi-api-key": key.get_secret_value()},
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
        options=ConnectOptions(max_retries=0, deadline=3),
    )


async def test_an_error_body_echoing_the_key_past_the_message_limit_is_redacted() -> None:
    # the key straddles the 300 characters kept of an error body, in a quoted header dump
    def handler(request: httpx.Request) -> httpx.Response:
        dump = "x" * 260 + f"'xi-api-key': '{request.headers['xi-api-key']}'"
        return httpx.Response(500, text=dump, headers={"x-request-id": KEY})

    with pytest.raises(ProviderError) as info:
        await _echoing_client(handler).request("GET", "/v1/anything")
    assert KEY[:12] not in _everything_about(info.value)


async def test_an_error_code_echoing_the_key_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "no", "code": KEY}})

    with pytest.raises(ProviderError) as info:
        await _echoing_client(handler).request("GET", "/v1/anything")
    assert KEY not in _everything_about(info.value)


async def test_a_malformed_answer_echoing_the_key_keeps_it_out_of_the_traceback() -> None:
    class Answer(BaseModel):
        audio_base64: str

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"audio_base64": ["no", request.headers["xi-api-key"]]})

    http = _echoing_client(handler)
    response = await http.request("GET", "/v1/anything")
    with pytest.raises(ProviderError) as info:
        http.parse(response, TypeAdapter(Answer))
    assert KEY not in _everything_about(info.value)


def test_redact_masks_url_passwords_and_secret_query_parameters() -> None:
    assert redact("http://admin:pw-not-registered-1@gpu-box:7860/sdapi") == (
        "http://admin:***@gpu-box:7860/sdapi"
    )
    assert redact("see 'https://:tok-unregistered-2@proxy.example/v1' now") == (
        "see 'https://:***@proxy.example/v1' now"
    )
    assert redact("https://x.test/v1?api_key=abc123&model=m&access_token=t0k#frag") == (
        "https://x.test/v1?api_key=***&model=m&access_token=***#frag"
    )
    assert redact("https://s3.test/a.mp4?X-Amz-Signature=f00&X-Amz-Credential=AKIA1") == (
        "https://s3.test/a.mp4?X-Amz-Signature=***&X-Amz-Credential=***"
    )
    plain = "http://gpu-box:7860/sdapi/v1/txt2img?steps=30&to=a@b and a:b@c, bob@example.com"
    assert redact(plain) == plain


def test_redact_masks_a_token_used_as_a_urls_user_name() -> None:
    # with no password, the user name is the credential (GitHub, many proxies and APIs)
    assert redact("GET https://sk-live-abc123@api.example.com/v1 failed") == (
        "GET https://***@api.example.com/v1 failed"
    )
    assert redact("'https://ghp_XXXX0123@github.com/acme/repo.git'") == (
        "'https://***@github.com/acme/repo.git'"
    )
    assert redact("https://sk-live-abc123:@api.example.com") == "https://***:@api.example.com"
    # a password holding an @ is masked whole (the user-info ends at the authority's last @)
    assert (
        redact("http://admin:p@ss-word-9@gpu-box:7860/x@y") == "http://admin:***@gpu-box:7860/x@y"
    )
    assert redact("https://@host.example/@someone") == "https://@host.example/@someone"


def test_a_user_name_token_in_a_url_is_registered_as_a_secret() -> None:
    register_url_secrets("https://tok-user-only-9f8e7d@api.example.com/v1")
    assert redact("the server says tok-user-only-9f8e7d is invalid") == (
        "the server says *** is invalid"
    )
    # sent decoded (httpx unquotes the user-info for Basic auth), so a server echoes it decoded
    register_url_secrets("https://admin:pw%40HOME%2F77aa11@gpu-box:7860")
    assert redact("refused pw@HOME/77aa11 for admin") == "refused *** for admin"


URL_SECRET = "sk-URL-SECRET-5f3a9c"


@pytest.mark.parametrize(
    ("userinfo", "shown"),
    [("admin:{}", "admin:***@"), ("{}", "***@")],
    ids=["password", "token-as-user-name"],
)
async def test_a_password_in_a_base_url_never_shows(
    caplog: pytest.LogCaptureFixture, userinfo: str, shown: str
) -> None:
    secret = f"{URL_SECRET}-{len(userinfo)}"  # registered once seen: one of its own per case
    userinfo = userinfo.format(secret)
    from avatarkit.cache import backend_fingerprint
    from avatarkit.providers.automatic1111 import A1111ImageGenerator
    from avatarkit.providers.openai_chat import OpenAIChat

    caplog.set_level(logging.DEBUG, logger="avatarkit")
    caplog.set_level(logging.INFO, logger="httpx")
    url = f"http://{userinfo}@gpu-box:7860"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    def echo(request: httpx.Request) -> httpx.Response:  # a server quoting the credential
        return httpx.Response(401, text=f"unknown user {request.url.username}")

    a1111 = A1111ImageGenerator(url, transport=httpx.MockTransport(refuse))
    chat = OpenAIChat("llama3", base_url=f"https://{userinfo}@proxy.example/v1?key=k1")
    http = HttpClient("acme", url + "/api", transport=httpx.MockTransport(refuse))
    with pytest.raises(ProviderError) as refused:
        await http.request(
            "GET", "/v1/anything", options=ConnectOptions(max_retries=1, backoff_initial=0.01)
        )
    with pytest.raises(InputValidationError) as bad_url:
        A1111ImageGenerator(f"ftp://{userinfo}@gpu-box")
    echoing = HttpClient("acme", url, transport=httpx.MockTransport(echo))
    with pytest.raises(ProviderError) as echoed:
        await echoing.request("GET", "/v1/anything", options=ConnectOptions(max_retries=0))
    logging.getLogger("avatarkit.http").warning("calling %s", url)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = OpenAIChat("m", base_url=f"http://{userinfo}@127.0.0.1:{port}/v1", max_retries=0)
    with pytest.raises(ProviderError) as unreached:
        await unreachable.complete([ChatMessage(role="user", content="hi")])

    texts = {
        "a1111": repr(a1111),
        "chat": repr(chat),
        "unreached": _everything_about(unreached.value),
        "http": repr(http),
        "refused": str(refused.value) + repr(refused.value),  # its cause is httpx's own
        "bad_url": _everything_about(bad_url.value),
        "echoed": _everything_about(echoed.value),
        "fingerprint": backend_fingerprint(a1111),
        "logs": caplog.text,
    }
    for what, text in texts.items():
        assert secret not in text, what
    assert f"{shown}gpu-box:7860" in texts["a1111"] and "gpu-box" in texts["http"]
    assert f"{shown}proxy.example/v1?key=***" in texts["chat"]
    assert f"{shown}gpu-box:7860/api/v1/anything" in texts["logs"]


async def test_the_http_libraries_own_log_lines_are_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # httpx logs every request at INFO ("HTTP Request: GET https://user:pw@host/...?sig=..."),
    # and so does httpx2 for the OpenAI SDK: an app logging at INFO printed the secrets
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="httpcore.http11")
    password = "pw-HTTPX-LOG-71c2e9"
    http = HttpClient(
        "acme",
        f"https://admin:{password}@api.acme.test/v1",
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={})),
    )
    signed = {"X-Amz-Signature": "sig-f00ba7c0ffee", "AWSAccessKeyId": "AKIAEXAMPLE123"}
    await http.request("GET", "/result.mp4", params=signed)
    logging.getLogger("httpx2").info("HTTP Request: POST https://u:%s@proxy.test/v1", password)
    logging.getLogger("httpcore.http11").debug("send %s", f"https://u:{password}@h.test")

    lines = {r.name: r.getMessage() for r in caplog.records}
    assert "HTTP Request: GET https://admin:***@api.acme.test/v1/result.mp4?" in lines["httpx"]
    assert "X-Amz-Signature=***" in lines["httpx"] and "u:***@proxy.test" in lines["httpx2"]
    assert lines["httpcore.http11"] == "send https://u:***@h.test"
    for secret in (password, *signed.values()):
        assert secret not in caplog.text
    for name in ("httpx", "httpx2", "httpcore", "httpcore.http11", "openai"):
        assert not logging.getLogger(name).handlers  # filtered, but no output of ours added


@pytest.mark.parametrize(
    "name",
    ["admin123", "deploy", "ci-bot-2024", "john.smith", "deploy-bot-2024-prod", "jane%40corp.com"],
)
def test_a_plain_user_name_in_a_url_is_not_masked_everywhere(name: str) -> None:
    # a user name is no secret: registered, it was masked in every later log line
    register_url_secrets(f"https://{name}@git.example.com/repo.git")
    line = f"job of {name.replace('%40', '@')} finished"
    assert redact(line) == line


@pytest.mark.parametrize(
    "token",
    [
        "sk-proj-Ab12",  # a known key prefix, however short
        "ghp_Q7x9Lm2Pz8",
        "github_pat_11AAbbCC",
        "glpat-xYz12345",
        "hf_AbCdEfGhIj",
        "AKIAIOSFODNN7EXAMPLE",
        "a3f9c2e71b",  # hex: letters and digits alternate
        "Zx9QmRt7LkPw2VbN",
        "qwertyuiopasdfghjklzxcvbnmqwerty",  # 32 characters or more
        "deadbeefcafe1234",  # all hex, 16 or more (letters and digits switch only once)
        "8675309123456789012",  # all digits, 12 or more
    ],
)
def test_a_token_used_as_a_urls_user_name_is_masked_everywhere(token: str) -> None:
    register_url_secrets(f"https://{token}@api.example.com/v1")
    assert redact(f"the server says {token} is invalid") == "the server says *** is invalid"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://bob:pw-9x@host.test/a", "https://bob:***@host.test/a"),
        ("https://tok-7f3e9a1c@host.test/a", "https://***@host.test/a"),
        ("https://host.test/users/@bob?x=1", None),
        ("https://host.test/a?mail=bob@corp.test&x=1", None),
        ("https://host.test/a#bob@corp.test", None),
        ("http://[2001:db8::1]:8080/a@b", None),
        ("http://bob:pw-9x@[2001:db8::1]:8080/a@b", "http://bob:***@[2001:db8::1]:8080/a@b"),
        ("https://h;x=a@b.test/p", "https://***@b.test/p"),  # ';' is user-info: b.test is the host
    ],
)
def test_redact_masks_the_user_info_httpx_sends_and_nothing_else(
    url: str, shown: str | None
) -> None:
    # the URL's authority ends at its first '/', '?' or '#': an '@' after that is not user-info
    assert redact(url) == (shown or url)
    assert bool(httpx.URL(url).userinfo) == (shown is not None)
