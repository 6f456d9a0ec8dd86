"""How a picture was made, written into its PNG the way the web UI does (a ``parameters`` chunk).

The web UI's "PNG Info" tab, and tools that read it, show the prompt, negative prompt, steps,
sampler, CFG scale, seed, size and model of an image saved here; avatarkit's own full record
(embeddings, LoRAs, seeds tried…) travels beside it as JSON in an ``avatarkit`` chunk.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from avatarkit._files import write_bytes_atomic
from avatarkit._image import decode_picture, encode_png
from avatarkit.types import PROVENANCE_KEY, AvatarImage, provenance_from_text

__all__ = [
    "PARAMETERS_KEY",
    "PROVENANCE_KEY",
    "Infotext",
    "infotext_from_provenance",
    "png_with_provenance",
    "read_parameters",
    "read_provenance",
    "save_image",
]

PARAMETERS_KEY = "parameters"
"""PNG text chunk the web UI writes and reads."""

_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_NEGATIVE = "Negative prompt:"


def _quote(value: str) -> str:
    if "," not in value and "\n" not in value and ":" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            out = json.loads(value)
        except json.JSONDecodeError:
            return value
        return str(out)
    return value


@dataclass
class Infotext:
    """The web UI's generation-parameters text: prompt, negative prompt, one line of settings."""

    prompt: str
    negative_prompt: str = ""
    params: dict[str, str] = field(default_factory=dict)
    """Settings in order, e.g. ``{"Steps": "30", "Sampler": "Euler a", "Seed": "42"}``."""

    def format(self) -> str:
        """The text, as the web UI writes it (values holding ``,`` ``:`` or newlines quoted)."""
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"{_NEGATIVE} {self.negative_prompt}")
        lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in self.params.items()))
        return "\n".join(lines)

    @classmethod
    def parse(cls, text: str) -> Infotext:
        """Read a ``parameters`` text (the web UI's or ours) back."""
        lines = text.strip().split("\n")
        last = lines[-1]
        if len(_PARAM.findall(last)) < 3:  # no settings line: all of it is prompt
            lines.append(last)
            last = ""
        prompt: list[str] = []
        negative: list[str] = []
        in_negative = False
        for line in lines[:-1]:
            line = line.strip()
            if line.startswith(_NEGATIVE):
                in_negative = True
                line = line[len(_NEGATIVE) :].strip()
            (negative if in_negative else prompt).append(line)
        params = {k.strip(): _unquote(v.strip()) for k, v in _PARAM.findall(last)}
        return cls("\n".join(prompt), "\n".join(negative), params)


def _fmt_number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def infotext_from_provenance(provenance: dict[str, Any]) -> Infotext:
    """Build the web UI's parameters text from an :class:`~avatarkit.AvatarImage` provenance."""
    params: dict[str, str] = {}
    mapping = [
        ("Steps", "steps"),
        ("Sampler", "sampler"),
        ("CFG scale", "guidance"),
        ("Seed", "seed"),
    ]
    for key, src in mapping:
        if provenance.get(src) is not None:
            params[key] = _fmt_number(provenance[src])
    if provenance.get("width") and provenance.get("height"):
        params["Size"] = f"{provenance['width']}x{provenance['height']}"
    if provenance.get("model_hash"):
        params["Model hash"] = str(provenance["model_hash"])
    if provenance.get("model"):
        params["Model"] = Path(str(provenance["model"])).stem or str(provenance["model"])
    if provenance.get("clip_skip") and int(provenance["clip_skip"]) > 1:
        params["Clip skip"] = str(provenance["clip_skip"])
    embeddings = provenance.get("embeddings") or []
    if embeddings:
        params["TI"] = ", ".join(str(e) for e in embeddings)
    loras = provenance.get("loras") or []
    if loras:
        params["Lora"] = ", ".join(f"{d['name']}: {_fmt_number(d['weight'])}" for d in loras)
    if provenance.get("backend"):
        params["Version"] = f"avatarkit {provenance['backend']}"
    return Infotext(
        str(provenance.get("prompt", "")), str(provenance.get("negative_prompt", "")), params
    )


