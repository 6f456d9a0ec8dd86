"""The example notebooks: committed without outputs, and each runs top to bottom offline.

Each notebook runs in a fresh Jupyter kernel (this interpreter's ipykernel) on a temporary copy of
examples/, with no API keys in the kernel's environment and avatarkit's network guard switched on
inside the kernel, and must show the results it promises (video, audio, pictures, tables).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell
from PIL import Image

from avatarkit.types import AvatarImage, AvatarVideo, Response, UserInput

EXAMPLES = Path(__file__).parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
KEYS = ("OPENAI_API_KEY", "ELEVENLABS_API_KEY", "DID_API_KEY", "A1111_URL")
CELL_TIMEOUT = 120

# Runs first in the kernel: the notebook must be offline and on this interpreter.
GUARD = f"""
import sys
from avatarkit.testing import block_provider_requests
assert sys.prefix == {sys.prefix!r}, f"kernel runs {{sys.executable}}, not this interpreter"
block_provider_requests().__enter__()
"""


def test_the_four_notebooks_are_there() -> None:
    assert {p.stem for p in NOTEBOOKS} >= {
        "quickstart",
        "seed_workflow",
        "custom_adapter",
        "understanding",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} have outputs; run `python scripts/strip_notebooks.py`"
    )
    assert nb.metadata.kernelspec.name == "python3"


def _execute(path: Path, tmp_path: Path, keep: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    work = tmp_path / "examples"
    shutil.copytree(
        EXAMPLES, work, ignore=shutil.ignore_patterns("out", ".ipynb_checkpoints", "__pycache__")
    )
    nb = nbformat.read(work / path.name, as_version=4)
    nb.cells.insert(0, new_code_cell(GUARD))
    env = {k: v for k, v in os.environ.items() if k not in KEYS or k in keep}
    env["AVATARKIT_CACHE_DIR"] = str(tmp_path / "cache")
    (tmp_path / "tmp").mkdir()
    env["TMPDIR"] = str(tmp_path / "tmp")  # the notebooks' temporary folders and clips go here
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(work)}},
    )
    client.execute(env=env)  # raises CellExecutionError, with the cell and traceback, on error
    return nb


def _outputs(nb: nbformat.NotebookNode) -> tuple[str, dict[str, list[Any]]]:
    """All stream text, and every rich output by MIME type."""
    text, rich = [], {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            for mime, data in out.get("data", {}).items():
                rich.setdefault(mime, []).append(data)
    return "".join(text), rich


def _embedded(html: list[str], mime: str) -> list[bytes]:
    pattern = re.compile(rf'src="data:{re.escape(mime)};base64,([^"]+)"')
    return [base64.b64decode(m) for h in html for m in pattern.findall(h)]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_offline_with_no_keys(path: Path, tmp_path: Path) -> None:
    nb = _execute(path, tmp_path)
    text, rich = _outputs(nb)
    html = rich.get("text/html", [])
    markdown = "".join(rich.get("text/markdown", []))
    videos, audios = _embedded(html, "video/mp4"), _embedded(html, "audio/wav")
    pngs = [base64.b64decode(p) for p in rich.get("image/png", [])]
    assert all(p.startswith(b"\x89PNG") for p in pngs)
    assert all(v[4:8] == b"ftyp" for v in videos), "embedded videos are MP4 files"
    assert all(a[:4] == b"RIFF" for a in audios), "embedded audio is WAV"

    if path.stem == "quickstart":
        assert len(videos) >= 2 and len(audios) >= 1
        assert len(pngs) >= 2, "the avatar's picture and the timeline plot"
        saved = tmp_path / "examples" / "out" / "quickstart"
        assert {"video.mp4", "speech.wav", "avatar.png", "timeline.json"} <= {
            p.name for p in saved.iterdir()
        }
    elif path.stem == "seed_workflow":
        for line in ("[1/4] picture: local", "[2/4] script: local", "[3/4] voice: espeak",
                     "[4/4] video: local"):  # fmt: skip
            assert line in text
        assert "| voice | `espeak` | local |" in markdown
        assert len(videos) == 1 and len(audios) == 1 and len(pngs) == 1
        assert (tmp_path / "examples" / "out" / "seed_workflow" / "video.mp4").stat().st_size
    elif path.stem == "custom_adapter":
        assert "3 passed" in text, "the adapter's own pytest tests pass"
        assert "check_voice caught it: declares phoneme_timings" in text
        assert "robot   from avatarkit-robot" in text, "found by its entry point"
        assert len(audios) >= 1 and len(videos) == 1
    elif path.stem == "understanding":
        assert "| Where are you from? | out_of_scope | ask_about_avatar |" in markdown
        assert "| Hi, my name is Grace. | greeting |" in markdown
        assert "handler:book_appointment | Done, Grace! You are booked on 2026-11-28 at 15:00." in (
            markdown
        )
        assert "You are booked on 2026-11-30 at 11:00." in markdown, "continued after a restart"
        assert "| This is unacceptable, I hate it! | -0.79 | negative | angry |" in markdown
        assert len(audios) == 1


class _FakeCloud(BaseHTTPRequestHandler):
    """AUTOMATIC1111's txt2img and an OpenAI-compatible chat endpoint, on 127.0.0.1."""

    requests: ClassVar[list[tuple[str, dict[str, str], dict[str, Any]]]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer({"progress": 0.5, "eta_relative": 0.1, "state": {}})  # /sdapi/v1/progress

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.path == "/sdapi/v1/txt2img":
            with Image.open(Path(__file__).parent / "data" / "portrait.jpg") as im:
                buf = io.BytesIO()
                im.convert("RGB").save(buf, "PNG")
            info = {"seed": body["seed"], "sd_model_name": "fake-sd"}
            self._answer({"images": [base64.b64encode(buf.getvalue()).decode()],
                          "parameters": {}, "info": json.dumps(info)})  # fmt: skip
        elif self.path == "/v1/chat/completions":
            self._answer({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": "Hello! I come from the cloud."}}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
            })  # fmt: skip
        else:
            self.send_error(404)


@pytest.mark.slow
def test_seed_workflow_notebook_uses_the_cloud_steps_that_are_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _FakeCloud.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeCloud)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("A1111_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-notebook-test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", f"{url}/v1")
    try:
        nb = _execute(
            EXAMPLES / "seed_workflow.ipynb", tmp_path, keep=("A1111_URL", "OPENAI_API_KEY")
        )
    finally:
        server.shutdown()
        server.server_close()
    text, rich = _outputs(nb)
    assert f"[1/4] picture: automatic1111:{url}" in text
    assert "[2/4] script: openai:gpt-4o-mini" in text and "I come from the cloud" in text
    assert "[3/4] voice: espeak" in text and "[4/4] video: local" in text
    markdown = "".join(rich["text/markdown"])
    assert f"| image | `automatic1111:{url}` | cloud |" in markdown
    assert "| chat | `openai:gpt-4o-mini` | cloud |" in markdown
    assert "| renderer | `local` | local |" in markdown
    paths = [path for path, _, _ in _FakeCloud.requests]
    assert paths == ["/sdapi/v1/txt2img", "/v1/chat/completions"]
    _, headers, chat = _FakeCloud.requests[1]
    assert headers["authorization"] == "Bearer sk-notebook-test-key"
    assert chat["messages"][-1]["content"] == "Introduce yourself in two sentences."


