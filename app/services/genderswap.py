"""The gender swap job: detect the faces, build the prompt from their gender and age, repaint face and hair with Stable
Diffusion (inpaint, feathered, so the rest of the picture keeps its pixels) or the whole picture (img2img, the
reference's method), retry an all-black output once, and keep the input's size, orientation and alpha."""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from app.config import Settings
from app.errors import ApiError, NoFaceError
from app.media import decode_image, encode_image
from app.schemas import GenderSwapOptions
from app.services import nsfw
from app.services.common import Timings
from models import align
from models.diffusion.genderswap import unet_calls
from models.face import Face, best_face
from models.hub import ModelHub
from models.registry import fetch_command

JOB = "genderswap"
COMMAND = fetch_command([JOB])  # python -m app weights download genderswap
HAIR_CLASS = 17
REGION_CLASSES = (1, 2, 3, 4, 5, 10, 11, 12, 13, HAIR_CLASS)  # BiSeNet: skin, brows, eyes, nose, mouth, lips, hair
# The reference's content filter, kept whatever the client adds, then what keeps a portrait a photograph.
CONTENT_FILTER = "nsfw, nude, naked, nudity, topless, sexual, explicit, cleavage, lingerie, underwear"
QUALITY_NEGATIVE = ("deformed, disfigured, distorted face, bad anatomy, asymmetric eyes, extra limbs, blurry, lowres, "
                    "jpeg artifacts, cartoon, anime, painting, drawing, 3d render, watermark, text")
NEGATIVE_PROMPT = f"{CONTENT_FILTER}, {QUALITY_NEGATIVE}"
Progress = Callable[[int, int | None], None]


def model_unavailable(hub: ModelHub, settings: Settings) -> ApiError | None:
    """The 503 a request gets when the diffusion model is not loaded in this worker (None when it is): the exact
    download command when its files are missing, the setting when the job is not enabled, else the load error."""
    if "neural" in hub.loaded.get("diffusion", {}):
        return None
    missing = [f for f in hub.missing_files(JOB) if not f.startswith("buffalo_l/")]
    reasons = []
    if missing:
        reasons.append(f"its weights are missing ({', '.join(missing)}): fetch them with `{COMMAND}`")
    if JOB not in settings.enabled_jobs:
        reasons.append(f"add {JOB} to FACEAPI_ENABLED_JOBS")
    if not reasons:
        status = next((s for s in hub.statuses if s.kind == "diffusion" and s.error), None)
        detail = status.error if status is not None else "it did not load"
        reasons.append(f"{detail}; check the files with `python -m app weights verify {JOB}` or fetch them again "
                       f"with `{COMMAND}`")
    return ApiError(503, "backend_unavailable", "the gender swap model is not loaded: " + "; ".join(reasons) +
                    ", then restart the server")


def require_model(hub: ModelHub, settings: Settings) -> Any:
    error = model_unavailable(hub, settings)
    if error is not None:
        raise error
    return hub.loaded["diffusion"]["neural"]


# ---- prompt ----------------------------------------------------------------------------------------------------
def opposite(gender: str) -> str:
    return "male" if gender == "female" else "female"


def target_gender(face: Face, requested: str, current: str | None = None) -> str:
    """female | male for one face: the requested one, else the opposite of ``current`` (the client's word), else
    the opposite of the detected gender; 422 naming target_gender when none is known."""
    if requested in ("female", "male"):
        return requested
    if current is not None:
        return opposite(current)
    if face.gender is None:
        raise ApiError(422, "invalid_field", "target_gender=auto needs the detected gender, and the loaded analyser "
                       "does not estimate it (the built-in one never does; buffalo_l's genderage does): send "
                       "target_gender=female or male", "target_gender")
    return "female" if int(face.gender) == 1 else "male"


def build_prompt(gender: str, age: int | None, extra: str = "") -> str:
    """The positive prompt: the target gender as woman/man, girl/boy under 15 (as the reference), the age, and what
    keeps the result a photograph of the same scene."""
    young = age is not None and age < 15
    noun = ("girl" if young else "woman") if gender == "female" else ("boy" if young else "man")
    parts = [f"a realistic portrait photo of a {noun}"]
    if age is not None and not young:
        parts.append(f"{int(age)} years old")
    parts.append("feminine face" if gender == "female" else "masculine face")
    parts += ["natural skin texture", "detailed eyes", "same pose", "same lighting", "sharp focus", "high quality"]
    if extra.strip():
        parts.append(extra.strip())
    return ", ".join(parts)


