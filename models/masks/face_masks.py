"""Face masks on aligned crops: the feathered box, XSeg occlusion and BiSeNet face parsing.

Every mask here is a float32 (H, W) array the size of the crop it was made for, in [0, 1], where 1 means
"paste the processed face here" and 0 means "keep the original pixel". Masks combine by multiplication and
go to ``models.align.paste_back(..., mask=...)``, which warps them back with the crop's inverse transform.

Both networks take the crop as it comes from ``align.norm_crop`` (BGR uint8; resized to the network's
size here). Their probability maps are feathered the same way: Gaussian blur (σ = 5 px at 512), then the
upper half of the range stretched to [0, 1]. A kept region's edge so fades in over a few pixels inside
it and never bleeds out; a hole (an occluder) grows by up to 4σ: both err towards the original pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from models.onnx_model import OnnxModel

# BiSeNet classes (face-parsing.PyTorch / CelebAMask-HQ order).
PARSER_CLASSES = {
    "background": 0, "skin": 1, "left_brow": 2, "right_brow": 3, "left_eye": 4, "right_eye": 5, "glasses": 6,
    "left_ear": 7, "right_ear": 8, "earring": 9, "nose": 10, "mouth": 11, "upper_lip": 12, "lower_lip": 13,
    "neck": 14, "necklace": 15, "cloth": 16, "hair": 17, "hat": 18,
}
# The face proper: skin, brows, eyes, nose, mouth and lips (no hair, ears, neck or glasses).
FACE_CLASSES: tuple[int, ...] = (1, 2, 3, 4, 5, 10, 11, 12, 13)
MOUTH_CLASSES: tuple[int, ...] = (11, 12, 13)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _wh(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    w, h = (int(v) for v in size)
    return w, h


def box_mask(size: int | Sequence[int], blur: float = 0.3, padding: Sequence[float] = (0, 0, 0, 0)) -> np.ndarray:
    """Feathered box mask (h, w) float32 for a crop of ``size`` (an int, or (width, height)).

    With b = int(w·0.5·blur): a border of max(b//2, 1) px (or ``padding`` percent of the side, top/right/
    bottom/left, whichever is wider) is zeroed, then the mask is blurred with σ = 0.25·b.
    """
    w, h = _wh(size)
    amount = int(w * 0.5 * blur)
    area = max(amount // 2, 1)
    top, right, bottom, left = (float(p) for p in padding)
    mask = np.ones((h, w), np.float32)
    mask[:max(area, int(h * top / 100)), :] = 0
    mask[-max(area, int(h * bottom / 100)):, :] = 0
    mask[:, :max(area, int(w * left / 100))] = 0
    mask[:, -max(area, int(w * right / 100)):] = 0
    if amount > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), amount * 0.25)
    return mask


def feather(prob: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Soft edge for a probability map (h, w): blur with ``sigma`` (default 5 px per 512 px of width),
    then map [0.5, 1] onto [0, 1]. A 1-region fades inward from its edge; 0-regions grow (by up to 4σ)."""
    prob = np.clip(np.asarray(prob, np.float32), 0.0, 1.0)
    if sigma is None:
        sigma = 5.0 * prob.shape[1] / 512.0
    if sigma > 0:
        prob = cv2.GaussianBlur(prob, (0, 0), sigma)
    return ((np.clip(prob, 0.5, 1.0) - 0.5) * 2.0).astype(np.float32)


class _MaskModel(OnnxModel):
    """What the two mask networks share: one image input, one output."""

    name = "mask"

    def inference(self, blob: np.ndarray) -> np.ndarray:
        return self.run({self.input_name: blob})


class OcclusionMasker(_MaskModel):
    """XSeg (xseg_1.onnx): which pixels of an aligned face crop show the face, and which are covered.

    The network reads NHWC [1, 256, 256, 3] float32 in [0, 1] and answers [1, 256, 256, 1], the probability
    that a pixel is visible face (DeepFaceLab trained it to segment the unobstructed face, so hands, hair
    and glasses in front of the face come out near 0). That map is used as it is: 1 = visible, 0 = occluded.
    The crop goes in BGR, the channel order the network was trained and exported with.
    """

    name = "xseg"
    size = 256

    def _setup(self, session) -> None:  # noqa: ANN001
        shape = session.get_inputs()[0].shape
        if len(shape) != 4 or shape[3] != 3:
            raise ValueError(f"{self.model_path}: expected an NHWC input [1,H,W,3], got {shape}")
        if isinstance(shape[1], int):
            self.size = int(shape[1])

    def preprocess(self, crop: np.ndarray) -> np.ndarray:
        """BGR uint8 crop → [1, 256, 256, 3] float32 in [0, 1]."""
        if self.session is None:
            self.prepare()
        small = cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return (small.astype(np.float32) / 255.0)[None]

    def postprocess(self, out: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
        """[1, 256, 256, 1] probability → feathered (h, w) float32 mask, 1 = visible face."""
        prob = np.clip(np.asarray(out, np.float32).reshape(out.shape[1], out.shape[2]), 0.0, 1.0)
        h, w = crop_hw
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        return feather(prob)

    def mask(self, crop: np.ndarray) -> np.ndarray:
        """Crop-sized float32 mask in [0, 1]: 1 where the face is visible, 0 where something covers it."""
        return self.postprocess(self.inference(self.preprocess(crop)), crop.shape[:2])


class FaceParser(_MaskModel):
    """BiSeNet face parser (bisenet_resnet_34.onnx): 19 classes per pixel of an aligned face crop.

    Input [1, 3, 512, 512] RGB in [0, 1] normalised by the ImageNet mean/std; output logits
    [1, 19, 512, 512]; the class map is their argmax.
    """

    name = "bisenet"
    size = 512

    def _setup(self, session) -> None:  # noqa: ANN001
        shape = session.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{self.model_path}: expected an NCHW input [1,3,H,W], got {shape}")
        if isinstance(shape[2], int):
            self.size = int(shape[2])

    def preprocess(self, crop: np.ndarray) -> np.ndarray:
        """BGR uint8 crop → [1, 3, 512, 512] float32, RGB, (x/255 − mean)/std."""
        if self.session is None:
            self.prepare()
        interp = cv2.INTER_AREA if crop.shape[0] > self.size else cv2.INTER_LINEAR
        rgb = cv2.resize(crop, (self.size, self.size), interpolation=interp)[:, :, ::-1].astype(np.float32) / 255.0
        rgb = (rgb - IMAGENET_MEAN) / IMAGENET_STD
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)

    def postprocess(self, out: np.ndarray) -> np.ndarray:
        """[1, 19, H, W] logits → (H, W) uint8 class map."""
        return np.asarray(out)[0].argmax(axis=0).astype(np.uint8)

    def parse(self, crop: np.ndarray) -> np.ndarray:
        """Class map (h, w) uint8 of a BGR crop, at the crop's own size (nearest neighbour)."""
        labels = self.postprocess(self.inference(self.preprocess(crop)))
        h, w = crop.shape[:2]
        if labels.shape != (h, w):
            labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        return labels

    def region_mask(self, crop: np.ndarray, classes: Sequence[int] = FACE_CLASSES) -> np.ndarray:
        """Crop-sized feathered float32 mask of the pixels whose class is in ``classes``."""
        labels = self.postprocess(self.inference(self.preprocess(crop)))
        region = np.isin(labels, np.asarray(classes)).astype(np.float32)
        h, w = crop.shape[:2]
        if region.shape != (h, w):
            region = cv2.resize(region, (w, h), interpolation=cv2.INTER_LINEAR)
        return feather(region)
