"""Export a Wav2Lip checkpoint to ONNX with FaceFusion's ``wav2lip_gan_96.onnx`` interface.

Inputs ``source`` (mel window, float32 [B,1,80,16]) and ``target`` (face, float32 [B,6,96,96], masked crop then
reference crop, BGR, 0..1); output ``output`` (float32 [B,3,96,96], 0..1); the batch axis is dynamic::

    python -m Wav2Lip.export --checkpoint weights/wav2lip_gan.pth --out weights/wav2lip_gan_96.onnx

or ``export_onnx(load_checkpoint(path), out)`` from Python. Uses torch's TorchScript-based exporter
(``dynamo=False``), which needs no extra package.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch

from Wav2Lip.model import Wav2Lip, load_checkpoint

INPUT_NAMES = ("source", "target")
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17


def export_onnx(model: Wav2Lip, out: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` (put in eval mode, moved to CPU) to ``out`` as ONNX with inputs ``source``/``target`` and
    output ``output``, batch axis dynamic; the file is checked with ``onnx.checker`` before returning its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    mel = torch.zeros(1, 1, 80, 16)
    face = torch.zeros(1, 6, 96, 96)
    batch = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model, (mel, face), str(out), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAMES[0]: batch, INPUT_NAMES[1]: batch, OUTPUT_NAME: batch},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    onnx.checker.check_model(str(out))
    return out


def export_checkpoint(checkpoint: str | Path, out: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Load a published ``.pth`` strictly (see :func:`Wav2Lip.model.load_checkpoint`) and export it."""
    return export_onnx(load_checkpoint(checkpoint, "cpu"), out, opset)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--checkpoint X.pth --out Y.onnx [--opset N]``; prints the written path."""
    parser = argparse.ArgumentParser(prog="python -m Wav2Lip.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="wav2lip.pth or wav2lip_gan.pth")
    parser.add_argument("--out", required=True, type=Path, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = parser.parse_args(argv)
    print(export_checkpoint(args.checkpoint, args.out, args.opset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
