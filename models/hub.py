"""The model registry: which weights are present, which execution providers run them, what is loaded.

Built once per server process (in the FastAPI lifespan). It never downloads: missing weights are reported
with the exact ``python -m app weights download …`` command that fetches them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.base import Analyser, Swapper

log = logging.getLogger("models.hub")

# Files (relative to the weights dir) each neural backend needs, per job.
NEURAL_ANALYSIS_FILES = ("buffalo_l/det_10g.onnx", "buffalo_l/w600k_r50.onnx")
RESTORER_FILES = {"gfpgan": "gfpgan_1.4.onnx", "codeformer": "codeformer.onnx"}
UPSCALER_FILES = {2: "real_esrgan_x2.onnx", 4: "real_esrgan_x4.onnx"}
OCCLUSION_FILE = "xseg_1.onnx"
PARSER_FILE = "bisenet_resnet_34.onnx"
NEURAL_FILES: dict[str, tuple[str, ...]] = {
    "analyze": NEURAL_ANALYSIS_FILES,
    "faceswap": (*NEURAL_ANALYSIS_FILES, "inswapper_128.onnx"),
    "enhance": (RESTORER_FILES["gfpgan"],),
}
# Jobs this version serves.
IMPLEMENTED_JOBS = ("analyze", "faceswap", "enhance")


class BackendUnavailable(Exception):
    """A request named a backend whose models are not loaded."""

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


@dataclass
class ModelStatus:
    name: str
    backend: str
    kind: str  # analyser | swapper
    loaded: bool = False
    load_seconds: float | None = None
    error: str | None = None
    files: list[str] = field(default_factory=list)


class ModelHub:
    def __init__(
        self,
        weights_dir: Path,
        jobs: list[str],
        provider_pref: str = "auto",
        det_size: int = 640,
        det_thresh: float = 0.5,
        builtin_upsample: int = 0,
    ) -> None:
        self.weights_dir = Path(weights_dir)
        self.jobs = list(jobs)
        self.provider_pref = provider_pref
        self.det_size = det_size
        self.det_thresh = det_thresh
        self.builtin_upsample = builtin_upsample
        self.providers: list[str] = []
        self.analysers: dict[str, Analyser] = {}
        self.swappers: dict[str, Swapper] = {}
        self.restorers: dict[str, Any] = {}  # "gfpgan" | "codeformer" | "builtin"
        self.upscalers: dict[int, Any] = {}  # native scale → Real-ESRGAN
        self.occlusion: Any | None = None  # XSeg
        self.parser: Any | None = None  # BiSeNet
        self.statuses: list[ModelStatus] = []
        self.ready = False
        self.loading = False
        self._thread: threading.Thread | None = None

    # ---- loading -------------------------------------------------------------------------------------
    def start_loading(self) -> None:
        """Load in a background thread so /healthz answers while models load (/readyz says 503 until done)."""
        self.loading = True
        self._thread = threading.Thread(target=self.load, name="model-hub-load", daemon=True)
        self._thread.start()

    def load(self) -> None:
        from models.providers import resolve_providers

        self.loading = True
        try:
            self.providers = resolve_providers(self.provider_pref)
            wanted = [j for j in self.jobs if j in NEURAL_FILES]
            if wanted:
                self._load_builtin()
                self._load_neural(need_swapper="faceswap" in wanted)
            if "enhance" in wanted or "faceswap" in wanted:  # swaps take enhancement options too
                self._load_enhance()
        except Exception:  # noqa: BLE001 - reported through /models and /readyz, never a dead worker
            log.exception("model loading failed")
        finally:
            self.loading = False
            self.ready = True

    def _load_one(self, status: ModelStatus, factory: Any) -> Any | None:
        t0 = time.perf_counter()
        try:
            model = factory()
            model.prepare()
        except Exception as exc:  # noqa: BLE001 - a broken model file must not take the worker down
            status.error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load", extra={"model": status.name, "error": status.error})
            model = None
        status.load_seconds = round(time.perf_counter() - t0, 3)
        status.loaded = model is not None
        self.statuses.append(status)
        if model is not None:
            log.info("model loaded", extra={"model": status.name, "seconds": status.load_seconds})
        return model

    def _load_builtin(self) -> None:
        from models.analysis.dlib_analyser import DlibAnalyser
        from models.swap.classical_swap import ClassicalSwapper

        analyser = self._load_one(
            ModelStatus("dlib_analyser", "builtin", "analyser", files=["face-recognition-models (package)"]),
            lambda: DlibAnalyser(upsample=self.builtin_upsample),
        )
        if analyser is not None:
            self.analysers["builtin"] = analyser
        if "faceswap" in self.jobs:
            swapper = self._load_one(ModelStatus("classical_swap", "builtin", "swapper"), ClassicalSwapper)
            if swapper is not None:
                self.swappers["builtin"] = swapper

    def _load_neural(self, need_swapper: bool) -> None:
        if self._present(NEURAL_ANALYSIS_FILES):
            from models.analysis.neural_analyser import NeuralAnalyser

            analyser = self._load_one(
                ModelStatus("buffalo_l", "neural", "analyser", files=list(NEURAL_ANALYSIS_FILES)),
                lambda: NeuralAnalyser(
                    self.weights_dir / "buffalo_l", self.providers, det_size=self.det_size, det_thresh=self.det_thresh
                ),
            )
            if analyser is not None:
                self.analysers["neural"] = analyser
        if need_swapper and self._present(("inswapper_128.onnx",)):
            from models.swap.inswapper import InSwapper

            swapper = self._load_one(
                ModelStatus("inswapper_128", "neural", "swapper", files=["inswapper_128.onnx"]),
                lambda: InSwapper(self.weights_dir / "inswapper_128.onnx", self.providers),
            )
            if swapper is not None:
                self.swappers["neural"] = swapper

    def _load_enhance(self) -> None:
        from models.restore.builtin_enhance import BuiltinRestorer

        builtin = self._load_one(ModelStatus("builtin_restorer", "builtin", "restorer"), BuiltinRestorer)
        if builtin is not None:
            self.restorers["builtin"] = builtin
        for kind, rel in RESTORER_FILES.items():
            if self._present((rel,)):
                from models.restore.restorer import FaceRestorer

                model = self._load_one(
                    ModelStatus(kind, "neural", "restorer", files=[rel]),
                    lambda rel=rel, kind=kind: FaceRestorer(self.weights_dir / rel, self.providers, kind=kind),
                )
                if model is not None:
                    self.restorers[kind] = model
        for scale, rel in UPSCALER_FILES.items():
            if self._present((rel,)):
                from models.restore.upscaler import RealEsrganUpscaler

                model = self._load_one(
                    ModelStatus(f"real_esrgan_x{scale}", "neural", "upscaler", files=[rel]),
                    lambda rel=rel, scale=scale: RealEsrganUpscaler(self.weights_dir / rel, self.providers, scale),
                )
                if model is not None:
                    self.upscalers[scale] = model
        if self._present((OCCLUSION_FILE,)):
            from models.masks.face_masks import OcclusionMasker

            self.occlusion = self._load_one(
                ModelStatus("xseg_1", "neural", "mask", files=[OCCLUSION_FILE]),
                lambda: OcclusionMasker(self.weights_dir / OCCLUSION_FILE, self.providers),
            )
        if self._present((PARSER_FILE,)):
            from models.masks.face_masks import FaceParser

            self.parser = self._load_one(
                ModelStatus("bisenet_resnet_34", "neural", "mask", files=[PARSER_FILE]),
                lambda: FaceParser(self.weights_dir / PARSER_FILE, self.providers),
            )

    def _present(self, files: tuple[str, ...]) -> bool:
        return all((self.weights_dir / f).is_file() for f in files)

    # ---- lookup --------------------------------------------------------------------------------------
    def backends_for(self, job: str) -> list[str]:
        if job == "enhance":
            return [n for n in ("gfpgan", "codeformer", "builtin") if n in self.restorers]
        names = []
        for name in ("neural", "builtin"):
            if name not in self.analysers:
                continue
            if job == "faceswap" and name not in self.swappers:
                continue
            names.append(name)
        return names

    def resolve(self, job: str, requested: str) -> str:
        """The backend a request runs on: ``auto`` picks neural when it is loaded for the job, else builtin."""
        available = self.backends_for(job)
        if requested == "auto":
            if available:
                return available[0]
            raise BackendUnavailable(f"no backend is loaded for {job}")
        if requested not in available:
            command = self.download_command(job) if requested == "neural" else None
            hint = f"; fetch its weights with `{command}` and restart" if command else ""
            raise BackendUnavailable(f"the {requested} backend is not loaded for {job}{hint}", command)
        return requested

    def restorer(self, requested: str) -> tuple[str, Any]:
        """(name, restorer) for ``auto`` (GFPGAN when loaded, else the built-in one) or a named restorer."""
        if requested == "auto":
            requested = "gfpgan" if "gfpgan" in self.restorers else "builtin"
        if requested not in self.restorers:
            command = self.file_command(RESTORER_FILES[requested]) if requested in RESTORER_FILES else None
            hint = f"; fetch its weights with `{command}` and restart" if command else ""
            raise BackendUnavailable(f"the {requested} restorer is not loaded{hint}", command)
        return requested, self.restorers[requested]

    def upscaler(self, scale: int) -> Any | None:
        """The Real-ESRGAN model for a target scale: x4 above 2 when loaded, else x2, else x4; None if neither."""
        order = (4, 2) if scale > 2 else (2, 4)
        return next((self.upscalers[s] for s in order if s in self.upscalers), None)

    def require_occlusion(self) -> Any:
        if self.occlusion is None:
            command = self.file_command(OCCLUSION_FILE)
            raise BackendUnavailable(f"the XSeg occlusion model is not loaded; fetch it with `{command}`", command)
        return self.occlusion

    def analyser(self, backend: str) -> Analyser:
        return self.analysers[backend]

    def swapper(self, backend: str) -> Swapper:
        return self.swappers[backend]

    # ---- reporting -----------------------------------------------------------------------------------
    def missing_files(self, job: str) -> list[str]:
        return [f for f in NEURAL_FILES.get(job, ()) if not (self.weights_dir / f).is_file()]

    def file_command(self, *files: str) -> str | None:
        """The ``weights download`` command that fetches the given weight files."""
        from models.weights import download_command, load_manifest

        manifest = load_manifest()
        entries = []
        for rel in files:
            entry = manifest.entry_for_path(rel)
            if entry is not None and entry not in entries:
                entries.append(entry)
        return download_command(entries) if entries else None

    def download_command(self, job: str) -> str | None:
        missing = self.missing_files(job)
        return self.file_command(*missing) if missing else None

    def job_status(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for job in self.jobs:
            if job not in IMPLEMENTED_JOBS:
                out[job] = {"ready": False, "backends": [], "default": None, "missing_files": [],
                            "command": None, "detail": "this job is not implemented in this version"}
                continue
            backends = self.backends_for(job) if self.ready else []
            missing = self.missing_files(job)
            out[job] = {
                "ready": bool(backends),
                "backends": backends,
                "default": backends[0] if backends else None,
                "missing_files": missing,
                "command": self.download_command(job) if missing else None,
                "detail": None if not missing else "neural backend unavailable until its weights are downloaded",
            }
        return out
