"""The seed's four-step workflow: picture → script → voice → video.

    AUTOMATIC1111 (avatar picture) → OpenAI chat (script) → ElevenLabs (voice) → D-ID (video)

Each step uses its cloud service when it is configured and falls back to avatarkit's local
default when it is not (or when you pass ``--offline``); every step prints which backend it used.

    export OPENAI_API_KEY=... ELEVENLABS_API_KEY=... DID_API_KEY=...
    export A1111_URL=http://127.0.0.1:7860        # a web UI started with --api
    python examples/seed_workflow.py "Introduce yourself in two sentences." --out out/seed

Override any step with a spec: ``--image automatic1111:http://gpu:7860 --voice espeak``.
Costs (rough): ElevenLabs bills the script's characters; D-ID bills per started 15 s of video.

The steps are plain functions (``make_picture``, ``write_script``, ``speak``, ``make_video``;
``assemble`` packs their results into a Response, ``run_workflow`` chains all of it), so a
notebook can import this file and run the steps one at a time (``examples/seed_workflow.ipynb``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avatarkit.errors import AvatarKitError, ConfigurationError, InputValidationError
from avatarkit.registry import create
from avatarkit.types import (
    AvatarImage,
    AvatarPrompt,
    AvatarVideo,
    ChatMessage,
    DialogueResponse,
    Emotion,
    FacialExpression,
    Response,
    Timeline,
    UserInput,
    VoiceOutput,
)

LOCAL = {"image": "local", "chat": "local", "voice": "espeak", "renderer": "local"}
"""The offline default for each step."""

STEPS = ("image", "chat", "voice", "renderer")

Log = Callable[[str], None]


def cloud_specs() -> dict[str, str | None]:
    """The cloud spec for each step, or None when it is not configured here."""
    return {
        "image": f"automatic1111:{os.environ['A1111_URL']}"
        if os.environ.get("A1111_URL")
        else None,
        "chat": "openai:gpt-4o-mini" if os.environ.get("OPENAI_API_KEY") else None,
        "voice": "elevenlabs:21m00Tcm4TlvDq8ikWAM"
        if os.environ.get("ELEVENLABS_API_KEY")
        else None,
        "renderer": "d-id" if os.environ.get("DID_API_KEY") else None,
    }


def choose_specs(offline: bool = False, **overrides: str | None) -> dict[str, str | None]:
    """The spec to try for each step: an override, else the cloud service if configured.

    ``None`` means the step uses its local default. ``offline=True`` makes every step local.
    """
    unknown = set(overrides) - set(STEPS)
    if unknown:
        raise InputValidationError(f"unknown step(s) {sorted(unknown)}; steps are {STEPS}")
    specs = cloud_specs()
    for role in STEPS:
        specs[role] = None if offline else (overrides.get(role) or specs[role])
    return specs


def backend(role: str, spec: str | None, *, log: Log = print, **options: Any) -> tuple[Any, str]:
    """Build the role's backend from ``spec``; fall back to the local default when it cannot.

    ``options`` go to the cloud backend only. Returns the backend and the spec it was made from.
    """
    if spec:
        try:
            return create(role, spec, **options), spec  # type: ignore[arg-type]
        except ConfigurationError as exc:  # missing key or extra, unknown provider
            log(f"  {role}: {spec} unavailable ({exc}); using {LOCAL[role]}")
    return create(role, LOCAL[role]), LOCAL[role]  # type: ignore[arg-type]


PORTRAIT = AvatarPrompt(
    "studio portrait photo of a friendly presenter, looking at the camera, "
    "neutral background, closed mouth",
    negative="sunglasses, hands, text, watermark, open mouth",
    seed=1234,
    width=512,
    height=512,
    steps=25,
)
"""Step 1's prompt (the seed's "Anime character portrait" idea, as a presenter)."""

SYSTEM = (
    "You are a warm, concise presenter. Answer in at most three sentences, "
    "plain text, no stage directions."
)


async def make_picture(
    spec: str | None, *, seed: int = 1234, prompt: AvatarPrompt = PORTRAIT, log: Log = print
) -> tuple[AvatarImage, str]:
    """Step 1: the avatar's picture (AUTOMATIC1111 when configured, else a procedural face)."""
    options = {"show_progress": True} if spec and spec.startswith("automatic1111") else {}
    image_gen, used = backend("image", spec, log=log, **options)
    log(f"[1/4] picture: {used}")
    image: AvatarImage = await image_gen.generate(prompt.model_copy(update={"seed": seed}))
    log(f"      {image!r}; seed {image.provenance.get('seed')}")
    return image, used


