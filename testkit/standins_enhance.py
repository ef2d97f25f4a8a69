"""Stand-in ONNX models for the enhance job, with the real weight files' exact interfaces.

Each ``make_*`` writes one small deterministic ONNX file built with ``onnx.helper`` (same opset and IR
version as ``testkit.standins``):

- ``make_gfpgan``: gfpgan_1.4.onnx (``input`` [1,3,512,512] float32 in [-1, 1] → ``output`` same shape);
  out = clip(1.25·box3(x) + 0.1, -1, 1): a slight blur, more contrast, a little brighter.
- ``make_codeformer``: codeformer.onnx (``input`` [1,3,512,512] float32 and ``weight`` float64 [1]);
  out = w·x + (1 − w)·(box7(x) − 0.3): the fidelity weight visibly moves the output between the input
  itself (w = 1) and a darker blur (w = 0).
- ``make_realesrgan``: real_esrgan_x2/x4.onnx (``input`` [1,3,H,W] with dynamic H, W → [1,3,sH,sW]);
  bilinear resize by the integer scale, so tiled and untiled runs can be compared exactly.
- ``make_xseg``: xseg_1.onnx (NHWC ``input`` [1,256,256,3] → [1,256,256,1]). The network answers the
  probability that a pixel is visible face; this one answers 1 everywhere except ``XSEG_OCCLUDED``
  (rows, cols in its 256 grid), which it marks as occluded (0), like a hand over the mouth.
- ``make_bisenet``: bisenet_resnet_34.onnx (``input`` [1,3,512,512] → ``output`` [1,19,512,512] logits);
  constant logits: skin (1) inside an ellipse, hair (17) in a band above it, background (0) elsewhere.

``make_enhance_weights(weights_dir)`` writes all of them under the manifest's file names.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from testkit.standins import _model, _save

# Rows and columns (half-open, 256 grid) the XSeg stand-in marks as occluded.
XSEG_OCCLUDED = ((150, 230), (70, 186))
# BiSeNet stand-in layout on the 512 crop: skin ellipse centre (x, y) and half-axes; hair rows above it.
BISENET_SKIN = ((256.0, 300.0), (150.0, 190.0))
BISENET_HAIR_ROWS = (40, 110)
# File names from weights/manifest.toml.
FILENAMES = {
    "gfpgan": "gfpgan_1.4.onnx",
    "codeformer": "codeformer.onnx",
    "real_esrgan_x2": "real_esrgan_x2.onnx",
    "real_esrgan_x4": "real_esrgan_x4.onnx",
    "xseg": "xseg_1.onnx",
    "bisenet": "bisenet_resnet_34.onnx",
}


def _box_blur(name_in: str, name_out: str, k: int, tag: str) -> onnx.NodeProto:
    """k×k mean filter with 'same' padding (edge pixels average over the pixels that exist)."""
    p = k // 2
    return helper.make_node("AveragePool", [name_in], [name_out], name=f"blur_{tag}", kernel_shape=[k, k],
                            strides=[1, 1], pads=[p, p, p, p], count_include_pad=0)


def make_gfpgan(path: str | os.PathLike, batch: int | str = 1) -> Path:
    """GFPGAN 1.4 stand-in: out = clip(1.25·box3(input) + 0.1, -1, 1). ``batch``: 1 like the published file, or a
    name for a dynamic batch."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 512, 512])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, 512, 512])
    inits = [
        numpy_helper.from_array(np.array(1.25, np.float32), "gain"),
        numpy_helper.from_array(np.array(0.1, np.float32), "lift"),
        numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(1.0, np.float32), "hi"),
    ]
    nodes = [
        _box_blur("input", "blurred", 3, "g"),
        helper.make_node("Mul", ["blurred", "gain"], ["gained"], name="contrast"),
        helper.make_node("Add", ["gained", "lift"], ["lifted"], name="brighten"),
        helper.make_node("Clip", ["lifted", "lo", "hi"], ["output"], name="clip"),
    ]
    graph = helper.make_graph(nodes, "gfpgan_standin", [inp], [out], initializer=inits)
    return _save(_model(graph), path)


