"""The neural face analyser: insightface buffalo_l models loaded from local files only.

- ``det_10g.onnx`` (SCRFD detector, required): boxes + 5 points, letterboxed into det_size².
- ``w600k_r50.onnx`` (ArcFace recogniser, required): 512-d identity from the arcface-112 crop.
- ``genderage.onnx`` (optional): gender (1 = male) and age.
- ``1k3d68.onnx`` (optional): 68 landmarks (x, y), and head pose in ``Face.extra["pose"]`` (pitch, yaw, roll).

After ``prepare`` nothing mutates per call except the detector's anchor-centre cache (plain dict writes)
and its per-size session pool (locked inside insightface), and ONNX Runtime sessions run concurrently,
so ``get`` and ``embed`` may be called from several threads at once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models import align
from models.base import LoadSpec
from models.face import Face
from models.providers import session_options

log = logging.getLogger(__name__)

DETECTOR_FILE = "det_10g.onnx"
RECOGNISER_FILE = "w600k_r50.onnx"
GENDERAGE_FILE = "genderage.onnx"
LANDMARK_FILE = "1k3d68.onnx"


def _load(path: Path, providers: list[str]) -> Any:
    from insightface.model_zoo import get_model

    with contextlib.redirect_stdout(io.StringIO()):  # some insightface constructors print
        return get_model(str(path), providers=list(providers), sess_options=session_options())


class NeuralAnalyser:
    name = "neural"
    embedding_size = 512

    @classmethod
    def load(cls, spec: LoadSpec) -> NeuralAnalyser:
        if spec.path is None:
            raise ValueError("the neural analyser needs its model folder")
        return cls(spec.path, spec.providers, det_size=spec.det_size, det_thresh=spec.det_thresh)

    def __init__(self, model_dir: Path, providers: list[str], det_size: int = 640, det_thresh: float = 0.5) -> None:
        self.model_dir = Path(model_dir)
        self.providers = list(providers)
        self.det_size = int(det_size)
        self.det_thresh = float(det_thresh)
        self.detector: Any = None
        self.recogniser: Any = None
        self.genderage: Any = None
        self.landmarker: Any = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.detector is not None and self.recogniser is not None

    def prepare(self) -> None:
        with self._lock:
            if self.ready:
                return
            for required in (DETECTOR_FILE, RECOGNISER_FILE):
                if not (self.model_dir / required).is_file():
                    raise FileNotFoundError(f"{self.model_dir / required} is missing (buffalo_l weights)")
            detector = _load(self.model_dir / DETECTOR_FILE, self.providers)
            if getattr(detector, "taskname", None) != "detection":
                raise ValueError(f"{DETECTOR_FILE} is not an SCRFD detector")
            # One explicit size: without it insightface 2.x runs 128² and 640² and merges them.
            detector.prepare(0, input_size=(self.det_size, self.det_size), det_thresh=self.det_thresh)
            recogniser = _load(self.model_dir / RECOGNISER_FILE, self.providers)
            if getattr(recogniser, "taskname", None) != "recognition":
                raise ValueError(f"{RECOGNISER_FILE} is not an ArcFace recogniser")
            genderage = landmarker = None
            if (self.model_dir / GENDERAGE_FILE).is_file():
                genderage = _load(self.model_dir / GENDERAGE_FILE, self.providers)
                if getattr(genderage, "taskname", None) != "genderage":
                    log.warning("%s is not a gender/age model; ignored", GENDERAGE_FILE)
                    genderage = None
            if (self.model_dir / LANDMARK_FILE).is_file():
                landmarker = _load(self.model_dir / LANDMARK_FILE, self.providers)
                if getattr(landmarker, "taskname", None) != "landmark_3d_68":
                    log.warning("%s is not a 68-point landmark model; ignored", LANDMARK_FILE)
                    landmarker = None
            # Warm-up: builds the fixed-size detector session now rather than inside the first request.
            detector.detect(np.zeros((self.det_size, self.det_size, 3), np.uint8), max_num=0, metric="default")
            self.genderage, self.landmarker = genderage, landmarker
            self.recogniser = recogniser
            self.detector = detector

    def get(self, img: np.ndarray, embeddings: bool = False, max_num: int = 0) -> list[Face]:
        """Faces in a BGR image, largest first; ``embeddings`` fills the raw 512-d ArcFace vectors."""
        if not self.ready:
            self.prepare()
        dets, kpss = self.detector.detect(img, max_num=max_num, metric="default")
        faces: list[Face] = []
        for i in range(dets.shape[0]):
            bbox = dets[i, 0:4].astype(np.float32)
            kps = kpss[i].astype(np.float32) if kpss is not None else _kps_from_box(bbox)
            face = Face(bbox=bbox, score=float(dets[i, 4]), kps=kps)
            if self.landmarker is not None or self.genderage is not None:
                self._attributes(img, face)
            if embeddings:
                self.embed(img, face)
            faces.append(face)
        faces.sort(key=lambda f: (f.area, f.score), reverse=True)
        return faces

    def _attributes(self, img: np.ndarray, face: Face) -> None:
        from insightface.app.common import Face as InsightFace

        record = InsightFace(bbox=face.bbox, kps=face.kps, det_score=face.score)
        if self.landmarker is not None:
            pts = self.landmarker.get(img, record)
            face.landmarks = np.asarray(pts, dtype=np.float32)[:, :2].copy()
            if record.get("pose") is not None:
                face.extra["pose"] = [float(v) for v in record["pose"]]
        if self.genderage is not None:
            gender, age = self.genderage.get(img, record)
            face.gender, face.age = int(gender), int(age)

    def embed(self, img: np.ndarray, face: Face) -> np.ndarray:
        """Raw 512-d ArcFace vector of ``face`` (also stored in ``face.embedding``)."""
        if not self.ready:
            self.prepare()
        rec = self.recogniser
        size = int(rec.input_size[0])
        crop, _ = align.norm_crop(img, face.kps, size)
        mean, std = float(rec.input_mean), float(rec.input_std)
        blob = cv2.dnn.blobFromImage(crop, 1.0 / std, (size, size), (mean, mean, mean), swapRB=True)
        vec = rec.session.run(rec.output_names, {rec.input_name: blob})[0]
        face.embedding = np.asarray(vec, dtype=np.float32).reshape(-1)
        return face.embedding


def _kps_from_box(bbox: np.ndarray) -> np.ndarray:
    """Rough 5 points inside a box, for detectors without a keypoint head."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    rel = align.ARCFACE_112 / 112.0
    return np.stack([x1 + rel[:, 0] * (x2 - x1), y1 + rel[:, 1] * (y2 - y1)], axis=1).astype(np.float32)
