"""Request and response models; their examples make /docs a usable manual."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

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
    jobs: dict[str, JobReadiness]


class ModelInfo(BaseModel):
    name: str = Field(..., examples=["dlib_analyser"])
    backend: str = Field(..., examples=["builtin"])
    kind: str = Field(..., examples=["analyser"])
    loaded: bool
    load_seconds: float | None = None
    error: str | None = None
    files: list[str] = Field(default_factory=list)


class ModelsResponse(BaseModel):
    providers: list[str] = Field(..., examples=[["CPUExecutionProvider"]])
    weights_dir: str = Field(..., examples=["/weights"])
    models: list[ModelInfo]
    jobs: dict[str, JobReadiness]


IMAGE_RESPONSE = {
    200: {
        "description": "The edited image. Headers: `X-Face-Backend` (builtin|neural), `X-Faces-Swapped`.",
        "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
    }
}
