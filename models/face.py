"""The face record every analyser produces and every swapper/enhancer consumes.

Coordinates are pixels of the image the face was found in (x right, y down), float32.
Images everywhere in ``models/`` are uint8 BGR arrays of shape (H, W, 3), as OpenCV and insightface use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)  # identity equality: faces hold arrays
class Face:
    bbox: np.ndarray  # (4,) x1, y1, x2, y2
    score: float
    kps: np.ndarray  # (5, 2): left eye, right eye, nose tip, left mouth corner, right mouth corner
    landmarks: np.ndarray | None = None  # (68, 2) iBUG-68 layout when the analyser provides it
    embedding: np.ndarray | None = None  # raw identity vector (128-d dlib, 512-d ArcFace)
    gender: int | None = None  # 1 = male, 0 = female
    age: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.bbox)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    @property
    def normed_embedding(self) -> np.ndarray | None:
        if self.embedding is None:
            return None
        emb = np.asarray(self.embedding, dtype=np.float32)
        return emb / max(float(np.linalg.norm(emb)), 1e-12)


def best_face(faces: list[Face]) -> Face | None:
    """The project's single definition of a picture's "best" face: the largest box, ties broken by the
    detector score (area × score would let a confident small background face beat the subject)."""
    if not faces:
        return None
    return max(faces, key=lambda f: (round(f.area, 3), f.score))
