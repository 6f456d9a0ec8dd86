"""Timeline exports: avatarkit JSON, Rhubarb Lip Sync JSON, and a browser 3D avatar's input.

- :func:`to_json` / :func:`from_json`: the Timeline itself (pydantic dump, lossless).
- :func:`to_rhubarb`: Rhubarb Lip Sync's JSON layout
  (``{"metadata": {"soundFile", "duration"}, "mouthCues": [{"start", "end", "value"}]}``,
  shapes A–H and X; cues start at 0 and end on X), for tools and players built for Rhubarb.
- :func:`to_talkinghead`: the object TalkingHead's ``speakAudio`` takes besides the audio:
  ``words``/``wtimes``/``wdurations`` and ``visemes``/``vtimes``/``vdurations``, times in
  milliseconds, Oculus viseme codes as TalkingHead spells them (``aa E I O U PP SS TH DD FF
  kk nn RR CH sil``).
- :func:`save_json`: write any of these atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from avatarkit._files import write_json_atomic
from avatarkit.animation.viseme import to_rhubarb as _shape
from avatarkit.errors import InputValidationError
from avatarkit.types import Timeline, check_visemes

__all__ = [
    "TALKINGHEAD_VISEMES",
    "from_json",
    "save_json",
    "to_json",
    "to_rhubarb",
    "to_talkinghead",
]

TALKINGHEAD_VISEMES: dict[str, str] = {
    "sil": "sil",
    "PP": "PP",
    "FF": "FF",
    "TH": "TH",
    "DD": "DD",
    "kk": "kk",
    "CH": "CH",
    "SS": "SS",
    "nn": "nn",
    "RR": "RR",
    "aa": "aa",
    "E": "E",
    "ih": "I",
    "oh": "O",
    "ou": "U",
}
"""avatarkit (Oculus) viseme → TalkingHead's code for it."""


def _check(timeline: Timeline) -> None:
    check_visemes(timeline.visemes)  # a cue renamed after the timeline was built
    problems = timeline.problems()
    if problems:
        raise InputValidationError(
            "timeline is inconsistent: " + "; ".join(problems[:5]), field="timeline"
        )


def to_json(timeline: Timeline, *, indent: int | None = 2) -> str:
    """The Timeline as avatarkit JSON (round-trips through :func:`from_json`)."""
    return timeline.model_dump_json(indent=indent)


def from_json(data: str | bytes) -> Timeline:
    """Read avatarkit Timeline JSON (the same as :meth:`Timeline.from_json`).

    Raises:
        InputValidationError: not valid Timeline JSON, a cue with an unknown viseme, or written
            by a newer avatarkit (its ``version`` is above
            :data:`~avatarkit.types.TIMELINE_VERSION`).
    """
    return Timeline.from_json(data)


def to_rhubarb(
    timeline: Timeline, *, sound_file: str | None = None, extended: bool = True
) -> dict[str, Any]:
    """The timeline's visemes as Rhubarb Lip Sync JSON.

    Consecutive cues with the same shape are merged; gaps are rest (X). The cues start at 0
    and the last one is X, as Rhubarb writes them (when the speech runs to the very end of the
    audio, a zero-length X closes the list).

    Args:
        timeline: The timeline to export.
        sound_file: Value of ``metadata.soundFile`` (default: ``timeline.audio_ref`` or ``""``).
        extended: Use the extended shapes G, H, X; when False only A–F appear (G → B,
            H → C, rest → A), like ``rhubarb --extendedShapes ""``.

    Raises:
        InputValidationError: the timeline's cues are unsorted, overlap or leave the audio.
    """
    _check(timeline)
    duration = timeline.duration
    rest = "X" if extended else "A"
    cues: list[dict[str, Any]] = []

    def add(start: float, end: float, value: str) -> None:
        if cues and cues[-1]["value"] == value and abs(cues[-1]["end"] - start) < 5e-4:
            cues[-1]["end"] = round(end, 3)
            return
        if end - start < 5e-4 and not (value == rest and end >= duration):
            return
        cues.append({"start": round(start, 3), "end": round(end, 3), "value": value})

    t = 0.0
    for cue in timeline.visemes:
        if cue.start > t:
            add(t, cue.start, rest)
        value = _shape(cue.viseme)
        if not extended:
            value = {"G": "B", "H": "C", "X": "A"}.get(value, value)
        add(cue.start, cue.end, value)
        t = max(t, cue.end)
    if t < duration or not cues or cues[-1]["value"] != rest:
        add(t, max(t, duration), rest)
    if cues:
        cues[0]["start"] = 0.0
    return {
        "metadata": {
            "soundFile": sound_file or timeline.audio_ref or "",
            "duration": round(duration, 3),
        },
        "mouthCues": cues,
    }


def to_talkinghead(timeline: Timeline, *, include_silence: bool = False) -> dict[str, Any]:
    """The object TalkingHead's ``speakAudio(audio, ...)`` takes, without the audio itself.

    Add the decoded audio as ``audio`` (an ``AudioBuffer`` or PCM chunks) in the browser.

    Args:
        timeline: The timeline to export.
        include_silence: Also list rest (``sil``) cues; TalkingHead rests in gaps anyway.

    Returns:
        ``{"words", "wtimes", "wdurations", "visemes", "vtimes", "vdurations"}``; times and
        durations are integer milliseconds, the arrays of each group have equal length.

    Raises:
        InputValidationError: the timeline's cues are unsorted, overlap or leave the audio.
    """
    _check(timeline)

    def ms(t: float) -> int:
        return round(t * 1000.0)

    words = [w for w in timeline.words if w.text]
    visemes = [v for v in timeline.visemes if include_silence or v.viseme != "sil"]
    return {
        "words": [w.text for w in words],
        "wtimes": [ms(w.start) for w in words],
        "wdurations": [max(0, ms(w.end) - ms(w.start)) for w in words],
        "visemes": [TALKINGHEAD_VISEMES[v.viseme] for v in visemes],
        "vtimes": [ms(v.start) for v in visemes],
        "vdurations": [max(0, ms(v.end) - ms(v.start)) for v in visemes],
    }


def save_json(path: str | Path, obj: Timeline | dict[str, Any]) -> Path:
    """Write a Timeline (avatarkit JSON) or an export dict as UTF-8 JSON, atomically."""
    target = Path(path)
    if isinstance(obj, Timeline):
        return write_json_atomic(target, json.loads(to_json(obj, indent=None)))
    return write_json_atomic(target, obj)
