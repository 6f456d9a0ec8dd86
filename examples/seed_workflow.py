"""The seed's four-step workflow: picture → script → voice → video.

    AUTOMATIC1111 (avatar picture) → OpenAI chat (script) → ElevenLabs (voice) → D-ID (video)

Each step uses its cloud service when it is configured and falls back to avatarkit's local
default when it is not (or when you pass ``--offline``); every step prints which backend it used.

    export OPENAI_API_KEY=... ELEVENLABS_API_KEY=... DID_API_KEY=...
    export A1111_URL=http://127.0.0.1:7860        # a web UI started with --api
    python examples/seed_workflow.py "Introduce yourself in two sentences." --out out/seed

Override any step with a spec: ``--image automatic1111:http://gpu:7860 --voice espeak``.
Costs (rough): ElevenLabs bills the script's characters; D-ID bills per started 15 s of video.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from avatarkit.errors import AvatarKitError, ConfigurationError, InputValidationError
from avatarkit.registry import create
from avatarkit.types import (
    AvatarPrompt,
    ChatMessage,
    DialogueResponse,
    Emotion,
    FacialExpression,
    Response,
    Timeline,
    UserInput,
)

LOCAL = {"image": "local", "chat": "local", "voice": "espeak", "renderer": "local"}


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


def backend(role: str, spec: str | None, **options: Any) -> tuple[Any, str]:
    """Build the role's backend from ``spec``; fall back to the local default when it cannot."""
    if spec:
        try:
            return create(role, spec, **options), spec  # type: ignore[arg-type]
        except ConfigurationError as exc:  # missing key or extra, unknown provider
            print(f"  {role}: {spec} unavailable ({exc}); using {LOCAL[role]}")
    return create(role, LOCAL[role]), LOCAL[role]  # type: ignore[arg-type]


async def main(args: argparse.Namespace) -> int:
    specs = cloud_specs()
    for role in LOCAL:
        chosen = getattr(args, role)
        specs[role] = None if args.offline else (chosen or specs[role])

    # 1. The avatar's picture.
    image_gen, used = backend(
        "image",
        specs["image"],
        **(
            {"show_progress": True}
            if specs["image"] and specs["image"].startswith("automatic1111")
            else {}
        ),
    )
    print(f"[1/4] picture: {used}")
    image = await image_gen.generate(
        AvatarPrompt(
            "studio portrait photo of a friendly presenter, looking at the camera, "
            "neutral background, closed mouth",
            negative="sunglasses, hands, text, watermark, open mouth",
            seed=args.seed,
            width=512,
            height=512,
            steps=25,
        )
    )
    print(f"      {image!r}; seed {image.provenance.get('seed')}")

    # 2. The script.
    chat, used = backend("chat", specs["chat"])
    print(f"[2/4] script: {used}")
    script = await chat.complete(
        [
            ChatMessage(
                role="system",
                content="You are a warm, concise presenter. Answer in at most three sentences, "
                "plain text, no stage directions.",
            ),
            ChatMessage(role="user", content=args.topic),
        ]
    )
    print(f"      {script!r}")

    # 3. The voice.
    voice, used = backend("voice", specs["voice"])
    print(f"[3/4] voice: {used}")
    if hasattr(voice, "estimate_cost"):
        print(f"      cost estimate: {voice.estimate_cost(script)}")
    speech = await voice.synthesize(script)
    print(f"      {speech!r}")

    # 4. The video.
    renderer, used = backend("renderer", specs["renderer"])
    if image.kind not in renderer.capabilities.image_kinds:
        print(f"      {used} cannot animate a {image.kind} picture; using {LOCAL['renderer']}")
        renderer, used = backend("renderer", None)
    print(f"[4/4] video: {used}")
    timeline = Timeline(
        text=script,
        duration=speech.duration,
        words=speech.words,
        phonemes=speech.phonemes,
        expressions=[FacialExpression(time=0.0, emotion=Emotion.HAPPY, intensity=0.6)],
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    video = await renderer.render(image, speech, timeline, output=out / "video.mp4")
    print(f"      {video.path} ({video.duration:.1f} s, {video.width}x{video.height})")

    result = Response(
        input=UserInput(text=args.topic),
        dialogue=DialogueResponse(text=script, handled_by=specs["chat"] or LOCAL["chat"]),
        voice=speech,
        timeline=timeline,
        image=image,
        video=video,
    )
    for kind, path in result.save(out).items():
        print(f"      saved {kind}: {path}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("topic", nargs="?", default="Introduce yourself in two sentences.")
    p.add_argument("--out", default="out/seed_workflow")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--offline", action="store_true", help="use the local default for every step")
    for role in LOCAL:
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
