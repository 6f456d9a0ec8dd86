"""Plot a Timeline: waveform, words, visemes and expressions on one time axis.

Needs matplotlib, the ``plot`` extra (``pip install "avatarkit[plot]"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from avatarkit.animation.face_state import OCULUS_VISEMES
from avatarkit.animation.viseme import viseme_class
from avatarkit.audio import decode_audio
from avatarkit.errors import MissingExtraError
from avatarkit.types import Timeline, VoiceOutput

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_timeline"]

_CLASS_COLOURS = {
    "closed": "#4c4c4c",
    "labiodental": "#8c6bb1",
    "teeth": "#78a8d0",
    "rounded": "#e08a3c",
    "open": "#d64a4a",
    "spread": "#5aae61",
}


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError("plot_timeline", "plot", "matplotlib") from exc
    return Figure


def plot_timeline(
    timeline: Timeline,
    voice: VoiceOutput | None = None,
    *,
    title: str | None = None,
    width: float = 12.0,
) -> Figure:
    """Draw the timeline: waveform (when ``voice`` is given), words, visemes, expressions.

    Args:
        timeline: What to draw.
        voice: The speech whose waveform goes in the top row.
        title: Figure title (default: the spoken text, shortened).
        width: Figure width in inches.

    Returns:
        A matplotlib Figure (save it with ``fig.savefig("timeline.png")``).

    Raises:
        MissingExtraError: matplotlib is not installed (the ``plot`` extra).
    """
    figure_class = _figure_class()
    rows = ["wave"] if voice is not None else []
    rows += ["words", "visemes"]
    if timeline.expressions:
        rows.append("expressions")
    heights = {"wave": 2.0, "words": 0.8, "visemes": 2.6, "expressions": 0.8}
    # A Figure made directly (not through pyplot) leaves no global state behind.
    fig: Figure = figure_class(figsize=(width, sum(heights[r] for r in rows) + 0.6))
    axes = fig.subplots(
        len(rows),
        1,
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [heights[r] for r in rows]},
    )
    ax_of = {r: axes[i][0] for i, r in enumerate(rows)}
    duration = max(timeline.duration, 1e-3)

    if voice is not None:
        ax = ax_of["wave"]
        samples, rate = decode_audio(voice.audio, voice.format, sample_rate=voice.sample_rate)
        step = max(1, len(samples) // 20000)
        t = np.arange(0, len(samples), step) / rate
        ax.plot(t, samples[::step], lw=0.5, color="#333333")
        ax.set_ylim(-1, 1)
        ax.set_ylabel("audio")
        ax.set_yticks([])

    ax = ax_of["words"]
    for k, w in enumerate(timeline.words):
        ax.axvspan(w.start, w.end, ymin=0.1, ymax=0.9, color=("#dde8f5", "#c8d9ee")[k % 2])
        ax.text(
            (w.start + w.end) / 2, 0.5, w.text, ha="center", va="center", fontsize=8, clip_on=True
        )
    ax.set_yticks([])
    ax.set_ylabel("words")

    ax = ax_of["visemes"]
    order = list(OCULUS_VISEMES)
    for cue in timeline.visemes:
        y = order.index(cue.viseme) if cue.viseme in order else -1
        colour = _CLASS_COLOURS.get(viseme_class(cue.viseme), "#999999")
        ax.barh(
            y,
            cue.end - cue.start,
            left=cue.start,
            height=0.8,
            color=colour,
            alpha=0.35 + 0.65 * cue.weight,
            edgecolor="none",
        )
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.set_ylim(-0.7, len(order) - 0.3)
    ax.invert_yaxis()
    ax.set_ylabel(f"visemes\n({timeline.viseme_source})")
    ax.grid(axis="x", alpha=0.3)

    if "expressions" in ax_of:
        ax = ax_of["expressions"]
        times = [e.time for e in timeline.expressions] + [duration]
        for k, e in enumerate(timeline.expressions):
            ax.axvspan(
                times[k],
                times[k + 1],
                ymin=0.1,
                ymax=0.9,
                alpha=0.2 + 0.6 * e.intensity,
                color="#f2b134",
            )
            ax.text(times[k] + 0.01, 0.5, e.emotion.value, va="center", fontsize=8, clip_on=True)
        ax.set_yticks([])
        ax.set_ylabel("expression")

    axes[-1][0].set_xlim(0, duration)
    axes[-1][0].set_xlabel("time (s)")
    text = title if title is not None else timeline.text
    if len(text) > 100:
        text = text[:97] + "..."
    if text:
        fig.suptitle(text, fontsize=10)
    fig.tight_layout()
    return fig
