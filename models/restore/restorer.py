"""GFPGAN 1.4 and CodeFormer face restoration (ONNX exports), in three separately testable steps.

``preprocess``: the face's 512x512 FFHQ-aligned crop (``align.norm_crop(..., 512, "ffhq")``) as an RGB
blob in [-1, 1]; ``inference``: the network (CodeFormer also reads the fidelity weight w, float64 [1],
0 = quality, 1 = fidelity); ``postprocess``: the network's [-1, 1] RGB output back to a BGR uint8 crop.
``restore`` chains them and pastes the crop back with ``align.paste_back``'s feathered mask, optionally
multiplied by a crop-sized mask (occlusion, face parsing). ``blend`` mixes restored and original pixels:
GFPGAN 1.4 has no strength input of its own, so blending is how its effect is tuned (0.8 by default).

Every restorer in the project (this one and ``models.restore.builtin_enhance.BuiltinRestorer``) works in the same
crop space, so a mask made with ``align_face`` fits any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from models import align
from models.face import Face
from models.onnx_model import OnnxModel, call_batch, graph_batch

CROP_SIZE = 512
TEMPLATE = "ffhq"
Kind = Literal["gfpgan", "codeformer"]


def align_face(img: np.ndarray, face: Face, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The face's FFHQ-aligned ``size`` crop (BGR uint8) and the 2x3 image→crop matrix."""
    return align.norm_crop(img, face.kps, size, TEMPLATE)


