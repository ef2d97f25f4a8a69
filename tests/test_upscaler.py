"""Real-ESRGAN upscaler (stand-in x2/x4 weights): the three steps, tiling, exact output sizes; Lanczos."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.providers import CPU
from models.restore.upscaler import LanczosUpscaler, RealEsrganUpscaler, output_size
from testkit.standins import _model, _save

CPU_ONLY = [CPU]
SCALES = (1, 2, 3, 4, 1.5)


def test_steps(x2: RealEsrganUpscaler, t1: np.ndarray) -> None:
    tile = t1[100:137, 200:250]
    blob = x2.preprocess(tile)
    assert blob.shape == (1, 3, 37, 50) and blob.dtype == np.float32 and 0 <= blob.min() and blob.max() <= 1
    np.testing.assert_allclose(blob[0, :, 5, 7], tile[5, 7, ::-1] / 255.0, atol=1e-6)  # RGB
    out = x2.inference(blob)
    assert out.shape == (1, 3, 74, 100) and out.dtype == np.float32
    img = x2.postprocess(out)
    assert img.shape == (74, 100, 3) and img.dtype == np.uint8
    # The stand-in is a bilinear resize, which OpenCV's matches to within a level on the interior.
    ref = cv2.resize(tile, (100, 74), interpolation=cv2.INTER_LINEAR)
    assert np.abs(img.astype(int) - ref)[2:-2, 2:-2].max() <= 1
    assert x2.name == "real_esrgan_x2" and x2.scale == 2


def test_wrong_scale_is_reported(enhance_weights: Path, t1: np.ndarray) -> None:
    u = RealEsrganUpscaler(enhance_weights / "real_esrgan_x2.onnx", CPU_ONLY, 4)
    with pytest.raises(ValueError, match="x4"):
        u.upscale(t1[:40, :40], 4)


@pytest.mark.parametrize("tile,pad", [(64, 10), (100, 10), (37, 3), (400, 10)])
def test_tiled_equals_untiled(enhance_weights: Path, t1: np.ndarray, tile: int, pad: int) -> None:
    img = t1[150:451, 300:557]  # 301 x 257: tiles that do not divide it
    whole = RealEsrganUpscaler(enhance_weights / "real_esrgan_x2.onnx", CPU_ONLY, 2, tile=100_000, pad=0)
    tiled = RealEsrganUpscaler(enhance_weights / "real_esrgan_x2.onnx", CPU_ONLY, 2, tile=tile, pad=pad)
    a, b = whole.upscale_native(img), tiled.upscale_native(img)
    assert a.shape == b.shape == (602, 514, 3)
    np.testing.assert_array_equal(a, b)


def test_tiled_x4_equals_untiled(enhance_weights: Path, t1: np.ndarray) -> None:
    img = t1[:130, :170]
    whole = RealEsrganUpscaler(enhance_weights / "real_esrgan_x4.onnx", CPU_ONLY, 4, tile=100_000, pad=0)
    tiled = RealEsrganUpscaler(enhance_weights / "real_esrgan_x4.onnx", CPU_ONLY, 4, tile=48, pad=10)
    np.testing.assert_array_equal(whole.upscale_native(img), tiled.upscale_native(img))


def test_fixed_size_model(tmp_path: Path, enhance_weights: Path, t1: np.ndarray) -> None:
    """An export with a fixed 64x64 input gets 64x64 tiles; results match the dynamic model inside."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])
    inits = [numpy_helper.from_array(np.array([], np.float32), "roi"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    node = helper.make_node("Resize", ["input", "roi", "scales"], ["output"], mode="linear")
    path = _save(_model(helper.make_graph([node], "fixed", [inp], [out], initializer=inits)), tmp_path / "f.onnx")
    fixed = RealEsrganUpscaler(path, CPU_ONLY, 2, pad=8)
    fixed.prepare()
    assert fixed.fixed_hw == (64, 64)
    img = t1[200:331, 400:517]
    got = fixed.upscale_native(img)
    ref = RealEsrganUpscaler(enhance_weights / "real_esrgan_x2.onnx", CPU_ONLY, 2).upscale_native(img)
    assert got.shape == ref.shape == (262, 234, 3)
    np.testing.assert_array_equal(got[:-2, :-2], ref[:-2, :-2])  # the last row/column see reflected pixels


@pytest.mark.parametrize("scale", SCALES)
def test_output_size_is_exact(x2: RealEsrganUpscaler, x4: RealEsrganUpscaler, scale: float) -> None:
    img = np.random.default_rng(1).integers(0, 256, (67, 91, 3), dtype=np.uint8)
    want = (round(67 * scale), round(91 * scale), 3)
    for up in (x2, x4, LanczosUpscaler()):
        out = up.upscale(img, scale)
        assert out.shape == want and out.dtype == np.uint8, up.name
    assert output_size((67, 91, 3), 1.5) == (round(91 * 1.5), round(67 * 1.5))
    assert output_size((3, 3), 0.1) == (1, 1)


def test_lanczos_interface() -> None:
    up = LanczosUpscaler()
    up.prepare()
    img = np.full((10, 20, 3), 77, np.uint8)
    assert up.name == "lanczos"
    assert up.upscale(img, 2.5).shape == (25, 50, 3) and (up.upscale(img, 2.5) == 77).all()
    same = up.upscale(img, 1)
    assert same is not img and np.array_equal(same, img)


def test_memory_stays_bounded(x2: RealEsrganUpscaler) -> None:
    """Only the output plus one tile's buffers are held: 1920x1080 x2 peaks far below an untiled float run."""
    img = np.random.default_rng(2).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        out = x2.upscale(img, 2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (2160, 3840, 3)
    untiled_float = 4 * 3 * 2160 * 3840  # one float32 copy of the whole output
    assert peak < out.nbytes + 16 * 2**20 < untiled_float
