"""Request and response models; their examples make /docs a usable manual."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app import __version__
from app.media.provenance import SOURCE_TYPES

Backend = Literal["auto", "builtin", "neural"]
ImageFormat = Literal["png", "jpeg", "webp"]


class FaceOut(BaseModel):
    """One detected face. Coordinates are pixels of the (EXIF-rotated) image, origin top-left."""

    bbox: list[float] = Field(..., min_length=4, max_length=4, description="x1, y1, x2, y2",
                              examples=[[412.0, 96.5, 530.2, 240.8]])
    score: float = Field(..., description="Detector confidence in [0, 1]", examples=[0.93])
    kps: list[list[float]] = Field(
        ..., min_length=5, max_length=5,
        description="5 points: left eye, right eye, nose tip, left mouth corner, right mouth corner (image left/right)",
        examples=[[[450.1, 150.2], [492.3, 149.8], [471.0, 175.4], [455.2, 205.0], [488.9, 204.6]]],
    )
    landmarks: list[list[float]] | None = Field(None, description="68 points (iBUG layout) when the backend has them")
    embedding: list[float] | None = Field(
        None, description="Identity vector (128-d builtin, 512-d neural), only with embeddings=true"
    )
    gender: Literal["male", "female"] | None = Field(None, description="When the backend estimates it")
    age: int | None = Field(None, description="When the backend estimates it")


class AnalyzeResponse(BaseModel):
    width: int = Field(..., examples=[1280])
    height: int = Field(..., examples=[886])
    backend: Literal["builtin", "neural"] = Field(..., examples=["builtin"])
    faces: list[FaceOut] = Field(..., description="Largest face first")


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    version: str = Field(..., examples=["0.1.0"])
    pid: int = Field(..., examples=[4242])


class JobReadiness(BaseModel):
    ready: bool
    backends: list[str] = Field(..., examples=[["builtin"]])
    default: str | None = Field(None, examples=["builtin"])
    missing_files: list[str] = Field(default_factory=list, examples=[["inswapper_128.onnx"]])
    command: str | None = Field(None, examples=["python -m app weights download inswapper_128 buffalo_l"])
    detail: str | None = None


class ReadyResponse(BaseModel):
    ready: bool
    loading: bool
    pid: int = Field(..., description="The worker process that answered (each worker loads its own models)")
    jobs: dict[str, JobReadiness]


class ModelInfo(BaseModel):
    name: str = Field(..., examples=["dlib_analyser"])
    backend: str = Field(..., examples=["builtin"])
    kind: str = Field(..., examples=["analyser"])
    loaded: bool
    load_seconds: float | None = None
    error: str | None = None
    files: list[str] = Field(default_factory=list)


class ProvenanceStatus(BaseModel):
    """The AI provenance marks every output carries (app/media/provenance.py)."""

    enabled: bool = Field(..., description="XMP / MP4 metadata marks on (FACEAPI_PROVENANCE)", examples=[True])
    c2pa: bool = Field(..., description="a signed C2PA manifest too (FACEAPI_C2PA_CERT / _KEY)", examples=[False])
    software_agent: str = Field(..., examples=[f"Face studio {__version__}"])
    source_types: dict[str, str] = Field(
        ..., description="IPTC digital source type written for a picture the model created / edited (empty when off)",
        examples=[SOURCE_TYPES],
    )


class ModelsResponse(BaseModel):
    providers: list[str] = Field(..., examples=[["CPUExecutionProvider"]])
    weights_dir: str = Field(..., examples=["/weights"])
    models: list[ModelInfo]
    jobs: dict[str, JobReadiness]
    provenance: ProvenanceStatus


IMAGE_RESPONSE = {
    200: {
        "description": "The edited image. Headers: `X-Face-Backend` (builtin|neural), `X-Faces-Swapped`, "
        "`X-Face-Enhancer` (gfpgan|codeformer|builtin, when enhancement options were given), `Server-Timing`.",
        "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
    }
}


Mode = Literal["one_to_one", "one_to_many", "sorted", "similarity"]
Direction = Literal["left_to_right", "right_to_left"]
Enhancer = Literal["auto", "gfpgan", "codeformer", "builtin"]

# Each job's options are declared once, here. The same model parses the multipart form (app/routers/forms.py derives
# the Form parameters, and so the /docs entries, from its fields), the JSON of /swap_url, and is stored with a job.


class AnalyzeOptions(BaseModel):
    """Options of /analyze (form fields)."""

    model_config = ConfigDict(extra="forbid")

    embeddings: bool = Field(False, description="Include each face's identity vector")
    backend: Backend | None = Field(None, description="auto = neural when its weights are loaded; default "
                                    "FACEAPI_DEFAULT_BACKEND")


class RestoreOptions(BaseModel):
    """Restoration and upscaling options that the swap and enhance jobs share."""

    model_config = ConfigDict(extra="forbid")

    codeformer_fidelity: float = Field(
        0.5, ge=0.0, le=1.0,
        description="CodeFormer w: 0 = quality, 1 = fidelity; also the strength of the built-in restorer's clean-up",
    )
    background_enhance: bool = Field(False, description="Upscale the background with Real-ESRGAN (else Lanczos)")
    face_upsample: bool = Field(False, description="Also upscale the restored faces with Real-ESRGAN")
    upscale: int = Field(1, ge=1, le=4, description="Output size factor (the output size is exact)")


class SwapOptions(RestoreOptions):
    """Options every swap endpoint takes (form fields on /faceswap and /swap_img, `options` on /swap_url)."""

    mode: Mode = Field(
        "one_to_one",
        description="one_to_one: best source face → best target face; one_to_many: best source face → every target "
        "face; sorted: source faces left→right zipped with target faces in `direction`; similarity: each source face "
        "→ the most similar target face (optimal assignment), faces below the minimum similarity are left alone",
    )
    direction: Direction = Field("left_to_right", description="Order of the target faces in `sorted` mode")
    face_refinement_steps: int = Field(1, ge=1, le=5, description="Swap, re-detect and swap again, this many passes")
    use_codeformer: bool = Field(
        False,
        description="Restore the swapped faces with CodeFormer. Any enhancement option restores them: with GFPGAN "
        "when loaded (else the built-in restorer), or CodeFormer when this is true",
    )
    backend: Backend | None = Field(None, description="auto = neural when its weights are loaded; default "
                                    "FACEAPI_DEFAULT_BACKEND")
    format: ImageFormat | None = Field(None, description="Output format; default from FACEAPI_OUTPUT_FORMAT")

    @property
    def enhances(self) -> bool:
        return self.use_codeformer or self.background_enhance or self.face_upsample or self.upscale > 1

    def restoration(self) -> EnhanceOptions | None:
        """The restoration these options ask for (None: none). Any enhancement option restores the swapped faces;
        ``use_codeformer`` picks CodeFormer, else GFPGAN when loaded, else the built-in restorer."""
        if not self.enhances:
            return None
        shared = RestoreOptions.model_fields
        return EnhanceOptions(enhancer="codeformer" if self.use_codeformer else "auto",
                              **{k: getattr(self, k) for k in shared})


AudioMode = Literal["keep", "drop"]


class VideoSwapOptions(SwapOptions):
    """Options of /faceswap/video: every swap option, plus the video's own."""

    start: float | None = Field(None, ge=0, description="Trim: first second of the target video to keep")
    end: float | None = Field(None, gt=0, description="Trim: second of the target video where the output stops")
    mouth_mask: bool = Field(
        False, description="Keep the target's own mouth (blended in over the swapped face): BiSeNet's mouth and lip "
        "classes when the face parser is loaded, else the lips of the 68 landmarks, else an ellipse over the mouth "
        "corners",
    )
    smoothing: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Temporal smoothing of the face key points (One-Euro filter): 0 = none, 1 = strong",
    )
    audio: AudioMode = Field(
        "keep", description="keep: the target's audio is copied (or re-encoded to AAC); the request fails when it "
        "cannot be kept. drop: write a silent video",
    )
    quality: int | None = Field(None, ge=0, le=51, description="H.264 CRF: lower is better and bigger; default "
                                "FACEAPI_VIDEO_CRF")
    format: Literal["mp4"] | None = Field(None, description="Output container (always H.264 MP4)")

    @field_validator("end")
    @classmethod
    def _end_after_start(cls, end: float | None, info: ValidationInfo) -> float | None:
        start = info.data.get("start")
        if end is not None and start is not None and end <= start:
            raise ValueError(f"end ({end}) must be after start ({start})")
        return end


