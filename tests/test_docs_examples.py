"""The Python examples in README.md and docs/ run as written: offline, with no keys.

Each page's ``python`` blocks run in order in one namespace (a page builds on its earlier
blocks, as its reader does), in a fresh folder holding the files the pages name. A block the
machine cannot run (it needs an API key, model weights or a server) is marked in the page with
an HTML comment on the line before it, which the rendered docs do not show::

    <!-- docs-test: skip (needs OPENAI_API_KEY) -->

Names a page's prose describes but does not build (a ``voice`` from the previous section) come
from ``PRELUDES``. A small extractor rather than a plugin (pytest-codeblocks,
pytest-markdown-docs): those run each block alone unless every later block is marked as a
continuation, where a page here reads as one script.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "changelog.md")
PAGES = [ROOT / "README.md", *DOCS]
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")

PRELUDES: dict[str, str] = {
    "expression.md": """
import avatarkit as ak
from avatarkit.providers.espeak import EspeakVoice
from avatarkit.types import DialogueResponse

voice = EspeakVoice("en-us").synthesize_sync("Hi there! Sorry, the shop is closed today.")
reply = DialogueResponse(text="[happy] Hi there! Sorry, the shop is closed today.")
sentiment = intent = None
""",
    "streaming.md": """
class Player:  # the page's stand-in for your audio/video player
    def queue_audio(self, audio, at): ...
    def queue_video(self, path, at): ...
    def set_idle_loop(self, path): ...
    def position(self): return 0.5

player = Player()
def user_started_speaking(): return True
""",
}


def blocks(page: Path) -> list[tuple[int, str, bool]]:
    """``(line, code, skipped)`` for every python block of ``page``."""
    lines = page.read_text(encoding="utf-8").split("\n")
    out: list[tuple[int, str, bool]] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        if lang == "python":
            before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
            out.append((start + 1, "\n".join(body), bool(SKIP.search(before))))
    return out


def _run(code: str, namespace: dict[str, Any], where: str) -> None:
    compiled = compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if compiled.co_flags & inspect.CO_COROUTINE:  # top-level await, as in a notebook

        async def main() -> None:
            await eval(compiled, namespace)

        asyncio.run(main())
    else:
        exec(compiled, namespace)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with the files the pages name: pictures, a recording, a persona."""
    from avatarkit.providers.espeak import EspeakVoice
    from avatarkit.render.procedural import generate_procedural

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AVATARKIT_CACHE_DIR", str(tmp_path / "cache"))  # cache=True
    (tmp_path / "face.png").write_bytes(generate_procedural(7, size=256).data)
    for name in ("portrait.jpg", "me.jpg"):
        shutil.copy(ROOT / "tests" / "data" / "portrait.jpg", tmp_path / name)
    take = EspeakVoice("en-us").synthesize_sync("Welcome to the show, everyone.")
    (tmp_path / "take.wav").write_bytes(take.audio)
    (tmp_path / "scripts.jsonl").write_text('{"id": "hello", "text": "Hello!"}\n')
    dialogue = (ROOT / "docs" / "dialogue.md").read_text(encoding="utf-8")
    persona = re.search(r"```yaml\n# ada\.yaml\n(.*?)```", dialogue, re.S)
    faq = re.search(r"`ada_faq\.md` of the quick start:\n\n```markdown\n(.*?)```", dialogue, re.S)
    assert persona and faq, "docs/dialogue.md no longer shows ada.yaml and ada_faq.md"
    (tmp_path / "ada.yaml").write_text(persona.group(1), encoding="utf-8")
    (tmp_path / "ada_faq.md").write_text(faq.group(1), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_pages_python_examples_run(page: Path, workdir: Path) -> None:
    runnable = [(line, code) for line, code, skipped in blocks(page) if not skipped]
    if not runnable:
        pytest.skip(f"{page.name} has no runnable python example")
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    if page.name in PRELUDES:
        _run(PRELUDES[page.name], namespace, f"<prelude of {page.name}>")
    for line, code in runnable:
        try:
            _run(code, namespace, f"{page.name}:{line}")
        except Exception as exc:
            pytest.fail(f"{page.name}, the block at line {line}: {type(exc).__name__}: {exc}")