def png_with_provenance(image: Image.Image, provenance: dict[str, Any]) -> bytes:
    """Encode ``image`` as PNG with a web UI ``parameters`` chunk and an ``avatarkit`` JSON chunk.

    ``provenance["parameters"]``, when set, is written as is; otherwise it is built from the
    other fields with :func:`infotext_from_provenance`.
    """
    parameters = provenance.get("parameters") or infotext_from_provenance(provenance).format()
    return encode_png(
        image,
        {
            PARAMETERS_KEY: str(parameters),
            PROVENANCE_KEY: json.dumps(provenance, ensure_ascii=False, default=str),
        },
    )


def _open(data: bytes | str | Path) -> Image.Image:
    """The decoded picture of PNG bytes or of a file (a path as ``Path`` or ``str``)."""
    if isinstance(data, str):
        data = Path(data)
    return decode_picture(data.read_bytes() if isinstance(data, Path) else data)


def read_parameters(data: bytes | str | Path) -> str | None:
    """The web UI ``parameters`` text of a PNG, or None when it has none."""
    value = _open(data).info.get(PARAMETERS_KEY)
    return str(value) if value is not None else None


def read_provenance(data: bytes | str | Path) -> dict[str, Any] | None:
    """The avatarkit provenance dict stored in a PNG, or None when it has none.

    For a PNG made by the web UI (a ``parameters`` chunk only), the dict is rebuilt from that
    text: ``prompt``, ``negative_prompt``, ``steps``, ``sampler``, ``guidance``, ``seed``,
    ``width``, ``height``, ``model``, ``model_hash``.
    """
    return _provenance_of(_open(data).info)


def _provenance_of(info: Mapping[Any, Any]) -> dict[str, Any] | None:
    """:func:`read_provenance` of a decoded PNG's ``info`` (its text chunks)."""
    record = provenance_from_text(info.get(PROVENANCE_KEY))
    if record:
        return record
    text = info.get(PARAMETERS_KEY)
    if text is None:
        return None
    it = Infotext.parse(str(text))
    out: dict[str, Any] = {"prompt": it.prompt, "negative_prompt": it.negative_prompt}
    p = it.params
    for key, name, conv in [
        ("Steps", "steps", int),
        ("Sampler", "sampler", str),
        ("CFG scale", "guidance", float),
        ("Seed", "seed", int),
        ("Model", "model", str),
        ("Model hash", "model_hash", str),
    ]:
        if key in p:
            try:
                out[name] = conv(p[key])
            except ValueError:
                out[name] = p[key]
    if "Size" in p and "x" in p["Size"]:
        w, _, h = p["Size"].partition("x")
        if w.isdigit() and h.isdigit():
            out["width"], out["height"] = int(w), int(h)
    out["parameters"] = str(text)
    return out


def save_image(image: AvatarImage, path: Path) -> Path:
    """Write ``image`` to ``path`` atomically; a PNG keeps (or gains) its provenance chunks.

    A PNG that already carries a provenance record (a web UI ``parameters`` chunk or
    avatarkit's own) is written as it is, unless the picture's face box is not the one the
    record holds (a generated picture cropped to its face): the record gets the new box, which
    :meth:`AvatarImage.load` reads back.
    """
    path = Path(path)
    data = image.data
    if image.format == "png":
        picture = _open(data)  # decoded once: its chunks are read, and it may be written again
        written = _provenance_of(picture.info)
        box = list(image.face_box) if image.face_box is not None else None
        if written is None and image.provenance:
            provenance = dict(image.provenance)
            if box is not None:  # AvatarImage.load reads the face box back from here
                provenance["face_box"] = box
            data = png_with_provenance(picture, provenance)
        elif written is not None and box is not None and written.get("face_box") != box:
            # a generator's own chunk, written before the picture was cropped to its face
            provenance = {**written, "face_box": box}
            if (parameters := picture.info.get(PARAMETERS_KEY)) is not None:
                provenance["parameters"] = str(parameters)
            data = png_with_provenance(picture, provenance)
    return write_bytes_atomic(path, data)