def make_codeformer(path: str | os.PathLike) -> Path:
    """CodeFormer stand-in: out = w·input + (1 − w)·(box7(input) − 0.3), w = float(weight)."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])
    weight = helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 512, 512])
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.3, np.float32), "shade"),
    ]
    nodes = [
        helper.make_node("Cast", ["weight"], ["w"], name="weight_to_float", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "w"], ["one_minus_w"], name="complement"),
        _box_blur("input", "blurred", 7, "c"),
        helper.make_node("Sub", ["blurred", "shade"], ["shaded"], name="darken"),
        helper.make_node("Mul", ["input", "w"], ["kept"], name="keep"),
        helper.make_node("Mul", ["shaded", "one_minus_w"], ["made"], name="make"),
        helper.make_node("Add", ["kept", "made"], ["output"], name="mix"),
    ]
    graph = helper.make_graph(nodes, "codeformer_standin", [inp, weight], [out], initializer=inits)
    return _save(_model(graph), path)


def make_realesrgan(path: str | os.PathLike, scale: int) -> Path:
    """Real-ESRGAN stand-in: bilinear (half-pixel) resize of [1,3,H,W] by ``scale`` → [1,3,sH,sW]."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "height", "width"])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "out_height", "out_width"])
    inits = [
        numpy_helper.from_array(np.array([], np.float32), "roi"),
        numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "scales"),
    ]
    nodes = [helper.make_node("Resize", ["input", "roi", "scales"], ["output"], name="upsample", mode="linear")]
    graph = helper.make_graph(nodes, f"realesrgan_x{scale}_standin", [inp], [out], initializer=inits)
    return _save(_model(graph), path)


def _input_tie(inp: str, axes: list[int], tag: str) -> list[onnx.NodeProto]:
    """Nodes producing ``tie_<tag>`` = 0·mean(input): keeps the input wired into the graph, changes nothing."""
    return [
        helper.make_node("ReduceMean", [inp], [f"mean_{tag}"], name=f"mean_{tag}", axes=axes, keepdims=1),
        helper.make_node("Mul", [f"mean_{tag}", "zero"], [f"tie_{tag}"], name=f"tie_{tag}"),
    ]


def xseg_visible_grid() -> np.ndarray:
    """The XSeg stand-in's output (256, 256) float32: 1 = visible face, 0 = occluded."""
    grid = np.ones((256, 256), np.float32)
    (r0, r1), (c0, c1) = XSEG_OCCLUDED
    grid[r0:r1, c0:c1] = 0.0
    return grid


def make_xseg(path: str | os.PathLike) -> Path:
    """XSeg stand-in: NHWC [1,256,256,3] → [1,256,256,1], 1 except the ``XSEG_OCCLUDED`` square (0)."""
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 256, 256, 3])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 256, 256, 1])
    inits = [
        numpy_helper.from_array(xseg_visible_grid().reshape(1, 256, 256, 1), "visible"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [*_input_tie("input", [1, 2, 3], "x"),
             helper.make_node("Add", ["visible", "tie_x"], ["output"], name="out")]
    graph = helper.make_graph(nodes, "xseg_standin", [inp], [out], initializer=inits)
    return _save(_model(graph), path)


def bisenet_labels(size: int = 512) -> np.ndarray:
    """The class map (size, size) int the BiSeNet stand-in's logits argmax to, at a ``size`` crop."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) * (512.0 / size)
    (cx, cy), (ax, ay) = BISENET_SKIN
    labels = np.zeros((size, size), np.int64)
    r0, r1 = BISENET_HAIR_ROWS
    labels[(yy >= r0) & (yy < r1)] = 17
    labels[((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0] = 1
    return labels


def make_bisenet(path: str | os.PathLike) -> Path:
    """BiSeNet stand-in: [1,3,512,512] → [1,19,512,512] constant logits (nearest-upsampled from 64²)."""
    labels = bisenet_labels(64)
    logits = np.full((1, 19, 64, 64), -4.0, np.float32)
    for c in (0, 1, 17):
        logits[0, c][labels == c] = 4.0
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 19, 512, 512])
    inits = [
        numpy_helper.from_array(logits, "logits64"),
        numpy_helper.from_array(np.array([], np.float32), "roi"),
        numpy_helper.from_array(np.array([1, 1, 8, 8], np.float32), "scales"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Resize", ["logits64", "roi", "scales"], ["logits512"], name="upsample", mode="nearest"),
        *_input_tie("input", [1, 2, 3], "x"),
        helper.make_node("Add", ["logits512", "tie_x"], ["output"], name="out"),
    ]
    graph = helper.make_graph(nodes, "bisenet_standin", [inp], [out], initializer=inits)
    return _save(_model(graph), path)


def make_enhance_weights(weights_dir: str | os.PathLike) -> Path:
    """Every enhance stand-in in ``weights_dir`` under the file names of weights/manifest.toml."""
    w = Path(weights_dir)
    w.mkdir(parents=True, exist_ok=True)
    make_gfpgan(w / FILENAMES["gfpgan"])
    make_codeformer(w / FILENAMES["codeformer"])
    make_realesrgan(w / FILENAMES["real_esrgan_x2"], 2)
    make_realesrgan(w / FILENAMES["real_esrgan_x4"], 4)
    make_xseg(w / FILENAMES["xseg"])
    make_bisenet(w / FILENAMES["bisenet"])
    return w
