"""The face's state at one instant: what every frame drawer (procedural face, photo rig) draws."""

from __future__ import annotations

from dataclasses import dataclass, field

from avatarkit.types import OCULUS_VISEMES, Emotion

__all__ = ["OCULUS_VISEMES", "FaceState"]


@dataclass
class FaceState:
    """Everything a frame drawer needs to draw one frame.

    Produced by sampling a Timeline at a time ``t``; consumed by ``draw(state)`` of the
    procedural face and the photo rig alike.
    """

    visemes: dict[str, float] = field(default_factory=lambda: {"sil": 1.0})
    """Blend weights over OCULUS_VISEMES (after coarticulation), summing to about 1."""
    jaw_open: float = 0.0
    """How far the jaw is open, 0 (closed) … 1 (wide), derived from the viseme blend."""
    mouth_width: float = 0.0
    """Lip spread, -1 (rounded/puckered) … 1 (wide/spread)."""
    lips_closed: float = 1.0
    """1 when the lips press together (PP, rest), 0 when apart."""
    emotions: dict[Emotion, float] = field(default_factory=dict)
    """Blend weights of expressions currently shown (intensity folded in)."""
    yaw: float = 0.0
    """Head turn, degrees (positive = the avatar's left)."""
    pitch: float = 0.0
    """Head nod, degrees (positive = down)."""
    roll: float = 0.0
    """Head tilt, degrees."""
    gaze_x: float = 0.0
    gaze_y: float = 0.0
    blink: float = 0.0
    """Eyelid closure, 0 open … 1 closed."""
