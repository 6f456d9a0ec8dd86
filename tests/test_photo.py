from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatarkit.animation.face_state import FaceState
from avatarkit.errors import InputValidationError
from avatarkit.render.photo import PhotoRig, detect_face
from avatarkit.types import AvatarImage, Emotion

DATA = Path(__file__).parent / "data"


def _portrait() -> AvatarImage:
    data = (DATA / "portrait.jpg").read_bytes()
    return AvatarImage(data=data, format="jpeg", width=320, height=300)


def _png(rgb: np.ndarray) -> AvatarImage:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return AvatarImage(data=buf.tobytes(), format="png", width=rgb.shape[1], height=rgb.shape[0])


@pytest.fixture(scope="module")
def rig() -> PhotoRig:
    return PhotoRig(_portrait(), size=512)


def _box(
    rig: PhotoRig, center: tuple[float, float], half_w: float, half_h: float
) -> tuple[slice, slice]:
    x, y = center
    return slice(int(y - half_h), int(y + half_h)), slice(int(x - half_w), int(x + half_w))


def _mouth(rig: PhotoRig) -> tuple[slice, slice]:
    mw = rig.landmarks.mouth_width
    return _box(rig, rig.landmarks.mouth, 0.6 * mw, 0.5 * mw)


def _eye(rig: PhotoRig, i: int) -> tuple[slice, slice]:
    ew = rig.landmarks.eye_width
    return _box(rig, rig.landmarks.eyes[i], 0.6 * ew, 0.4 * ew)


def _diff(a: np.ndarray, b: np.ndarray, region: tuple[slice, slice]) -> float:
    return float(np.abs(a[region].astype(np.int16) - b[region].astype(np.int16)).mean())


def test_face_and_features_found_where_a_face_has_them(rig: PhotoRig) -> None:
    lm = rig.landmarks
    _, fy, fw, fh = lm.face
    (lx, ly), (rx, ry) = lm.eyes
    mx, my = lm.mouth
    assert lx < mx < rx
    assert fy < ly < my < fy + fh
    assert abs(ly - ry) < 0.1 * fh
    assert 0.3 * fw < rx - lx < 0.5 * fw
    assert 0.6 < (my - fy) / fh < 0.9  # lips sit in the lower part of the face box
    assert 0.25 * fw < lm.mouth_width < 0.5 * fw


def test_frame_is_square_rgb_uint8(rig: PhotoRig) -> None:
    frame = rig.draw(FaceState())
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    sky = frame[5:40, -40:-5].reshape(-1, 3).mean(axis=0)  # the blue sky at the top right
    assert sky[2] > sky[0] + 30


def test_rest_frames_are_identical(rig: PhotoRig) -> None:
    assert np.array_equal(rig.draw(FaceState()), rig.draw(FaceState()))


def test_mouth_opens_with_jaw_and_rests_when_closed(rig: PhotoRig) -> None:
    rest = rig.draw(FaceState())
    closed = rig.draw(FaceState(jaw_open=0.0, lips_closed=1.0))
    half = rig.draw(FaceState(jaw_open=0.3, lips_closed=0.0))
    wide = rig.draw(FaceState(jaw_open=0.8, lips_closed=0.0))
    mouth = _mouth(rig)
    assert _diff(rest, closed, mouth) == 0.0
    assert _diff(rest, half, mouth) > 3.0
    assert _diff(rest, wide, mouth) > _diff(rest, half, mouth)
    # an open mouth shows a dark cavity at the lips' line
    mx, my = (int(v) for v in rig.landmarks.mouth)
    gap = int(0.4 * rig.landmarks.mouth_width * 0.8 / 2)
    centre = (slice(my + 1, my + gap), slice(mx - 5, mx + 5))
    assert wide[centre].mean() < rest[centre].mean() - 20
    # nothing else moves
    forehead = (slice(0, int(rig.landmarks.face[1])), slice(0, 512))
    assert _diff(rest, wide, forehead) == 0.0
    for i in (0, 1):
        assert _diff(rest, wide, _eye(rig, i)) == 0.0


def test_lips_pressed_keep_the_mouth_shut_while_the_jaw_drops(rig: PhotoRig) -> None:
    rest = rig.draw(FaceState())
    pressed = rig.draw(FaceState(jaw_open=0.3, lips_closed=1.0))
    apart = rig.draw(FaceState(jaw_open=0.3, lips_closed=0.0))
    mx, my = (int(v) for v in rig.landmarks.mouth)
    seam = (slice(my - 2, my + 3), slice(mx - 6, mx + 6))
    assert _diff(rest, pressed, seam) < _diff(rest, apart, seam)


def test_width_and_smile_move_the_corners(rig: PhotoRig) -> None:
    rest = rig.draw(FaceState())
    wide = rig.draw(FaceState(mouth_width=1.0))
    round_ = rig.draw(FaceState(mouth_width=-1.0))
    happy = rig.draw(FaceState(emotions={Emotion.HAPPY: 1.0}))
    mouth = _mouth(rig)
    for frame in (wide, round_, happy):
        assert _diff(rest, frame, mouth) > 0.5


