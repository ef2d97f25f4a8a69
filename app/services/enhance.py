"""The enhance job (restore faces, upscale), also applied by the swap jobs to the faces they swapped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pydantic import TypeAdapter, ValidationError

from app.config import Settings
from app.errors import ApiError, NoFaceError, validation_error
from app.media import decode_image, encode_image
from app.schemas import EnhanceOptions, FaceOut
from app.services.common import Timings, resolve_backend
from models import align
from models.face import Face
from models.hub import BackendUnavailable, ModelHub
from models.restore.enhance_pipeline import enhance_image
from models.restore.upscaler import output_size


@dataclass
class Enhanced:
    image: np.ndarray
    alpha: np.ndarray | None
    restorer: str
    upscaler: str  # real_esrgan_xN | lanczos | none
    faces: int


def resolve_models(hub: ModelHub, opts: EnhanceOptions, field: str = "enhancer") -> tuple[str, Any, Any | None]:
    """(restorer name, restorer, occlusion masker or None); 503 naming the option (``field`` for the restorer)
    when a model is missing. Called before any work, so a request that cannot be served fails fast."""
    try:
        name, restorer = hub.restorer(opts.enhancer)
    except BackendUnavailable as exc:
        raise ApiError(503, "backend_unavailable", str(exc), field) from None
    try:
        occlusion = hub.require_occlusion() if opts.occlusion_mask else None
    except BackendUnavailable as exc:
        raise ApiError(503, "backend_unavailable", str(exc), "occlusion_mask") from None
    return name, restorer, occlusion


@dataclass
class EnhancePlan:
    """Everything an enhancement of one picture needs, checked before any pixel work."""

    opts: EnhanceOptions
    restorer_name: str
    restorer: Any
    occlusion: Any | None
    parser: Any | None
    upscaler: Any | None  # the Real-ESRGAN model, when background_enhance or face_upsample can use one


def plan_enhancement(hub: ModelHub, opts: EnhanceOptions, width: int, height: int, max_output_pixels: int,
                     field: str = "enhancer") -> EnhancePlan:
    """Resolve the models and check the sizes for a ``width`` × ``height`` picture: 503 naming the option for a
    missing model, 413 for an output (or Real-ESRGAN working size) over ``max_output_pixels``."""
    name, restorer, occlusion = resolve_models(hub, opts, field)
    check_output_size(width, height, opts.upscale, max_output_pixels)
    model_up = hub.upscaler(opts.upscale) if (opts.background_enhance or opts.face_upsample) else None
    work = width * height * model_up.scale**2 if model_up is not None else 0
    if opts.background_enhance and work > max_output_pixels:
        # the network works at its own scale before the result is resized to the requested one
        raise ApiError(413, "too_large", f"background_enhance runs Real-ESRGAN x{model_up.scale}: a {width}×{height} "
                       f"image would pass through {work} pixels, over the output limit of {max_output_pixels}",
                       "background_enhance")
    parser = hub.parser if opts.occlusion_mask else None
    return EnhancePlan(opts, name, restorer, occlusion, parser, model_up)


def apply_enhancement(img: np.ndarray, alpha: np.ndarray | None, faces: list[Face], plan: EnhancePlan,
                      restored: list[tuple[np.ndarray, np.ndarray]] | None = None) -> Enhanced:
    """Restore ``faces`` and upscale ``img`` by a checked plan; the alpha channel, when there is one, is resized to
    match. ``restored``: the faces' restored crops when a batch of frames already went through the restorer."""
    opts, model_up = plan.opts, plan.upscaler
    out = enhance_image(
        img, faces, plan.restorer, model_up, scale=opts.upscale, background_enhance=opts.background_enhance,
        face_upsample=opts.face_upsample, occlusion=plan.occlusion, parser=plan.parser,
        fidelity=opts.codeformer_fidelity, blend=opts.blend / 100.0, restored=restored,
    )
    if alpha is not None and out.shape[:2] != alpha.shape:
        alpha = cv2.resize(alpha, output_size(img.shape, opts.upscale), interpolation=cv2.INTER_LANCZOS4)
    if opts.background_enhance and model_up is not None:
        upscaler = model_up.name
    else:
        upscaler = "lanczos" if opts.upscale > 1 else "none"
    return Enhanced(out, alpha, plan.restorer_name, upscaler, len(faces))


def check_output_size(width: int, height: int, scale: int, limit: int) -> None:
    if width * scale * height * scale > limit:
        raise ApiError(413, "too_large", f"upscale {scale} of a {width}×{height} image gives "
                       f"{width * scale * height * scale} pixels, over the output limit of {limit}", "upscale")


_FACES = TypeAdapter(list[FaceOut])


def parse_faces(raw: str, max_faces: int) -> tuple[list[FaceOut], tuple[int, int] | None]:
    """``faces`` is the JSON /analyze returns (``{"width", "height", "faces": [...]}``) or just its list."""
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(422, "invalid_field", f"faces is not JSON: {exc.msg} at position {exc.pos}", "faces") from None
    size = None
    if isinstance(doc, dict):
        if "faces" not in doc:
            raise ApiError(422, "invalid_field", "faces must be the /analyze JSON or its `faces` list", "faces")
        if "width" in doc and "height" in doc:
            try:
                size = (int(doc["width"]), int(doc["height"]))
            except (TypeError, ValueError):
                raise ApiError(422, "invalid_field", "faces: width and height must be integers", "faces") from None
        doc = doc["faces"]
    if isinstance(doc, list) and len(doc) > max_faces:
        raise ApiError(422, "invalid_field", f"faces lists {len(doc)} faces; at most {max_faces} "
                       "(FACEAPI_MAX_FACES)", "faces")
    try:
        return _FACES.validate_python(doc), size
    except ValidationError as exc:
        raise validation_error(exc, "faces") from None