LipsyncDuration = Literal["audio", "video"]
LipsyncLoop = Literal["pingpong", "repeat", "freeze"]


class LipsyncOptions(BaseModel):
    """Options of /lipsync (form fields)."""

    model_config = ConfigDict(extra="forbid")

    duration: LipsyncDuration = Field(
        "audio", description="audio: the output lasts as long as the audio (as Wav2Lip); video: as long as the video "
        "(the audio is cut, or the mouth stays closed after it ends). A still image always follows the audio",
    )
    loop: LipsyncLoop = Field(
        "pingpong", description="When the audio outlasts the video: pingpong plays it forwards then backwards (no "
        "jump), repeat starts it again, freeze holds the last frame",
    )
    pads: str = Field(
        "0,10,0,0", pattern=r"^\s*\d{1,4}\s*(,\s*\d{1,4}\s*){3}$",
        description="Pixels added to the face box: top, bottom, left, right (Wav2Lip's --pads; the bottom pad keeps "
        "the chin inside the crop)",
    )
    smoothing: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Temporal smoothing of the face landmarks (One-Euro filter): 0 = none, 1 = strong; the crop "
        "box is also averaged over 5 frames, as Wav2Lip does",
    )
    enhance: bool = Field(
        False, description="Restore the mouth region with GFPGAN (else CodeFormer) after lip sync; 503 when neither "
        "is loaded",
    )
    backend: Backend | None = Field(
        None, description="builtin: the loudness-driven preview (no download); neural: Wav2Lip-GAN (the ONNX file "
        "when present, else the .pth); auto = neural when loaded. Default FACEAPI_DEFAULT_BACKEND",
    )
    batch_size: int = Field(16, ge=1, le=256, description="Frames per model call (Wav2Lip's inference batch)")
    fps: float | None = Field(None, ge=1.0, le=60.0, description="Frame rate of the output for a still `image` "
                              "(default 25); ignored for a video, whose own rate is kept")
    quality: int | None = Field(None, ge=0, le=51, description="H.264 CRF: lower is better and bigger; default "
                                "FACEAPI_VIDEO_CRF")

    @property
    def pad_values(self) -> tuple[int, int, int, int]:
        """``pads`` as (top, bottom, left, right) pixels."""
        top, bottom, left, right = (int(v) for v in self.pads.split(","))
        return top, bottom, left, right


