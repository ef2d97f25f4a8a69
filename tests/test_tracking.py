"""models/tracking: One-Euro filter, scene-cut detector and the face tracker (pure numpy, no models, fast)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.face import Face
from models.tracking import FaceTracker, OneEuroFilter, SceneCutDetector, Track

FPS = 25.0


def make_face(cx: float, cy: float, size: float = 100.0, embedding: np.ndarray | None = None) -> Face:
    """A synthetic face centred on (cx, cy): box, 5 points and 68 landmarks that all move together."""
    h = size / 2
    kps = np.array([[-0.2, -0.1], [0.2, -0.1], [0.0, 0.05], [-0.15, 0.25], [0.15, 0.25]]) * size + (cx, cy)
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    landmarks = np.stack([np.cos(angles), np.sin(angles)], axis=1) * 0.4 * size + (cx, cy)
    return Face(
        bbox=np.array([cx - h, cy - h, cx + h, cy + h], np.float32),
        score=0.9,
        kps=kps.astype(np.float32),
        landmarks=landmarks.astype(np.float32),
        embedding=embedding,
    )


def by_id(tracks: list[Track]) -> dict[int, Track]:
    return {t.id: t for t in tracks}


def centre_x(face: Face) -> float:
    return float(face.bbox[0] + face.bbox[2]) / 2


# ---- One-Euro ---------------------------------------------------------------------------------------------------


def test_one_euro_first_call_returns_input_and_reset_forgets() -> None:
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_array_equal(f(x, 0.0), x)
    assert not np.array_equal(f(x + 10, 0.04), x + 10)  # smoothed towards the past
    f.reset()
    np.testing.assert_array_equal(f(x + 50, 0.0), x + 50)  # history gone; time may restart
    with pytest.raises(ValueError):
        f(x, 0.0)  # not strictly increasing


def test_one_euro_reduces_jitter_of_a_constant_signal() -> None:
    rng = np.random.default_rng(1)
    truth = np.full((5, 2), 40.0)
    noisy = truth + rng.normal(0.0, 1.0, (400, 5, 2))
    f = OneEuroFilter(min_cutoff=0.5, beta=0.0)
    out = np.array([f(noisy[i], i / FPS) for i in range(len(noisy))])[25:]
    assert (out - truth).std() < 0.3 * (noisy[25:] - truth).std()  # theory for a 0.5 Hz EMA at 25 fps: 0.24
    assert abs(float(out.mean()) - 40.0) < 0.2


def test_one_euro_follows_a_ramp_with_small_lag_when_beta_is_positive() -> None:
    speed = 100.0  # units per second
    times = np.arange(100) / FPS
    lag = {}
    for beta in (0.0, 0.1):
        f = OneEuroFilter(min_cutoff=0.5, beta=beta)
        out = np.array([f(np.array([speed * t]), float(t))[0] for t in times])
        lag[beta] = float(np.mean(speed * times[50:] - out[50:]))
    assert lag[0.0] > 20.0  # a plain 0.5 Hz low-pass trails by about speed / (2 pi fc) = 32
    assert 0.0 < lag[0.1] < 3.0
    assert lag[0.1] < 0.1 * lag[0.0]


# ---- tracker: smoothing -----------------------------------------------------------------------------------------


def test_smoothing_zero_returns_detections_exactly() -> None:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=512).astype(np.float32)
    tracker = FaceTracker(smoothing=0.0)
    for i in range(20):
        det = make_face(200 + 7 * i + rng.normal(0, 2), 150 + rng.normal(0, 2), embedding=emb)
        det.gender, det.age = 1, 33
        (track,) = tracker.update([det], i / FPS)
        assert track.missed == 0 and not track.filled and track.age == i and track.first_seen == 0.0
        np.testing.assert_array_equal(track.face.bbox, det.bbox)
        np.testing.assert_array_equal(track.face.kps, det.kps)
        np.testing.assert_array_equal(track.face.landmarks, det.landmarks)
        assert track.face is not det and track.face.embedding is emb
        assert (track.face.score, track.face.gender, track.face.age) == (0.9, 1, 33)


def test_smoothing_steadies_a_still_face_and_barely_lags_a_moving_one() -> None:
    rng = np.random.default_rng(3)
    tracker = FaceTracker(smoothing=0.5)
    raw, out = [], []
    for i in range(150):
        det = make_face(300, 300)
        det.kps = det.kps + rng.normal(0, 1.5, det.kps.shape).astype(np.float32)
        det.landmarks = det.landmarks + rng.normal(0, 1.5, det.landmarks.shape).astype(np.float32)
        (track,) = tracker.update([det], i / FPS)
        raw.append(det.kps)
        out.append(track.face.kps)
    truth = make_face(300, 300).kps
    assert np.std(np.array(out[25:]) - truth) < 0.6 * np.std(np.array(raw[25:]) - truth)

    tracker = FaceTracker(smoothing=0.5)
    lags = []
    for i in range(50):
        x = 300 + 8.0 * i  # 200 px/s, two face widths per second
        (track,) = tracker.update([make_face(x, 300)], i / FPS)
        lags.append(x - centre_x(track.face))
    assert 0.0 < np.mean(lags[20:]) < 4.0  # a plain 2 Hz low-pass would trail by about 16 px


# ---- tracker: identity, gaps, reset -------------------------------------------------------------------------------


def test_crossing_faces_keep_their_ids_thanks_to_identity() -> None:
    """A walks right, B walks left; they meet, stand on the same spot for three frames (identical boxes, so the
    geometry says nothing) and walk on. Only the embeddings can tell who is who afterwards."""
    rng = np.random.default_rng(4)
    emb_a, emb_b = rng.normal(size=(2, 512)).astype(np.float32)
    xs_a = [100 + 40 * i for i in range(6)] + [300] * 3 + [340 + 40 * i for i in range(6)]
    xs_b = [500 - 40 * i for i in range(6)] + [300] * 3 + [260 - 40 * i for i in range(6)]

    def run(with_identity: bool) -> list[list[Track]]:
        tracker = FaceTracker(smoothing=0.0)
        history = []
        for i, (xa, xb) in enumerate(zip(xs_a, xs_b, strict=True)):
            noise = rng.normal(0, 0.2, size=(2, 512)).astype(np.float32)
            a = make_face(xa, 200, embedding=emb_a + noise[0] if with_identity else None)
            b = make_face(xb, 200, embedding=emb_b + noise[1] if with_identity else None)
            dets = [b, a] if i >= 6 else [a, b]  # order of the analyser's list changes; it must not matter
            tracks = tracker.update(dets, i / FPS)
            assert len(tracks) == 2 and all(t.missed == 0 for t in tracks)
            history.append(tracks)
        return history

    history = run(with_identity=True)
    first = {round(centre_x(t.face)): t.id for t in history[0]}
    id_a, id_b = first[100], first[500]
    for i, tracks in enumerate(history):
        pos = {t.id: centre_x(t.face) for t in tracks}
        assert pos[id_a] == pytest.approx(xs_a[i]) and pos[id_b] == pytest.approx(xs_b[i]), f"frame {i}"
        ident = by_id(tracks)[id_a].identity
        assert ident is not None and float(ident @ (emb_a / np.linalg.norm(emb_a))) > 0.9

    # the control: without embeddings the same frames are ambiguous, and the ids do get swapped
    history = run(with_identity=False)
    first = {round(centre_x(t.face)): t.id for t in history[0]}
    final = {t.id: centre_x(t.face) for t in history[-1]}
    assert final[first[100]] != pytest.approx(xs_a[-1])


def test_identity_alone_relinks_a_jump_but_a_stranger_there_is_a_new_track() -> None:
    rng = np.random.default_rng(5)
    emb, other = rng.normal(size=(2, 512)).astype(np.float32)
    tracker = FaceTracker(smoothing=0.0)
    (t0,) = tracker.update([make_face(100, 100, embedding=emb)], 0.0)
    (t1,) = tracker.update([make_face(600, 400, embedding=emb)], 0.04)  # IoU 0, same person
    assert t1.id == t0.id and t1.missed == 0
    tracks = tracker.update([make_face(100, 100, embedding=other)], 0.08)  # IoU 0, someone else
    assert {t.id for t in tracks} == {t0.id, t0.id + 1}
    assert by_id(tracks)[t0.id].filled and not by_id(tracks)[t0.id + 1].filled


def test_missing_face_is_filled_by_extrapolation_then_dropped() -> None:
    emb = np.ones(512, np.float32)
    tracker = FaceTracker(smoothing=0.0, max_missed=5)

    def x_at(i: int) -> float:
        return 100.0 + 10.0 * i  # 10 px per frame to the right

    for i in range(5):
        (track,) = tracker.update([make_face(x_at(i), 200, embedding=emb)], i / FPS)
    tid = track.id
    for i in range(5, 8):  # three frames without detection
        (track,) = tracker.update([], i / FPS)
        expected = make_face(x_at(i), 200)
        assert (track.id, track.missed, track.filled) == (tid, i - 4, True)
        np.testing.assert_allclose(track.face.bbox, expected.bbox, atol=1e-3)
        np.testing.assert_allclose(track.face.kps, expected.kps, atol=1e-3)
        np.testing.assert_allclose(track.face.landmarks, expected.landmarks, atol=1e-3)
        assert track.face.embedding is not None and track.face.score == 0.9  # from the last real detection
    (track,) = tracker.update([make_face(x_at(8), 200, embedding=emb)], 8 / FPS)
    assert (track.id, track.missed, track.filled, track.age) == (tid, 0, False, 8)

    for k, i in enumerate(range(9, 15), start=1):  # six misses > max_missed
        tracks = tracker.update([], i / FPS)
        if k <= 5:
            assert [(t.id, t.missed, t.filled) for t in tracks] == [(tid, k, True)]
        else:
            assert tracks == []
    (track,) = tracker.update([make_face(x_at(15), 200, embedding=emb)], 15 / FPS)
    assert track.id > tid and track.age == 0 and track.first_seen == pytest.approx(15 / FPS)


def test_identity_is_the_normed_mean_and_none_without_embeddings() -> None:
    rng = np.random.default_rng(6)
    embs = list(rng.normal(size=(3, 128)).astype(np.float32) + 2.0)
    tracker = FaceTracker(smoothing=0.0)
    for i, e in enumerate(embs):
        (track,) = tracker.update([make_face(100, 100, embedding=e)], i / FPS)
    normed = np.array(embs) / np.linalg.norm(embs, axis=1, keepdims=True)
    mean = normed.mean(axis=0)
    np.testing.assert_allclose(track.identity, mean / np.linalg.norm(mean), atol=1e-5)
    assert track.face.embedding is embs[-1]

    (bare,) = FaceTracker().update([make_face(100, 100)], 0.0)
    assert bare.identity is None


def test_reset_clears_tracks_and_ids_keep_increasing() -> None:
    tracker = FaceTracker()
    tracks = tracker.update([make_face(100, 100), make_face(400, 100)], 0.0)
    assert [t.id for t in tracks] == [1, 2]
    tracker.reset()
    assert tracker.update([], 0.0) == []
    (track,) = tracker.update([make_face(100, 100)], 0.04)
    assert track.id == 3 and track.age == 0 and not track.filled


# ---- scene cuts ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.origin is not None
    img = cv2.imread(str(Path(spec.origin).parent / "data/images/t1.jpg"))
    assert img is not None
    return img


def test_no_cut_across_a_slowly_panned_photo(photo: np.ndarray) -> None:
    h, w = photo.shape[:2]
    det = SceneCutDetector()
    crop_w, crop_h = w // 2, h * 3 // 4
    cuts = []
    for i in range(0, w - crop_w, 16):  # pan right 16 px per frame, drifting down a little
        y = (i // 16) % (h - crop_h)
        cuts.append(det.is_cut(photo[y : y + crop_h, i : i + crop_w]))
    assert len(cuts) > 30 and not any(cuts)
    assert det.last_similarity is not None and det.last_similarity > 0.9


def test_cut_between_the_photo_and_a_different_image(photo: np.ndarray) -> None:
    det = SceneCutDetector()
    crop = photo[: photo.shape[0] * 3 // 4, : photo.shape[1] // 2]
    hsv = cv2.cvtColor(cv2.flip(crop, 1), cv2.COLOR_BGR2HSV)
    hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int32) + 60) % 180  # same layout, other colours
    other = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    assert det.is_cut(crop) is False  # first frame
    assert det.is_cut(crop) is False
    assert det.is_cut(other) is True
    assert det.is_cut(other) is False
    assert det.is_cut(crop) is True
    assert det.is_cut(cv2.flip(crop, 1)) is False  # a mirror has the same colours: not a cut by itself
    det.reset()
    assert det.is_cut(other) is False  # first frame after reset


def test_cut_between_grey_frames() -> None:
    rng = np.random.default_rng(7)
    dark = np.clip(rng.normal(50, 10, (120, 160)), 0, 255).astype(np.uint8)
    bright = np.clip(rng.normal(200, 10, (120, 160)), 0, 255).astype(np.uint8)
    det = SceneCutDetector()
    assert not det.is_cut(dark)
    assert not det.is_cut(np.roll(dark, 5, axis=1))
    assert det.is_cut(cv2.cvtColor(bright, cv2.COLOR_GRAY2BGR))
