"""The job kinds table: what each kind takes (files + one options model) and the blocking function that runs it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from app.config import Settings
    from models.hub import ModelHub


class JobCanceled(Exception):  # noqa: N818 - a control-flow signal, not an error report
    """Raised by ``JobContext.progress``/``check`` once the job was canceled (or its worker is shutting down)."""

    def __init__(self, interrupted: bool = False) -> None:
        super().__init__("interrupted" if interrupted else "canceled")
        self.interrupted = interrupted


@dataclass(frozen=True)
class InputSpec:
    kind: Literal["image", "video", "audio"]
    multiple: bool = False
    required: bool = True
    max_count_setting: str | None = None  # a Settings attribute bounding the number of files (multiple inputs)
    description: str = ""


@dataclass
class JobContext:
    hub: ModelHub
    settings: Settings
    options: BaseModel
    inputs: dict[str, list[Path]]  # spooled files per field
    workdir: Path  # private dir; removed with the job
    progress: Callable[[int, int | None], None]  # (done, total); raises JobCanceled when the job was canceled
    check: Callable[[], None] = lambda: None  # raises JobCanceled when the job was canceled; call between stages
    job_id: str = ""


@dataclass
class JobOutput:
    path: Path
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobKind:
    name: str  # "faceswap"
    options: type[BaseModel]  # the job's one options model
    inputs: dict[str, InputSpec]  # multipart field name -> spec
    run: Callable[[JobContext], JobOutput]  # blocking; runs in a worker thread of the runner
    unit: str = "steps"  # what progress counts (frames, steps, faces)
    summary: str = ""
    validate: Callable[[BaseModel, Settings], None] | None = None  # at submit: raise ApiError (422 naming a field)


def max_bytes_for(spec: InputSpec, settings: Settings) -> int:
    """Per-file byte limit of an input: images ``max_upload_bytes``, video and audio their own limits."""
    if spec.kind == "video":
        return settings.max_video_bytes
    if spec.kind == "audio":
        return settings.max_audio_bytes
    return settings.max_upload_bytes
