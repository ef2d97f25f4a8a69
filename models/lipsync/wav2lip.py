"""The neural lip-sync backend: Wav2Lip-GAN through ``Wav2Lip/runner.py`` (PyTorch for the published ``.pth``, ONNX
Runtime for FaceFusion's ``wav2lip_gan_96.onnx`` or our own export), packed for the service: 96² BGR crops and mel
windows in, 96² BGR crops out."""

from __future__ import annotations

from typing import Any

import numpy as np

from models.base import LoadSpec


class _LipSync:
    name = "neural"
    crop_size = 96

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def prepare(self) -> None:
        self.runner.prepare()

    def predict_crops(self, mel: np.ndarray, crops: np.ndarray) -> np.ndarray:
        """``mel`` float32 [B,1,80,16], ``crops`` uint8 BGR [B,96,96,3] → uint8 BGR [B,96,96,3]: the crops with the
        lower half generated for the audio."""
        from Wav2Lip.runner import face_input, face_output

        return face_output(self.runner.predict(np.ascontiguousarray(mel, np.float32), face_input(crops)))


class TorchLipSync(_LipSync):
    """``wav2lip_gan.pth`` (strict load) on CUDA when the hub's first provider is CUDA, else CPU."""

    file_kind = "pth"

    @classmethod
    def load(cls, spec: LoadSpec) -> TorchLipSync:
        from Wav2Lip.runner import TorchWav2Lip

        return cls(TorchWav2Lip.load(spec))


class OnnxLipSync(_LipSync):
    """``wav2lip_gan_96.onnx`` (inputs ``source`` mel, ``target`` face) on the hub's providers."""

    file_kind = "onnx"

    @classmethod
    def load(cls, spec: LoadSpec) -> OnnxLipSync:
        from Wav2Lip.runner import OnnxWav2Lip

        if spec.path is None:
            raise ValueError("OnnxLipSync needs a weight file")
        return cls(OnnxWav2Lip(spec.path, list(spec.providers) or None))
