"""Execution-provider choice and ONNX Runtime session creation for every model in ``models/``.

onnxruntime-gpu lists the CUDA provider even on machines without a usable GPU and then falls back to CPU
with a log line, so "auto" asks torch (or, without torch, a one-off probe session) whether CUDA really works.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PREFERENCES = ("auto", "cuda", "cpu")


@functools.lru_cache(maxsize=1)
def cuda_usable() -> bool:
    """True when a CUDA device can actually run ONNX Runtime sessions on this machine."""
    if CUDA not in ort.get_available_providers():
        return False
    try:
        import torch
    except Exception:  # noqa: BLE001 - torch missing or broken: fall back to probing ORT itself
        return _probe_ort_cuda()
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def _probe_ort_cuda() -> bool:
    """Build a one-node session on CUDA and see whether ORT kept the provider."""
    try:
        from onnx import TensorProto, helper

        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        so = ort.SessionOptions()
        so.log_severity_level = 4
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=[CUDA, CPU])
        return CUDA in sess.get_providers()
    except Exception:  # noqa: BLE001
        return False


def resolve_providers(pref: str = "auto") -> list[str]:
    """Provider list for ``pref`` in auto | cuda | cpu (CPU always last, as the fallback)."""
    pref = (pref or "auto").strip().lower()
    if pref == "cpu":
        return [CPU]
    if pref == "cuda":
        return [CUDA, CPU]
    if pref == "auto":
        return [CUDA, CPU] if cuda_usable() else [CPU]
    raise ValueError(f"unknown execution provider preference {pref!r}; expected one of {PREFERENCES}")


def session_options() -> ort.SessionOptions:
    """Options shared by every session: warnings and worse only, ORT's default thread counts."""
    so = ort.SessionOptions()
    so.log_severity_level = 2  # 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def make_session(path: str | Path, providers: list[str]) -> ort.InferenceSession:
    """Load one ONNX file with explicit providers (never ORT's implicit default list)."""
    sess = ort.InferenceSession(str(path), sess_options=session_options(), providers=list(providers))
    used = sess.get_providers()
    if providers and providers[0] not in used:
        log.warning("%s: requested %s, running on %s", Path(path).name, providers[0], used[0] if used else "?")
    return sess
