"""All configuration: environment variables with the ``FACEAPI_`` prefix, read once."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.registry import JOB_NAMES
from models.safety.labels import EXPLICIT as NSFW_EXPLICIT
from models.safety.labels import LABELS as NSFW_LABELS

JOBS = JOB_NAMES  # models/registry.py
Job = Literal[JOB_NAMES]  # type: ignore[valid-type]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEAPI_", extra="ignore")

    # models
    weights_dir: Path = Field(
        Path("weights"), description="Where `weights download` puts files and the server looks for them."
    )
    enabled_jobs: Annotated[list[Job], NoDecode] = Field(
        ["analyze", "faceswap", "enhance", "lipsync"],
        description="Comma-separated jobs whose models are loaded at start-up.",
    )
    execution_provider: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="ONNX Runtime provider: auto = CUDA when a GPU is usable, else CPU."
    )
    default_backend: Literal["auto", "builtin", "neural"] = Field(
        "auto", description="Backend when a request names none: auto = neural when its weights are loaded."
    )
    lipsync_threads: int = Field(
        0, ge=0, le=256,
        description="CPU threads of each Wav2Lip PyTorch call during /lipsync (0: the cores shared out among the "
        "workers).",
    )
    lipsync_workers: int = Field(
        0, ge=0, le=16,
        description="Wav2Lip PyTorch batches run at once on CPU during /lipsync (0: one per core, each on one "
        "thread; 1: one batch at a time on every core).",
    )
    det_size: int = Field(640, ge=128, le=2048, description="Square input size of the neural face detector.")
    det_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Minimum neural detector score.")
    builtin_upsample: int = Field(
        0, ge=0, le=2,
        description="Times the built-in (dlib HOG) detector doubles the image: 0 finds faces of about 80 px and more; "
        "1 finds faces down to about 40 px at 2-3x the detection time.",
    )
    builtin_min_score: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Minimum built-in (dlib HOG) detector confidence; detections under 0.8 must also be confirmed "
        "by dlib's CNN face detector on a crop.",
    )

    min_similarity_neural: float = Field(
        0.2, ge=-1.0, le=1.0,
        description="similarity mode, neural backend: minimum ArcFace cosine for a source face to replace a target.",
    )
    min_similarity_builtin: float = Field(
        0.4, ge=-1.0, le=1.0,
        description="similarity mode, built-in backend: minimum 1 − dlib descriptor distance (0.4 = dlib's 0.6).",
    )

    # server
    host: str = Field("0.0.0.0", description="Address `python -m app serve` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `python -m app serve` binds.")
    workers: int = Field(2, ge=1, le=64, description="uvicorn worker processes; each loads its own models.")
    inference_threads: int = Field(2, ge=1, le=64, description="Concurrent inference jobs per worker.")
    max_queue: int = Field(
        16, ge=0, le=10_000,
        description="Requests allowed to wait for an inference slot per worker before 503 + Retry-After.",
    )
    log_level: str = Field("INFO", description="Python log level.")
    header_timeout: float = Field(
        10.0, ge=0, le=3600,
        description="Seconds a connection may take to send a request's headers (from opening, or from the first byte "
        "of its next request); 408 and close after. 0 = no limit.",
    )
    body_timeout: float = Field(
        30.0, ge=0, le=3600,
        description="Seconds a request body may go without data; 408 and close after. Also the grace period before "
        "FACEAPI_MIN_UPLOAD_RATE applies. 0 = no limit.",
    )
    min_upload_rate: int = Field(
        1024, ge=0, description="Bytes/s a request body must average after its first FACEAPI_BODY_TIMEOUT seconds "
        "(408 and close under it). 0 = no minimum.",
    )
    max_connections: int = Field(
        256, ge=1, le=100_000,
        description="Open connections per worker process; one over it is answered 503 `busy` with Retry-After.",
    )
    keep_alive_timeout: int = Field(5, ge=1, le=3600, description="Seconds an idle kept-alive connection stays open.")

    # access control and metrics (README "Operating")
    api_keys: Annotated[list[str], NoDecode] = Field(
        [],
        description="Comma-separated API keys, each the key itself or `sha256:<hex>` of it (`python -m app keys "
        "hash`). Empty (and no FACEAPI_API_KEYS_FILE) = no authentication, for local use.",
    )
    api_keys_file: Path | None = Field(
        None, description="File of API keys, one per line (`sha256:<hex>` or the key), text after a space is a "
        "comment; adds to FACEAPI_API_KEYS.",
    )
    rate_limit: float = Field(
        0.0, ge=0, description="Requests per second each API key may make, shared by all workers (0 = no limit; "
        "only with keys). Over it: 429 + Retry-After.",
    )
    rate_limit_burst: int = Field(20, ge=1, le=100_000, description="Requests an API key may send at once before "
                                  "FACEAPI_RATE_LIMIT applies (token bucket size).")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        [], description="Comma-separated origins browsers may call the API from (`*` = any); empty = no CORS headers.",
    )
    metrics_access: Literal["open", "api_key", "metrics_key"] = Field(
        "api_key", description="Who may read /metrics: open = anyone, api_key = any API key (open when no keys are "
        "set), metrics_key = only FACEAPI_METRICS_KEY.",
    )
    metrics_key: str | None = Field(
        None, description="The key (or `sha256:<hex>`) /metrics wants when FACEAPI_METRICS_ACCESS=metrics_key.",
    )

    # limits
    max_upload_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="Largest accepted upload per file, bytes (413 above)."
    )
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest accepted image, width × height (413 above).")

    # video and audio (app/media)
    max_video_seconds: float = Field(
        600.0, gt=0, description="Longest accepted video or audio track, seconds (413 above; read from the header)."
    )
    max_video_pixels: int = Field(
        3840 * 2160, ge=1, description="Largest accepted video frame, width × height (413 above; from the header)."
    )
    video_crf: int = Field(
        18, ge=0, le=51, description="libx264 constant rate factor of output video: lower is better and bigger."
    )
    video_preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
    ] = Field("veryfast", description="libx264 preset of output video: slower presets make smaller files.")
    video_full_detect_every: float = Field(
        0.5, ge=0.0, le=10.0,
        description="Video face swaps with the built-in (dlib) detector: seconds between whole-frame searches; in "
        "between, each known face is searched in a window around where it was (a face that enters is found within "
        "this time; a known face not found in its window makes that frame searched whole). 0 = every frame whole.",
    )
    video_batch_size: int = Field(
        4, ge=1, le=64,
        description="Video face swaps: frames per detector call when the detector's graph takes a batch, and faces "
        "per swap-model call, across frames, when the swap model's graph takes any batch (a dynamic first "
        "dimension). Graphs with a fixed batch, like det_10g.onnx and inswapper_128.onnx (1), get theirs.",
    )
    max_video_bytes: int = Field(
        2 * 1024**3, ge=1024, description="Largest accepted video upload, bytes (413 above)."
    )
    max_audio_bytes: int = Field(
        256 * 1024**2, ge=1024, description="Largest accepted audio upload, bytes (413 above)."
    )
    temp_dir: Path = Field(
        Path("data/tmp"),
        description="Where uploads spool to disk (multipart files past 1 MiB, job inputs); created if missing. "
        "Unset: FACEAPI_DATA_DIR/tmp.",
    )

    # storage (/swap_url)
    storage_url: str = Field(
        "storage",
        description="Bucket /swap_url reads inputs from and writes results to: a local directory (created if missing) "
        "or file://…, gs://bucket/prefix (pip install gcsfs), s3://bucket/prefix (pip install s3fs).",
    )
    storage_results_prefix: str = Field(
        "results/", description="Folder inside the bucket for /swap_url results (unique names, never overwriting)."
    )
    swap_url_concurrency: int = Field(4, ge=1, le=64, description="Targets of one /swap_url request processed at once.")

    max_source_images: int = Field(
        8, ge=1, le=64, description="Most source images one swap request may send (422 above)."
    )
    max_faces: int = Field(64, ge=1, le=1000, description="Most faces one /enhance request may supply in `faces`.")
    max_output_pixels: int = Field(
        160_000_000, ge=1, description="Largest image an upscale may produce, width × height (413 above)."
    )

    # jobs (long work: Prefer: respond-async, /jobs)
    data_dir: Path = Field(
        Path("data"), description="Job records (SQLite, WAL), inputs and results; shared by every worker process."
    )
    job_concurrency: int = Field(1, ge=1, le=64, description="Jobs one worker process runs at once (in threads).")
    job_queue: int = Field(
        32, ge=1, le=100_000, description="Queued jobs allowed in total (all workers) before a submit gets 503."
    )
    job_ttl: int = Field(
        86_400, ge=1, description="Seconds a finished job (record, inputs, result) is kept; queued jobs expire too."
    )
    job_heartbeat_timeout: float = Field(
        10.0, gt=0, le=3600,
        description="Seconds without a heartbeat (sent every 0.25 s) after which a running job's worker is taken "
        "for dead and the job fails with `interrupted`; a dead worker pid on the same host is noticed at once.",
    )
    job_webhook_retries: int = Field(3, ge=0, le=10, description="Webhook retries after a failed delivery.")
    job_webhook_timeout: float = Field(5.0, gt=0, le=120, description="Seconds one webhook delivery may take.")

    # gender swap (Stable Diffusion through diffusers; loaded only when genderswap is in FACEAPI_ENABLED_JOBS)
    diffusion_attention_slicing: Literal["off", "auto", "max"] = Field(
        "off",
        description="Gender swap: compute attention in slices to lower peak GPU memory (auto = half the heads at a "
        "time, max = one head; slower). off = whole attention through PyTorch SDPA.",
    )
    diffusion_vae_tiling: bool = Field(
        False, description="Gender swap: decode/encode the VAE in tiles, for working sizes above 512 on small GPUs."
    )
    genderswap_max_faces: int = Field(
        4, ge=1, le=32, description="Most faces one /genderswap request with faces=all repaints (422 above)."
    )
    genderswap_max_work_pixels: int = Field(
        1024 * 1024, ge=64 * 64,
        description="Largest picture the diffusion model works on, width × height after scaling to the working size "
        "(413 above: e.g. a very tall image with method=img2img).",
    )

    # memory (app/memory.py) and the audit log (app/audit.py)
    malloc_trim_mb: int = Field(
        64, ge=0, le=1_000_000,
        description="After a request or job leaves a worker's RSS this many MB above where it last settled, "
        "glibc's malloc_trim(0) returns the freed heap to the OS (off the event loop; a lip-sync job also checks "
        "after each batch). 0 = never.",
    )
    malloc_arena_max: int = Field(
        0, ge=0, le=1024,
        description="Cap on glibc malloc arenas per worker (mallopt M_ARENA_MAX); 0 = glibc's default (8 per core). "
        "2 lowers image peaks but fragments the multi-threaded video and lip-sync pipelines.",
    )
    audit_log: str | None = Field(
        None, description="Audit log file (JSON lines); unset = FACEAPI_DATA_DIR/audit.log, empty = no audit log."
    )
    audit_log_max_bytes: int = Field(
        100 * 1024 * 1024, ge=1024, description="Size at which the audit log is rotated (<log>.1 … <log>.N)."
    )
    audit_log_backups: int = Field(10, ge=0, le=1000, description="Rotated audit log files kept (0 = none).")

    def audit_log_path(self) -> Path | None:
        if self.audit_log is None:
            return Path(self.data_dir) / "audit.log"
        return Path(self.audit_log) if self.audit_log.strip() else None

    # content gate (app/services/nsfw.py: NudeNet's 320n detector from the nudenet wheel)
    nsfw: Literal["off", "flag", "block"] = Field(
        "off",
        description="Content gate on image and video inputs and on gender swap and lip sync outputs: off; flag = "
        "answer as usual with an X-NSFW header naming what was found; block = 422 nsfw_content naming the field.",
    )
    nsfw_classes: Annotated[list[str], NoDecode] = Field(
        list(NSFW_EXPLICIT), description="Comma-separated NudeNet classes the gate acts on."
    )
    nsfw_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Lowest detector score the gate acts on.")
    nsfw_video_interval: float = Field(
        2.0, gt=0, le=600, description="Seconds between the video frames the gate checks (the first frame always)."
    )

    @field_validator("nsfw_classes", mode="before")
    @classmethod
    def _nsfw_classes(cls, v: object) -> object:
        names = [c.strip().upper() for c in v.split(",") if c.strip()] if isinstance(v, str) else v
        unknown = [c for c in names if c not in NSFW_LABELS] if isinstance(names, list) else []
        if unknown:
            raise ValueError(f"unknown NudeNet class {unknown[0]!r}; known: {', '.join(NSFW_LABELS)}")
        return names

    # output
    output_format: Literal["png", "jpeg", "webp"] = Field("png", description="Image format when a request names none.")
    jpeg_quality: int = Field(95, ge=1, le=100, description="Quality for jpeg and webp output.")

    # AI provenance marks on every output (app/media/provenance.py)
    provenance: Literal["on", "off"] = Field(
        "on", description="on: every image and video says it was made or edited by an AI model (IPTC digital source "
        "type and the software in XMP / MP4 metadata); off only when set explicitly.",
    )
    c2pa_cert: Path | None = Field(
        None, description="PEM certificate chain (signer first) for a signed C2PA manifest on every output; with "
        "FACEAPI_C2PA_KEY. Unset = no C2PA.",
    )
    c2pa_key: Path | None = Field(None, description="PEM private key of FACEAPI_C2PA_CERT.")
    c2pa_alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = Field(
        "es256", description="C2PA signing algorithm; must match the key."
    )
    c2pa_tsa_url: str | None = Field(
        None, description="RFC 3161 time-stamp authority for C2PA signatures (a network call per output); unset = none."
    )

    @model_validator(mode="after")
    def _c2pa_pair(self) -> Settings:
        if (self.c2pa_cert is None) != (self.c2pa_key is None):
            raise ValueError("FACEAPI_C2PA_CERT and FACEAPI_C2PA_KEY go together: set both or neither")
        return self

    @field_validator("enabled_jobs", mode="before")
    @classmethod
    def _split_jobs(cls, v: object) -> object:
        if isinstance(v, str):
            return [j.strip() for j in v.split(",") if j.strip()]
        return v

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, v: object) -> object:
        if isinstance(v, str):
            return [j.strip() for j in v.split(",") if j.strip()]
        return v

    @model_validator(mode="after")
    def _metrics_key_given(self) -> Settings:
        if self.metrics_access == "metrics_key" and not self.metrics_key:
            raise ValueError("FACEAPI_METRICS_ACCESS=metrics_key needs FACEAPI_METRICS_KEY")
        return self

    @model_validator(mode="after")
    def _temp_dir_under_data_dir(self) -> Settings:
        """Unset FACEAPI_TEMP_DIR follows FACEAPI_DATA_DIR (``<data>/tmp``), so one writable data root (the Docker
        images' ``/data`` volume) holds everything the server writes."""
        if "temp_dir" not in self.model_fields_set:
            self.temp_dir = Path(self.data_dir) / "tmp"
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
