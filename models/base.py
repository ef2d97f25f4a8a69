"""Interfaces of the model families. One small class per model, insightface model_zoo style:
construct with the weight paths, ``prepare`` once (load sessions, pick providers), then ``get``."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models.face import Face


class Analyser(Protocol):
    name: str  # "builtin" | "neural"
    embedding_size: int

    def prepare(self) -> None: ...

    def get(self, img: np.ndarray, embeddings: bool = False, max_num: int = 0) -> list[Face]:
        """Detect faces in a BGR image; fill ``Face.embedding`` when ``embeddings`` is true."""
        ...

    def embed(self, img: np.ndarray, face: Face) -> np.ndarray:
        """Identity vector of one already detected face (also stored into ``face.embedding``)."""
        ...


class Swapper(Protocol):
    name: str
    needs_source_embedding: bool  # inswapper: yes; the classical warp uses pixels + landmarks

    def prepare(self) -> None: ...

    def get(self, img: np.ndarray, target: Face, source: Face, source_img: np.ndarray) -> np.ndarray:
        """Return a copy of ``img`` with ``target``'s face replaced by ``source`` (pasted back)."""
        ...
