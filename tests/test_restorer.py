"""GFPGAN / CodeFormer restorers (stand-in weights) and the built-in classical restorer, on t1.jpg's faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models import align
from models.face import Face
from models.providers import CPU
from models.restore.builtin_enhance import BuiltinRestorer, enhance_region, noise_sigma
from models.restore.restorer import CROP_SIZE, FaceRestorer, align_face, paste_restored
from testkit import standins

CPU_ONLY = [CPU]


def make_faces(specs=standins.T1_FACES) -> list[Face]:
    return [Face(bbox=np.asarray(b, np.float32), score=0.9, kps=np.asarray(k, np.float32).reshape(5, 2))
            for b, k in specs]


def footprint(shape: tuple[int, ...], m: np.ndarray, size: int = CROP_SIZE, grow: int = 2,
              rect: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Bool image mask of where a crop-space rectangle (default: the whole crop) lands in the image."""
    x0, y0, x1, y1 = rect or (0, 0, size, size)
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    pts = align.transform_points(corners, align.invert(m))
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, np.round(pts).astype(np.int32), 1)
    if grow:
        mask = cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return mask.astype(bool)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > 0


# ---------------------------------------------------------------------------------------- preprocess
def test_preprocess_blob_and_matrix(gfpgan: FaceRestorer, t1: np.ndarray, faces: list[Face]) -> None:
    blob, m = gfpgan.preprocess(t1, faces[3])
    assert blob.shape == (1, 3, 512, 512) and blob.dtype == np.float32 and blob.flags.c_contiguous
    assert -1.0 <= blob.min() < -0.5 and 0.5 < blob.max() <= 1.0
    np.testing.assert_allclose(m, align.estimate_norm(faces[3].kps, 512, "ffhq"))
    crop, _ = align.norm_crop(t1, faces[3].kps, 512, "ffhq")
    # RGB order and (x/255 - 0.5)/0.5 scaling, checked on one pixel.
    b, g, r = (float(v) for v in crop[256, 256])
    np.testing.assert_allclose(blob[0, :, 256, 256], [r / 127.5 - 1, g / 127.5 - 1, b / 127.5 - 1], atol=1e-6)
    # The FFHQ template puts the eyes where the network expects them (a real face fits it only roughly).
    np.testing.assert_allclose(align.transform_points(faces[3].kps, m)[:2], align.FFHQ_512[:2], atol=6.0)


# ----------------------------------------------------------------------------------------- inference
def test_gfpgan_inference_ignores_fidelity(gfpgan: FaceRestorer, t1: np.ndarray, faces: list[Face]) -> None:
    blob, _ = gfpgan.preprocess(t1, faces[0])
    out0 = gfpgan.inference(blob, 0.0)
    out1 = gfpgan.inference(blob, 1.0)
    assert out0.shape == (1, 3, 512, 512) and out0.dtype == np.float32
    assert out0.min() >= -1.0 and out0.max() <= 1.0
    np.testing.assert_array_equal(out0, out1)
    assert gfpgan.weight_name is None and gfpgan.name == "gfpgan"


def test_codeformer_weight_changes_output(codeformer: FaceRestorer, t1: np.ndarray, faces: list[Face]) -> None:
    assert codeformer.weight_name == "weight" and codeformer.name == "codeformer"
    blob, _ = codeformer.preprocess(t1, faces[0])
    outs = {w: codeformer.inference(blob, w) for w in (0.0, 0.5, 1.0)}
    assert outs[0.0].shape == (1, 3, 512, 512)
    # The stand-in returns its input at w = 1 and a darker blur at w = 0: the weight really arrives.
    np.testing.assert_allclose(outs[1.0], blob, atol=1e-6)
    assert np.abs(outs[0.0] - blob).mean() > 0.2
    np.testing.assert_allclose(outs[0.5], (outs[0.0] + outs[1.0]) / 2, atol=1e-5)


def test_kind_must_match_the_file(enhance_weights: Path) -> None:
    with pytest.raises(ValueError):
        FaceRestorer(enhance_weights / "codeformer.onnx", CPU_ONLY, "gfpgan").prepare()
    with pytest.raises(ValueError):
        FaceRestorer(enhance_weights / "gfpgan_1.4.onnx", CPU_ONLY, "codeformer").prepare()
    with pytest.raises(ValueError):
        FaceRestorer(enhance_weights / "gfpgan_1.4.onnx", CPU_ONLY, "esrgan")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- postprocess
