"""Wav2Lip ONNX export (FaceFusion's interface) and the runners: ONNX Runtime and PyTorch agree on random weights."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from Wav2Lip.export import main as export_main
from Wav2Lip.model import Wav2Lip
from Wav2Lip.runner import LipSyncModel, OnnxWav2Lip, TorchWav2Lip, face_input, face_output, mel_input

CPU = ["CPUExecutionProvider"]


def _random_model() -> Wav2Lip:
    """Default init plus random batch-norm affine parameters and statistics (eval mode uses them)."""
    torch.manual_seed(7)
    model = Wav2Lip()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1 + 0.1 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
                m.running_mean.copy_(0.1 * torch.randn_like(m.running_mean))
                m.running_var.copy_(0.5 + torch.rand_like(m.running_var))
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Wav2Lip, Path, Path]:
    """A random model, its checkpoint in the published format, and the ONNX written by the command line."""
    d = tmp_path_factory.mktemp("w2l")
    model = _random_model()
    pth = d / "wav2lip_random.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, pth)
    out = d / "wav2lip_random_96.onnx"
    assert export_main(["--checkpoint", str(pth), "--out", str(out)]) == 0
    return model, pth, out


def _batch(b: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mel = rng.uniform(-4, 4, (b, 1, 80, 16)).astype(np.float32)
    face = rng.uniform(0, 1, (b, 6, 96, 96)).astype(np.float32)
    return mel, face


def test_onnx_interface(files: tuple[Wav2Lip, Path, Path]) -> None:
    graph = onnx.load(str(files[2]), load_external_data=False).graph

    def dims(v: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    assert [(i.name, dims(i)) for i in graph.input] == [("source", ["batch", 1, 80, 16]),
                                                        ("target", ["batch", 6, 96, 96])]
    assert [(o.name, dims(o)) for o in graph.output] == [("output", ["batch", 3, 96, 96])]


@pytest.mark.parametrize("b", [1, 5])
def test_onnx_matches_torch(files: tuple[Wav2Lip, Path, Path], b: int) -> None:
    model, _, onnx_path = files
    sess = ort.InferenceSession(str(onnx_path), providers=CPU)
    mel, face = _batch(b, seed=b)
    got = sess.run(["output"], {"source": mel, "target": face})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(mel), torch.from_numpy(face)).numpy()
    assert got.shape == want.shape == (b, 3, 96, 96)
    assert want.std() > 0.01  # not a saturated, constant output
    assert np.abs(got - want).max() < 1e-4


def test_runners_agree_and_prepare_once(files: tuple[Wav2Lip, Path, Path]) -> None:
    _, pth, onnx_path = files
    torch_runner, onnx_runner = TorchWav2Lip(pth, "cpu"), OnnxWav2Lip(onnx_path, CPU)
    assert isinstance(torch_runner, LipSyncModel) and isinstance(onnx_runner, LipSyncModel)
    threads = [threading.Thread(target=r.prepare) for r in (torch_runner, onnx_runner) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    session, net = onnx_runner.session, torch_runner.net
    onnx_runner.prepare()
    torch_runner.prepare()
    assert onnx_runner.session is session and torch_runner.net is net

    mel, face = _batch(3, seed=11)
    a = torch_runner.predict(mel, face)
    b = onnx_runner.predict(mel, face)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape == (3, 3, 96, 96)
    assert np.abs(a - b).max() < 1e-4
    assert 0.0 <= b.min() and b.max() <= 1.0
    assert onnx_runner.predict(mel[:0], face[:0]).shape == (0, 3, 96, 96)
    with pytest.raises(ValueError):
        onnx_runner.predict(mel, face[:2])


def test_fixed_batch_file_is_fed_in_slices(files: tuple[Wav2Lip, Path, Path], tmp_path: Path) -> None:
    """FaceFusion's export takes batch 1: the runner slices a batch of 3 and gets what the dynamic file gives."""
    _, _, onnx_path = files
    proto = onnx.load(str(onnx_path))
    for v in (*proto.graph.input, *proto.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "wav2lip_fixed.onnx"
    onnx.save(proto, str(fixed))
    runner = OnnxWav2Lip(fixed, CPU)
    runner.prepare()
    assert runner.fixed_batch == 1
    mel, face = _batch(3, seed=5)
    assert np.abs(runner.predict(mel, face) - OnnxWav2Lip(onnx_path, CPU).predict(mel, face)).max() < 1e-5


def test_onnx_runner_rejects_other_models(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(ValueError, match="not a Wav2Lip model"):
        OnnxWav2Lip(path, CPU).prepare()


def test_face_input_packing() -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    before = crops.copy()
    x = face_input(crops)
    assert x.shape == (2, 6, 96, 96) and x.dtype == np.float32
    assert np.array_equal(crops, before)
    ref = crops.transpose(0, 3, 1, 2).astype(np.float64) / 255.0  # channel order kept: BGR stays BGR
    assert np.allclose(x[:, 3:], ref, atol=1e-7)
    assert np.allclose(x[:, :3, :48], ref[:, :, :48], atol=1e-7)
    assert np.all(x[:, :3, 48:] == 0.0)
    assert x[0, 3, 10, 20] == np.float32(crops[0, 10, 20, 0] / 255.0)  # channel 3 is the crop's channel 0 (B)
    with pytest.raises(ValueError):
        face_input(crops.astype(np.float32))
    with pytest.raises(ValueError):
        face_input(crops[:, :95])


def test_mel_input_and_face_output() -> None:
    windows = np.zeros((4, 80, 16))
    assert mel_input(windows).shape == (4, 1, 80, 16) and mel_input(windows).dtype == np.float32
    pred = np.zeros((1, 3, 96, 96), np.float32)
    pred[0, 2] = 1.0  # R channel of a BGR image
    pred[0, 0, 0, 0] = 0.5
    out = face_output(pred)
    assert out.shape == (1, 96, 96, 3) and out.dtype == np.uint8
    assert out[0, 5, 5].tolist() == [0, 0, 255] and out[0, 0, 0, 0] == 128
