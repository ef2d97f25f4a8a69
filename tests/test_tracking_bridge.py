"""GapBridge: short detection gaps are filled by interpolation, a face that left is never painted, memory bounded."""

from __future__ import annotations

import numpy as np

from models.face import Face
from models.tracking import FaceTracker
from models.tracking.bridge import GapBridge

FPS = 25.0


def face_at(x: float) -> Face:
    kps = np.array([[x + 30, 40], [x + 70, 40], [x + 50, 60], [x + 35, 80], [x + 65, 80]], np.float32)
    return Face(bbox=np.array([x, 10, x + 100, 110], np.float32), score=0.9, kps=kps)


def run(detections: list[list[Face]], max_missed: int = 5):  # noqa: ANN201
    tracker, bridge = FaceTracker(smoothing=0.0, max_missed=max_missed, fps=FPS), GapBridge[int]()
    out, most_held = [], 0
    for i, faces in enumerate(detections):
        out += bridge.push(i, i / FPS, tracker.update(faces, i / FPS))
        most_held = max(most_held, len(bridge.held))
    out += bridge.flush()
    return out, most_held


def test_a_short_gap_is_filled_by_interpolation() -> None:
    dets = [[face_at(4.0 * i)] if i not in (5, 6, 7) else [] for i in range(12)]
    out, _ = run(dets)
    assert [p for p, _, _ in out] == list(range(12))  # every frame, in order
    for i, _, faces in out:
        assert len(faces) == 1, i
        np.testing.assert_allclose(faces[0][1].bbox[0], 4.0 * i, atol=1e-4)  # gap frames land on the line
    assert len({tid for _, _, faces in out for tid, _ in faces}) == 1  # one identity throughout


def test_a_face_that_left_is_never_painted() -> None:
    dets = [[face_at(10.0)] if i < 5 else [] for i in range(14)]
    out, most_held = run(dets, max_missed=5)
    assert [p for p, _, _ in out] == list(range(14))
    assert all(len(faces) == 1 for i, _, faces in out if i < 5)
    assert all(not faces for i, _, faces in out if i >= 5)
    assert most_held <= 5 + 1  # the look-ahead holds at most max_missed + 1 frames


def test_an_open_gap_at_the_end_has_no_face() -> None:
    dets = [[face_at(0.0)], [face_at(1.0)], [], []]
    out, _ = run(dets)
    assert [len(faces) for _, _, faces in out] == [1, 1, 0, 0]


def test_other_faces_are_not_held_back_by_a_gap_for_long() -> None:
    """Two faces; one drops out for 2 frames: all frames still come out once the gap closes, both faces filled."""
    dets = []
    for i in range(10):
        faces = [face_at(300.0)]
        if i not in (3, 4):
            faces.append(face_at(2.0 * i))
        dets.append(faces)
    out, most_held = run(dets)
    assert [len(faces) for _, _, faces in out] == [2] * 10
    assert most_held <= 3
