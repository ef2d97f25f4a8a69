"""Stand-in ONNX models with the real weight files' exact interfaces, for tests and benchmarks.

Each ``make_*`` writes one small deterministic ONNX file built with ``onnx.helper``:

- ``make_scrfd``: det_10g's interface (input ``input.1`` [1,3,H,W], 9 rank-2 outputs: scores/boxes/kps for
  strides 8/16/32 with 2 anchors per location). Its outputs are constants that decode to the given faces
  (score 0.9; everything else 0), valid for a 640x640 detector input.
- ``make_arcface``: w600k_r50's interface ([1,3,112,112] → [1,512]); a fixed seeded projection of the
  average-pooled, mean-centred crop, so one face always gives one vector and different faces differ.
- ``make_inswapper``: inswapper_128's interface (``target`` [1,3,128,128], ``source`` [1,512] →
  [1,3,128,128], 512x512 ``emap`` as the last initializer); output = clip(0.5·target + 0.5·colour) with
  colour = sigmoid(source @ W), a per-channel constant that depends on the latent.
- ``make_inswapper_heavy``: the same interface and picture plus about 10 GFLOP of real 3×3 convolutions per
  call (benchmarks: a swapper that costs what the real one does).
- ``make_genderage`` / ``make_landmark_3d68``: genderage.onnx ([1,3,96,96] → [1,3]) and 1k3d68.onnx
  ([1,3,192,192] → [1,3309]) with simple image-dependent / constant outputs.

``make_buffalo_dir`` / ``make_weights_dir`` lay the files out as the model hub expects them.
Face positions are given as ``(bbox (4,), kps (5, 2))`` pairs; ``T1_FACES`` holds the six faces of
insightface's ``t1.jpg`` (dlib HOG boxes, 5 points from dlib's 68 landmarks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
DET_SIZE = 640
STRIDES = (8, 16, 32)
ANCHORS = 2
# Output names of the real det_10g.onnx, in its order: scores ×3, boxes ×3, kps ×3.
SCRFD_OUTPUTS = ("448", "471", "494", "451", "474", "497", "454", "477", "500")

FaceSpec = tuple[Sequence[float], Sequence[Sequence[float]]]

T1_SHAPE = (886, 1280, 3)
T1_FACES: list[FaceSpec] = [
    ([65, 284, 169, 388], [[88.0, 330.2], [128.5, 310.3], [118.0, 337.0], [114.0, 372.0], [148.0, 352.0]]),
    ([734, 365, 837, 469], [[761.3, 398.7], [800.8, 403.8], [771.0, 431.0], [763.0, 436.0], [808.0, 441.0]]),
    ([1114, 284, 1217, 388], [[1149.0, 327.8], [1192.2, 325.0], [1164.0, 348.0], [1153.0, 367.0], [1197.0, 364.0]]),
    ([452, 300, 577, 424], [[491.3, 320.7], [539.7, 333.7], [509.0, 365.0], [481.0, 368.0], [531.0, 380.0]]),
    ([275, 179, 362, 266], [[291.7, 213.0], [321.3, 194.8], [302.0, 229.0], [312.0, 248.0], [338.0, 234.0]]),
    ([883, 89, 987, 192], [[917.0, 120.0], [950.0, 114.8], [923.0, 148.0], [932.0, 179.0], [958.0, 170.0]]),
]


def t1_path() -> str:
    import insightface

    return os.path.join(os.path.dirname(insightface.__file__), "data", "images", "t1.jpg")


def _save(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="standins")
    model.ir_version = IR_VERSION
    return model


# --------------------------------------------------------------------------------------------- detector
def letterbox_scale(img_shape: Sequence[int], det_size: int = DET_SIZE) -> float:
    """Factor from image pixels to detector-input pixels (image fitted into det_size², top-left)."""
    h, w = int(img_shape[0]), int(img_shape[1])
    if h / w > 1.0:
        new_h = det_size
    else:
        new_h = int(det_size * (h / w))
    return float(new_h) / h


def make_scrfd(path: str | os.PathLike, faces_in_det_space: Sequence[FaceSpec], dynamic: bool = True,
               batched: bool = False) -> Path:
    """SCRFD det_10g stand-in whose outputs decode to ``faces_in_det_space`` (640x640 input coordinates).

    ``dynamic`` declares the input as [1,3,?,?] like the real file (insightface then builds a fixed-shape
    session per detector size); the constant outputs are only right for a 640x640 input. ``batched`` makes it
    an SCRFD export with a batch dimension (input [B,3,?,?], outputs [B,N,C], as insightface's ``batched``
    graphs): every image of the batch gets the same faces.
    """
    scores = {s: np.zeros(((DET_SIZE // s) ** 2 * ANCHORS, 1), np.float32) for s in STRIDES}
    boxes = {s: np.zeros(((DET_SIZE // s) ** 2 * ANCHORS, 4), np.float32) for s in STRIDES}
    kpss = {s: np.zeros(((DET_SIZE // s) ** 2 * ANCHORS, 10), np.float32) for s in STRIDES}
    for bbox, kps in faces_in_det_space:
        x1, y1, x2, y2 = (float(v) for v in bbox)
        pts = np.asarray(kps, np.float64).reshape(5, 2)
        side = max(x2 - x1, y2 - y1)
        stride = 8 if side < 64 else 16 if side < 160 else 32
        cols = DET_SIZE // stride
        cx = min(max(int(round((x1 + x2) / 2 / stride)), 0), cols - 1)
        cy = min(max(int(round((y1 + y2) / 2 / stride)), 0), cols - 1)
        # First free anchor slot at (or spiralling out from) the face centre.
        slot = None
        for radius in range(cols):
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    gx, gy = cx + dx, cy + dy
                    if not (0 <= gx < cols and 0 <= gy < cols):
                        continue
                    for a in range(ANCHORS):
                        idx = (gy * cols + gx) * ANCHORS + a
                        if scores[stride][idx, 0] == 0:
                            slot = (idx, gx, gy)
                            break
                    if slot:
                        break
                if slot:
                    break
            if slot:
                break
        assert slot is not None, "no free anchor left"
        idx, gx, gy = slot
        ax, ay = gx * stride, gy * stride
        scores[stride][idx, 0] = 0.9
        boxes[stride][idx] = np.array([ax - x1, ay - y1, x2 - ax, y2 - ay]) / stride
        kpss[stride][idx] = ((pts - np.array([ax, ay])) / stride).reshape(10)

    hw: list[int | str] = ["?", "?"] if dynamic else [DET_SIZE, DET_SIZE]
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["B" if batched else 1, 3, *hw])
    arrays = [scores[s] for s in STRIDES] + [boxes[s] for s in STRIDES] + [kpss[s] for s in STRIDES]
    inits, nodes, outs = [], [], []
    if batched:  # the input's batch size, to expand each constant [1,N,C] to [B,N,C]
        inits += [numpy_helper.from_array(np.array([0], np.int64), "b_start"),
                  numpy_helper.from_array(np.array([1], np.int64), "b_end")]
        nodes += [helper.make_node("Shape", ["input.1"], ["in_shape"], name="in_shape"),
                  helper.make_node("Slice", ["in_shape", "b_start", "b_end"], ["b"], name="batch_size")]
    for name, arr in zip(SCRFD_OUTPUTS, arrays, strict=True):
        if not batched:
            inits.append(numpy_helper.from_array(arr, f"const_{name}"))
            nodes.append(helper.make_node("Identity", [f"const_{name}"], [name], name=f"out_{name}"))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
            continue
        inits += [numpy_helper.from_array(arr[None], f"const_{name}"),
                  numpy_helper.from_array(np.array(arr.shape, np.int64), f"nc_{name}")]
        nodes += [helper.make_node("Concat", ["b", f"nc_{name}"], [f"shape_{name}"], axis=0, name=f"shape_{name}"),
                  helper.make_node("Expand", [f"const_{name}", f"shape_{name}"], [name], name=f"out_{name}")]
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", *arr.shape]))
    graph = helper.make_graph(nodes, "scrfd_standin", [inp], outs, initializer=inits)
    return _save(_model(graph), path)


def faces_to_det_space(img_shape: Sequence[int], faces: Sequence[FaceSpec], det_size: int = DET_SIZE
                       ) -> list[FaceSpec]:
    scale = letterbox_scale(img_shape, det_size)
    return [(np.asarray(b, np.float64) * scale, np.asarray(k, np.float64).reshape(5, 2) * scale) for b, k in faces]


def make_scrfd_for_image(path: str | os.PathLike, img_shape: Sequence[int], faces_xyxy_kps: Sequence[FaceSpec],
                         dynamic: bool = True, batched: bool = False) -> Path:
    """Detector stand-in that finds ``faces_xyxy_kps`` (image coordinates) in any image of ``img_shape``."""
    return make_scrfd(path, faces_to_det_space(img_shape, faces_xyxy_kps), dynamic=dynamic, batched=batched)


# ---------------------------------------------------------------------------------------- recognition
def make_arcface(path: str | os.PathLike, seed: int = 1234) -> Path:
    """w600k_r50 stand-in: 8x8 average pool → mean-centred 192 values → fixed projection to 512."""
    rng = np.random.default_rng(seed)
    proj = (rng.standard_normal((192, 512)) / np.sqrt(192)).astype(np.float32)
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])
    out = helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], name="pool", kernel_shape=[14, 14], strides=[14, 14]),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
        helper.make_node("ReduceMean", ["flat"], ["avg"], name="centre_mean", axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "avg"], ["centred"], name="centre"),
        helper.make_node("MatMul", ["centred", "proj"], ["683"], name="project"),
    ]
    inits = [numpy_helper.from_array(proj, "proj")]
    graph = helper.make_graph(nodes, "arcface_standin", [inp], [out], initializer=inits)
    return _save(_model(graph), path)


# ------------------------------------------------------------------------------------------- swapper
def make_inswapper(path: str | os.PathLike, seed: int = 4321) -> Path:
    """inswapper_128 stand-in: out = clip(0.5·target + 0.5·sigmoid(source @ W) per channel, 0, 1)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((512, 3)) * 3.0).astype(np.float32)
    emap = (rng.standard_normal((512, 512)) / np.sqrt(512) + np.eye(512) * 0.5).astype(np.float32)
    target = helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128])
    source = helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])
    inits = [
        numpy_helper.from_array(w, "colour_w"),
        numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "colour_shape"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(emap, "emap"),  # must stay the LAST initializer
    ]
    nodes = [
        helper.make_node("MatMul", ["source", "colour_w"], ["logits"], name="colour_proj"),
        helper.make_node("Sigmoid", ["logits"], ["colour3"], name="colour_sigmoid"),
        helper.make_node("Reshape", ["colour3", "colour_shape"], ["colour"], name="colour_reshape"),
        helper.make_node("Add", ["target", "colour"], ["mixed"], name="mix"),
        helper.make_node("Mul", ["mixed", "half"], ["halved"], name="halve"),
        helper.make_node("Clip", ["halved", "zero", "one"], ["output"], name="clip"),
    ]
    graph = helper.make_graph(nodes, "inswapper_standin", [target, source], [out], initializer=inits)
    return _save(_model(graph), path)


