"""Steady faces for video face swap: stable track ids, gap filling, One-Euro smoothing and scene-cut detection.

Arrays in, arrays out: nothing here reads files or knows about HTTP.
"""

from models.tracking.bridge import GapBridge
from models.tracking.one_euro import OneEuroFilter
from models.tracking.scene_cut import SceneCutDetector
from models.tracking.tracker import FaceTracker, Track, box_iou
from models.tracking.windowed import WindowedDetector

__all__ = ["FaceTracker", "GapBridge", "OneEuroFilter", "SceneCutDetector", "Track", "WindowedDetector", "box_iou"]
