"""examples/seed_workflow.py runs on local stand-ins and falls back when a key is absent."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from _cloud_helpers import png_bytes
from avatarkit.ports import ImageCapabilities, RendererCapabilities, VoiceCapabilities
from avatarkit.registry import Provider, default_registry
from avatarkit.types import AvatarImage, AvatarVideo, VoiceOutput, WordTiming

# unclosed sockets or files are errors here, not warnings left to the garbage collector
pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

EXAMPLE = Path(__file__).parents[1] / "examples" / "seed_workflow.py"


class Image:
    capabilities = ImageCapabilities(kinds=("procedural",))

    async def generate(self, prompt: Any, *, progress: Any = None) -> AvatarImage:
        return AvatarImage(data=png_bytes(), width=64, height=80, kind="procedural",
                           provenance={"seed": prompt.seed})  # fmt: skip


class Chat:
    async def complete(self, messages: Any) -> str:
        return "Hello, I am your avatar."


class Voice:
    capabilities = VoiceCapabilities(word_timings=True)

    async def synthesize(self, text: str) -> VoiceOutput:
        return VoiceOutput(audio=b"RIFF", format="wav", sample_rate=16000, duration=1.0, text=text,
                           words=[WordTiming(text="Hello", start=0.0, end=0.4, char_start=0,
                                             char_end=5)])  # fmt: skip


class Renderer:
    capabilities = RendererCapabilities(image_kinds=("procedural", "photo"))

    async def render(
        self, image: Any, voice: Any, timeline: Any, *, output: Path, **kw: Any
    ) -> AvatarVideo:
        output.write_bytes(b"video")
        return AvatarVideo(path=output, width=64, height=80, fps=25, frame_count=25, duration=1.0)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch):
    for name, role, obj in [("local", None, None), ("espeak", "voice", Voice)]:
        if role is None:
            p = Provider("local", image=lambda n, **k: Image(), chat=lambda n, **k: Chat(),
                         renderer=lambda n, **k: Renderer())  # fmt: skip
        else:
            p = Provider(name, **{role: lambda n, _o=obj, **k: _o()})
        default_registry.register(p, replace=True)
    for var in ("OPENAI_API_KEY", "ELEVENLABS_API_KEY", "DID_API_KEY", "A1111_URL"):
        monkeypatch.delenv(var, raising=False)
    spec = importlib.util.spec_from_file_location("seed_workflow", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["seed_workflow"] = module
    spec.loader.exec_module(module)
    yield module
    default_registry.unregister("local")
    default_registry.unregister("espeak")
    sys.modules.pop("seed_workflow", None)


async def test_runs_offline_and_says_which_backend(example, tmp_path: Path, capsys) -> None:
    rc = await example.main(example.parse_args(["Say hi.", "--out", str(tmp_path), "--offline"]))
    out = capsys.readouterr().out
    assert rc == 0
    for line in ("[1/4] picture: local", "[2/4] script: local", "[3/4] voice: espeak",
                 "[4/4] video: local"):  # fmt: skip
        assert line in out
    assert (tmp_path / "video.mp4").read_bytes() == b"video"
    assert {"avatar.png", "speech.wav", "timeline.json", "response.json"} <= {
        p.name for p in tmp_path.iterdir()
    }


async def test_cloud_step_without_key_falls_back(example, tmp_path: Path, capsys) -> None:
    default_registry.register(
        __import__("avatarkit.providers.elevenlabs").providers.elevenlabs.provider, replace=True
    )
    try:
        args = example.parse_args(["--out", str(tmp_path), "--voice", "elevenlabs"])
        assert await example.main(args) == 0
    finally:
        default_registry.unregister("elevenlabs")
    out = capsys.readouterr().out
    assert "voice: elevenlabs unavailable" in out and "ELEVENLABS_API_KEY" in out
    assert "[3/4] voice: espeak" in out
