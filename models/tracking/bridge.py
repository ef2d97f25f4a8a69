"""Look-ahead for detection gaps: a face missed for a few frames is filled by interpolating between the detections
on both sides of the gap; a face that really left is never painted where it was.

The tracker alone cannot tell a missed detection from a face leaving: both look like a track without a detection.
``GapBridge`` holds the frames of an open gap (at most the tracker's ``max_missed`` + 1 frames, so memory stays
bounded) until the track is either detected again (the held frames get the interpolated face) or dropped by the
tracker (the held frames get no face for it). Frames come out in order, each with its resolved faces.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

import numpy as np

from models.face import Face
from models.tracking.tracker import GEOMETRY, Track

P = TypeVar("P")


@dataclass
class _Held(Generic[P]):
    payload: P
    t: float
    faces: dict[int, Face]  # track id → face: detected, or filled once its gap closed
    open: set[int] = field(default_factory=set)  # track ids whose gap is not resolved yet


def interpolate(a: Face, b: Face, w: float) -> Face:
    """``a``'s record with its geometry (bbox, kps, landmarks) moved ``w`` of the way to ``b``'s."""
    geo = {}
    for name in GEOMETRY:
        va, vb = getattr(a, name), getattr(b, name)
        if va is not None and vb is not None:
            geo[name] = ((1.0 - w) * np.asarray(va, np.float32) + w * np.asarray(vb, np.float32)).astype(np.float32)
    return replace(a, **geo)


class GapBridge(Generic[P]):
    """Feed ``push(payload, t, tracks)`` once per frame in order (``tracks`` from ``FaceTracker.update``); it
    returns the frames that are resolved, oldest first, as ``(payload, t, faces ordered by track id)``.
    ``flush()`` at the end returns the rest (gaps still open are treated as faces that left)."""

    def __init__(self) -> None:
        self.held: deque[_Held[P]] = deque()
        self.last_seen: dict[int, tuple[float, Face]] = {}  # track id → its latest real detection

    def push(self, payload: P, t: float, tracks: list[Track]) -> list[tuple[P, float, list[tuple[int, Face]]]]:
        detected = {tr.id: tr.face for tr in tracks if tr.missed == 0}
        gaps = {tr.id for tr in tracks if tr.missed > 0}
        for item in self.held:
            for tid in list(item.open):
                if tid in detected:  # the gap closed: fill it between the detections on both sides
                    t0, before = self.last_seen[tid]
                    w = (item.t - t0) / max(t - t0, 1e-9)
                    item.faces[tid] = interpolate(before, detected[tid], w)
                    item.open.discard(tid)
                elif tid not in gaps:  # the tracker dropped it: the face left
                    item.open.discard(tid)
        self.last_seen.update({tid: (t, face) for tid, face in detected.items()})
        for tid in [k for k in self.last_seen if k not in detected and k not in gaps]:
            del self.last_seen[tid]
        self.held.append(_Held(payload, t, dict(detected), {g for g in gaps if g in self.last_seen}))
        return list(self._release(all_=False))

    def flush(self) -> list[tuple[P, float, list[tuple[int, Face]]]]:
        return list(self._release(all_=True))

    def _release(self, all_: bool) -> Iterator[tuple[P, float, list[tuple[int, Face]]]]:
        while self.held and (all_ or not self.held[0].open):
            item = self.held.popleft()
            yield item.payload, item.t, sorted(item.faces.items())