class EnhanceOptions(RestoreOptions):
    """Options of /enhance (form fields)."""

    enhancer: Enhancer = Field("auto", description="auto = GFPGAN when its weights are loaded, else builtin")
    occlusion_mask: bool = Field(
        False, description="Keep occluders (hands, hair, glasses) with XSeg (+ BiSeNet face regions when loaded)"
    )
    blend: float = Field(80, ge=0, le=100, description="Percent of restored face over the original")
    backend: Backend | None = Field(None, description="Face detection backend when `faces` is not sent; default "
                                    "FACEAPI_DEFAULT_BACKEND")
    format: ImageFormat | None = Field(None, description="Output format; default from FACEAPI_OUTPUT_FORMAT")
    faces: str | None = Field(
        None, max_length=1024 * 1024,
        description="Optional: the JSON /analyze returned for this image (or its `faces` list) to skip detection; "
        "`[]` upscales without restoring any face",
        examples=['{"width": 512, "height": 512, "faces": [{"bbox": [180, 150, 330, 330], "score": 0.99, '
                  '"kps": [[220, 220], [290, 220], [255, 260], [225, 295], [285, 295]]}]}'],
    )


Gender = Literal["female", "male"]


class GenderSwapOptions(BaseModel):
    """Options of /genderswap (form fields)."""

    model_config = ConfigDict(extra="forbid")

    target_gender: Literal["auto", "female", "male"] = Field(
        "auto", description="auto = the opposite of each face's detected gender (needs the neural analyser's gender)")
    method: Literal["inpaint", "img2img"] = Field(
        "inpaint", description="inpaint: repaint only face and hair (feathered), everything else keeps its pixels; "
        "img2img: repaint the whole picture (the reference's method)")
    strength: float = Field(0.6, gt=0.0, le=1.0, description="How far from the input the result may go (0, 1]")
    steps: int = Field(30, ge=1, le=100, description="Denoising steps (the steps actually run are steps × strength)")
    guidance: float = Field(12.0, ge=0.0, le=30.0, description="Classifier-free guidance scale")
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="-1 = random; the seed used is returned in X-Seed")
    width: int = Field(512, ge=256, le=1024, description="Working size in pixels: the long side of each face region "
                       "(inpaint) or the width of the picture (img2img), rounded down to a multiple of 8")
    sampler: Literal["dpmpp_sde_karras", "dpmpp_2m_sde_karras", "euler"] = Field(
        "dpmpp_sde_karras", description="DPM++ SDE Karras (the checkpoint's recommended sampler; two UNet calls a "
        "step), DPM++ 2M SDE Karras (one call a step) or Euler (the reference's)")
    prompt_extra: str = Field("", max_length=500, description="Appended to the prompt built from gender and age")
    negative_prompt: str = Field("", max_length=500, description="Appended to the built-in negative prompt (its "
                                 "content filter always stays)")
    format: ImageFormat | None = Field(None, description="Output format; default from FACEAPI_OUTPUT_FORMAT")
    faces: Literal["largest", "all"] = Field(
        "largest", description="largest: the largest face only; all: every face (at most FACEAPI_GENDERSWAP_MAX_FACES)")


