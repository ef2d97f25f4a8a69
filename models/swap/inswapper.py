"""inswapper_128: the neural face swapper.

The network takes the target's arcface-128 crop (RGB/255, NCHW) and a 512-d identity latent, and returns
the swapped crop (RGB in [0, 1]). The latent is the source's unit ArcFace embedding mapped through the
model's ``emap`` matrix (the graph's last initializer) and normalised again. The crop is pasted back with
the feathered mask of ``models.align.paste_back``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import numpy_helper

from models import align
from models.face import Face
from models.onnx_model import OnnxModel, call_batch, graph_batch


def read_emap(model_path: str | Path) -> np.ndarray:
    """The identity mapping matrix stored as the graph's last initializer."""
    model = onnx.load(str(model_path), load_external_data=False)
    if not model.graph.initializer:
        raise ValueError(f"{model_path}: no initializers, not an inswapper model")
    emap = numpy_helper.to_array(model.graph.initializer[-1])
    if emap.ndim != 2 or emap.shape[0] != emap.shape[1]:
        raise ValueError(f"{model_path}: last initializer has shape {emap.shape}, expected a square emap")
    return emap


class InSwapper(OnnxModel):
    name = "neural"
    needs_source_embedding = True

    def __init__(self, model_path: Path, providers: list[str]) -> None:
        super().__init__(model_path, providers)
        self.emap: np.ndarray | None = None
        self.crop_size = 128
        self.input_names: tuple[str, str] = ("target", "source")
        self.fixed_batch: int | None = 1  # the graph's batch size; None when it takes any (a dynamic first dim)

    def _setup(self, session) -> None:  # noqa: ANN001 - onnxruntime.InferenceSession
        inputs = session.get_inputs()
        if len(inputs) != 2 or len(session.get_outputs()) != 1:
            raise ValueError(f"{self.model_path}: expected 2 inputs and 1 output")
        size = inputs[0].shape[2]
        self.crop_size = int(size) if isinstance(size, int) else 128
        self.input_names = (inputs[0].name, inputs[1].name)
        self.fixed_batch = graph_batch(inputs[0].shape[0])
        self.emap = read_emap(self.model_path)

    def latent(self, source: Face) -> np.ndarray:
        """(1, 512) float32 latent of a source face: unit embedding @ emap, normalised to unit length."""
        emb = source.normed_embedding
        if emb is None:
            raise ValueError("the source face has no embedding")
        if self.emap is None:
            self.prepare()
        lat = np.dot(emb.reshape(1, -1), self.emap)
        lat /= np.linalg.norm(lat)
        return lat

    def swap_crop(self, img: np.ndarray, target: Face, latent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Swapped BGR uint8 crop of ``target`` and the image→crop matrix, without pasting back."""
        if self.session is None:
            self.prepare()
        crop, m = align.norm_crop(img, target.kps, self.crop_size)
        return self.swap_crops([crop], [latent])[0], m

    def swap_crops(self, crops: list[np.ndarray], latents: list[np.ndarray], batch_size: int = 1) -> list[np.ndarray]:
        """Swapped BGR uint8 crops for aligned BGR ``crops`` (``crop_size``², from ``align.norm_crop``) and their
        (1, 512) latents: ``batch_size`` crops per call when the graph takes any batch, else its fixed batch
        (inswapper_128.onnx: one)."""
        if self.session is None:
            self.prepare()
        out: list[np.ndarray] = []
        size = (self.crop_size, self.crop_size)
        step = call_batch(batch_size, self.fixed_batch)
        for i in range(0, len(crops), step):
            blob = cv2.dnn.blobFromImages(crops[i:i + step], 1.0 / 255.0, size, (0.0, 0.0, 0.0), swapRB=True)
            lat = np.concatenate(latents[i:i + step], axis=0).astype(np.float32, copy=False)
            pred = self.run({self.input_names[0]: blob, self.input_names[1]: lat})
            out += [np.ascontiguousarray(np.clip(255 * rgb, 0, 255).astype(np.uint8)[:, :, ::-1])
                    for rgb in pred.transpose((0, 2, 3, 1))]
        return out

    def get(self, img: np.ndarray, target: Face, source: Face, source_img: np.ndarray | None = None) -> np.ndarray:
        """A copy of ``img`` with ``target``'s face replaced by ``source``'s identity."""
        swapped, m = self.swap_crop(img, target, self.latent(source))
        return align.paste_back(img, swapped, m)