def test_postprocess_range_and_channel_order(gfpgan: FaceRestorer, t1: np.ndarray, faces: list[Face]) -> None:
    out = np.full((1, 3, 512, 512), -1.0, np.float32)
    out[0, 0] = 1.0  # red
    out[0, 1, :10] = 3.0  # out of range: clipped
    crop = gfpgan.postprocess(out)
    assert crop.shape == (512, 512, 3) and crop.dtype == np.uint8 and crop.flags.c_contiguous
    assert (crop[:, :, 2] == 255).all() and (crop[20:, :, 0] == 0).all() and (crop[20:, :, 1] == 0).all()
    assert (crop[:10, :, 1] == 255).all()
    # preprocess → postprocess is the identity on the crop.
    blob, _ = gfpgan.preprocess(t1, faces[1])
    ref, _ = align_face(t1, faces[1])
    assert np.abs(gfpgan.postprocess(blob).astype(int) - ref).max() <= 1


# -------------------------------------------------------------------------------------- paste-back
def test_restore_changes_only_the_face(gfpgan: FaceRestorer, t1: np.ndarray, faces: list[Face]) -> None:
    out = gfpgan.restore(t1, faces[3])
    assert out.shape == t1.shape and out.dtype == np.uint8
    diff = changed(out, t1)
    _, m = align_face(t1, faces[3])
    area = footprint(t1.shape, m)
    assert diff.sum() > 5000
    assert not diff[~area].any()
    x1, y1, x2, y2 = (int(v) for v in faces[3].bbox)
    assert diff[y1:y2, x1:x2].mean() > 0.9  # the face box itself is restored


def test_blend_and_mask(gfpgan: FaceRestorer, t1: np.ndarray, faces: list[Face]) -> None:
    f = faces[3]
    np.testing.assert_array_equal(gfpgan.restore(t1, f, blend=0.0), t1)
    np.testing.assert_array_equal(gfpgan.restore(t1, f, mask=np.zeros((512, 512), np.float32)), t1)
    full = gfpgan.restore(t1, f, blend=1.0).astype(np.float32)
    half = gfpgan.restore(t1, f, blend=0.5).astype(np.float32)
    x1, y1, x2, y2 = (int(v) for v in f.bbox)
    d_full = np.abs(full - t1)[y1:y2, x1:x2].mean()
    d_half = np.abs(half - t1)[y1:y2, x1:x2].mean()
    assert d_full > 3 and abs(d_half / d_full - 0.5) < 0.05
    # A mask keeping only the crop's left half (any size: it is resized to the crop).
    left = np.zeros((256, 256), np.float32)
    left[:, :128] = 1.0
    masked = gfpgan.restore(t1, f, blend=1.0, mask=left)
    _, m = align_face(t1, f)
    right_half = footprint(t1.shape, m, rect=(262, 0, 512, 512), grow=0)
    assert not changed(masked, t1)[right_half].any()
    assert changed(masked, t1).sum() > 2000


def test_codeformer_restore_follows_fidelity(codeformer: FaceRestorer, t1: np.ndarray, faces: list[Face]) -> None:
    f = faces[4]
    quality = codeformer.restore(t1, f, fidelity=0.0, blend=1.0)
    faithful = codeformer.restore(t1, f, fidelity=1.0, blend=1.0)
    x1, y1, x2, y2 = (int(v) for v in f.bbox)
    d_q = np.abs(quality.astype(int) - t1)[y1:y2, x1:x2].mean()
    d_f = np.abs(faithful.astype(int) - t1)[y1:y2, x1:x2].mean()
    assert d_q > 10 * max(d_f, 0.1)


def test_paste_restored_with_a_crop_mask_of_zeros_keeps_image(t1: np.ndarray, faces: list[Face]) -> None:
    crop, m = align_face(t1, faces[0])
    out = paste_restored(t1, 255 - crop, m, 1.0, np.zeros((512, 512), np.float32))
    np.testing.assert_array_equal(out, t1)


