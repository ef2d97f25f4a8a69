"""The Wav2Lip generator (Prajwal et al. 2020) in PyTorch, written for this project.

Module and parameter names follow the published checkpoints, so ``wav2lip.pth`` and ``wav2lip_gan.pth`` load with
``strict=True`` once their ``module.`` prefix is stripped::

    from Wav2Lip.model import load_checkpoint
    net = load_checkpoint("weights/wav2lip_gan.pth", "cpu")   # eval mode
    out = net(mel, face)   # mel [B,1,80,16], face [B,6,96,96] in 0..1 -> [B,3,96,96] in 0..1

Layout (every "block" is Conv2d + BatchNorm2d + ReLU, residual ones add their input before the ReLU):

- ``face_encoder_blocks``: seven stages 96² → 1² (6→16→32→64→128→256→512→512); every stage's output is kept
  as a skip connection;
- ``audio_encoder``: a mel window 1×80×16 → 512×1×1;
- ``face_decoder_blocks``: seven stages 1² → 96², each followed by concatenation with the matching encoder
  output (so the decoder's input widths are 1024, 1024, 768, 512, 320, 160 and the last output is 64+16 = 80);
- ``output_block``: block 80→32 (3×3), plain 1×1 conv 32→3, sigmoid.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

_Size = int | tuple[int, int]


class Conv2d(nn.Module):
    """Conv2d + BatchNorm2d (``conv_block.0``/``conv_block.1``) then ReLU; with ``residual`` the block input is
    added to the normalised output before the ReLU (so cin == cout and the spatial size is kept)."""

    def __init__(self, cin: int, cout: int, kernel_size: _Size, stride: _Size, padding: _Size,
                 residual: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class Conv2dTranspose(nn.Module):
    """ConvTranspose2d + BatchNorm2d (``conv_block.0``/``conv_block.1``) then ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: _Size, stride: _Size, padding: _Size,
                 output_padding: _Size = 0) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding),
                                        nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _res(ch: int, n: int) -> list[nn.Module]:
    """``n`` residual 3×3 blocks of width ``ch``."""
    return [Conv2d(ch, ch, 3, 1, 1, residual=True) for _ in range(n)]


def _up(cin: int, cout: int, n_res: int) -> nn.Sequential:
    """A ×2 transposed-conv stage followed by ``n_res`` residual blocks."""
    return nn.Sequential(Conv2dTranspose(cin, cout, 3, 2, 1, output_padding=1), *_res(cout, n_res))


class Wav2Lip(nn.Module):
    """The generator: ``forward(audio [B,1,80,16], face [B,6,96,96]) -> [B,3,96,96]`` in (0, 1).

    ``face`` holds the masked crop (lower half zeroed) in channels 0–2 and the reference crop in 3–5, BGR, /255
    (see ``Wav2Lip.runner.face_input``); ``audio`` is one normalised mel window (``Wav2Lip.audio``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(Conv2d(6, 16, 7, 1, 3)),                        # 96
            nn.Sequential(Conv2d(16, 32, 3, 2, 1), *_res(32, 2)),         # 48
            nn.Sequential(Conv2d(32, 64, 3, 2, 1), *_res(64, 3)),         # 24
            nn.Sequential(Conv2d(64, 128, 3, 2, 1), *_res(128, 2)),       # 12
            nn.Sequential(Conv2d(128, 256, 3, 2, 1), *_res(256, 2)),      # 6
            nn.Sequential(Conv2d(256, 512, 3, 2, 1), *_res(512, 1)),      # 3
            nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),  # 1
        ])
        self.audio_encoder = nn.Sequential(
            Conv2d(1, 32, 3, 1, 1), *_res(32, 2),                         # 80×16
            Conv2d(32, 64, 3, (3, 1), 1), *_res(64, 2),                   # 27×16
            Conv2d(64, 128, 3, 3, 1), *_res(128, 2),                      # 9×6
            Conv2d(128, 256, 3, (3, 2), 1), *_res(256, 1),                # 3×3
            Conv2d(256, 512, 3, 1, 0),                                    # 1×1
            Conv2d(512, 512, 1, 1, 0),
        )
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(Conv2d(512, 512, 1, 1, 0)),                                     # 1   (+512)
            nn.Sequential(Conv2dTranspose(1024, 512, 3, 1, 0), *_res(512, 1)),            # 3   (+512)
            _up(1024, 512, 2),                                                            # 6   (+256)
            _up(768, 384, 2),                                                             # 12  (+128)
            _up(512, 256, 2),                                                             # 24  (+64)
            _up(320, 128, 2),                                                             # 48  (+32)
            _up(160, 64, 2),                                                              # 96  (+16)
        ])
        self.output_block = nn.Sequential(Conv2d(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """``audio_sequences`` [B,1,80,16], ``face_sequences`` [B,6,96,96] → [B,3,96,96] (sigmoid output)."""
        if audio_sequences.dim() != 4 or face_sequences.dim() != 4:
            raise ValueError("Wav2Lip expects audio [B,1,80,16] and face [B,6,96,96] (4-D tensors)")
        feats = []
        x = face_sequences
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        x = self.audio_encoder(audio_sequences)  # B,512,1,1
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), feats.pop()), dim=1)
        return self.output_block(x)


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors with a leading ``module.`` (what ``nn.DataParallel`` saves) removed from each key."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Wav2Lip:
    """A :class:`Wav2Lip` on ``device`` in eval mode holding the weights of a published checkpoint.

    Accepts the published format (a dict whose ``state_dict`` maps ``module.``-prefixed names to tensors; the
    optimizer state and step counters beside it are ignored) or a bare state dict. The file is read with
    ``map_location=device`` and ``weights_only=True`` (no pickled code runs). Loading is ``strict=True``: a file
    with missing, extra or mis-shaped tensors raises ``RuntimeError`` rather than giving a half-loaded model.
    """
    device = torch.device(device)
    ckpt = torch.load(str(path), map_location=device, weights_only=True)
    state = ckpt["state_dict"] if isinstance(ckpt, Mapping) and "state_dict" in ckpt else ckpt
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: not a Wav2Lip checkpoint (no state_dict)")
    model = Wav2Lip()
    model.load_state_dict(strip_module_prefix(state), strict=True)
    return model.to(device).eval()
