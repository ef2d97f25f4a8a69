"""Frame-to-frame face tracking for video: stable ids, gap filling and jitter smoothing.

Per frame, ``FaceTracker.update`` takes the analyser's detections and returns one ``Track`` per live track:

* **Matching** is a Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on a cost that mixes box
  overlap and identity. The overlap is the IoU between the detection and the box each track is *predicted* to have
  at this frame (its last box moved by its recent velocity), so a fast face still overlaps its own prediction.
  When both the track and the detection carry an embedding, the cost is
  ``(1 - w) * (1 - IoU) + w * min(1, 1 - cos)`` with ``w = identity_weight`` and ``cos`` the cosine between the
  detection's normed embedding and the track's running mean identity; otherwise it is ``1 - IoU``. A pair whose
  IoU is below ``iou_min`` and whose identity is poor (no embeddings, or ``cos < identity_min``) is never matched.
* **Unmatched detections** start new tracks with fresh ids (integers that only increase over the tracker's life,
  ``reset`` included, so an id is never reused).
* **Unmatched tracks** are kept for up to ``max_missed`` consecutive frames, returned with ``filled=True`` and a
  face whose geometry (bbox, kps, landmarks) is the last output moved at constant velocity; after that they are
  dropped, and the same person showing up again gets a new id.
* **Smoothing**: each track runs One-Euro filters on bbox, kps and landmarks. ``smoothing`` in [0, 1] picks the
  parameters: 0 bypasses the filters (outputs equal the detections exactly); larger values lower the rest cutoff
  from ``fps / 2`` down to ``0.04 * fps / 2`` (2 Hz at 25 fps for 0.5, 0.5 Hz for 1), while ``beta`` lets the cutoff
  rise with speed so that a moving head is not lagged much. Speeds are measured in face sizes per second (the
  square root of the box area when the track starts), so the behaviour does not depend on the video resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from models.face import Face
from models.tracking.one_euro import OneEuroFilter

GEOMETRY = ("bbox", "kps", "landmarks")
REST_CUTOFF_RATIO = 0.04  # rest cutoff at smoothing=1, as a fraction of the Nyquist frequency fps / 2
BETA_FACE_SIZES = 4.0  # Hz of extra cutoff per face size per second of speed
D_CUTOFF = 1.0  # Hz, cutoff of the speed estimate (the One-Euro paper's usual value)
_FORBIDDEN = 1e6


@dataclass(eq=False)
class Track:
    """One tracked face as of the latest ``update``.

    ``face``: geometry smoothed (or extrapolated when ``filled``); score, embedding, gender, age and extra come from
    the latest real detection of this track. ``missed``: consecutive frames without a detection (0 when detected
    this frame). ``filled``: the face was extrapolated, not detected, this frame. ``age``: frames since the track
    started (0 on its first frame). ``first_seen``: time (s) of its first detection. ``identity``: normed mean of
    the normed embeddings of all its detections, or None when none had an embedding.
    """

    id: int
    face: Face
    missed: int = 0
    filled: bool = False
    age: int = 0
    first_seen: float = 0.0
    identity: np.ndarray | None = None


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes, in [0, 1]; 0 when either box is empty."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1) + max(0.0, bx2 - bx1) * max(0.0, by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def _geometry(face: Face) -> dict[str, np.ndarray]:
    geo = {"bbox": np.asarray(face.bbox, np.float64).reshape(4), "kps": np.asarray(face.kps, np.float64)}
    if face.landmarks is not None:
        geo["landmarks"] = np.asarray(face.landmarks, np.float64)
    return geo


def _face_from(geo: dict[str, np.ndarray], src: Face) -> Face:
    """A new Face with ``geo``'s geometry (float32 copies) and ``src``'s other fields."""
    lm = geo.get("landmarks")
    return Face(
        bbox=geo["bbox"].astype(np.float32),
        score=src.score,
        kps=geo["kps"].astype(np.float32),
        landmarks=None if lm is None else lm.astype(np.float32),
        embedding=src.embedding,
        gender=src.gender,
        age=src.age,
        extra=dict(src.extra),
    )


@dataclass(eq=False)
class _TrackState:
    id: int
    first_seen: float
    scale: float  # face size in pixels when the track started
    last_face: Face  # latest real detection
    out: dict[str, np.ndarray]  # geometry output at the latest real detection
    t_det: float  # time of the latest real detection
    velocity: dict[str, np.ndarray] = field(default_factory=dict)  # per second, from the last two detections
    filters: dict[str, OneEuroFilter] = field(default_factory=dict)
    id_sum: np.ndarray | None = None
    age: int = 0
    missed: int = 0

    @property
    def identity(self) -> np.ndarray | None:
        if self.id_sum is None:
            return None
        return (self.id_sum / max(float(np.linalg.norm(self.id_sum)), 1e-12)).astype(np.float32)

    def predict(self, t: float) -> dict[str, np.ndarray]:
        """Geometry at time t: the last output moved at constant velocity (unmoved when no velocity is known)."""
        dt = t - self.t_det
        pred = {}
        for key, value in self.out.items():
            v = self.velocity.get(key)
            pred[key] = value + v * dt if v is not None and v.shape == value.shape else value.copy()
        return pred

    def add_embedding(self, face: Face) -> None:
        e = face.normed_embedding
        if e is None:
            return
        e = e.astype(np.float64).ravel()
        if self.id_sum is None or self.id_sum.shape != e.shape:
            self.id_sum = e.copy()  # first embedding, or the analyser changed: start a new mean
        else:
            self.id_sum = self.id_sum + e


class FaceTracker:
    """Gives faces stable ids across video frames, fills short detection gaps and smooths their geometry.

    ``iou_min``: minimum IoU with a track's predicted box for a match on geometry alone. ``identity_weight`` in
    [0, 1]: share of the identity term in the matching cost when embeddings are present. ``max_missed``: frames a
    track survives without detection (returned filled meanwhile). ``smoothing`` in [0, 1]: 0 = none, 1 = strong.
    ``fps``: nominal frame rate; sets the smoothing cutoffs and the time step used when ``t`` does not increase.
    ``identity_min``: cosine similarity above which identity alone can match a detection to a track whose box it
    does not overlap (0.4 suits 512-d ArcFace embeddings; dlib's 128-d vectors need a higher value, about 0.9).
    """

    def __init__(
        self,
        iou_min: float = 0.3,
        identity_weight: float = 0.5,
        max_missed: int = 5,
        smoothing: float = 0.5,
        fps: float = 25.0,
        identity_min: float = 0.4,
    ) -> None:
        if not 0.0 <= identity_weight <= 1.0:
            raise ValueError("identity_weight must be in [0, 1]")
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError("smoothing must be in [0, 1]")
        if max_missed < 0:
            raise ValueError("max_missed must be >= 0")
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.iou_min = float(iou_min)
        self.identity_weight = float(identity_weight)
        self.max_missed = int(max_missed)
        self.smoothing = float(smoothing)
        self.fps = float(fps)
        self.identity_min = float(identity_min)
        self._tracks: list[_TrackState] = []
        self._next_id = 1
        self._t: float | None = None

    @property
    def min_cutoff(self) -> float:
        """One-Euro rest cutoff (Hz) that ``smoothing`` maps to (meaningless when smoothing is 0: no filtering)."""
        return 0.5 * self.fps * REST_CUTOFF_RATIO**self.smoothing

    def reset(self) -> None:
        """Drop every track (e.g. after a scene cut). Ids keep increasing: a later track never reuses an old id."""
        self._tracks = []
        self._t = None

    # ---- matching ---------------------------------------------------------------------------------------------

    def _identity_cos(self, state: _TrackState, face: Face) -> float | None:
        ident = state.identity
        e = face.normed_embedding
        if ident is None or e is None or ident.shape != e.ravel().shape:
            return None
        return float(np.dot(ident, e.ravel()))

    def _match(self, faces: list[Face], t: float) -> list[tuple[int, int]]:
        """(track index, face index) pairs of the optimal allowed assignment."""
        if not self._tracks or not faces:
            return []
        cost = np.full((len(self._tracks), len(faces)), _FORBIDDEN)
        w = self.identity_weight
        for i, state in enumerate(self._tracks):
            pred_box = state.predict(t)["bbox"]
            for j, face in enumerate(faces):
                iou = box_iou(pred_box, face.bbox)
                cos = self._identity_cos(state, face)
                if iou < self.iou_min and (cos is None or cos < self.identity_min):
                    continue
                if cos is None:
                    cost[i, j] = 1.0 - iou
                else:
                    cost[i, j] = (1.0 - w) * (1.0 - iou) + w * min(1.0, 1.0 - cos)
        rows, cols = linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] < _FORBIDDEN]

    # ---- per-track updates ------------------------------------------------------------------------------------

    def _filter(self, state: _TrackState, raw: dict[str, np.ndarray], t: float) -> dict[str, np.ndarray]:
        if self.smoothing <= 0.0:
            state.filters.clear()
            return {k: v.copy() for k, v in raw.items()}
        out = {}
        for key in GEOMETRY:
            if key not in raw:
                state.filters.pop(key, None)  # e.g. landmarks absent this frame: restart when they come back
                continue
            flt = state.filters.get(key)
            last = None if flt is None else flt.last
            if flt is None or last is None or last.shape != raw[key].shape:
                flt = OneEuroFilter(self.min_cutoff, BETA_FACE_SIZES / state.scale, D_CUTOFF)
                state.filters[key] = flt
            out[key] = flt(raw[key], t)
        return out

    def _new_track(self, face: Face, t: float) -> _TrackState:
        raw = _geometry(face)
        scale = max(float(np.sqrt(face.area)), 1.0)
        state = _TrackState(id=self._next_id, first_seen=t, scale=scale, last_face=face, out={}, t_det=t)
        self._next_id += 1
        state.out = self._filter(state, raw, t)
        state.add_embedding(face)
        return state

    def _detected(self, state: _TrackState, face: Face, t: float) -> None:
        raw = _geometry(face)
        out = self._filter(state, raw, t)
        dt = t - state.t_det
        state.velocity = {
            k: (v - state.out[k]) / dt for k, v in out.items() if k in state.out and state.out[k].shape == v.shape
        }
        state.out, state.t_det, state.last_face = out, t, face
        state.missed = 0
        state.add_embedding(face)

    def _snapshot(self, state: _TrackState, t: float) -> Track:
        filled = state.missed > 0
        geo = state.predict(t) if filled else state.out
        return Track(
            id=state.id,
            face=_face_from(geo, state.last_face),
            missed=state.missed,
            filled=filled,
            age=state.age,
            first_seen=state.first_seen,
            identity=state.identity,
        )

    def update(self, faces: list[Face], t: float) -> list[Track]:
        """Feed the detections of the frame at time ``t`` (seconds) and return the live tracks sorted by id: every
        detection appears in exactly one track with ``missed == 0`` (smoothed geometry), and tracks missed for
        1..max_missed frames appear with ``filled=True`` (extrapolated geometry). Times should increase; a ``t`` not
        greater than the previous one is replaced by the previous one plus ``1 / fps``. The input faces are not
        modified."""
        t = float(t)
        if self._t is not None and not t > self._t:
            t = self._t + 1.0 / self.fps
        self._t = t

        pairs = self._match(faces, t)
        matched_tracks = {i for i, _ in pairs}
        matched_faces = {j for _, j in pairs}
        for i, j in pairs:
            self._detected(self._tracks[i], faces[j], t)

        survivors: list[_TrackState] = []
        for i, state in enumerate(self._tracks):
            state.age += 1
            if i not in matched_tracks:
                state.missed += 1
                if state.missed > self.max_missed:
                    continue
            survivors.append(state)
        for j, face in enumerate(faces):
            if j not in matched_faces:
                survivors.append(self._new_track(face, t))
        self._tracks = sorted(survivors, key=lambda s: s.id)
        return [self._snapshot(s, t) for s in self._tracks]