class ApiSwapForm(BaseModel):
    """The reference's POST /api/swap/ form fields (its clients send these names; other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    encoded_base_img: str = Field(..., min_length=1, description="The image, base64 (a data: URL prefix is accepted)")
    current_gender: str = Field(
        "", max_length=16,
        description="The person's gender now: female | male (woman/man, f/m); the result is the other one. Empty: "
        "detected (needs the neural analyser)")
    img_width: int = Field(512, ge=256, le=1024, description="Working size (the `width` of /genderswap)")
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="-1 = random; the seed used is returned in X-Seed")
    num_inference_steps: int = Field(30, ge=1, le=100, description="Denoising steps")
    guidance_scale: float = Field(12.0, ge=0.0, le=30.0, description="Classifier-free guidance scale")
    strength: float = Field(0.6, gt=0.0, le=1.0, description="How far from the input the result may go (0, 1]")


class ApiSwapResponse(BaseModel):
    """The reference's answer to POST /api/swap/."""

    mime: str = Field(..., examples=["image/png"])
    image: str = Field(..., description="The result, base64")


class SwapUrlRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "face_filename": "faces/alice.jpg",
                    "model_filenames": ["shoots/group-1.jpg", "shoots/group-2.png"],
                    "options": {"mode": "one_to_many"},
                }
            ]
        },
    )

    face_filename: str = Field(..., min_length=1, max_length=1024, description="Source image, relative to the bucket")
    model_filenames: list[str] = Field(
        ..., min_length=1, max_length=64, description="Target images, relative to the bucket (1 to 64)"
    )
    options: SwapOptions = Field(default_factory=SwapOptions)


class SwapUrlFailure(BaseModel):
    filename: str = Field(..., examples=["shoots/empty-room.jpg"])
    error: str = Field(..., examples=["no face was found in model_filenames[1]"])


class SwapUrlResponse(BaseModel):
    urls: list[str] = Field(..., description="One result per successful target, in request order",
                            examples=[["file:///srv/bucket/results/shoots/group-1-3f2a9c1b7d4e.png"]])
    failed: list[SwapUrlFailure] | None = Field(None, description="Present (with status 206) when some targets failed")


class SwapUrlError(BaseModel):
    error: dict = Field(..., examples=[{"code": "all_failed", "message": "every target failed",
                                        "field": "model_filenames"}])
    failed: list[SwapUrlFailure] = Field(default_factory=list)