def faces_from_json(faces: list[FaceOut], width: int, height: int) -> list[Face]:
    """Faces sent by the client (the /analyze JSON), checked against the image they are meant for."""
    out = []
    for i, f in enumerate(faces):
        bbox = np.asarray(f.bbox, np.float32)
        kps = np.asarray(f.kps, np.float32)
        if kps.shape != (5, 2) or not np.isfinite(kps).all() or not np.isfinite(bbox).all():
            raise ApiError(422, "invalid_field", f"faces[{i}]: kps must be 5 [x, y] pairs of numbers", "faces")
        size = max(float(bbox[2] - bbox[0]), float(bbox[3] - bbox[1]), 1.0)
        inside_box = bbox[2] > 0 and bbox[3] > 0 and bbox[0] < width and bbox[1] < height and bbox[2] > bbox[0]
        margin = 0.5 * size
        kps_near = ((kps[:, 0] >= -margin) & (kps[:, 0] <= width + margin)
                    & (kps[:, 1] >= -margin) & (kps[:, 1] <= height + margin)).all()
        if not (inside_box and kps_near):
            raise ApiError(422, "invalid_field", f"faces[{i}] lies outside the {width}×{height} image", "faces")
        spread = float(np.linalg.norm(kps - kps.mean(axis=0), axis=1).max())
        if spread < 2.0 or not np.isfinite(align.estimate_norm(kps, 512, "ffhq")).all():
            raise ApiError(422, "invalid_field", f"faces[{i}]: the 5 kps do not span a face (they coincide)", "faces")
        landmarks = np.asarray(f.landmarks, np.float32) if f.landmarks else None
        if landmarks is not None and landmarks.shape != (68, 2):
            raise ApiError(422, "invalid_field", f"faces[{i}]: landmarks must be 68 [x, y] pairs", "faces")
        out.append(Face(bbox=bbox, score=f.score, kps=kps, landmarks=landmarks))
    return out


@dataclass
class EnhanceRequest:
    data: bytes
    options: EnhanceOptions  # backend and format already resolved against the settings (see ``enhance_request``)
    faces: list[FaceOut] | None = None  # None: detect
    faces_size: tuple[int, int] | None = None  # (width, height) the supplied faces were computed on
    quality: int = 95
    max_pixels: int = 40_000_000
    max_output_pixels: int = 160_000_000
    field: str = "image"


def enhance_request(settings: Settings, options: EnhanceOptions, data: bytes, faces: list[FaceOut] | None = None,
                    faces_size: tuple[int, int] | None = None) -> EnhanceRequest:
    """An enhance request with the server's defaults and limits filled in."""
    options = options.model_copy(update={"backend": options.backend or settings.default_backend,
                                         "format": options.format or settings.output_format})
    return EnhanceRequest(data, options, faces, faces_size, quality=settings.jpeg_quality,
                          max_pixels=settings.max_image_pixels, max_output_pixels=settings.max_output_pixels)


@dataclass
class EnhanceResult:
    content: bytes
    media_type: str
    enhanced: Enhanced
    analysis: str  # builtin | neural | supplied
    timings: Timings

    def headers(self) -> dict[str, str]:
        """The response headers of an enhancement (also kept with a job's result)."""
        return {"X-Face-Backend": self.enhanced.restorer, "X-Faces-Enhanced": str(self.enhanced.faces),
                "X-Upscaler": self.enhanced.upscaler, "X-Analysis-Backend": self.analysis,
                "Server-Timing": self.timings.header()}


def enhance(hub: ModelHub, req: EnhanceRequest) -> EnhanceResult:
    t = Timings()
    with t.stage("decode"):
        img = decode_image(req.data, req.field, req.max_pixels)
    plan = plan_enhancement(hub, req.options, img.width, img.height, req.max_output_pixels)
    with t.stage("detect"):
        if req.faces is not None:
            if req.faces_size is not None and req.faces_size != (img.width, img.height):
                raise ApiError(422, "invalid_field", f"faces were found on a {req.faces_size[0]}×{req.faces_size[1]} "
                               f"image, this one is {img.width}×{img.height}", "faces")
            faces, analysis = faces_from_json(req.faces, img.width, img.height), "supplied"
        else:
            analysis = resolve_backend(hub, "analyze", req.options.backend or "auto")
            faces = hub.analyser(analysis).get(img.bgr)
            if not faces:
                raise NoFaceError(req.field, "; send faces=[] to upscale without restoring")
    with t.stage("enhance"):
        result = apply_enhancement(img.bgr, img.alpha, faces, plan)
    with t.stage("encode"):
        content, media_type = encode_image(result.image, req.options.format or "png", req.quality, result.alpha)
    return EnhanceResult(content, media_type, result, analysis, t)