def test_blink_closes_the_eyes_only(rig: PhotoRig) -> None:
    rest = rig.draw(FaceState())
    shut = rig.draw(FaceState(blink=1.0))
    half = rig.draw(FaceState(blink=0.5))
    for i in (0, 1):
        assert _diff(rest, shut, _eye(rig, i)) > 4.0
        assert _diff(rest, shut, _eye(rig, i)) > _diff(rest, half, _eye(rig, i))
    assert _diff(rest, shut, _mouth(rig)) == 0.0


def test_prepare_builds_the_patches_a_reply_needs_without_changing_frames() -> None:
    talk = [
        FaceState(jaw_open=j, lips_closed=c, blink=b, roll=1.0)
        for j, c, b in [(0.0, 1.0, 0.0), (0.5, 0.0, 0.0), (0.9, 0.2, 0.6), (0.3, 0.0, 1.0)]
    ]
    prepared, fresh = PhotoRig(_portrait(), size=256), PhotoRig(_portrait(), size=256)
    prepared.prepare(talk)
    built = (len(prepared._mouth_cache), len(prepared._eye_cache))
    assert built[0] >= 3 and built[1] >= 4  # three open mouths; two blink levels, both eyes
    for state in talk:  # everything those frames need is there already, and they look the same
        assert np.array_equal(prepared.draw(state), fresh.draw(state))
    assert (len(prepared._mouth_cache), len(prepared._eye_cache)) == built


@pytest.mark.parametrize("still_background", [False, True])
def test_head_yaw_shifts_the_face_the_right_way(still_background: bool) -> None:
    rig = PhotoRig(_portrait(), size=256, still_background=still_background)
    rest = cv2.cvtColor(rig.draw(FaceState()), cv2.COLOR_RGB2GRAY).astype(np.float32)
    turned = cv2.cvtColor(rig.draw(FaceState(yaw=3.0)), cv2.COLOR_RGB2GRAY).astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(rest, turned)
    assert dx > 0.5  # towards the viewer's right
    assert abs(dy) < 0.5
    nodded = cv2.cvtColor(rig.draw(FaceState(pitch=3.0)), cv2.COLOR_RGB2GRAY).astype(np.float32)
    (dx, dy), _ = cv2.phaseCorrelate(rest, nodded)
    assert dy > 0.5 and abs(dx) < 0.5  # down
    if still_background:  # the corners of the picture stay put
        corner = (slice(0, 20), slice(0, 20))
        assert _diff(rig.draw(FaceState()), rig.draw(FaceState(yaw=3.0)), corner) < 1.0


def test_other_sizes(rig: PhotoRig) -> None:
    small = PhotoRig(_portrait(), size=256)
    frame = small.draw(FaceState(jaw_open=0.5, lips_closed=0.0, blink=1.0, roll=2.0))
    assert frame.shape == (256, 256, 3)
    assert small.landmarks.mouth_width == pytest.approx(rig.landmarks.mouth_width / 2, rel=0.05)


def _no_face() -> np.ndarray:
    y, x = np.mgrid[0:240, 0:320]
    img = np.stack([x * 255 // 320, y * 255 // 240, np.full_like(x, 120)], axis=-1)
    return img.astype(np.uint8)


def test_no_face_raises_a_clear_error() -> None:
    with pytest.raises(InputValidationError, match="No face found"):
        PhotoRig(_png(_no_face()))
    with pytest.raises(InputValidationError, match="face_box"):
        detect_face(_no_face())


def test_given_face_box_skips_detection() -> None:
    rig = PhotoRig(_png(_no_face()), face_box=(110, 60, 100, 110), size=128)
    assert rig.draw(FaceState(jaw_open=0.6, lips_closed=0.0)).shape == (128, 128, 3)


@pytest.mark.parametrize(
    ("box", "match"), [((300, 10, 100, 100), "does not fit"), ((0, 0, 4, 4), "at least 16")]
)
def test_bad_face_box_is_refused(box: tuple[int, int, int, int], match: str) -> None:
    with pytest.raises(InputValidationError, match=match):
        PhotoRig(_png(_no_face()), face_box=box)


def test_undecodable_image_is_refused() -> None:
    with pytest.raises(InputValidationError, match="decoded"):
        PhotoRig(AvatarImage(data=b"not a picture", format="png", width=10, height=10))


def test_draw_speed_is_reported(rig: PhotoRig) -> None:
    rng = np.random.default_rng(0)
    states = [
        FaceState(
            jaw_open=float(j),
            lips_closed=float(j < 0.1),
            mouth_width=float(w),
            yaw=float(a),
            pitch=float(b),
            roll=0.3,
            blink=float(k > 0.93),
        )
        for j, w, a, b, k in rng.uniform(-1, 1, (100, 5)) * [0.8, 1, 2, 1.5, 1] + [0.4, 0, 0, 0, 0]
    ]
    start = time.perf_counter()
    for s in states:
        rig.draw(s)
    ms = (time.perf_counter() - start) / len(states) * 1e3
    print(f"\nPhotoRig.draw at 512x512: {ms:.2f} ms per frame (typical speech states)")
