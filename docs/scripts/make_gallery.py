"""Write the procedural-avatar gallery: stills in docs/img/gallery/ and docs/gallery.md.

    python docs/scripts/make_gallery.py

Everything is drawn offline from seeds, so the gallery is reproducible.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from avatarkit.animation.face_state import OCULUS_VISEMES, FaceState
from avatarkit.animation.sampler import VISEME_MOUTH
from avatarkit.render.face import ProceduralFace
from avatarkit.render.procedural import generate_procedural, params_from_image
from avatarkit.types import Emotion

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "img" / "gallery"
SEEDS = [0, 1, 2, 3, 5, 6, 11, 34]  # one per hair style, eight skin tones
EXPRESSION_SEED = 1
EXPRESSIONS = [
    ("neutral", FaceState()),
    ("happy", FaceState(emotions={Emotion.HAPPY: 1.0}, visemes={"E": 1.0}, jaw_open=0.3,
                        mouth_width=0.5, lips_closed=0.0)),
    ("sad", FaceState(emotions={Emotion.SAD: 0.9})),
    ("angry", FaceState(emotions={Emotion.ANGRY: 0.9})),
    ("surprised", FaceState(emotions={Emotion.SURPRISED: 1.0}, visemes={"oh": 1.0},
                            jaw_open=0.5, mouth_width=-0.6, lips_closed=0.0)),
    ("thinking", FaceState(emotions={Emotion.THINKING: 1.0}, gaze_x=0.6, gaze_y=-0.8)),
    ("blink", FaceState(blink=1.0)),
    ("head turn", FaceState(yaw=4.0, roll=5.0, gaze_x=0.5)),
]  # fmt: skip


def _png(array: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    path.write_bytes(buf.getvalue())


def _talking_gif(path: Path) -> None:
    """A 3 s talking clip as a GIF (visemes of "hello, how are you today?")."""
    from avatarkit.audio import encode_wav
    from avatarkit.render.local import LocalRenderer
    from avatarkit.types import AvatarPose, FacialExpression, Timeline, VisemeCue, VoiceOutput

    shapes = [
        "sil",
        "kk",
        "E",
        "nn",
        "oh",
        "sil",
        "sil",
        "ih",
        "aa",
        "ou",
        "aa",
        "RR",
        "ih",
        "ou",
        "DD",
        "oh",
        "DD",
        "E",
        "sil",
    ]
    cues, t = [], 0.3
    for v in shapes:
        d = 0.22 if v == "sil" else 0.12
        if v != "sil":
            cues.append(VisemeCue(viseme=v, start=round(t, 3), end=round(t + d, 3)))
        t += d
    duration = 3.0
    poses = [AvatarPose(time=0.0), AvatarPose(time=0.9, yaw=2.5, roll=-2.0, gaze_x=0.2),
             AvatarPose(time=1.5, blink=0.0), AvatarPose(time=1.56, blink=1.0),
             AvatarPose(time=1.62, blink=1.0), AvatarPose(time=1.74, blink=0.0),
             AvatarPose(time=2.2, yaw=-2.0, roll=2.5, pitch=1.5), AvatarPose(time=3.0)]  # fmt: skip
    timeline = Timeline(
        duration=duration, visemes=cues, poses=poses,
        expressions=[FacialExpression(time=1.0, emotion=Emotion.HAPPY, intensity=0.8,
                                      transition=0.5)],
    )  # fmt: skip
    voice = VoiceOutput(audio=encode_wav(np.zeros(int(16000 * duration), np.float32), 16000),
                        sample_rate=16000, duration=duration)  # fmt: skip
    image = generate_procedural(12, size=256)
    LocalRenderer(fps=12.5, format="gif").render_sync(image, voice, timeline, output=path)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Procedural avatar gallery",
        "",
        "Every face below is drawn offline by the `local` image generator from a seed "
        "(`avatarkit avatar --style procedural --seed 7 -o face.png`, or "
        "`generate_procedural(7)` in Python). The same seed always gives the same face; any "
        "parameter can be overridden. Regenerate this page with "
        "`python docs/scripts/make_gallery.py`.",
        "",
        "## Avatars",
        "",
    ]
    for seed in SEEDS:
        img = generate_procedural(seed, size=384)
        (OUT / f"avatar-seed{seed}.png").write_bytes(img.data)
        p = params_from_image(img)
        alt = f"seed {seed}: {p.hair_style} hair, {p.clothing}"
        lines.append(f"![{alt}](img/gallery/avatar-seed{seed}.png){{ width=192 }}")
    lines += ["", "| seed | hair | clothing | glasses | earrings | background |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for seed in SEEDS:
        p = params_from_image(generate_procedural(seed, size=64))
        lines.append(f"| {seed} | {p.hair_style} | {p.clothing} | {p.glasses} | {p.earrings} "
                     f"| {p.background_style} |")  # fmt: skip

    face = ProceduralFace(params_from_image(generate_procedural(EXPRESSION_SEED)), 512)
    lines += ["", "## Expressions, blinks and head motion", ""]
    lines += [f"Seed {EXPRESSION_SEED}, drawn by `ProceduralFace.draw(FaceState(...))`.", ""]
    for name, state in EXPRESSIONS:
        crop = face.draw(state)[40:440, 56:456]
        slug = name.replace(" ", "-")
        _png(np.asarray(Image.fromarray(crop).resize((256, 256), Image.LANCZOS)),
             OUT / f"expression-{slug}.png")  # fmt: skip
        lines.append(f"![{name}](img/gallery/expression-{slug}.png){{ width=160 }}")
    lines += ["", " · ".join(n for n, _ in EXPRESSIONS), ""]

    lines += ["## Mouth shapes", "",
              "One mouth per Oculus viseme (left to right: " + ", ".join(OCULUS_VISEMES) + "); "
              "while speaking the renderer crossfades between them.", ""]  # fmt: skip
    x, y, w, h = face.mouth_box
    tiles = []
    for v in OCULUS_VISEMES:
        jaw, width, closed = VISEME_MOUTH[v]
        frame = face.draw(FaceState(visemes={v: 1.0}, jaw_open=jaw, mouth_width=width,
                                    lips_closed=closed))  # fmt: skip
        tiles.append(frame[y - 6 : y + h, x : x + w])
    strip = np.concatenate([np.pad(t, ((0, 0), (0, 4), (0, 0)), constant_values=255)
                            for t in tiles], axis=1)  # fmt: skip
    _png(strip, OUT / "visemes.png")
    lines += ["![the 15 viseme mouths](img/gallery/visemes.png)", ""]
    lines += ["## Talking", "",
              "A short clip from `LocalRenderer(format=\"gif\")`: visemes crossfading, a blink, an "
              "expression easing in, idle head motion (the MP4 carries the audio).", "",
              "![talking](img/gallery/talking.gif)", ""]  # fmt: skip
    _talking_gif(OUT / "talking.gif")
    (ROOT / "gallery.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(list(OUT.glob('*.png')))} images and {ROOT / 'gallery.md'}")


if __name__ == "__main__":
    main()