async def write_script(spec: str | None, topic: str, *, log: Log = print) -> tuple[str, str]:
    """Step 2: what the avatar will say (OpenAI when configured, else the local chat model)."""
    chat, used = backend("chat", spec, log=log)
    log(f"[2/4] script: {used}")
    script: str = await chat.complete(
        [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=topic)]
    )
    log(f"      {script!r}")
    return script, used


async def speak(spec: str | None, script: str, *, log: Log = print) -> tuple[VoiceOutput, str]:
    """Step 3: the voice (ElevenLabs when configured, else eSpeak NG)."""
    voice, used = backend("voice", spec, log=log)
    log(f"[3/4] voice: {used}")
    if hasattr(voice, "estimate_cost"):
        log(f"      cost estimate: {voice.estimate_cost(script)}")
    speech: VoiceOutput = await voice.synthesize(script)
    log(f"      {speech!r}")
    return speech, used


async def make_video(
    spec: str | None,
    image: AvatarImage,
    speech: VoiceOutput,
    output: Path,
    *,
    log: Log = print,
    **local_options: Any,
) -> tuple[AvatarVideo, Timeline, str]:
    """Step 4: the talking video (D-ID when configured, else the local renderer).

    ``local_options`` go to the local renderer (e.g. ``size=256`` for a quick preview).
    Falls back to the local renderer when the chosen one cannot animate ``image``'s kind.
    """
    renderer, used = backend("renderer", spec, log=log)
    if used == LOCAL["renderer"] and local_options:
        renderer = create("renderer", LOCAL["renderer"], **local_options)
    if image.kind not in renderer.capabilities.image_kinds:
        log(f"      {used} cannot animate a {image.kind} picture; using {LOCAL['renderer']}")
        renderer, used = create("renderer", LOCAL["renderer"], **local_options), LOCAL["renderer"]
    log(f"[4/4] video: {used}")
    timeline = Timeline(
        text=speech.text,
        duration=speech.duration,
        words=speech.words,
        phonemes=speech.phonemes,
        expressions=[FacialExpression(time=0.0, emotion=Emotion.HAPPY, intensity=0.6)],
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    video: AvatarVideo = await renderer.render(image, speech, timeline, output=output)
    log(f"      {video.path} ({video.duration:.1f} s, {video.width}x{video.height})")
    return video, timeline, used


@dataclass
class WorkflowResult:
    """Everything the four steps made, and which backend made each."""

    response: Response
    used: dict[str, str] = field(default_factory=dict)
    """Step → the spec that ran it (``"image"``, ``"chat"``, ``"voice"``, ``"renderer"``)."""


def assemble(
    topic: str,
    image: AvatarImage,
    script: str,
    speech: VoiceOutput,
    timeline: Timeline,
    video: AvatarVideo,
    *,
    chat: str = "",
) -> Response:
    """One Response holding what the steps made (``.save(folder)`` writes every file)."""
    return Response(
        input=UserInput(text=topic),
        dialogue=DialogueResponse(text=script, handled_by=chat),
        voice=speech,
        timeline=timeline,
        image=image,
        video=video,
    )


async def run_workflow(
    topic: str,
    out: str | Path,
    *,
    seed: int = 1234,
    offline: bool = False,
    overrides: dict[str, str | None] | None = None,
    log: Log = print,
    **local_render_options: Any,
) -> WorkflowResult:
    """Run the four steps and save the result (avatar.png, speech, video, timeline) in ``out``."""
    specs = choose_specs(offline, **(overrides or {}))
    out = Path(out)
    image, used_image = await make_picture(specs["image"], seed=seed, log=log)
    script, used_chat = await write_script(specs["chat"], topic, log=log)
    speech, used_voice = await speak(specs["voice"], script, log=log)
    video, timeline, used_renderer = await make_video(
        specs["renderer"], image, speech, out / "video.mp4", log=log, **local_render_options
    )
    response = assemble(topic, image, script, speech, timeline, video, chat=used_chat)
    for kind, path in response.save(out).items():
        log(f"      saved {kind}: {path}")
    used = {"image": used_image, "chat": used_chat, "voice": used_voice, "renderer": used_renderer}
    return WorkflowResult(response, used)


async def main(args: argparse.Namespace) -> int:
    overrides = {role: getattr(args, role) for role in STEPS}
    await run_workflow(args.topic, args.out, seed=args.seed, offline=args.offline,
                       overrides=overrides)  # fmt: skip
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("topic", nargs="?", default="Introduce yourself in two sentences.")
    p.add_argument("--out", default="out/seed_workflow")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--offline", action="store_true", help="use the local default for every step")
    for role in STEPS:
        p.add_argument(f"--{role}", help=f"spec for the {role} step (default: cloud if set up)")
    return p.parse_args(argv)


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except InputValidationError as exc:
        print(f"bad input: {exc}", file=sys.stderr)
        sys.exit(2)
    except AvatarKitError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        sys.exit(1)
