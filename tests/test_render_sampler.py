"""Timeline sampling: viseme crossfades, expression easing, smooth poses, blinks."""

from __future__ import annotations

import numpy as np
import pytest

from avatarkit.animation.face_state import OCULUS_VISEMES
from avatarkit.animation.sampler import VISEME_MOUTH, TimelineSampler, sample
from avatarkit.types import AvatarPose, Emotion, FacialExpression, Timeline, VisemeCue


def _cues(spec: list[tuple[str, float, float]]) -> list[VisemeCue]:
    return [VisemeCue(viseme=v, start=s, end=e) for v, s, e in spec]


def _timeline() -> Timeline:
    return Timeline(
        duration=2.0,
        visemes=_cues([("PP", 0.2, 0.3), ("aa", 0.3, 0.6), ("SS", 0.6, 0.65), ("oh", 1.0, 1.3)]),
        expressions=[
            FacialExpression(time=0.5, emotion=Emotion.HAPPY, intensity=0.8, transition=0.4),
            FacialExpression(time=1.2, emotion=Emotion.SAD, intensity=0.5, transition=0.2),
        ],
        poses=[
            AvatarPose(time=0.0, yaw=0.0, roll=1.0),
            AvatarPose(time=0.8, yaw=6.0, roll=-2.0, blink=0.0),
            AvatarPose(time=1.6, yaw=-4.0, roll=0.0),
        ],
    )


def test_held_cue_shows_its_shape_and_mouth_geometry() -> None:
    s = TimelineSampler(_timeline(), lead=0.0)
    st = s.at(0.45)
    assert st.visemes == {"aa": pytest.approx(1.0)}
    assert st.jaw_open == pytest.approx(VISEME_MOUTH["aa"][0])
    assert st.lips_closed == pytest.approx(0.0)
    rest = s.at(0.85)  # the gap between cues is silence: mouth at rest
    assert rest.visemes == {"sil": pytest.approx(1.0)}
    assert rest.jaw_open == pytest.approx(0.0)
    assert rest.lips_closed == pytest.approx(1.0)


def test_weights_sum_to_one_and_crossfade_at_boundaries() -> None:
    s = TimelineSampler(_timeline(), blend=0.06, lead=0.0)
    w = s.viseme_weights(np.linspace(0, 2, 2001))
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-9)
    at_boundary = s.viseme_weights([0.3])[0]
    assert at_boundary[OCULUS_VISEMES.index("PP")] == pytest.approx(0.5)
    assert at_boundary[OCULUS_VISEMES.index("aa")] == pytest.approx(0.5)


def test_no_pops_jaw_changes_smoothly() -> None:
    blend = 0.06
    s = TimelineSampler(_timeline(), blend=blend, lead=0.0)
    t = np.linspace(0, 2, 20001)  # 0.1 ms steps
    jaw = s.viseme_weights(t) @ np.array([VISEME_MOUTH[v][0] for v in OCULUS_VISEMES])
    slope = np.abs(np.diff(jaw)) / np.diff(t)
    # A hard cut would be an infinite slope; a smoothstep crossfade of a 0.9 jump over the
    # (possibly shortened, here 50 ms) blend peaks at 1.5 * 0.9 / 0.05.
    assert slope.max() < 1.5 * 0.9 / 0.05 + 1


def test_short_cue_still_reaches_its_shape() -> None:
    tl = Timeline(
        duration=1, visemes=_cues([("aa", 0.1, 0.3), ("PP", 0.3, 0.33), ("aa", 0.33, 0.6)])
    )
    s = TimelineSampler(tl, blend=0.08, lead=0.0)
    assert s.at(0.315).visemes.get("PP", 0) > 0.9


def test_cue_weight_sends_the_rest_to_silence() -> None:
    tl = Timeline(duration=1, visemes=[VisemeCue(viseme="aa", start=0.2, end=0.8, weight=0.5)])
    st = TimelineSampler(tl, lead=0.0).at(0.5)
    assert st.visemes["aa"] == pytest.approx(0.5)
    assert st.visemes["sil"] == pytest.approx(0.5)
    assert st.jaw_open == pytest.approx(0.45)


def test_lead_shows_mouth_shapes_early() -> None:
    tl = Timeline(duration=1, visemes=_cues([("aa", 0.5, 0.8)]))
    assert TimelineSampler(tl, lead=0.05, blend=0.0).at(0.46).visemes.get("aa") == 1.0
    assert TimelineSampler(tl, lead=0.0, blend=0.0).at(0.46).visemes == {"sil": 1.0}


def test_expressions_ease_in_over_their_transition() -> None:
    s = TimelineSampler(_timeline())
    assert s.at(0.4).emotions == {}
    mid = s.at(0.7).emotions[Emotion.HAPPY]
    assert 0.1 < mid < 0.8
    assert s.at(1.0).emotions[Emotion.HAPPY] == pytest.approx(0.8)
    after = s.at(1.5).emotions
    assert after[Emotion.SAD] == pytest.approx(0.5)
    assert Emotion.HAPPY not in after
    # values are continuous across the start of the second keyframe
    a, b = s.at(1.1999).emotions, s.at(1.2001).emotions
    assert a[Emotion.HAPPY] == pytest.approx(b[Emotion.HAPPY], abs=1e-3)


def test_pose_passes_through_keys_without_overshoot() -> None:
    s = TimelineSampler(_timeline())
    assert s.at(0.8).yaw == pytest.approx(6.0)
    pose, _ = s.pose_values(np.linspace(0, 2, 500))
    assert pose[:, 0].max() <= 6.0 + 1e-9
    assert pose[:, 0].min() >= -4.0 - 1e-9
    assert np.abs(np.diff(pose[:, 0])).max() < 0.2  # smooth at 4 ms steps


def test_blinks_follow_pose_keys_or_idle_schedule() -> None:
    tl = Timeline(
        duration=2,
        poses=[AvatarPose(time=1.0), AvatarPose(time=1.05, blink=1.0), AvatarPose(time=1.15)],
    )
    s = TimelineSampler(tl)
    assert s.at(1.05).blink == pytest.approx(1.0)
    assert s.at(1.5).blink == 0.0
    quiet = Timeline(duration=12)
    _, blink = TimelineSampler(quiet, auto_blink=True, seed=3).pose_values(np.arange(0, 12, 0.01))
    assert blink.max() == pytest.approx(1.0)
    assert (blink > 0.5).mean() < 0.1
    _, none = TimelineSampler(quiet).pose_values(np.arange(0, 12, 0.01))
    assert none.max() == 0.0


def test_sample_matches_sampler_and_frames_cover_duration() -> None:
    tl = _timeline()
    s = TimelineSampler(tl)
    assert sample(tl, 0.47) == s.at(0.47)
    frames = s.frames(25)
    assert len(frames) == 50
    assert frames[12] == s.at(12 / 25)
