"""The base of every ONNX model class: one file, explicit providers, loaded once by ``prepare`` (thread-safe)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Self

import numpy as np
import onnxruntime as ort

from models.base import LoadSpec
from models.providers import session_options

log = logging.getLogger(__name__)


def no_spin_options() -> ort.SessionOptions:
    """``models.providers.session_options`` with the intra-op threads sleeping between calls instead of spinning.

    ORT's worker threads otherwise busy-wait after every run; next to a video's decoder and x264 encoder on a
    small CPU that spinning took about half of the model thread's CPU time with near-free models (cProfile of
    the video swap: 13.7 ms CPU per 6.9 ms frame) and left less for the encoder. A 10 GFLOP network runs as fast
    without it (22–23 ms per call either way, 2 threads).
    """
    so = session_options()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def make_session(path: str | Path, providers: list[str]) -> ort.InferenceSession:
    """One ONNX file with explicit providers and ``no_spin_options``."""
    sess = ort.InferenceSession(str(path), sess_options=no_spin_options(), providers=list(providers))
    used = sess.get_providers()
    if providers and providers[0] not in used:
        log.warning("%s: requested %s, running on %s", Path(path).name, providers[0], used[0] if used else "?")
    return sess


def graph_batch(dim: Any) -> int | None:
    """A graph input's first dimension as a batch size: the fixed size, or None when it takes any (a name or -1)."""
    return dim if isinstance(dim, int) and dim > 0 else None


def call_batch(batch_size: int, fixed_batch: int | None) -> int:
    """Items per call: ``batch_size`` for a graph that takes any batch (``fixed_batch`` None), else its fixed batch."""
    return max(1, batch_size) if fixed_batch is None else fixed_batch


class OnnxModel:
    """``prepare()`` creates the session once (callers may race: a lock makes it happen once) and hands it to
    ``_setup``, where a subclass reads what it needs off the graph and raises ValueError when the file is not
    the model it expects. onnxruntime's ``InferenceSession.run`` is safe to call from several threads."""

    def __init__(self, model_path: Path, providers: list[str]) -> None:
        self.model_path = Path(model_path)
        self.providers = list(providers)
        self.session: Any = None
        self.input_name = ""
        self.output_name = ""
        self._lock = threading.Lock()

    @classmethod
    def load(cls, spec: LoadSpec) -> Self:
        """Build from the hub's spec: the weight file, the providers and the registry's fixed options."""
        if spec.path is None:
            raise ValueError(f"{cls.__name__} needs a weight file")
        return cls(spec.path, spec.providers, **spec.options)  # type: ignore[arg-type]

    def prepare(self) -> None:
        with self._lock:
            if self.session is not None:
                return
            session = make_session(self.model_path, self.providers)
            self.input_name = session.get_inputs()[0].name
            self.output_name = session.get_outputs()[0].name
            self._setup(session)
            self.session = session

    def _setup(self, session: Any) -> None:
        """Validate the graph and read its names/shapes (subclasses)."""

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The first output for ``feeds`` (preparing on first use)."""
        if self.session is None:
            self.prepare()
        return self.session.run([self.output_name], feeds)[0]
