"""The base of every ONNX model class: one file, explicit providers, loaded once by ``prepare`` (thread-safe)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Self

import numpy as np

from models.base import LoadSpec
from models.providers import make_session


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