def negative_prompt(extra: str = "") -> str:
    return f"{NEGATIVE_PROMPT}, {extra.strip()}" if extra.strip() else NEGATIVE_PROMPT


# ---- masks -----------------------------------------------------------------------------------------------------
def _face_size(face: Face) -> float:
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    return max(math.sqrt(max(x2 - x1, 1.0) * max(y2 - y1, 1.0)), 8.0)


def hull_region(face: Face, shape: tuple[int, ...]) -> np.ndarray:
    """Face and hair without a parser (uint8 0/1): the landmark hull (68 points, else the 5 key points and the box)
    enlarged 1.3× about its centre, joined with an ellipse over the forehead and hair."""
    h, w = shape[:2]
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    if face.landmarks is not None and len(face.landmarks) >= 17:
        pts = np.asarray(face.landmarks, np.float32)
    else:
        pts = np.vstack([np.asarray(face.kps, np.float32), [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]])
    center = pts.mean(axis=0)
    grown = center + (pts - center) * 1.3
    region = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(region, cv2.convexHull(np.round(grown).astype(np.int32)), 1)
    bw, bh = x2 - x1, y2 - y1
    top = (int(round((x1 + x2) / 2)), int(round(y1 + 0.25 * bh)))
    cv2.ellipse(region, top, (max(int(0.62 * bw), 1), max(int(0.55 * bh), 1)), 0, 0, 360, 1, -1)
    return region


