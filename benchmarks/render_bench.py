"""Local renderer speed and memory: render+encode time as a ratio to the audio's length.

    python benchmarks/render_bench.py            # 10 s at 512x512, 25 fps, + 60 s peak RSS
    python benchmarks/render_bench.py --cores 2  # pin this process and ffmpeg to 2 cores

Prints, side by side in one run (each mode run ``--repeat`` times, interleaved, so a slow spell
of a shared machine hits every mode alike; median and range):
- procedural face, as × real time (target ≥ 20×): a new avatar loaded cold (its layers and
  every mouth and eye shape painted during the render); a new avatar after
  ``LocalRenderer.prepare`` (what the bot does beside the reply's voice stage); and the same
  avatar's next utterance, as in a conversation (new shapes painted on demand);
- the encoder alone: ffmpeg running the renderer's exact command on the same frames pre-drawn
  to a file, in the same loop: the floor a render cannot beat, and a gauge of how fast the
  machine is at that moment; each render divided by the floor of its own iteration;
- photo mode (PhotoRig) when ``avatarkit.render.photo`` is installed (target ≥ 10×);
- the share of CPU time spent drawing frames vs encoding them;
- peak RSS of a 60 s clip, measured in a fresh subprocess (target < 400 MB).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from avatarkit.animation.sampler import TimelineSampler
from avatarkit.audio import encode_wav
from avatarkit.render.encode import FrameEncoder
from avatarkit.render.face import borrow_face, clear_pool, return_face
from avatarkit.render.local import LocalRenderer, _opencv_single_threaded
from avatarkit.render.procedural import generate_procedural, params_from_image
from avatarkit.types import (
    AvatarImage,
    AvatarPose,
    Emotion,
    FacialExpression,
    Timeline,
    VisemeCue,
    VoiceOutput,
)

SR = 22050
SPEECH = ["PP", "aa", "E", "SS", "ih", "DD", "oh", "nn", "kk", "ou", "FF", "RR", "TH", "CH", "E"]


def utterance(duration: float, seed: int = 0) -> tuple[VoiceOutput, Timeline]:
    """Speech-like audio (syllable-rate bursts, pauses) with visemes, expressions and poses."""
    rng = np.random.default_rng(seed)
    n = int(SR * duration)
    t = np.arange(n) / SR
    env = np.zeros(n, np.float32)
    cues: list[VisemeCue] = []
    pos = 0.2
    while pos < duration - 0.3:
        phrase = rng.uniform(1.2, 2.8)
        end = min(pos + phrase, duration - 0.2)
        c = pos
        while c < end:
            d = float(rng.uniform(0.06, 0.16))
            cues.append(VisemeCue(viseme=str(rng.choice(SPEECH)), start=c, end=min(c + d, end)))
            c += d
        env[(t >= pos) & (t < end)] = 1.0
        pos = end + rng.uniform(0.25, 0.6)
    carrier = np.sin(2 * np.pi * 140 * t) + 0.3 * rng.standard_normal(n)
    audio = (0.25 * carrier * env * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2)).astype(np.float32)
    voice = VoiceOutput(audio=encode_wav(audio, SR), sample_rate=SR, duration=duration)
    poses = [
        AvatarPose(time=float(k), yaw=float(rng.normal(0, 2)), pitch=float(rng.normal(0, 1.5)),
                   roll=float(rng.normal(0, 1.5)), gaze_x=float(rng.uniform(-0.3, 0.3)))
        for k in np.arange(0, duration, 0.7)
    ]  # fmt: skip
    emotions = [Emotion.HAPPY, Emotion.THINKING, Emotion.SURPRISED, Emotion.NEUTRAL]
    expressions = [
        FacialExpression(time=float(k), emotion=emotions[i % 4], intensity=0.7, transition=0.4)
        for i, k in enumerate(np.arange(0.5, duration, 4.0))
    ]
    tl = Timeline(duration=duration, visemes=cues, poses=poses, expressions=expressions)
    return voice, tl


def _cpu() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def timed_render(
    r: LocalRenderer, image: AvatarImage, duration: float, seed: int
) -> tuple[float, float]:
    """Wall seconds, and the seconds it would take on 2 otherwise idle cores.

    The second figure comes from CPU time: the drawing thread's work (this process) and
    ffmpeg's (its child) overlap, so an idle 2-core machine needs about
    ``max(python, (python + ffmpeg) / 2)``; it is what the wall time would be without the
    other jobs sharing the cores, and is reported beside the wall time, never instead of it.
    """
    voice, tl = utterance(duration, seed)
    with tempfile.TemporaryDirectory() as d:
        c0 = _cpu()
        t0 = time.perf_counter()
        r.render_sync(image, voice, tl, output=Path(d) / "out.mp4")
        wall = time.perf_counter() - t0
        c1 = _cpu()
    me, kids = c1[0] - c0[0], c1[1] - c0[1]
    return wall, max(me, (me + kids) / 2)


class EncoderFloor:
    """The same clip's frames drawn once to a file, for ffmpeg to encode with nothing else
    running: the floor a render cannot beat on this machine, and a gauge of its speed now."""

    def __init__(self, image: AvatarImage, duration: float, fps: float, folder: Path) -> None:
        r = LocalRenderer(fps=fps)
        voice, tl = utterance(duration, 1)
        _, self.drawer = r._acquire(image, image.width, image.height)
        self.states = TimelineSampler(tl, auto_blink=True).frames(fps)
        self.frames = folder / "frames.yuv"
        self.audio = folder / "speech.wav"
        self.audio.write_bytes(voice.audio)
        with self.frames.open("wb") as f:
            for s in self.states:
                f.write(cv2.cvtColor(self.drawer.draw(s), cv2.COLOR_RGB2YUV_I420).tobytes())
        self.out, self.size, self.fps = folder / "floor.mp4", (image.width, image.height), fps
        self.cmd = self.command(crf=r.crf, qp=r._qp(image, "mp4"))

    def command(self, *, crf: int | None = None, qp: int | None = None) -> list[str]:
        """The renderer's ffmpeg command for these settings, reading the frames' file."""
        w, h = self.size
        enc = FrameEncoder(self.out, width=w, height=h, fps=self.fps, audio=self.audio, crf=crf,
                           qp=qp)  # fmt: skip
        enc._tmp = self.out  # the exact command, reading the file instead of a pipe
        return [str(self.frames) if a == "pipe:0" else a for a in enc._command()]

    def encode(self) -> tuple[float, float]:
        """Wall seconds and CPU seconds of ffmpeg encoding the drawn frames."""
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(self.cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)

    def draw_cpu(self) -> float:
        """CPU seconds to draw every frame (warm sprites; each frame dropped once drawn)."""
        t0 = time.process_time()
        for s in self.states:
            self.drawer.draw(s)
        return time.process_time() - t0


PEAK_SCRIPT = """
import os, resource, sys, tempfile, threading, time
from pathlib import Path
sys.path.insert(0, {bench!r})
from render_bench import utterance
from avatarkit.render.local import LocalRenderer
from avatarkit.render.procedural import generate_procedural, params_from_image

