"""Interfaces of the model families. One small class per model, insightface model_zoo style:
construct with the weight paths, ``prepare`` once (load sessions, pick providers), then ``get``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


class Restorer(Protocol):
    name: str
    gives_crops: bool  # True: a ``CropRestorer`` (restore_crop hands out the crop; the caller pastes it)

    def prepare(self) -> None: ...

    def restore(self, img: np.ndarray, face: Face, fidelity: float = 0.5, blend: float = 0.8,
                mask: np.ndarray | None = None) -> np.ndarray:
        """Return a copy of ``img`` with ``face`` restored and pasted back."""
        ...


class CropRestorer(Restorer, Protocol):
    def restore_crop(self, img: np.ndarray, face: Face, fidelity: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
        """(restored aligned crop, image→crop matrix) of ``face``."""
        ...


class Upscaler(Protocol):
    name: str
    scale: int
    learned: bool  # a model (Real-ESRGAN), not a plain resize

    def prepare(self) -> None: ...

    def upscale(self, img: np.ndarray, scale_out: float) -> np.ndarray: ...


class Occluder(Protocol):
    def prepare(self) -> None: ...

    def mask(self, crop: np.ndarray) -> np.ndarray:
        """1 where the face is visible in an aligned crop, 0 over occluders."""
        ...


class Parser(Protocol):
    def prepare(self) -> None: ...

    def region_mask(self, crop: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        """1 over the given face-parsing classes of an aligned crop."""
        ...


@dataclass(frozen=True)
class LoadSpec:
    """What the hub hands a family's ``load`` classmethod (see models/registry.py)."""

    path: Path | None  # the family's weight file (or folder); None for a built-in family
    providers: list[str]
    options: dict[str, str | int] = field(default_factory=dict)  # the registry's fixed arguments
    det_size: int = 640
    det_thresh: float = 0.5
    builtin_upsample: int = 0
    builtin_min_score: float = 0.5


Model = Analyser | Swapper | Restorer | Upscaler | Occluder | Parser
