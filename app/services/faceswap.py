"""The face swap job: the largest source face onto the target's best face."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import NoFaceError
from app.media import decode_image, encode_image
from app.services.common import Timings, resolve_backend
from models.face import best_face
from models.hub import ModelHub


@dataclass
class SwapResult:
    content: bytes
    media_type: str
    backend: str
    faces_swapped: int
    timings: Timings


@dataclass
class SwapRequest:
    source: bytes
    target: bytes
    backend: str = "auto"
    format: str = "png"
    quality: int = 95
    max_pixels: int = 40_000_000
    source_field: str = "source_image"
    target_field: str = "target_image"


def swap(hub: ModelHub, req: SwapRequest) -> SwapResult:
    name = resolve_backend(hub, "faceswap", req.backend)
    analyser, swapper = hub.analyser(name), hub.swapper(name)
    t = Timings()
    with t.stage("decode"):
        src = decode_image(req.source, req.source_field, req.max_pixels)
        tgt = decode_image(req.target, req.target_field, req.max_pixels)
    with t.stage("detect"):
        src_face = best_face(analyser.get(src.bgr))
        if src_face is None:
            raise NoFaceError(req.source_field)
        if swapper.needs_source_embedding:
            analyser.embed(src.bgr, src_face)
        tgt_face = best_face(analyser.get(tgt.bgr))
        if tgt_face is None:
            raise NoFaceError(req.target_field)
    with t.stage("swap"):
        out = swapper.get(tgt.bgr, tgt_face, src_face, src.bgr)
    with t.stage("encode"):
        content, media_type = encode_image(out, req.format, req.quality, tgt.alpha)
    return SwapResult(content, media_type, name, 1, t)
