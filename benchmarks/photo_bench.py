"""Photo mode speed: milliseconds per PhotoRig.draw at 512x512, by kind of frame.

Run: python benchmarks/photo_bench.py [portrait.jpg] [--size 512]

Prints ms per frame for typical FaceStates (rest, speech, speech + blink, speech + head motion,
everything) and, for a 10 s clip at 25 fps with speech-like mouth motion, idle head motion and
blinks, how many times faster than real time the drawing alone runs. The machine's load is
printed too: on a shared machine, compare numbers from the same run only.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from avatarkit.animation.face_state import FaceState
from avatarkit.animation.pose import plan_pose
from avatarkit.render.photo import PhotoRig
from avatarkit.types import AvatarImage, Emotion, WordTiming

DEFAULT = Path(__file__).resolve().parent.parent / "tests" / "data" / "portrait.jpg"


def _clip_states(seconds: float, fps: int) -> list[FaceState]:
    """Speech-like states: syllables every ~0.2 s, pauses, idle head motion and blinks."""
    rng = np.random.default_rng(0)
    words, t = [], 0.3
    while t < seconds - 0.5:
        d = float(rng.uniform(0.15, 0.5))
        words.append(WordTiming(text="word", start=t, end=t + d))
        t += d + (float(rng.uniform(0.3, 0.6)) if rng.random() < 0.2 else 0.03)
    poses = plan_pose(words, [], seconds, seed=1)
    pt = np.array([p.time for p in poses])
    chans = {k: np.array([getattr(p, k) for p in poses]) for k in ("yaw", "pitch", "roll", "blink")}
    states = []
    for i in range(int(seconds * fps)):
        t = i / fps
        speaking = any(w.start <= t < w.end for w in words)
        jaw = max(0.0, 0.45 + 0.35 * np.sin(2 * np.pi * 4.5 * t)) if speaking else 0.0
        states.append(
            FaceState(
                jaw_open=float(jaw),
                lips_closed=0.0 if jaw > 0.1 else 1.0,
                mouth_width=float(0.4 * np.sin(2 * np.pi * 1.7 * t)) if speaking else 0.0,
                emotions={Emotion.HAPPY: 0.4},
                **{k: float(np.interp(t, pt, v)) for k, v in chans.items()},
            )
        )
    return states


def _time(rig: PhotoRig, states: list[FaceState], repeat: int = 3) -> float:
    for s in states[:10]:
        rig.draw(s)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for s in states:
            rig.draw(s)
        best = min(best, (time.perf_counter() - start) / len(states))
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("portrait", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    data = args.portrait.read_bytes()
    fmt = "png" if data[:4] == b"\x89PNG" else "jpeg"
    image = AvatarImage(data=data, format=fmt, width=1, height=1)

    start = time.perf_counter()
    rig = PhotoRig(image, size=args.size)
    setup_ms = (time.perf_counter() - start) * 1e3

    rng = np.random.default_rng(0)
    jaws = rng.uniform(0.05, 0.8, 200)
    kinds = {
        "rest (no change)": [FaceState()] * 200,
        "speech (jaw, lips)": [FaceState(jaw_open=float(j), lips_closed=0.0) for j in jaws],
        "speech + blink": [FaceState(jaw_open=float(j), lips_closed=0.0, blink=1.0) for j in jaws],
        "speech + head motion": [
            FaceState(jaw_open=float(j), lips_closed=0.0, yaw=1.2, pitch=-0.8, roll=0.6)
            for j in jaws
        ],
        "everything": [
            FaceState(
                jaw_open=float(j),
                lips_closed=0.0,
                mouth_width=0.3,
                blink=0.5,
                emotions={Emotion.HAPPY: 0.6},
                yaw=1.2,
                pitch=-0.8,
                roll=0.6,
            )
            for j in jaws
        ],
    }
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"portrait: {args.portrait.name}, frame {args.size}x{args.size}, "
        f"setup (detect + precompute) {setup_ms:.0f} ms"
    )
    print(f"{'frame kind':<24}{'ms/draw':>10}")
    for name, states in kinds.items():
        print(f"{name:<24}{_time(rig, states):>10.2f}")
    print("(head motion above: the default, one warpAffine of the whole picture)")

    clip = _clip_states(10.0, 25)
    still = PhotoRig(image, size=args.size, still_background=True)
    print("10 s clip at 25 fps (speech, idle head motion, blinks), measured side by side:")
    for label, r in (
        ("whole picture moves (default)", rig),
        ("head moves, background still", still),
    ):
        ms = _time(r, clip, repeat=2)
        print(
            f"  {label:<30}{ms:6.2f} ms/frame, drawing alone "
            f"{1000 / (ms * 25):5.1f}x faster than real time"
        )


if __name__ == "__main__":
    main()
