"""Make docs/img/lipsync_timeline.png with avatarkit's own plotting helper.

Run from the repository root: python docs/scripts/make_timeline_plot.py
"""

from __future__ import annotations

from pathlib import Path

from avatarkit.animation.lipsync import lipsync, timeline_from
from avatarkit.animation.plot import plot_timeline
from avatarkit.providers.espeak import EspeakVoice
from avatarkit.types import Emotion, FacialExpression

TEXT = "Hello! My name is Emma, and I am happy to meet you. Shall we begin?"
OUT = Path(__file__).parents[1] / "img" / "lipsync_timeline.png"


def main() -> None:
    voice = EspeakVoice("en-us+f3").synthesize_sync(TEXT)
    expressions = [
        FacialExpression(char_offset=0, emotion=Emotion.HAPPY, intensity=0.6),
        FacialExpression(char_offset=TEXT.index("Shall"), emotion=Emotion.THINKING, intensity=0.4),
    ]
    timeline = timeline_from(voice, lipsync(voice), expressions)
    fig = plot_timeline(timeline, voice)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