child_peak = [0]
done = threading.Event()

def watch():  # ffmpeg's own high-water mark, read from /proc while it runs
    me = str(os.getpid())
    while not done.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                status = Path("/proc", pid, "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if fields.get("PPid", "").strip() == me and "VmHWM" in fields:
                child_peak[0] = max(child_peak[0], int(fields["VmHWM"].split()[0]))
        time.sleep(0.05)

threading.Thread(target=watch, daemon=True).start()
voice, tl = utterance({dur}, 5)
img = generate_procedural(7, size={size})
with tempfile.TemporaryDirectory() as d:
    LocalRenderer(fps={fps}).render_sync(img, voice, tl, output=Path(d) / "long.mp4")
done.set()
# VmHWM is this process's own high-water mark (ru_maxrss can carry the parent's across exec)
status = Path("/proc/self/status").read_text()
hwm = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")]
me = int(hwm[0]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{{me:.0f}} {{child_peak[0] / 1024:.0f}}")
"""


def peak_rss(duration: float, size: int, fps: float) -> tuple[float, float]:
    """Peak RSS (MB) of a fresh Python process rendering a clip, and of its ffmpeg child."""
    code = PEAK_SCRIPT.format(bench=str(Path(__file__).parent), dur=duration, size=size, fps=fps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    me, kids = out.stdout.split()[-2:]
    return float(me), float(kids)


def spread(values: list[float]) -> str:
    """Median and range of a few measurements, e.g. ``22.4 (19.8–25.1)``; seconds to 0.01."""
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{mid:.2f} ({lo:.2f}–{hi:.2f})" if hi < 3 else f"{mid:.1f} ({lo:.1f}–{hi:.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--cores", type=int, default=0, help="pin to this many cores (Linux)")
    ap.add_argument("--long", type=float, default=60.0, help="clip length for peak RSS")
    ap.add_argument("--repeat", type=int, default=5, help="runs per mode (median and range)")
    args = ap.parse_args()
    if args.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores usable, "
          f"python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"clip: {args.seconds:g} s at {args.size}x{args.size}, {args.fps:g} fps, MP4 (x264 "
          f"ultrafast + AAC); {args.repeat} runs per mode, modes interleaved\n")  # fmt: skip
    dur = args.seconds
    r = LocalRenderer(fps=args.fps)
    same = generate_procedural(7, size=args.size)  # the conversation's avatar
    r.prepare_sync(same)  # as the bot does beside its first reply's voice stage
    timed_render(r, same, dur, 0)  # its first reply

    work = Path(tempfile.mkdtemp(prefix="render-bench-"))
    floor = EncoderFloor(same, dur, args.fps, work)
    floor_runs: list[tuple[float, float]] = []
    modes = ["new avatar, no prepare", "new avatar, prepared", "same avatar, next utterance"]
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    prepare_s: list[float] = []
    for i in range(args.repeat):  # interleaved, so a slow spell of the machine hits every mode
        # hold the conversation's face (and its sprites) out of the pool while it is cleared
        kept = borrow_face(params_from_image(same), (args.size, args.size))
        cold = generate_procedural(100 + i, size=args.size)
        clear_pool()  # worst case: an avatar whose layers were never painted in this process
        results[modes[0]].append(timed_render(r, cold, dur, 1))
        fresh = generate_procedural(200 + i, size=args.size)
        clear_pool()
        t0 = time.perf_counter()
        r.prepare_sync(fresh)  # in a bot, beside the reply's voice stage
        prepare_s.append(time.perf_counter() - t0)
        results[modes[1]].append(timed_render(r, fresh, dur, 1))
        clear_pool()
        return_face(kept)
        results[modes[2]].append(timed_render(r, same, dur, 10 + i))
        floor_runs.append(floor.encode())

    head = f"{'mode':<28}{'wall s':>18}{'× real time (wall)':>22}{'× (CPU-bound)':>20}{'target':>8}"
    print(head)

    def row(name: str, res: list[tuple[float, float]], target: str) -> None:
        walls = [w for w, _ in res]
        print(f"{name:<28}{spread(walls):>18}{spread([dur / w for w in walls]):>22}"
              f"{spread([dur / c for _, c in res]):>20}{target:>8}")  # fmt: skip

    for m in modes:
        row(m, results[m], "20×")
    print(f"{'  encoder alone (floor)':<28}{spread([w for w, _ in floor_runs]):>18}"
          f"{spread([dur / w for w, _ in floor_runs]):>22}{'':>20}"
          "   ffmpeg on the frames, pre-drawn to a file")  # fmt: skip
    print(f"{'  (prepare took':<28}{spread(prepare_s):>18} s, beside the voice stage in a bot)")
    # each render against the floor measured in the same iteration: how much drawing adds to
    # encoding, a figure that moves far less with the machine's speed than the ratios above
    print("  render ÷ encoder alone, each in the same iteration:")
    for m in modes:
        pairs = zip(results[m], floor_runs, strict=True)
        print(f"    {m:<28}{spread([w / f for (w, _), (f, _) in pairs]):>16}")

    try:
        import avatarkit.render.photo  # noqa: F401
    except ImportError:
        print(f"{'photo (PhotoRig)':<28}{'—':>18}{'not installed':>22}")
    else:
        portrait = Path(__file__).resolve().parents[1] / "tests" / "data" / "portrait.jpg"
        photo = AvatarImage(data=portrait.read_bytes(), format="jpeg", width=320, height=300,
                            kind="photo")  # fmt: skip
        try:
            first = [timed_render(LocalRenderer(fps=args.fps, size=args.size), photo, dur, 1)
                     for _ in range(max(2, args.repeat // 2))]  # fmt: skip
            rp = LocalRenderer(fps=args.fps, size=args.size)
            timed_render(rp, photo, dur, 1)
            nxt = [timed_render(rp, photo, dur, 2 + i) for i in range(max(2, args.repeat // 2))]
            row("photo, first render", first, "10×")
            row("photo, next render", nxt, "10×")
        except Exception as exc:  # the photo rig may refuse a cartoon face
            print(f"{'photo (PhotoRig)':<28}{'—':>18}  failed: {exc}")

    with _opencv_single_threaded():  # as during a render
        draw = min(floor.draw_cpu() for _ in range(3))
    enc = statistics.median(c for _, c in floor_runs)
    shutil.rmtree(work, ignore_errors=True)
    n = round(dur * args.fps)
    print(
        f"\nCPU time per frame: drawing {draw / n * 1000:.2f} ms, encoding {enc / n * 1000:.2f} ms"
        f" (drawing {100 * draw / (draw + enc):.0f}%, encoding {100 * enc / (draw + enc):.0f}%)"
    )

    if args.long > 0:
        me, kids = peak_rss(args.long, args.size, args.fps)
        print(f"peak RSS, {args.long:g} s clip: python {me:.0f} MB, ffmpeg {kids:.0f} MB "
              f"(target < 400 MB)")  # fmt: skip


if __name__ == "__main__":
    main()
