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
from models.onnx_model import graph_batch, no_spin_options

log = logging.getLogger(__name__)

DETECTOR_FILE = "det_10g.onnx"
RECOGNISER_FILE = "w600k_r50.onnx"
GENDERAGE_FILE = "genderage.onnx"
LANDMARK_FILE = "1k3d68.onnx"


def _load(path: Path, providers: list[str]) -> Any:
    from insightface.model_zoo import get_model

    with contextlib.redirect_stdout(io.StringIO()):  # some insightface constructors print
        return get_model(str(path), providers=list(providers), sess_options=no_spin_options())


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
        self._local = threading.local()

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
        return self._faces(img, *self._detect(img, max_num), embeddings)

    @property
    def batch_detect(self) -> bool:
        """Whether the detector graph takes several images a call (an SCRFD export with a batch dimension;
        buffalo_l's ``det_10g.onnx`` has none)."""
        if not self.ready:
            self.prepare()
        det = self.detector
        return bool(det.batched) and self._fast(det) and graph_batch(det.input_shape[0]) is None

    def get_batch(self, imgs: list[np.ndarray]) -> list[list[Face]]:
        """``get`` for several BGR images: one detector call for all of them when the graph takes a batch
        (``batch_detect``), else one call each. The faces are the same as ``get``'s, image by image."""
        if not self.ready:
            self.prepare()
        det = self.detector
        if len(imgs) < 2 or not self.batch_detect or any(i.ndim != 3 or i.shape[2] != 3 for i in imgs):
            return [self.get(img) for img in imgs]
        size = tuple(det._resolve_input_sizes(None)[0])
        blob = np.empty((len(imgs), 3, size[1], size[0]), np.float32)
        scales = []
        for k, img in enumerate(imgs):
            blob[k:k + 1], scale = self._letterbox(img, size)
            scales.append(scale)
        # the graph's own session: insightface's fixed-shape one per size declares a batch of one
        outs = det.session.run(det.output_names, {det.input_name: blob})
        return [self._faces(img, *self._decode([o[k] for o in outs], scales[k], size), False)
                for k, img in enumerate(imgs)]

    def _faces(self, img: np.ndarray, dets: np.ndarray, kpss: np.ndarray | None, embeddings: bool) -> list[Face]:
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

    @staticmethod
    def _fast(det: Any) -> bool:
        return len(det._resolve_input_sizes(None)) == 1 and bool(det.use_kps)

    def _detect(self, img: np.ndarray, max_num: int) -> tuple[np.ndarray, np.ndarray | None]:
        """insightface's ``SCRFD.detect`` for its one prepared size, with the same arithmetic and result, minus
        its per-call waste (what matters in a video at 25+ frames a second):

        - the letterbox canvas is never built: only the resized image is turned into a blob, written into a
          reused blob whose padding already holds what a zero pixel normalises to;
        - boxes and points are decoded for the anchors over the threshold only (insightface decodes all 16,800
          anchors of a 640² input, then keeps the few over the threshold; decoding is per anchor, so the values
          are the same).
        Anything unusual (several sizes, no key points) goes to insightface's own ``detect``.
        """
        det = self.detector
        if not self._fast(det) or img.ndim != 3 or img.shape[2] != 3:
            return det.detect(img, max_num=max_num, metric="default")
        size = tuple(det._resolve_input_sizes(None)[0])
        blob, det_scale = self._letterbox(img, size)
        session = det._session_for_input_size(size)
        outs = session.run(det.output_names, {det.input_name: blob})
        if det.batched:
            outs = [o[0] for o in outs]
        dets, kpss = self._decode(outs, det_scale, size)
        if max_num > 0 and dets.shape[0] > max_num:
            return det.detect(img, max_num=max_num, metric="default")
        return dets, kpss

    def _letterbox(self, img: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
        """This thread's reused (1, 3, h, w) detector input holding ``img`` letterboxed, and its scale."""
        det = self.detector
        iw, ih = size
        im_ratio = float(img.shape[0]) / img.shape[1]
        if im_ratio > float(ih) / iw:
            new_h = ih
            new_w = int(new_h / im_ratio)
        else:
            new_w = iw
            new_h = int(new_w * im_ratio)
        det_scale = float(new_h) / img.shape[0]
        blob = self._blob(size, (new_h, new_w), float(det.input_mean), float(det.input_std))
        resized = cv2.resize(img, (new_w, new_h))
        part = cv2.dnn.blobFromImage(resized, 1.0 / det.input_std, (new_w, new_h),
                                     (det.input_mean, det.input_mean, det.input_mean), swapRB=True)
        blob[:, :, :new_h, :new_w] = part
        return blob, det_scale

    def _decode(self, outs: list[np.ndarray], det_scale: float, size: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
        """One image's detector outputs (no batch dimension) → (boxes with scores, key points), as insightface."""
        det = self.detector
        iw, ih = size
        fmc, threshold = det.fmc, float(det.det_thresh)
        scores_l, boxes_l, kpss_l = [], [], []
        for idx, stride in enumerate(det._feat_stride_fpn):
            scores = outs[idx]
            pos = np.where(scores >= threshold)[0]
            if pos.size == 0:
                continue
            centres = self._centres(det, ih // stride, iw // stride, stride)[pos]
            boxes = outs[idx + fmc][pos] * stride
            kps = outs[idx + 2 * fmc][pos] * stride
            scores_l.append(scores[pos])
            boxes_l.append(_distance2bbox(centres, boxes))
            kpss_l.append(_distance2kps(centres, kps).reshape(pos.size, -1, 2))
        if not scores_l:
            return np.empty((0, 5), dtype=np.float32), np.empty((0, 5, 2), dtype=np.float32)
        # From here on: insightface's _detect_candidates and detect, step by step.
        scores = np.vstack(scores_l)
        order = np.argsort(-scores.ravel(), kind="stable")
        bboxes = np.vstack(boxes_l) / det_scale
        kpss = np.vstack(kpss_l) / det_scale
        pre_det = np.hstack((bboxes, scores)).astype(np.float32, copy=False)[order, :]
        kpss = kpss[order, :, :]
        order = np.argsort(-pre_det[:, 4], kind="stable")
        pre_det, kpss = pre_det[order, :], kpss[order, :, :]
        keep = det.nms(pre_det)
        return pre_det[keep, :], kpss[keep, :, :]

    def _blob(self, size: tuple[int, int], hw: tuple[int, int], mean: float, std: float) -> np.ndarray:
        """This thread's reusable detector input; pixels outside the ``hw`` image hold a zero pixel's value."""
        blobs = self._local.__dict__.setdefault("blobs", {})
        got = blobs.get(size)
        if got is None or got[1] != hw:
            pad = cv2.dnn.blobFromImage(np.zeros((1, 1, 3), np.uint8), 1.0 / std, (1, 1), (mean, mean, mean),
                                        swapRB=True)[0, 0, 0, 0]
            got = blobs[size] = (np.full((1, 3, size[1], size[0]), pad, dtype=np.float32), hw)
        return got[0]

    @staticmethod
    def _centres(det: Any, height: int, width: int, stride: int) -> np.ndarray:
        """Anchor centres of one stride, as insightface computes (and caches) them."""
        key = (height, width, stride)
        centres = det.center_cache.get(key)
        if centres is None:
            centres = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
            centres = (centres * stride).reshape((-1, 2))
            if det._num_anchors > 1:
                centres = np.stack([centres] * det._num_anchors, axis=1).reshape((-1, 2))
            if len(det.center_cache) < 100:
                det.center_cache[key] = centres
        return centres

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


def _distance2bbox(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """insightface's distance2bbox (x1, y1, x2, y2 from an anchor centre and its four distances)."""
    return np.stack([points[:, 0] - distance[:, 0], points[:, 1] - distance[:, 1],
                     points[:, 0] + distance[:, 2], points[:, 1] + distance[:, 3]], axis=-1)


def _distance2kps(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """insightface's distance2kps (points from an anchor centre and their offsets)."""
    preds = []
    for i in range(0, distance.shape[1], 2):
        preds.append(points[:, i % 2] + distance[:, i])
        preds.append(points[:, i % 2 + 1] + distance[:, i + 1])
    return np.stack(preds, axis=-1)
