"""Backend-agnostic Wav2Lip inference: one protocol, a PyTorch runner (published ``.pth``) and an ONNX Runtime runner
(our export or FaceFusion's ``wav2lip_gan_96.onnx``), plus the input/output packing of the reference.

    from Wav2Lip.audio import mel_chunks, melspectrogram
    from Wav2Lip.runner import OnnxWav2Lip, face_input, face_output, mel_input

    model = OnnxWav2Lip("weights/wav2lip_gan_96.onnx", ["CPUExecutionProvider"])   # or TorchWav2Lip(pth, "cuda")
    model.prepare()
    pred = model.predict(mel_input(windows), face_input(crops))   # windows [B,80,16]; crops uint8 BGR [B,96,96,3]
    faces = face_output(pred)                                     # uint8 BGR [B,96,96,3], to paste into the boxes
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from models.base import LoadSpec
from models.onnx_model import OnnxModel

IMG = 96
MEL_SHAPE = (1, 80, 16)
FACE_SHAPE = (6, IMG, IMG)
OUT_SHAPE = (3, IMG, IMG)


@runtime_checkable
class LipSyncModel(Protocol):
    """A Wav2Lip-compatible generator. ``prepare`` loads once (safe to call from several threads);
    ``predict(mel [B,1,80,16] float32, face [B,6,96,96] float32 0..1) -> [B,3,96,96] float32 0..1``."""

    backend: str

    def prepare(self) -> None: ...

    def predict(self, mel_batch: np.ndarray, face_batch: np.ndarray) -> np.ndarray: ...


def face_input(crops_bgr_96: np.ndarray) -> np.ndarray:
    """Pack face crops as Wav2Lip wants them: uint8 BGR ``[B,96,96,3]`` → float32 ``[B,6,96,96]`` in 0..1, channels
    0–2 the crop with rows 48–95 (the lower half) zeroed, channels 3–5 the unmasked crop, both divided by 255 in
    the crop's own (BGR, as OpenCV reads) channel order. The input is not modified."""
    crops = np.asarray(crops_bgr_96)
    if crops.ndim != 4 or crops.shape[1:] != (IMG, IMG, 3) or crops.dtype != np.uint8:
        raise ValueError(f"expected uint8 crops [B,96,96,3], got {crops.dtype} {crops.shape}")
    out = np.empty((crops.shape[0], 6, IMG, IMG), np.float32)
    chw = crops.transpose(0, 3, 1, 2)
    np.divide(chw, 255.0, out=out[:, 3:], dtype=np.float32)
    out[:, :3] = out[:, 3:]
    out[:, :3, IMG // 2:] = 0.0
    return out


def mel_input(windows: np.ndarray) -> np.ndarray:
    """Mel windows ``[B,80,16]`` (from ``Wav2Lip.audio``) → contiguous float32 ``[B,1,80,16]``."""
    w = np.asarray(windows, np.float32)
    if w.ndim != 3 or w.shape[1:] != MEL_SHAPE[1:]:
        raise ValueError(f"expected mel windows [B,80,16], got {w.shape}")
    return np.ascontiguousarray(w[:, None])


def face_output(pred: np.ndarray) -> np.ndarray:
    """Model output float ``[B,3,96,96]`` in 0..1 → uint8 BGR ``[B,96,96,3]`` (×255, clipped, rounded to nearest;
    the reference truncates)."""
    p = np.asarray(pred)
    if p.ndim != 4 or p.shape[1:] != OUT_SHAPE:
        raise ValueError(f"expected [B,3,96,96], got {p.shape}")
    return np.clip(np.rint(p.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)


def _check_batch(mel_batch: np.ndarray, face_batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mel = np.ascontiguousarray(mel_batch, np.float32)
    face = np.ascontiguousarray(face_batch, np.float32)
    if mel.ndim != 4 or mel.shape[1:] != MEL_SHAPE:
        raise ValueError(f"mel batch must be [B,1,80,16], got {mel.shape}")
    if face.ndim != 4 or face.shape[1:] != FACE_SHAPE:
        raise ValueError(f"face batch must be [B,6,96,96], got {face.shape}")
    if mel.shape[0] != face.shape[0]:
        raise ValueError(f"batch sizes differ: mel {mel.shape[0]}, face {face.shape[0]}")
    return mel, face


class TorchWav2Lip:
    """Runs a published ``wav2lip.pth`` / ``wav2lip_gan.pth`` (strict load) on ``device`` with PyTorch."""

    backend = "wav2lip-torch"

    def __init__(self, pth_path: str | Path, device: str = "cpu") -> None:
        self.pth_path = Path(pth_path)
        self.device = device
        self.net: Any = None
        self._lock = threading.Lock()
        # CPU threads for the network (None: torch's default, every core). A pipeline that decodes, detects and
        # encodes beside the model sets fewer, so those stages get a core of their own instead of preempting the
        # model's threads mid-layer (on 2 cores: 1 thread ran at 15 fps beside them, 2 threads at 4-9 fps).
        self.threads: int | None = None

    @classmethod
    def load(cls, spec: LoadSpec) -> Self:
        """From the hub's spec: CUDA when it is the first provider and torch can use it, else CPU."""
        import torch

        if spec.path is None:
            raise ValueError(f"{cls.__name__} needs a weight file")
        cuda = bool(spec.providers) and spec.providers[0] == "CUDAExecutionProvider" and torch.cuda.is_available()
        return cls(spec.path, "cuda" if cuda else "cpu")

    def prepare(self) -> None:
        """Load the checkpoint once (a lock makes racing callers wait for the one load)."""
        with self._lock:
            if self.net is None:
                import torch

                from Wav2Lip.model import load_checkpoint

                net = load_checkpoint(self.pth_path, self.device)
                if self.device == "cpu":  # NHWC convolutions: ~22 % less CPU per frame than NCHW on x86 (oneDNN)
                    net = net.to(memory_format=torch.channels_last)
                self.net = net

    def predict(self, mel_batch: np.ndarray, face_batch: np.ndarray) -> np.ndarray:
        """float32 ``[B,3,96,96]`` in 0..1 for a batch (preparing on first use); B = 0 gives an empty batch."""
        import torch

        mel, face = _check_batch(mel_batch, face_batch)
        if mel.shape[0] == 0:
            return np.zeros((0, *OUT_SHAPE), np.float32)
        if self.net is None:
            self.prepare()
        before = torch.get_num_threads()
        threads = self.threads if self.threads and self.device == "cpu" else before
        if threads != before:
            torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                x = torch.from_numpy(face).to(self.device)
                if self.device == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)
                out = self.net(torch.from_numpy(mel).to(self.device), x)
        finally:
            if threads != before:
                torch.set_num_threads(before)
        return np.ascontiguousarray(out.float().cpu().numpy())


class OnnxWav2Lip(OnnxModel):
    """Runs a Wav2Lip ONNX file (inputs ``source`` mel and ``target`` face, one output) with ONNX Runtime; one
    session, created once by ``prepare``. A file with a fixed batch size (FaceFusion's exports take batch 1) is fed
    in slices of that size."""

    backend = "wav2lip-onnx"

    def __init__(self, onnx_path: str | Path, providers: list[str] | None = None) -> None:
        super().__init__(Path(onnx_path), providers or ["CPUExecutionProvider"])
        self.fixed_batch: int | None = None

    def _setup(self, session: Any) -> None:
        inputs = {i.name: i.shape for i in session.get_inputs()}
        if set(inputs) != {"source", "target"}:
            raise ValueError(f"{self.model_path.name}: not a Wav2Lip model (inputs {sorted(inputs)}, "
                             "want source and target)")
        for name, want in (("source", MEL_SHAPE), ("target", FACE_SHAPE)):
            got = inputs[name]
            if len(got) != 4 or any(isinstance(g, int) and g != w for g, w in zip(got[1:], want, strict=True)):
                raise ValueError(f"{self.model_path.name}: input {name} has shape {got}, want [B, *{want}]")
        batch = inputs["source"][0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def predict(self, mel_batch: np.ndarray, face_batch: np.ndarray) -> np.ndarray:
        """float32 ``[B,3,96,96]`` in 0..1 for a batch (preparing on first use); B = 0 gives an empty batch."""
        mel, face = _check_batch(mel_batch, face_batch)
        if mel.shape[0] == 0:
            return np.zeros((0, *OUT_SHAPE), np.float32)
        if self.session is None:
            self.prepare()
        n = mel.shape[0]
        step = self.fixed_batch or n
        if n % step:  # a fixed-batch file: pad the last slice with zeros, drop those rows after
            pad = step - n % step
            mel = np.concatenate([mel, np.zeros((pad, *MEL_SHAPE), np.float32)])
            face = np.concatenate([face, np.zeros((pad, *FACE_SHAPE), np.float32)])
        outs = [self.run({"source": mel[a: a + step], "target": face[a: a + step]})
                for a in range(0, mel.shape[0], step)]
        return np.concatenate(outs)[:n].astype(np.float32, copy=False)