def _fit_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A crop mask (any size) resized to ``hw`` and clipped to [0, 1]."""
    mask = np.asarray(mask, np.float32)
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    h, w = hw
    if mask.shape != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(mask, 0.0, 1.0)


def paste_restored(img: np.ndarray, crop: np.ndarray, m: np.ndarray, blend: float = 0.8,
                   mask: np.ndarray | None = None, inplace: bool = False) -> np.ndarray:
    """``img`` with the restored ``crop`` (made with image→crop matrix ``m``) pasted back; a copy unless
    ``inplace``.

    The paste alpha is paste_back's feathered crop mask × ``mask`` (crop space; resized to the crop when
    its size differs) × ``blend``, i.e. the result is blend·restored + (1 − blend)·original inside the face.
    Mixing at the paste keeps the original pixels untouched by any resampling. The paste runs on the
    face's window only, so memory and time follow the face, not the frame (a 4K x2 canvas is 33 MP);
    the warps' fixed-point sampling may then differ from a whole-frame paste by a level here and there.
    """
    out = img if inplace else img.copy()
    blend = float(np.clip(blend, 0.0, 1.0))
    if blend <= 0.0:
        return out
    hw = crop.shape[:2]
    alpha = np.full(hw, blend, np.float32) if mask is None else _fit_mask(mask, hw) * blend
    win = align.paste_window(img.shape, hw, m, extra=8)
    if win is None:
        return out
    x0, y0, x1, y1 = win
    m_win = np.array(m, np.float64)
    m_win[:, 2] += m_win[:, :2] @ np.array([x0, y0], np.float64)
    out[y0:y1, x0:x1] = align.paste_back(img[y0:y1, x0:x1], crop, m_win, mask=alpha, fast=True)
    return out


class FaceRestorer(OnnxModel):
    """GFPGAN 1.4 (``kind="gfpgan"``) or CodeFormer (``kind="codeformer"``) on ONNX Runtime."""

    gives_crops = True  # ``restore_crop`` hands out the restored crop for the caller to paste (or upscale)

    def __init__(self, model_path: Path, providers: list[str], kind: Kind = "gfpgan") -> None:
        if kind not in ("gfpgan", "codeformer"):
            raise ValueError(f"unknown restorer kind {kind!r}")
        super().__init__(model_path, providers)
        self.kind: Kind = kind
        self.name = kind
        self.size = CROP_SIZE
        self.input_name = "input"
        self.weight_name: str | None = None
        self.fixed_batch: int | None = 1  # the graph's batch size; None when it takes any (a dynamic first dim)

    def _setup(self, session) -> None:  # noqa: ANN001 - onnxruntime.InferenceSession
        inputs = session.get_inputs()
        images = [i for i in inputs if len(i.shape) == 4]
        weights = [i for i in inputs if i.type == "tensor(double)"]
        if len(images) != 1:
            raise ValueError(f"{self.model_path}: expected one [1,3,H,W] image input, got {len(images)}")
        if self.kind == "codeformer" and len(weights) != 1:
            raise ValueError(f"{self.model_path}: CodeFormer needs a float64 `weight` input")
        if self.kind == "gfpgan" and len(inputs) != 1:
            raise ValueError(f"{self.model_path}: GFPGAN takes one input, this model has {len(inputs)}")
        size = images[0].shape[2]
        self.size = int(size) if isinstance(size, int) else CROP_SIZE
        self.fixed_batch = graph_batch(images[0].shape[0])
        self.input_name = images[0].name
        self.weight_name = weights[0].name if weights else None

    # ---- the three steps ---------------------------------------------------------------------------
    def preprocess(self, img: np.ndarray, face: Face) -> tuple[np.ndarray, np.ndarray]:
        """Blob [1, 3, 512, 512] float32 (RGB, (x/255 − 0.5)/0.5) of the face's aligned crop, and its matrix."""
        if self.session is None:
            self.prepare()
        crop, m = align_face(img, face, self.size)
        rgb = crop[:, :, ::-1].astype(np.float32) / 255.0
        blob = ((rgb - 0.5) / 0.5).transpose(2, 0, 1)[None]
        return np.ascontiguousarray(blob, dtype=np.float32), m

    def inference(self, blob: np.ndarray, fidelity: float = 0.5) -> np.ndarray:
        """Raw network output [1, 3, 512, 512] in [-1, 1]. ``fidelity`` feeds CodeFormer's weight only."""
        if self.session is None:
            self.prepare()
        feeds = {self.input_name: blob}
        if self.weight_name is not None:
            feeds[self.weight_name] = np.array([float(np.clip(fidelity, 0.0, 1.0))], dtype=np.float64)
        return self.run(feeds)

    def postprocess(self, out: np.ndarray) -> np.ndarray:
        """Network output → BGR uint8 crop: ((x + 1)/2 clipped to [0, 1]) × 255, RGB → BGR."""
        rgb = np.asarray(out, np.float32)[0].transpose(1, 2, 0)
        rgb = np.clip((rgb + 1.0) / 2.0, 0.0, 1.0)
        return np.ascontiguousarray((rgb * 255.0).round().astype(np.uint8)[:, :, ::-1])

    # ---- whole face --------------------------------------------------------------------------------
    def restore_crop(self, img: np.ndarray, face: Face, fidelity: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """Restored BGR crop of ``face`` and its image→crop matrix, not pasted back."""
        blob, m = self.preprocess(img, face)
        return self.postprocess(self.inference(blob, fidelity)), m

    def restore_crops(self, items: list[tuple[np.ndarray, Face]], fidelity: float = 0.5,
                      batch_size: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
        """``restore_crop`` for several (image, face) pairs: ``batch_size`` faces a call when the graph takes any
        batch, else its fixed batch (the published GFPGAN and CodeFormer files: one)."""
        out: list[tuple[np.ndarray, np.ndarray]] = []
        step = call_batch(batch_size, self.fixed_batch)
        for i in range(0, len(items), step):
            prepared = [self.preprocess(img, face) for img, face in items[i:i + step]]
            raw = self.inference(np.concatenate([blob for blob, _ in prepared]), fidelity)
            out += [(self.postprocess(raw[k:k + 1]), m) for k, (_, m) in enumerate(prepared)]
        return out

    def restore(self, img: np.ndarray, face: Face, fidelity: float = 0.5, blend: float = 0.8,
                mask: np.ndarray | None = None) -> np.ndarray:
        """Copy of ``img`` with ``face`` restored: blend·restored + (1 − blend)·original inside the pasted,
        feathered face area, further limited by ``mask`` (crop space, float in [0, 1]) when given."""
        crop, m = self.restore_crop(img, face, fidelity)
        return paste_restored(img, crop, m, blend, mask)
