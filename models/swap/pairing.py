"""Which source face goes onto which target face, for each swap mode. Pure logic over Face lists."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from models.face import Face, best_face

Mode = Literal["one_to_one", "one_to_many", "sorted", "similarity"]
Direction = Literal["left_to_right", "right_to_left"]
Metric = Literal["cosine", "euclidean"]


def face_x(face: Face) -> float:
    """A face's horizontal position: the mean x of its five landmarks."""
    return float(np.asarray(face.kps, dtype=np.float64)[:, 0].mean())


def order_by_x(faces: list[Face], reverse: bool = False) -> list[int]:
    """Indices of ``faces`` by landmark x; equal x keeps the input order (stable), whatever the direction."""
    keyed = sorted(range(len(faces)), key=lambda i: face_x(faces[i]))
    if reverse:
        keyed = sorted(range(len(faces)), key=lambda i: -face_x(faces[i]))
    return keyed


def similarity_matrix(sources: list[Face], targets: list[Face], metric: Metric) -> np.ndarray:
    """Rows = sources, columns = targets. ``cosine``: cosine of the embeddings (ArcFace); ``euclidean``:
    1 − Euclidean distance of the raw descriptors (dlib's metric, whose same-person threshold 0.6 becomes 0.4)."""
    if any(f.embedding is None for f in (*sources, *targets)):
        raise ValueError("similarity needs the embeddings of every face")
    if metric == "cosine":
        a = np.stack([f.normed_embedding for f in sources])
        b = np.stack([f.normed_embedding for f in targets])
        return a @ b.T
    a = np.stack([np.asarray(f.embedding, np.float64) for f in sources])
    b = np.stack([np.asarray(f.embedding, np.float64) for f in targets])
    return 1.0 - np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)


def pair_faces(
    mode: Mode,
    sources: list[Face],
    targets: list[Face],
    direction: Direction = "left_to_right",
    min_similarity: float = 0.0,
    metric: Metric = "cosine",
) -> list[tuple[int, int]]:
    """(source index, target index) pairs to swap.

    - ``one_to_one``: the best source face onto the best target face (best = largest box, then detector score).
    - ``one_to_many``: the best source face onto every target face.
    - ``sorted``: sources left to right, targets in ``direction``, both by landmark x; zipped to the shorter list.
    - ``similarity``: an optimal assignment (Hungarian) maximising total similarity, so every source face goes to
      at most one target face and vice versa; pairs below ``min_similarity`` are dropped (that face is left alone).
    """
    if not sources or not targets:
        return []
    if mode == "one_to_one":
        return [(sources.index(best_face(sources)), targets.index(best_face(targets)))]
    if mode == "one_to_many":
        s = sources.index(best_face(sources))
        return [(s, t) for t in range(len(targets))]
    if mode == "sorted":
        src = order_by_x(sources)
        tgt = order_by_x(targets, reverse=direction == "right_to_left")
        return list(zip(src, tgt, strict=False))
    if mode == "similarity":
        sim = similarity_matrix(sources, targets, metric)
        rows, cols = linear_sum_assignment(-sim)
        return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=True) if sim[r, c] >= min_similarity)
    raise ValueError(f"unknown mode {mode!r}")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw, ih = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def match_by_iou(face: Face, candidates: list[Face], min_iou: float = 0.3) -> Face | None:
    """The candidate overlapping ``face`` most (re-detection after a swap), or None below ``min_iou``."""
    scored = [(iou(face.bbox, c.bbox), i) for i, c in enumerate(candidates)]
    if not scored:
        return None
    best, i = max(scored)
    return candidates[i] if best >= min_iou else None