def parsed_region(parser: Any, img: np.ndarray, face: Face, size: int = 512) -> np.ndarray:
    """Face and hair from BiSeNet (uint8 0/1), parsed on the face's ffhq crop zoomed out to take in the hair."""
    m = align.estimate_norm(face.kps, size, "ffhq")
    zoom = np.array([[0.75, 0, size * 0.125], [0, 0.75, size * 0.125]], np.float64)  # 25 % more context around
    m = zoom @ np.vstack([m, [0, 0, 1]])
    crop = cv2.warpAffine(img, m, (size, size), borderValue=0.0)
    labels = parser.parse(crop) if hasattr(parser, "parse") else None
    if labels is not None:
        region = np.isin(labels, REGION_CLASSES).astype(np.float32)
    else:
        region = parser.region_mask(crop, REGION_CLASSES)
    back = cv2.warpAffine(region, align.invert(m), (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                          borderValue=0.0)
    return (back > 0.5).astype(np.uint8)


def feathered_mask(region: np.ndarray, face_size: float) -> np.ndarray:
    """Float32 (H, W) in [0, 1]: ``region`` dilated by ~6 % of the face and feathered over ~the same width, so the
    repaint fades into the original. Exactly 0 beyond the feather, so those pixels stay the input's."""
    grow = max(int(round(face_size * 0.06)), 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    dilated = cv2.dilate(region.astype(np.uint8), kernel).astype(np.float32)
    sigma = max(face_size * 0.03, 1.0)
    soft = cv2.GaussianBlur(dilated, (0, 0), sigma)
    soft = np.clip(soft * 2.0, 0.0, 1.0)  # the dilated region stays fully repainted; its edge fades outwards
    soft[soft < 1.0 / 255.0] = 0.0
    return soft.astype(np.float32)


def region_mask(img: np.ndarray, face: Face, parser: Any | None) -> tuple[np.ndarray, str]:
    """(feathered face-and-hair mask, "bisenet" | "landmarks")."""
    if parser is not None:
        region = parsed_region(parser, img, face)
        if region.sum() > 0.05 * _face_size(face) ** 2:  # the parser found a face there
            return feathered_mask(region, _face_size(face)), "bisenet"
    return feathered_mask(hull_region(face, img.shape), _face_size(face)), "landmarks"


# ---- working sizes ---------------------------------------------------------------------------------------------
def _multiple_of_8(v: float) -> int:
    return max(int(round(v / 8.0)) * 8, 64)


def work_size(w: int, h: int, long_side: int) -> tuple[int, int]:
    """(W, H), multiples of 8, with the long side at ``long_side`` (rounded down to a multiple of 8)."""
    side = max(long_side // 8 * 8, 64)
    scale = side / max(w, h)
    return _multiple_of_8(w * scale), _multiple_of_8(h * scale)


def check_work(w: int, h: int, limit: int, what: str) -> None:
    if w * h > limit:
        raise ApiError(413, "too_large", f"{what} would be worked on at {w}×{h} = {w * h} pixels, over "
                       f"FACEAPI_GENDERSWAP_MAX_WORK_PIXELS={limit}; lower width or crop the image", "image")


def crop_box(mask: np.ndarray, margin: float = 0.12) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around the mask's support plus ``margin`` of its size each side, clipped to the image."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    pad = int(round(max(x1 - x0, y1 - y0) * margin))
    return max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, w), min(y1 + pad, h)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (img.shape[1], img.shape[0]) == size:
        return img
    shrink = size[0] < img.shape[1]
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


# ---- the job ---------------------------------------------------------------------------------------------------
@dataclass
class GenderSwapRequest:
    data: bytes
    options: GenderSwapOptions  # format resolved against the settings
    quality: int = 95
    max_pixels: int = 40_000_000
    max_faces: int = 4
    max_work_pixels: int = 1024 * 1024
    attention_slicing: str = "off"
    vae_tiling: bool = False
    current_gender: str | None = None  # /api/swap/'s current_gender: the target is its opposite
    field: str = "image"


def genderswap_request(settings: Settings, options: GenderSwapOptions, data: bytes, current_gender: str | None = None,
                       field: str = "image") -> GenderSwapRequest:
    options = options.model_copy(update={"format": options.format or settings.output_format})
    return GenderSwapRequest(data, options, quality=settings.jpeg_quality, max_pixels=settings.max_image_pixels,
                             max_faces=settings.genderswap_max_faces,
                             max_work_pixels=settings.genderswap_max_work_pixels,
                             attention_slicing=settings.diffusion_attention_slicing,
                             vae_tiling=settings.diffusion_vae_tiling, current_gender=current_gender, field=field)


@dataclass
class GenderSwapResult:
    content: bytes
    media_type: str
    seed: int
    genders: list[str]
    faces: int
    analysis: str  # builtin | neural
    mask: str  # bisenet | landmarks | none (img2img)
    strength: float  # the strength of the output returned (strength + 0.1 after a black-image retry)
    retried: bool
    timings: Timings = field(default_factory=Timings)

    def headers(self, method: str, sampler: str) -> dict[str, str]:
        return {"X-Face-Backend": "neural", "X-Analysis-Backend": self.analysis, "X-Seed": str(self.seed),
                "X-Target-Gender": ",".join(self.genders), "X-Faces-Swapped": str(self.faces),
                "X-Genderswap-Method": method, "X-Genderswap-Mask": self.mask, "X-Sampler": sampler,
                "X-Strength": f"{self.strength:g}", "X-Black-Retry": "1" if self.retried else "0",
                "Server-Timing": self.timings.header()}


def is_black(img: np.ndarray) -> bool:
    """An all-black output: what a checkpoint's safety behaviour (or an fp16 overflow) leaves."""
    return int(img.max()) <= 3


def run_steps(steps: int, strength: float, sampler: str = "euler") -> tuple[int, int]:
    """(steps to ask the pipeline for, UNet calls it will make): diffusers runs int(steps × strength) denoising steps
    and refuses 0, so a tiny product asks for just enough steps to run one; DPM++ SDE makes two calls a step."""
    if int(steps * strength) < 1:
        steps = math.ceil(1.0 / strength)
    return steps, unet_calls(min(int(steps * strength), steps), sampler)


class _Counter:
    """Per-step progress over several diffusion calls (faces, a retry): done keeps counting, total grows."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.done, self.total = progress, 0, total

    def call(self) -> Callable[[int, int], None]:
        base = self.done

        def on_step(step: int, _total: int) -> None:
            self.done = base + step
            if self.progress is not None:
                self.progress(self.done, max(self.total, self.done))

        return on_step


def _diffuse(model: Any, image: np.ndarray, mask: np.ndarray | None, prompt: str, negative: str,
             opts: GenderSwapOptions, seed: int, counter: _Counter) -> tuple[np.ndarray, float, bool]:
    """One repaint with the black-image retry: (image, strength used, retried)."""
    strength = opts.strength
    for attempt in (0, 1):
        steps, _ = run_steps(opts.steps, strength)
        out = model.swap(image, mask, prompt, negative, strength, steps, opts.guidance, seed, counter.call(),
                         sampler=opts.sampler).image
        if not is_black(out):
            return out, strength, attempt == 1
        if attempt == 0:
            strength = min(round(strength + 0.1, 4), 1.0)
            counter.total += run_steps(opts.steps, strength, opts.sampler)[1]
    raise ApiError(500, "black_output", f"the model returned an all-black image twice (strength {opts.strength:g}, "
                   f"then {strength:g}, seed {seed}); try another seed, prompt or a lower strength", None)


def genderswap(hub: ModelHub, req: GenderSwapRequest, progress: Progress | None = None) -> GenderSwapResult:
    opts = req.options
    model = hub.loaded.get("diffusion", {}).get("neural")
    if model is None:  # the router checks first; a job may land on a worker that lost it
        raise ApiError(503, "backend_unavailable", f"the gender swap model is not loaded; fetch it with `{COMMAND}`")
    model.configure(req.attention_slicing, req.vae_tiling)
    t = Timings()
    with t.stage("decode"):
        img = decode_image(req.data, req.field, req.max_pixels)
    h, w = img.height, img.width
    if opts.method == "img2img":
        ww, wh = img2img_size(w, h, opts.width)
        check_work(ww, wh, req.max_work_pixels, f"the {w}×{h} picture")
    analysis = "neural" if "neural" in hub.analysers else "builtin"
    with t.stage("detect"):
        faces = hub.analyser(analysis).get(img.bgr)
    if not faces:
        raise NoFaceError(req.field)
    if opts.faces == "largest":
        chosen = [best_face(faces)]
    else:
        chosen = sorted(faces, key=lambda f: (round(f.area, 3), f.score), reverse=True)
        if len(chosen) > req.max_faces:
            raise ApiError(422, "invalid_field", f"faces=all found {len(chosen)} faces; at most {req.max_faces} "
                           "(FACEAPI_GENDERSWAP_MAX_FACES): send faces=largest or crop the image", "faces")
    genders = [target_gender(f, opts.target_gender, req.current_gender) for f in chosen]
    seed = opts.seed if opts.seed >= 0 else secrets.randbelow(2**32)
    negative = negative_prompt(opts.negative_prompt)
    out = img.bgr.copy()
    retried, used = False, opts.strength
    if opts.method == "img2img":
        counter = _Counter(progress, run_steps(opts.steps, opts.strength, opts.sampler)[1])
        prompt = build_prompt(genders[0], chosen[0].age, opts.prompt_extra)
        with t.stage("diffuse"):
            small, used, retried = _diffuse(model, resize(img.bgr, (ww, wh)), None, prompt, negative, opts, seed,
                                            counter)
            out = resize(small, (w, h))
        mask_kind = "none"
    else:
        plans = []
        with t.stage("mask"):
            for face in chosen:
                soft, mask_kind = region_mask(img.bgr, face, hub.parser)
                x0, y0, x1, y1 = crop_box(soft)
                ww, wh = work_size(x1 - x0, y1 - y0, opts.width)
                check_work(ww, wh, req.max_work_pixels, "a face region")
                plans.append((face, soft, (x0, y0, x1, y1), (ww, wh)))
        counter = _Counter(progress, len(plans) * run_steps(opts.steps, opts.strength, opts.sampler)[1])
        with t.stage("diffuse"):
            for i, (face, soft, (x0, y0, x1, y1), size) in enumerate(plans):
                crop = out[y0:y1, x0:x1]
                alpha = soft[y0:y1, x0:x1]
                prompt = build_prompt(genders[i], face.age, opts.prompt_extra)
                painted, s, r = _diffuse(model, resize(crop, size), resize(alpha, size), prompt, negative, opts,
                                         seed + i, counter)
                used, retried = max(used, s), retried or r
                back = resize(painted, (x1 - x0, y1 - y0)).astype(np.float32)
                a = alpha[..., None]
                blended = back * a + crop.astype(np.float32) * (1.0 - a)
                out[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    if nsfw.gate().on:
        with t.stage("nsfw"):
            nsfw.check_output(out)  # FACEAPI_NSFW: the result passes the content gate before it is returned
    with t.stage("encode"):
        content, media_type = encode_image(out, opts.format or "png", req.quality, img.alpha,
                                           source="created" if opts.method == "img2img" else "edited")
    return GenderSwapResult(content, media_type, seed, genders, len(chosen), analysis, mask_kind, used, retried, t)


def img2img_size(w: int, h: int, width: int) -> tuple[int, int]:
    """img2img works at ``width`` wide, as the reference's img_width (the height follows the aspect ratio)."""
    side = max(width // 8 * 8, 64)
    return side, _multiple_of_8(h * side / w)