def inswapper_heavy_gflop(convs: int = 8, width: int = 64, size: int = 128) -> float:
    """Multiply-adds ×2 of one call of ``make_inswapper_heavy`` (its 3×3 convolutions), in GFLOP."""
    per = 2 * size * size * 9
    return (per * 3 * width + convs * per * width * width + per * width * 3) / 1e9


def make_inswapper_heavy(path: str | os.PathLike, convs: int = 8, width: int = 64, seed: int = 4321,
                         batch: int | str = 1) -> Path:
    """inswapper_128 stand-in with a real network's cost: the interface of ``make_inswapper`` (``target``
    [B,3,128,128], ``source`` [B,512] → [B,3,128,128], ``emap`` the last initializer; B = ``batch``, 1 like the
    real file, or a name for a dynamic batch) and the same picture, plus ``convs`` 3×3 convolutions of ``width``
    channels at 128² (with ReLU) whose result is added at 1/1000 strength, so nothing can be optimised away.
    8 × 64 channels: about 9.8 GFLOP per call (``inswapper_heavy_gflop``), the order of inswapper_128 itself."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((512, 3)) * 3.0).astype(np.float32)
    emap = (rng.standard_normal((512, 512)) / np.sqrt(512) + np.eye(512) * 0.5).astype(np.float32)
    target = helper.make_tensor_value_info("target", TensorProto.FLOAT, [batch, 3, 128, 128])
    source = helper.make_tensor_value_info("source", TensorProto.FLOAT, [batch, 512])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, 128, 128])

    def conv_w(cout: int, cin: int) -> np.ndarray:
        return (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (9 * cin))).astype(np.float32)

    inits = [
        numpy_helper.from_array(w, "colour_w"),
        numpy_helper.from_array(np.array([-1, 3, 1, 1], np.int64), "colour_shape"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(0.001, np.float32), "detail_gain"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    nodes = [
        helper.make_node("MatMul", ["source", "colour_w"], ["logits"], name="colour_proj"),
        helper.make_node("Sigmoid", ["logits"], ["colour3"], name="colour_sigmoid"),
        helper.make_node("Reshape", ["colour3", "colour_shape"], ["colour"], name="colour_reshape"),
    ]
    chans = [3] + [width] * (convs + 1) + [3]
    x = "target"
    for i in range(len(chans) - 1):
        inits.append(numpy_helper.from_array(conv_w(chans[i + 1], chans[i]), f"conv{i}_w"))
        inits.append(numpy_helper.from_array(np.zeros(chans[i + 1], np.float32), f"conv{i}_b"))
        nodes.append(helper.make_node("Conv", [x, f"conv{i}_w", f"conv{i}_b"], [f"conv{i}"], name=f"conv{i}",
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        x = f"conv{i}"
        if i < len(chans) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"relu{i}"], name=f"relu{i}"))
            x = f"relu{i}"
    inits.append(numpy_helper.from_array(emap, "emap"))  # must stay the LAST initializer
    nodes += [
        helper.make_node("Mul", [x, "detail_gain"], ["detail"], name="detail"),
        helper.make_node("Add", ["target", "colour"], ["mixed"], name="mix"),
        helper.make_node("Mul", ["mixed", "half"], ["halved"], name="halve"),
        helper.make_node("Add", ["halved", "detail"], ["detailed"], name="add_detail"),
        helper.make_node("Clip", ["detailed", "zero", "one"], ["output"], name="clip"),
    ]
    graph = helper.make_graph(nodes, "inswapper_heavy_standin", [target, source], [out], initializer=inits)
    return _save(_model(graph), path)


# ---------------------------------------------------------------------------------- optional models
def make_genderage(path: str | os.PathLike) -> Path:
    """genderage stand-in ([1,3,96,96] → [1,3]): gender logits and age/100 from the crop's mean colour."""
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 96, 96])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3])
    mix = np.array([[1.0, -1.0, 0.10], [-0.5, 0.5, 0.05], [0.2, -0.2, 0.05]], np.float32)
    bias = np.array([0.0, 0.0, 0.35], np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["feat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["feat", "mix", "bias"], ["fc1"], name="fc"),
    ]
    inits = [numpy_helper.from_array(mix, "mix"), numpy_helper.from_array(bias, "bias")]
    graph = helper.make_graph(nodes, "genderage_standin", [inp], [out], initializer=inits)
    return _save(_model(graph), path)


def _mean_face_68() -> np.ndarray:
    """A plausible 68-point layout (x, y, z) in the landmark crop's [-1, 1] units."""
    import pickle

    import insightface

    with open(os.path.join(os.path.dirname(insightface.__file__), "data", "objects", "meanshape_68.pkl"), "rb") as f:
        mean = np.asarray(pickle.load(f), np.float64).reshape(68, 3)
    # Already y-down with the image-left eye first; centre it in the crop.
    pts = mean - np.array([*(mean[:, :2].max(0) + mean[:, :2].min(0)) / 2, mean[:, 2].mean()])
    return pts


def make_landmark_3d68(path: str | os.PathLike) -> Path:
    """1k3d68 stand-in ([1,3,192,192] → [1,3309]): a constant mean face in crop units (last 68 of 1103 points)."""
    pts = np.zeros((1103, 3), np.float32)
    pts[-68:] = _mean_face_68()
    const = pts.reshape(1, 3309)
    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])
    out = helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3309])
    nodes = [helper.make_node("Identity", ["const"], ["fc1"], name="const_out")]
    inits = [numpy_helper.from_array(const, "const")]
    graph = helper.make_graph(nodes, "landmark_standin", [inp], [out], initializer=inits)
    return _save(_model(graph), path)


# ---------------------------------------------------------------------------------------- layouts
def make_buffalo_dir(dir: str | os.PathLike, img_shape: Sequence[int] = T1_SHAPE,
                     faces: Sequence[FaceSpec] = tuple(T1_FACES), extras: bool = False) -> Path:
    """``dir/det_10g.onnx`` + ``dir/w600k_r50.onnx`` (+ genderage.onnx and 1k3d68.onnx with ``extras``)."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    make_scrfd_for_image(d / "det_10g.onnx", img_shape, faces)
    make_arcface(d / "w600k_r50.onnx")
    if extras:
        make_genderage(d / "genderage.onnx")
        make_landmark_3d68(d / "1k3d68.onnx")
    return d


def make_weights_dir(weights_dir: str | os.PathLike, img_shape: Sequence[int] = T1_SHAPE,
                     faces: Sequence[FaceSpec] = tuple(T1_FACES), extras: bool = False) -> Path:
    """The model hub's layout: ``weights_dir/buffalo_l/{det_10g,w600k_r50}.onnx`` and ``inswapper_128.onnx``."""
    w = Path(weights_dir)
    make_buffalo_dir(w / "buffalo_l", img_shape, faces, extras=extras)
    make_inswapper(w / "inswapper_128.onnx")
    return w
