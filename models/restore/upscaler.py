"""Background upscaling: Real-ESRGAN (ONNX, tiled) and a plain Lanczos resize with the same interface.

``upscale(img, scale_out)`` always returns exactly round(w·scale_out) x round(h·scale_out) pixels. The
network applies its own fixed scale (x2 or x4) once; the result is then resized to the requested size
(area filter when shrinking, Lanczos when growing), as Real-ESRGAN's own ``outscale`` does.

Tiling keeps memory bounded on large inputs: the image is cut into ``tile`` x ``tile`` pieces, each run
with ``pad`` pixels of real neighbouring context on every side (clamped at the image border), and only
the part of the output that belongs to the tile itself is kept. The stitched result is exactly the
untiled one wherever the network's receptive field fits inside the padding. Only the uint8 output plus
one tile's float buffers are ever held at once.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from models.onnx_model import OnnxModel


def output_size(shape: tuple[int, ...], scale_out: float) -> tuple[int, int]:
    """(width, height) of ``shape``'s image scaled by ``scale_out``: round(w·s), round(h·s), at least 1."""
    h, w = shape[:2]
    return max(1, int(round(w * scale_out))), max(1, int(round(h * scale_out)))


def resize_to(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height): area when shrinking, Lanczos when growing, a copy when equal."""
    w, h = size
    ih, iw = img.shape[:2]
    if (iw, ih) == (w, h):
        return img.copy()
    interp = cv2.INTER_AREA if w <= iw and h <= ih else cv2.INTER_LANCZOS4
    return cv2.resize(img, (w, h), interpolation=interp)


class LanczosUpscaler:
    """No model: Lanczos (area when shrinking) to the requested size."""

    name = "lanczos"
    scale = 1
    learned = False  # a resize, not a model: never used for face upsampling or "background_enhance"

    def prepare(self) -> None:
        pass

    def upscale(self, img: np.ndarray, scale_out: float) -> np.ndarray:
        return resize_to(img, output_size(img.shape, scale_out))


class RealEsrganUpscaler(OnnxModel):
    """Real-ESRGAN ONNX export: [1, 3, H, W] RGB in [0, 1] → [1, 3, sH, sW], s = ``scale`` (2 or 4).

    Models with a dynamic input take tiles of any size; a model exported with a fixed input size gets
    tiles of exactly that size (edge tiles are padded by reflection and the padding is cut off again).
    """

    learned = True

    def __init__(self, model_path: Path, providers: list[str], scale: int, tile: int = 400, pad: int = 10) -> None:
        if scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        if tile < 16 or pad < 0:
            raise ValueError(f"bad tiling: tile={tile} pad={pad}")
        super().__init__(model_path, providers)
        self.scale = int(scale)
        self.tile = int(tile)
        self.pad = int(pad)
        self.name = f"real_esrgan_x{self.scale}"
        self.fixed_hw: tuple[int, int] | None = None

    def _setup(self, session) -> None:  # noqa: ANN001 - onnxruntime.InferenceSession
        shape = session.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{self.model_path}: expected an input [1,3,H,W], got {shape}")
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            self.fixed_hw = (int(shape[2]), int(shape[3]))
            if min(self.fixed_hw) <= 2 * self.pad:
                raise ValueError(f"{self.model_path}: input {self.fixed_hw} leaves no room for pad {self.pad}")

    # ---- the three steps ---------------------------------------------------------------------------
    def preprocess(self, tile: np.ndarray) -> np.ndarray:
        """BGR uint8 (h, w, 3) → [1, 3, h, w] float32 RGB in [0, 1]."""
        blob = np.empty((1, 3, *tile.shape[:2]), np.float32)
        for c in range(3):
            np.multiply(tile[:, :, 2 - c], 1.0 / 255.0, out=blob[0, c], dtype=np.float32)
        return blob

    def inference(self, blob: np.ndarray) -> np.ndarray:
        """Network output [1, 3, s·h, s·w] float32."""
        out = self.run({self.input_name: blob})
        want = (blob.shape[2] * self.scale, blob.shape[3] * self.scale)
        if tuple(out.shape[2:]) != want:
            raise ValueError(f"{self.model_path.name}: output {tuple(out.shape)} is not x{self.scale} of the input "
                             f"{tuple(blob.shape)}; wrong scale for this model?")
        return out

    def postprocess(self, out: np.ndarray) -> np.ndarray:
        """[1, 3, H, W] RGB float → BGR uint8 (H, W, 3), clipped to [0, 1] and rounded."""
        chw = np.array(out[0], dtype=np.float32, copy=not out.flags.writeable)
        np.clip(chw, 0.0, 1.0, out=chw)
        chw *= 255.0
        np.rint(chw, out=chw)
        return chw[::-1].transpose(1, 2, 0).astype(np.uint8, order="C")

    # ---- whole image -------------------------------------------------------------------------------
    def _tile_grid(self) -> tuple[int, int]:
        """(rows, cols) of image pixels each tile covers, before padding."""
        if self.fixed_hw is None:
            return self.tile, self.tile
        return self.fixed_hw[0] - 2 * self.pad, self.fixed_hw[1] - 2 * self.pad

    def _run_padded(self, piece: np.ndarray) -> np.ndarray:
        """Run one padded piece; fixed-size models get it reflected up to their size and cut back."""
        if self.fixed_hw is None:
            return self.postprocess(self.inference(self.preprocess(piece)))
        th, tw = self.fixed_hw
        h, w = piece.shape[:2]
        full = cv2.copyMakeBorder(piece, 0, th - h, 0, tw - w, cv2.BORDER_REFLECT_101 if min(h, w) > 1
                                  else cv2.BORDER_REPLICATE)
        out = self.postprocess(self.inference(self.preprocess(full)))
        return out[: h * self.scale, : w * self.scale]

    def upscale_native(self, img: np.ndarray) -> np.ndarray:
        """The network's own scale, tile by tile: (h, w, 3) → (s·h, s·w, 3) uint8."""
        if self.session is None:
            self.prepare()
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        h, w = img.shape[:2]
        s, p = self.scale, self.pad
        out = np.empty((h * s, w * s, 3), np.uint8)
        th, tw = self._tile_grid()
        for y0 in range(0, h, th):
            y1 = min(y0 + th, h)
            for x0 in range(0, w, tw):
                x1 = min(x0 + tw, w)
                py0, py1 = max(y0 - p, 0), min(y1 + p, h)
                px0, px1 = max(x0 - p, 0), min(x1 + p, w)
                res = self._run_padded(img[py0:py1, px0:px1])
                oy, ox = (y0 - py0) * s, (x0 - px0) * s
                out[y0 * s:y1 * s, x0 * s:x1 * s] = res[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
        return out

    def upscale(self, img: np.ndarray, scale_out: float) -> np.ndarray:
        """Exactly round(w·scale_out) x round(h·scale_out): the network's scale, then resized to fit."""
        size = output_size(img.shape, scale_out)
        out = self.upscale_native(img)
        return out if (out.shape[1], out.shape[0]) == size else resize_to(out, size)
