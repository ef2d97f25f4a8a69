"""Built-in face analyser: dlib's HOG detector, 68-point shape predictor and ResNet face descriptor, using the
model files that the ``face-recognition-models`` package ships (nothing is downloaded).

dlib objects are not thread-safe: one instance is shared by the server's worker threads, so every call into
dlib goes through a lock owned by the instance.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading

import cv2
import numpy as np

from models.analysis.landmarks import kps_from_68
from models.base import LoadSpec
from models.face import Face

SHAPE_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
RETRY_SIDE = 512  # longest side of the padded retry for tight crops


def models_dir() -> str:
    """Folder holding the dlib model files of the ``face-recognition-models`` package.

    The package itself cannot be imported on current setuptools (it imports ``pkg_resources``), so its
    location is found without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the face-recognition-models package is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def hog_confidence(raw: float) -> float:
    """Map a HOG detector score (an SVM margin: 0 is dlib's default threshold, strong frontal faces reach
    2–3) to (0, 1) with a logistic curve: raw 0 → 0.5, 1 → 0.88, 2 → 0.98, −0.5 → 0.27."""
    return float(1.0 / (1.0 + math.exp(-2.0 * float(raw))))


class DlibAnalyser:
    """Face detection, 68 landmarks and 128-d descriptors with dlib.

    ``upsample`` is how many times the image is doubled before HOG detection (HOG alone finds faces of
    about 80 px and more; each doubling halves that). The doubling is capped so that the detector never
    works on an image larger than ``max_detect_side`` pixels on its long side; the image is downscaled for
    detection when it is larger than that already. Landmarks and descriptors always use full resolution.
    """

    name = "builtin"
    embedding_size = 128

    @classmethod
    def load(cls, spec: LoadSpec) -> DlibAnalyser:
        return cls(upsample=spec.builtin_upsample)

    def __init__(self, upsample: int = 1, max_detect_side: int = 2560, threshold: float = 0.0) -> None:
        self.upsample = max(0, int(upsample))
        self.max_detect_side = int(max_detect_side)
        self.threshold = float(threshold)
        self._lock = threading.Lock()
        self._detector = None
        self._predictor = None
        self._encoder = None

    # -- loading -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        with self._lock:
            if self._detector is not None:
                return
            import dlib

            folder = models_dir()
            self._predictor = dlib.shape_predictor(os.path.join(folder, SHAPE_PREDICTOR_FILE))
            self._encoder = dlib.face_recognition_model_v1(os.path.join(folder, DESCRIPTOR_FILE))
            self._detector = dlib.get_frontal_face_detector()

    @property
    def ready(self) -> bool:
        return self._detector is not None

    def _ensure(self) -> None:
        if self._detector is None:
            self.prepare()

    # -- detection ---------------------------------------------------------------------------------
    def _detect_scale(self, h: int, w: int) -> float:
        long_side = max(h, w)
        scale = float(2**self.upsample)
        if long_side * scale > self.max_detect_side:
            scale = self.max_detect_side / long_side
        return scale

    def _detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """HOG boxes (x1, y1, x2, y2 in ``rgb``'s pixels) with raw scores. Caller holds the lock."""
        h, w = rgb.shape[:2]
        scale = self._detect_scale(h, w)
        work = rgb
        if abs(scale - 1.0) > 1e-6:
            interp = cv2.INTER_LINEAR if scale > 1.0 else cv2.INTER_AREA
            work = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
        sx = w / work.shape[1]
        sy = h / work.shape[0]
        rects, scores, _ = self._detector.run(np.ascontiguousarray(work), 0, self.threshold)
        out = []
        for r, s in zip(rects, scores, strict=True):
            box = np.array([r.left() * sx, r.top() * sy, (r.right() + 1) * sx, (r.bottom() + 1) * sy], dtype=np.float32)
            out.append((box, float(s)))
        return out

    def _detect_with_retry(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Detect; when nothing is found, retry once on a border-replicated, upscaled copy. Tightly cropped
        faces (an aligned 112×112 crop) have no margin for the HOG window otherwise."""
        found = self._detect(rgb)
        if found:
            return found
        h, w = rgb.shape[:2]
        # The retry works on a copy at most RETRY_SIDE px long, so its cost is bounded whatever the input
        # (a 40000×1000 picture would otherwise be padded to gigabytes).
        small = rgb
        if max(h, w) > RETRY_SIDE:
            f = RETRY_SIDE / max(h, w)
            small = cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        sx, sy = w / small.shape[1], h / small.shape[0]
        pad = max(small.shape[:2]) // 2
        padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        # Make sure the padded image is large enough for HOG's 80 px window after the usual upsampling.
        up = max(1.0, 320.0 / max(padded.shape[:2]))
        if up > 1.0:
            padded = cv2.resize(padded, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
        out = []
        for box, score in self._detect(padded):
            box = (box / up - pad) * np.array([sx, sy, sx, sy], np.float32)
            box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
            box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
            if box[2] - box[0] >= 4 and box[3] - box[1] >= 4:
                out.append((box.astype(np.float32), score))
        return out

    # -- landmarks / descriptor ------------------------------------------------------------------
    @staticmethod
    def _rect(box: np.ndarray):
        import dlib

        x1, y1, x2, y2 = (round(float(v)) for v in box)
        return dlib.rectangle(int(x1), int(y1), int(max(x2 - 1, x1)), int(max(y2 - 1, y1)))

    def _shape(self, rgb: np.ndarray, box: np.ndarray):
        return self._predictor(rgb, self._rect(box))

    @staticmethod
    def _shape_to_array(shape) -> np.ndarray:
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float32)

    @staticmethod
    def _shape_from_face(face: Face):
        import dlib

        points = dlib.points([dlib.point(round(float(x)), round(float(y))) for x, y in face.landmarks])
        return dlib.full_object_detection(DlibAnalyser._rect(face.bbox), points)

    def _descriptor(self, rgb: np.ndarray, shape) -> np.ndarray:
        vec = self._encoder.compute_face_descriptor(rgb, shape, 0, 0.25)
        return np.asarray(vec, dtype=np.float32).reshape(-1)

    # -- public API --------------------------------------------------------------------------------
    def get(self, img: np.ndarray, embeddings: bool = False, max_num: int = 0) -> list[Face]:
        """Faces in a BGR uint8 image, largest first. ``score`` is :func:`hog_confidence` of the HOG score
        (the raw score is kept in ``extra['hog_score']``). ``max_num > 0`` keeps the largest N."""
        self._ensure()
        rgb = _to_rgb(img)
        faces: list[Face] = []
        with self._lock:
            found = self._detect_with_retry(rgb)
            found.sort(key=lambda item: -float((item[0][2] - item[0][0]) * (item[0][3] - item[0][1])))
            if max_num > 0:
                found = found[:max_num]
            for box, raw in found:
                shape = self._shape(rgb, box)
                lm = self._shape_to_array(shape)
                face = Face(
                    bbox=box.astype(np.float32),
                    score=hog_confidence(raw),
                    kps=kps_from_68(lm),
                    landmarks=lm,
                    extra={"hog_score": raw},
                )
                if embeddings:
                    face.embedding = self._descriptor(rgb, shape)
                faces.append(face)
        return faces

    def embed(self, img: np.ndarray, face: Face) -> np.ndarray:
        """128-d float32 descriptor of an already detected face (stored into ``face.embedding`` too).
        Uses the face's 68 landmarks, computing them from its box when it has none."""
        self._ensure()
        rgb = _to_rgb(img)
        with self._lock:
            if face.landmarks is not None and np.asarray(face.landmarks).shape == (68, 2):
                shape = self._shape_from_face(face)
            else:
                shape = self._shape(rgb, np.asarray(face.bbox, dtype=np.float32))
                face.landmarks = self._shape_to_array(shape)
            vec = self._descriptor(rgb, shape)
        face.embedding = vec
        return vec


def _to_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 image (H, W, 3), got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img[:, :, ::-1])
