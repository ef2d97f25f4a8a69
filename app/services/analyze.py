"""The analyze job: decode one image, find its faces."""

from __future__ import annotations

from dataclasses import dataclass

from app.media import decode_image
from app.services.common import Timings, resolve_backend
from models.face import Face
from models.hub import ModelHub


@dataclass
class AnalyzeResult:
    width: int
    height: int
    backend: str
    faces: list[Face]
    timings: Timings


def analyze(hub: ModelHub, data: bytes, field: str, max_pixels: int, backend: str, embeddings: bool) -> AnalyzeResult:
    name = resolve_backend(hub, "analyze", backend)
    timings = Timings()
    with timings.stage("decode"):
        img = decode_image(data, field, max_pixels)
    analyser = hub.analyser(name)
    with timings.stage("detect"):
        faces = analyser.get(img.bgr, embeddings=embeddings)
    return AnalyzeResult(img.width, img.height, name, faces, timings)
