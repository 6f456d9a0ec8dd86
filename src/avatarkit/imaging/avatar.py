"""Make the avatar picture and save it with its provenance: what ``avatarkit avatar`` runs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avatarkit import _sync
from avatarkit.errors import InputValidationError
from avatarkit.imaging.preset import get_preset
from avatarkit.imaging.provenance import save_image
from avatarkit.ports import ImageGenerator, ProgressCallback
from avatarkit.registry import create
from avatarkit.types import AvatarImage, AvatarPrompt

__all__ = ["generate_avatar", "make_avatar"]


async def make_avatar(
    generator: ImageGenerator,
    prompt: AvatarPrompt,
    output: Path | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> AvatarImage:
    """Generate one picture with ``generator``; write it to ``output`` (PNG) when given."""
    if output is not None:
        _check_output(Path(output))
    image = await generator.generate(prompt, progress=progress)
    if output is not None:  # re-encoding a large PNG takes a while: not on the event loop
        await asyncio.to_thread(save_image, image, Path(output))
    return image


def _check_output(output: Path) -> None:
    if output.suffix.lower() != ".png":
        raise InputValidationError(
            f"the avatar is saved as PNG (with its parameters); {output.name} is not a .png",
            field="output",
        )
    if output.is_dir():
        raise InputValidationError(f"{output} is a folder", field="output")


def generate_avatar(
    model: str | Path | None,
    prompt: str | None = None,
    *,
    output: str | Path,
    negative: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    size: int | tuple[int, int] | None = None,
    guidance: float | None = None,
    sampler: str | None = None,
    preset: str | None = None,
    token: str | None = None,
    backend: str = "diffusers",
    options: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Make an avatar picture from a prompt and save it as a PNG with its provenance.

    ``avatarkit avatar --backend diffusers --model PATH --prompt "…" --negative "…"`` calls
    this. Works offline with a local model folder or checkpoint file.

    Args:
        model: Model folder, checkpoint file or hub id (``None``: the backend's default).
        prompt: The prompt in the web UI's syntax; the preset's when None.
        output: Where to write the PNG.
        negative: Negative prompt (the preset's when None and a preset is given).
        seed: Fixed seed (random when None); it is written into the PNG.
        steps: Denoising steps.
        size: Edge in pixels, or (width, height).
        guidance: Classifier-free guidance (the web UI's "CFG scale").
        sampler: A web UI sampler name such as ``"DPM++ 2M Karras"``.
        preset: A named preset (``"fantasy-portrait"``) supplying prompt and settings.
        token: The personal trigger token put into the preset's prompt.
        backend: Image provider name (``"diffusers"``, ``"automatic1111"``…).
        options: Backend options, e.g. ``{"embeddings": [...], "device": "cuda"}``.
        progress: Called as ``progress(step, steps)``.

    Returns:
        The path written.

    Raises:
        InputValidationError: bad arguments, before any model is loaded.
    """
    out = Path(output)
    _check_output(out)
    fields: dict[str, Any] = {}
    if preset is not None:
        fields = get_preset(preset).to_prompt(token).model_dump()
    elif prompt is None:
        raise InputValidationError("give a prompt or a preset", field="prompt")
    if prompt is not None:
        fields["prompt"] = prompt
    if negative is not None:
        fields["negative"] = negative
    if isinstance(size, int):
        fields["width"] = fields["height"] = size
    elif size is not None:
        fields["width"], fields["height"] = size
    for key, value in (("seed", seed), ("steps", steps), ("guidance", guidance)):
        if value is not None:
            fields[key] = value
    if sampler is not None:
        fields["style"] = {**fields.get("style", {}), "sampler": sampler}
    try:
        avatar_prompt = AvatarPrompt(**fields)
    except ValueError as exc:
        raise InputValidationError(f"bad avatar settings: {exc}") from exc
    spec = f"{backend}:{model}" if model is not None else backend
    generator = create("image", spec, **dict(options or {}))
    _sync.run(make_avatar(generator, avatar_prompt, out, progress=progress))
    return out
