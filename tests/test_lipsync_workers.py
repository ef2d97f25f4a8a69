"""/lipsync's model workers: a batch shared out among several model calls at once gives the same video as one call,
on the PyTorch path (the published ``.pth`` layout, random weights) and the built-in preview, and the process's
PyTorch thread count is restored after the job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_lipsync import (
    bursts,
    face_frame,
    hanks_face,
    read_output,
    write_video,
    write_wav,
)


@pytest.fixture(scope="module")
def pth_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from Wav2Lip.model import Wav2Lip

    d = tmp_path_factory.mktemp("w2l_pth")
    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}
    torch.save({"state_dict": state, "global_step": 0}, d / "wav2lip_gan.pth")
    return d


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, hanks_bgr: np.ndarray) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("w2l_clip")
    face = hanks_face(hanks_bgr)
    video = write_video(d / "face.mp4", [face_frame(face, i, marker=False) for i in range(10)])
    return video, write_wav(d / "a.wav", bursts(0.4))


def _run(hub, backend: str, workers: int, clip: tuple[Path, Path], out: Path):  # noqa: ANN001, ANN202
    from app.config import Settings
    from app.schemas import LipsyncOptions
    from app.services.lipsync import lipsync

    settings = Settings(weights_dir=hub.weights_dir, lipsync_workers=workers)
    return lipsync(hub, LipsyncOptions(backend=backend, batch_size=5), settings, clip[1], out, video_path=clip[0])


def test_workers_split_the_torch_batches_without_changing_the_video(pth_weights: Path, clip: tuple[Path, Path],
                                                                    hanks_bgr: np.ndarray, tmp_path: Path) -> None:
    import torch

    from app.config import Settings
    from app.services.lipsync import model_workers
    from models.hub import ModelHub

    hub = ModelHub(pth_weights, ["lipsync"])
    hub.load()
    model = hub.loaded["lipsync"]["neural"]
    assert type(model).__name__ == "TorchLipSync"
    assert model_workers(model, Settings(lipsync_workers=2), True) == (2, 1)
    assert model_workers(model, Settings(lipsync_workers=1), True) == (1, None)
    assert model_workers(model, Settings(lipsync_workers=2, lipsync_threads=3), True) == (2, 3)
    before = torch.get_num_threads()
    one = _run(hub, "neural", 1, clip, tmp_path / "one.mp4")
    two = _run(hub, "neural", 2, clip, tmp_path / "two.mp4")
    assert torch.get_num_threads() == before and model.runner.threads is None
    assert one.frames == two.frames == 10 and one.frames_synced == two.frames_synced >= 9
    a, _, _, _ = read_output(one.path)
    b, _, _, _ = read_output(two.path)
    # the same network on the same crops: only float summation order differs (and x264 rounds it away)
    diff = max(float(np.abs(x.astype(np.int16) - y).mean()) for x, y in zip(a, b, strict=True))
    assert diff < 0.5, diff
    # and the network did run: random weights paint noise into the lower face
    source = face_frame(hanks_face(hanks_bgr), 3, marker=False)
    assert np.abs(a[3].astype(np.int16) - source).mean() > 1.0


def test_preview_workers_give_identical_frames(clip: tuple[Path, Path], tmp_path: Path) -> None:
    from models.hub import ModelHub

    hub = ModelHub(tmp_path / "no_weights", ["lipsync"])
    hub.load()
    one = _run(hub, "builtin", 1, clip, tmp_path / "one.mp4")
    two = _run(hub, "builtin", 2, clip, tmp_path / "two.mp4")
    assert one.frames_synced == two.frames_synced >= 9
    a, _, _, _ = read_output(one.path)
    b, _, _, _ = read_output(two.path)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
