"""Built-in face analyser: dlib's HOG detector, 68-point shape predictor and ResNet face descriptor, using the
model files that the ``face-recognition-models`` package ships (nothing is downloaded).

dlib objects are not thread-safe: one instance is shared by the server's worker threads, so every call into
dlib goes through a lock owned by the instance.

Detection is HOG, with two guards measured on real photos (see ``DEFAULT_MIN_SCORE``):

* **false positives**: HOG scores some round non-faces (a mission patch on a sleeve) at 0.47–0.57, inside the
  range of weak real faces (0.56–0.79 on t1.jpg), so no score threshold separates them. A detection under
  ``verify_below`` must be confirmed by dlib's CNN face detector (MMOD, shipped in the same package) run on a
  small crop around the box: real faces score ≥ 0.94 there, none of the non-faces is found at all.
* **small faces**: HOG misses faces under about 80 px. When nothing is found in a small image, detection runs
  once more on the image doubled, as long as the doubled image stays within ``upsample_budget`` pixels, so a
  large image never pays for it.
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
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
RETRY_SIDE = 512  # longest side of the padded retry for tight crops

# Calibration (HOG confidence = hog_confidence(raw score)), measured with upsample 0 and 1:
#   real faces: t1.jpg ×6 0.60–1.00 (0.56 at 0.6× scale), its mirror 0.72–0.99, Tom_Hanks 0.82–0.93, astronaut's
#   face 0.90–0.96, the cameraman in skimage.data.camera() 0.28–0.44;
#   non-faces: astronaut's mission patch 0.47–0.57 (mirrored 0.45–0.57), other astronaut clutter 0.25–0.48,
#   coins 0.26–0.32, rocket 0.24–0.32, chelsea (cat) 0.24, gravel 0.23; coffee, clock, moon, brick, grass, text,
#   page, logo, colorwheel, horse, hubble, retina, cell: nothing.
# The score ranges overlap (patch 0.57 > a real face at 0.56), so the score floor stays at dlib's own
# threshold (raw 0) and detections below VERIFY_BELOW (0.23 above the highest non-face) are confirmed by the
# CNN detector on a crop: every real face above scored 0.94–1.08 there, no non-face produced a detection.
DEFAULT_MIN_SCORE = 0.5
VERIFY_BELOW = 0.8
VERIFY_FACE_PX = 80  # the box is scaled to this width for the CNN check, in a crop 1.5× as wide (54 ms)
VERIFY_CROP_PX = 120
UPSAMPLE_BUDGET = 1280 * 1024  # pixels of the doubled image in the small-image retry (640×480 qualifies)


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


def hog_raw(confidence: float) -> float:
    """Inverse of :func:`hog_confidence`: the raw HOG threshold of a confidence in (0, 1)."""
    p = min(max(float(confidence), 1e-6), 1.0 - 1e-6)
    return 0.5 * math.log(p / (1.0 - p))


class DlibAnalyser:
    """Face detection, 68 landmarks and 128-d descriptors with dlib.

    ``upsample`` is how many times the image is doubled before HOG detection (HOG alone finds faces of
    about 80 px and more; each doubling halves that). The doubling is capped so that the detector never
    works on an image larger than ``max_detect_side`` pixels on its long side; the image is downscaled for
    detection when it is larger than that already. Landmarks and descriptors always use full resolution.

    ``min_score`` drops detections below that confidence; detections below ``verify_below`` are kept only
    when the CNN detector confirms them (``verify_below=0`` turns the check off). ``upsample_budget`` bounds
    the retry of a small image without faces at twice the detection scale (0 turns it off).
    """

    name = "builtin"
    embedding_size = 128

    @classmethod
    def load(cls, spec: LoadSpec) -> DlibAnalyser:
        # ``builtin_min_score`` is read when LoadSpec carries it (FACEAPI_BUILTIN_MIN_SCORE), else the default.
        return cls(upsample=spec.builtin_upsample, min_score=spec.builtin_min_score)

    def __init__(
        self,
        upsample: int = 1,
        max_detect_side: int = 2560,
        min_score: float = DEFAULT_MIN_SCORE,
        verify_below: float = VERIFY_BELOW,
        upsample_budget: int = UPSAMPLE_BUDGET,
    ) -> None:
        self.upsample = max(0, int(upsample))
        self.max_detect_side = int(max_detect_side)
        self.min_score = float(min_score)
        self.threshold = hog_raw(self.min_score)  # raw HOG threshold passed to dlib
        self.verify_below = float(verify_below)
        self.upsample_budget = max(0, int(upsample_budget))
        self._lock = threading.Lock()
        self._detector = None
        self._cnn = None
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
            self._cnn = dlib.cnn_face_detection_model_v1(os.path.join(folder, CNN_DETECTOR_FILE))
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

    def _detect(self, rgb: np.ndarray, scale: float | None = None,
                verify: bool = True) -> list[tuple[np.ndarray, float]]:
        """HOG boxes (x1, y1, x2, y2 in ``rgb``'s pixels) with raw scores, weak ones confirmed by the CNN
        check unless ``verify`` is off. ``scale`` overrides the detection scale. Caller holds the lock."""
        h, w = rgb.shape[:2]
        if scale is None:
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
            if verify and hog_confidence(s) < self.verify_below and not self._verified(rgb, box):
                continue
            out.append((box, float(s)))
        return out

    def _verified(self, rgb: np.ndarray, box: np.ndarray) -> bool:
        """Whether dlib's CNN (MMOD) face detector finds a face on the box: the box is scaled to
        ``VERIFY_FACE_PX`` wide in a ``VERIFY_CROP_PX`` crop around its centre (border replicated) and a CNN
        detection must overlap the box's place there (IoU > 0.3). About 54 ms per call. Caller holds the lock."""
        bw = float(box[2] - box[0])
        if bw < 1.0:
            return False
        s = VERIFY_FACE_PX / bw
        c = VERIFY_CROP_PX / 2.0
        cx, cy = float(box[0] + box[2]) / 2.0, float(box[1] + box[3]) / 2.0
        m = np.float32([[s, 0.0, c - s * cx], [0.0, s, c - s * cy]])
        crop = cv2.warpAffine(rgb, m, (VERIFY_CROP_PX, VERIFY_CROP_PX),
                              flags=cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        bh = float(box[3] - box[1]) * s
        ax0, ay0, ax1, ay1 = c - VERIFY_FACE_PX / 2.0, c - bh / 2.0, c + VERIFY_FACE_PX / 2.0, c + bh / 2.0
        for d in self._cnn(np.ascontiguousarray(crop), 0):
            r = d.rect
            ix = max(0.0, min(r.right() + 1.0, ax1) - max(float(r.left()), ax0))
            iy = max(0.0, min(r.bottom() + 1.0, ay1) - max(float(r.top()), ay0))
            inter = ix * iy
            union = (r.width() * r.height()) + (ax1 - ax0) * (ay1 - ay0) - inter
            if union > 0 and inter / union > 0.3:
                return True
        return False

    def _detect_with_retry(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Detect; when nothing is found, retry (1) a small image at twice the detection scale, within
        ``upsample_budget`` pixels (faces of 40–80 px), then (2) a border-replicated, upscaled copy: tightly
        cropped faces (an aligned 112×112 crop) have no margin for the HOG window otherwise."""
        found = self._detect(rgb)
        if found:
            return found
        h, w = rgb.shape[:2]
        scale = self._detect_scale(h, w)
        if self.upsample_budget and h * w * (2.0 * scale) ** 2 <= self.upsample_budget:
            found = self._detect(rgb, 2.0 * scale)
            if found:
                return found
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
    def get(self, img: np.ndarray, embeddings: bool = False, max_num: int = 0, quick: bool = False,
            quick_scale: float | None = None) -> list[Face]:
        """Faces in a BGR uint8 image, largest first. ``score`` is :func:`hog_confidence` of the HOG score
        (the raw score is kept in ``extra['hog_score']``). ``max_num > 0`` keeps the largest N. ``quick`` is for a
        window around a face already found and confirmed (video tracking): one HOG pass, no CNN confirmation of
        weak detections (54 ms each) and no retries, so a miss costs no more than a hit; ``quick_scale`` sets the
        scale of that pass (a window around a large face is searched shrunk, its landmarks found at full size)."""
        self._ensure()
        rgb = _to_rgb(img)
        faces: list[Face] = []
        with self._lock:
            found = self._detect(rgb, quick_scale, verify=False) if quick else self._detect_with_retry(rgb)
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
