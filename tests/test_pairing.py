"""Swap-mode logic on synthetic face lists."""

from __future__ import annotations

import numpy as np
import pytest

from models.face import Face, best_face
from models.swap.pairing import iou, match_by_iou, order_by_x, pair_faces, similarity_matrix


def face(x: float, size: float = 100, score: float = 0.9, emb: list[float] | None = None, y: float = 100) -> Face:
    kps = np.array([[x - 20, y - 10], [x + 20, y - 10], [x, y + 5], [x - 15, y + 25], [x + 15, y + 25]], np.float32)
    bbox = np.array([x - size / 2, y - size / 2, x + size / 2, y + size / 2], np.float32)
    return Face(bbox=bbox, score=score, kps=kps, embedding=None if emb is None else np.array(emb, np.float32))


def test_best_face_is_largest_then_most_confident() -> None:
    faces = [face(0, 80, 0.99), face(200, 120, 0.6), face(400, 120, 0.7)]
    assert best_face(faces) is faces[2]
    assert best_face([]) is None


def test_one_to_one_and_one_to_many() -> None:
    src = [face(0, 50), face(100, 150)]
    tgt = [face(0, 90), face(300, 60), face(500, 200)]
    assert pair_faces("one_to_one", src, tgt) == [(1, 2)]
    assert pair_faces("one_to_many", src, tgt) == [(1, 0), (1, 1), (1, 2)]
    assert pair_faces("one_to_many", src, []) == []


def test_sorted_left_to_right_and_mirrored() -> None:
    src = [face(300), face(100)]  # given out of order
    tgt = [face(900), face(50), face(500)]
    assert pair_faces("sorted", src, tgt, "left_to_right") == [(1, 1), (0, 2)]
    assert pair_faces("sorted", src, tgt, "right_to_left") == [(1, 0), (0, 2)]


def test_sorted_more_sources_than_targets_zips_to_shorter() -> None:
    src = [face(10), face(20), face(30)]
    tgt = [face(500)]
    assert pair_faces("sorted", src, tgt) == [(0, 0)]


def test_order_ties_are_stable_in_both_directions() -> None:
    faces = [face(100, y=10), face(100, y=300), face(50)]
    assert order_by_x(faces) == [2, 0, 1]
    assert order_by_x(faces, reverse=True) == [0, 1, 2]


def test_similarity_is_optimal_not_greedy() -> None:
    # Greedy (source 0 first) would take target 0 (0.9) and leave source 1 with 0.1; optimal gives 0.8 + 0.85.
    src = [face(0, emb=[1.0, 0.0]), face(100, emb=[0.6, 0.8])]
    tgt = [face(0, emb=[0.95, 0.31]), face(100, emb=[0.8, -0.6])]
    sim = similarity_matrix(src, tgt, "cosine")
    greedy_total = sim[0, 0] + sim[1, 1]
    pairs = pair_faces("similarity", src, tgt)
    total = sum(sim[s, t] for s, t in pairs)
    assert len(pairs) == 2 and total >= greedy_total


def test_similarity_threshold_leaves_faces_alone() -> None:
    src = [face(0, emb=[1.0, 0.0, 0.0])]
    tgt = [face(0, emb=[0.0, 1.0, 0.0]), face(100, emb=[0.9, 0.1, 0.0])]
    assert pair_faces("similarity", src, tgt, min_similarity=0.5) == [(0, 1)]
    assert pair_faces("similarity", src, tgt[:1], min_similarity=0.5) == []


def test_similarity_more_targets_than_sources_each_used_once() -> None:
    src = [face(0, emb=[1, 0, 0]), face(1, emb=[0, 1, 0])]
    tgt = [face(0, emb=[0, 1, 0]), face(1, emb=[0, 0, 1]), face(2, emb=[1, 0, 0])]
    assert pair_faces("similarity", src, tgt, min_similarity=0.5) == [(0, 2), (1, 0)]


def test_euclidean_metric_is_one_minus_distance() -> None:
    src = [face(0, emb=[0.0, 0.0])]
    tgt = [face(0, emb=[0.3, 0.4])]
    assert similarity_matrix(src, tgt, "euclidean")[0, 0] == pytest.approx(0.5)


def test_similarity_without_embeddings_is_an_error() -> None:
    with pytest.raises(ValueError):
        pair_faces("similarity", [face(0)], [face(0)])


def test_iou_and_rematch() -> None:
    a = face(100)
    assert iou(a.bbox, a.bbox) == pytest.approx(1.0)
    moved = face(110)
    far = face(400)
    assert match_by_iou(a, [far, moved]) is moved
    assert match_by_iou(a, [far]) is None
