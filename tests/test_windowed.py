"""Windowed detection for video (models/tracking/windowed.py) with the real dlib analyser: known faces are found in
windows around where they were, with the same boxes as a whole-frame search; the whole frame is still searched
every ``full_every`` frames, so a face that enters is found; a known face that is gone makes that frame searched
whole."""

from __future__ import annotations

import numpy as np
import pytest

from models.analysis.dlib_analyser import DlibAnalyser
from models.tracking import WindowedDetector, box_iou
from models.tracking.windowed import detect_near
from tests.test_video_swap import T1_FACE_A, T1_FACE_B, canvas, patch, place


@pytest.fixture(scope="module")
def analyser() -> DlibAnalyser:
    a = DlibAnalyser(upsample=0)
    a.prepare()
    return a


def _frames(t1: np.ndarray, n: int, b_from: int | None = None, a_until: int | None = None) -> list[np.ndarray]:
    a, b = patch(t1, T1_FACE_A), patch(t1, T1_FACE_B)
    out = []
    for i in range(n):
        f = canvas(480, 260)
        if a_until is None or i < a_until:
            place(f, a, 20 + 3 * i, 40)
        if b_from is not None and i >= b_from:
            place(f, b, 280, 60)
        out.append(f)
    return out


def test_windows_follow_a_face_with_the_whole_frame_boxes(analyser: DlibAnalyser, t1_bgr: np.ndarray) -> None:
    frames = _frames(t1_bgr, 8)
    det = WindowedDetector(analyser, full_every=4)
    for f in frames:
        got, whole = det.detect(f), analyser.get(f)
        assert len(got) == len(whole) == 1
        # the window's HOG grid starts elsewhere than the frame's, so its box may come from another pyramid level;
        # the landmarks (found from the box) agree: measured IoU 0.70–1.0, landmarks 0–0.36 px apart on average
        assert box_iou(got[0].bbox, whole[0].bbox) > 0.6
        assert np.abs(got[0].landmarks - whole[0].landmarks).mean() < 1.0
    assert det.full_frames == 2  # frames 0 and 4; the six others were windows


def test_large_face_window_is_searched_shrunk(analyser: DlibAnalyser, t1_bgr: np.ndarray) -> None:
    """A 2× frame (a 250 px face): the window is shrunk to a 160 px face for HOG, the landmarks stay full size."""
    import cv2

    big = cv2.resize(_frames(t1_bgr, 1)[0], None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    whole = analyser.get(big)
    assert len(whole) == 1
    near = detect_near(analyser, big, whole[0].bbox)
    assert len(near) == 1 and box_iou(near[0].bbox, whole[0].bbox) > 0.7
    size = float(whole[0].bbox[2] - whole[0].bbox[0])
    assert np.abs(near[0].landmarks - whole[0].landmarks).mean() < 0.03 * size


def test_a_face_that_enters_is_found_at_the_next_whole_frame_search(analyser: DlibAnalyser,
                                                                    t1_bgr: np.ndarray) -> None:
    frames = _frames(t1_bgr, 9, b_from=2)
    det = WindowedDetector(analyser, full_every=4)
    counts = [len(det.detect(f)) for f in frames]
    assert counts == [1, 1, 1, 1, 2, 2, 2, 2, 2]  # B enters at 2, found by the whole-frame search at 4


def test_a_face_that_leaves_makes_the_frame_searched_whole(analyser: DlibAnalyser, t1_bgr: np.ndarray) -> None:
    frames = _frames(t1_bgr, 6, b_from=0, a_until=3)
    det = WindowedDetector(analyser, full_every=10)
    counts = [len(det.detect(f)) for f in frames]
    assert counts == [2, 2, 2, 1, 1, 1]
    assert det.full_frames == 2  # frame 0, and frame 3 where A's window came back empty


def test_every_frame_whole_when_off_or_without_a_quick_pass(analyser: DlibAnalyser, t1_bgr: np.ndarray) -> None:
    frames = _frames(t1_bgr, 3)
    det = WindowedDetector(analyser, full_every=1)
    for f in frames:
        det.detect(f)
    assert det.full_frames == 3

    class WholeOnly:  # an analyser without the quick pass (as the neural one)
        def get(self, img: np.ndarray) -> list:
            return analyser.get(img)

    det = WindowedDetector(WholeOnly(), full_every=10)
    for f in frames:
        det.detect(f)
    assert det.full_frames == 3