# --------------------------------------------------------------------------- notebook display


def test_voice_and_video_show_themselves_in_a_notebook(tmp_path: Path) -> None:
    from avatarkit.testing import fake_speech

    voice = fake_speech("Hello there")
    assert _embedded([voice._repr_html_()], "audio/wav") == [voice.audio]
    pcm = voice.model_copy(update={"format": "pcm_s16le"})
    assert "&lt;" in pcm._repr_html_() and "<audio" not in pcm._repr_html_()

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    video = AvatarVideo(path=clip, width=64, height=64, fps=25, frame_count=1, duration=0.04)
    assert _embedded([video._repr_html_()], "video/mp4") == [clip.read_bytes()]
    mov = video.model_copy(update={"format": "mov"})
    assert 'src="data:video/quicktime;base64,' in mov._repr_html_()
    clip.unlink()
    assert "file not found" in video._repr_html_()

    reply = Response(input=UserInput(text="<b>hi</b>"), voice=voice)
    shown = reply._repr_html_()
    assert "&lt;b&gt;hi&lt;/b&gt;" in shown and _embedded([shown], "audio/wav") == [voice.audio]


def test_pictures_show_as_png_or_jpeg() -> None:
    png = AvatarImage(data=b"\x89PNG...", width=1, height=1, format="png")
    jpeg = AvatarImage(data=b"\xff\xd8...", width=1, height=1, format="jpeg")
    assert png._repr_png_() == png.data and png._repr_jpeg_() is None
    assert jpeg._repr_jpeg_() == jpeg.data and jpeg._repr_png_() is None