# ----------------------------------------------------------------------------------------- built-in
def test_builtin_changes_only_the_face_region(t1: np.ndarray, faces: list[Face]) -> None:
    r = BuiltinRestorer()
    assert r.name == "builtin"
    out = t1
    for f in faces:
        out = r.restore(out, f)
    diff = changed(out, t1)
    allowed = np.zeros(t1.shape[:2], bool)
    for f in faces:
        _, m = align_face(t1, f)
        allowed |= footprint(t1.shape, m)
        x1, y1, x2, y2 = (int(v) for v in f.bbox)
        assert diff[y1:y2, x1:x2].mean() > 0.3, "every face is touched"
    assert not diff[~allowed].any()
    # Modest: no wholesale change of the face's tone.
    for f in faces:
        x1, y1, x2, y2 = (int(v) for v in f.bbox)
        assert abs(out[y1:y2, x1:x2].astype(float).mean() - t1[y1:y2, x1:x2].astype(float).mean()) < 4.0


def test_builtin_mask_blend_and_fidelity(t1: np.ndarray, faces: list[Face]) -> None:
    r = BuiltinRestorer()
    f = faces[3]
    np.testing.assert_array_equal(r.restore(t1, f, blend=0.0), t1)
    np.testing.assert_array_equal(r.restore(t1, f, mask=np.zeros((512, 512), np.float32)), t1)
    x1, y1, x2, y2 = (int(v) for v in f.bbox)

    def amount(img: np.ndarray) -> float:
        return float(np.abs(img.astype(int) - t1)[y1:y2, x1:x2].mean())

    assert amount(r.restore(t1, f, fidelity=0.0)) > amount(r.restore(t1, f, fidelity=1.0)) > 0


def test_builtin_makes_a_noisy_face_cleaner_and_sharper(t1: np.ndarray, faces: list[Face]) -> None:
    """Added grain is measured and removed on the face; a clean face gains detail."""
    f = faces[3]
    x1, y1, x2, y2 = (int(v) for v in f.bbox)
    rng = np.random.default_rng(0)
    noisy = np.clip(t1.astype(np.float32) + rng.normal(0, 10, t1.shape), 0, 255).astype(np.uint8)
    out = BuiltinRestorer().restore(noisy, f, fidelity=0.5, blend=1.0)
    assert noise_sigma(noisy[y1:y2, x1:x2]) > 5.0 > 2 * noise_sigma(t1[y1:y2, x1:x2])
    assert noise_sigma(out[y1:y2, x1:x2]) < 0.5 * noise_sigma(noisy[y1:y2, x1:x2])

    def err(img: np.ndarray) -> float:
        return float(np.mean((img[y1:y2, x1:x2].astype(float) - t1[y1:y2, x1:x2]) ** 2))

    assert err(out) < 0.8 * err(noisy)  # closer to the clean picture than the noisy input was
    sharp = BuiltinRestorer().restore(t1, f, fidelity=0.5, blend=1.0)

    def detail(img: np.ndarray) -> float:
        grey = cv2.cvtColor(img[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
        return float(cv2.Laplacian(grey, cv2.CV_64F).var())

    assert detail(sharp) > 1.1 * detail(t1)


def test_enhance_region_keeps_shape_and_strength_zero_is_identity(t1: np.ndarray) -> None:
    region = t1[300:424, 452:577]
    np.testing.assert_array_equal(enhance_region(region, 180.0, 0.0), region)
    out = enhance_region(region, 180.0, 1.0)
    assert out.shape == region.shape and out.dtype == np.uint8
    big = cv2.resize(region, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC)  # denoised at a reduced size
    assert enhance_region(big, 1000.0, 0.7).shape == big.shape


def test_windowed_paste_matches_a_whole_frame_paste(t1: np.ndarray, faces: list[Face]) -> None:
    for f in (faces[0], faces[5]):
        crop, m = align_face(t1, f)
        crop = 255 - crop
        alpha = np.full((512, 512), 0.8, np.float32)
        whole = align.paste_back(t1, crop, m, mask=alpha)
        windowed = paste_restored(t1, crop, m, 0.8)
        assert np.abs(whole.astype(int) - windowed).max() <= 2
        assert (whole != windowed).any(axis=2).mean() < 0.001
        inplace = t1.copy()
        assert paste_restored(inplace, crop, m, 0.8, inplace=True) is inplace
        np.testing.assert_array_equal(inplace, windowed)
