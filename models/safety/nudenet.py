"""NudeNet's 320n detector (a YOLOv8n, MIT) on our own ONNX session: BGR uint8 image → (class, score, box).

The file ships inside the ``nudenet`` wheel (installed without its dependencies: it asks for the plain
``onnxruntime``, which would overwrite onnxruntime-gpu's files); its path is found without importing the package.

What nudenet 3.4.2 does, and so what this does to score the same:

* the image is padded with black on the right or bottom to a square of its longer side S, and that square resized
  bilinearly to 320×320 (``cv2.dnn.blobFromImage``, ``INTER_LINEAR``). Here one ``warpAffine`` with the same
  sampling grid (dst x ↦ src (x + ½)·S/320 − ½, edges clamped, the padding black) reads only the 320² pixels
  the model sees, so a 12 MP photo is never padded or copied whole;
* values scaled to [0, 1], NCHW float32. The channels reach the model in **BGR** order: nudenet converts with
  ``COLOR_RGBA2BGR`` (on a 3-channel image that swaps R and B) and then lets ``blobFromImage`` swap them back;
* the output ``(1, 22, 2100)`` holds per anchor the box centre, width and height in the 320² frame and 18 class
  scores; an anchor counts when its best class scores ≥ 0.2; boxes are scaled by S/320, clipped to the image,
  and one class-agnostic non-maximum suppression keeps boxes scoring ≥ 0.25 at IoU 0.45.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.onnx_model import OnnxModel
from models.safety.labels import LABELS

INPUT_SIZE = 320
CANDIDATE_SCORE = 0.2  # an anchor's best class score to be a candidate at all
NMS_SCORE = 0.25  # lowest score non-maximum suppression keeps
NMS_IOU = 0.45
MODEL_FILE = "320n.onnx"


def packaged_model_path() -> Path | None:
    """``320n.onnx`` inside the installed ``nudenet`` package (its ``__init__`` is not run), or None."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    return None


@dataclass
class Detections:
    """What the detector found: ``labels`` (N,) int indices into ``LABELS``, ``scores`` (N,) float32,
    ``boxes`` (N, 4) float32 ``x1, y1, x2, y2`` in image pixels; best score first."""

    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def names(self) -> list[str]:
        return [LABELS[int(i)] for i in self.labels]


def preprocess(bgr: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, float]:
    """(1, 3, size, size) float32 BGR in [0, 1] of the black-padded square, and S/size (model px → image px)."""
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    elif bgr.shape[2] == 4:
        bgr = bgr[..., :3]
    h, w = bgr.shape[:2]
    scale = max(h, w) / size
    m = np.array([[scale, 0.0, 0.5 * scale - 0.5], [0.0, scale, 0.5 * scale - 0.5]], np.float64)
    small = cv2.warpAffine(np.ascontiguousarray(bgr), m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    # The resize clamps at the square's edges (replicate, as above) and the padding is black: a sample between the
    # last image pixel and the padding fades to black, past it is black.
    src = (np.arange(size) + 0.5) * scale - 0.5
    if w < h:
        small *= np.clip(w - src, 0.0, 1.0).astype(np.float32)[None, :, None]
    elif h < w:
        small *= np.clip(h - src, 0.0, 1.0).astype(np.float32)[:, None, None]
    blob = small.transpose(2, 0, 1)[None] * np.float32(1 / 255.0)
    return np.ascontiguousarray(blob), scale


def decode(output: np.ndarray, scale: float, width: int, height: int) -> Detections:
    """The model's ``(1, 4 + classes, anchors)`` output → clipped boxes after class-agnostic NMS."""
    rows = np.asarray(output, np.float32).reshape(output.shape[-2], output.shape[-1]).T  # (anchors, 4 + classes)
    cls = rows[:, 4:]
    best = cls.argmax(axis=1)
    score = cls[np.arange(len(rows)), best]
    keep = score >= CANDIDATE_SCORE
    rows, best, score = rows[keep], best[keep], score[keep]
    x = (rows[:, 0] - rows[:, 2] / 2) * scale
    y = (rows[:, 1] - rows[:, 3] / 2) * scale
    bw = rows[:, 2] * scale
    bh = rows[:, 3] * scale
    x = np.clip(x, 0, width)
    y = np.clip(y, 0, height)
    bw = np.minimum(bw, width - x)
    bh = np.minimum(bh, height - y)
    empty = Detections(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4), np.float32))
    if not len(rows):
        return empty
    xywh = np.stack([x, y, bw, bh], axis=1).astype(np.float64)
    idx = cv2.dnn.NMSBoxes(xywh.tolist(), score.astype(np.float64).tolist(), NMS_SCORE, NMS_IOU)
    idx = np.asarray(idx, np.int64).reshape(-1)
    if not len(idx):
        return empty
    idx = idx[np.argsort(-score[idx], kind="stable")]
    boxes = np.stack([x[idx], y[idx], x[idx] + bw[idx], y[idx] + bh[idx]], axis=1).astype(np.float32)
    return Detections(best[idx].astype(np.int64), score[idx].astype(np.float32), boxes)


class NudeNetDetector(OnnxModel):
    """The 320n detector. ``detect(bgr)`` → ``Detections``; thread-safe after ``prepare()``."""

    def _setup(self, session: Any) -> None:
        inp = session.get_inputs()[0]
        out = session.get_outputs()[0]
        if len(inp.shape) != 4 or inp.shape[1] != 3 or len(out.shape) != 3 or out.shape[1] != 4 + len(LABELS):
            raise ValueError(f"{self.model_path.name} is not a NudeNet detector (input {inp.shape}, output "
                             f"{out.shape}; expected 3 channels in and {4 + len(LABELS)} rows out)")

    def detect(self, bgr: np.ndarray) -> Detections:
        blob, scale = preprocess(bgr)
        out = self.run({self.input_name: blob})
        return decode(out, scale, int(bgr.shape[1]), int(bgr.shape[0]))
