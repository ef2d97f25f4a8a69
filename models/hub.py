"""The model hub: loads the families ``models/registry.py`` lists for the enabled jobs and reports what loaded.

Built once per server process (in the FastAPI lifespan). It never downloads: missing weights are reported
with the exact ``python -m app weights download …`` command that fetches them.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from models.base import Analyser, LoadSpec, Model, Occluder, Parser, Restorer, Swapper, Upscaler
from models.registry import (
    FAMILIES,
    IMPLEMENTED_JOBS,
    JOBS,
    Family,
    families_for,
    fetch_command,
    files_needed,
    weights_providing,
)

log = logging.getLogger("models.hub")


class BackendUnavailable(Exception):
    """A request named a backend whose models are not loaded."""

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


@dataclass
class ModelStatus:
    name: str
    backend: str
    kind: str  # a registry kind: analyser | swapper | restorer | upscaler | mask
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
        builtin_min_score: float = 0.5,
        kinds: Collection[str] | None = None,
    ) -> None:
        self.weights_dir = Path(weights_dir)
        self.kinds = None if kinds is None else frozenset(kinds)  # only these registry kinds load (None: all)
        self.jobs = list(jobs)
        self.provider_pref = provider_pref
        self.det_size = det_size
        self.det_thresh = det_thresh
        self.builtin_upsample = builtin_upsample
        self.builtin_min_score = builtin_min_score
        self.providers: list[str] = []
        # kind → slot key → model, filled from the registry (slot keys: backend, restorer name, scale, mask role)
        self.loaded: dict[str, dict[str, Model]] = {}
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
            for family in families_for(self.jobs):
                if self.kinds is not None and family.kind not in self.kinds:
                    continue
                if all((self.weights_dir / f).is_file() for f in family.files):
                    self._load_family(family)
        except Exception:  # noqa: BLE001 - reported through /models and /readyz, never a dead worker
            log.exception("model loading failed")
        finally:
            self.loading = False
            self.ready = True

    def _load_family(self, family: Family) -> None:
        status = ModelStatus(family.name, family.backend, family.kind,
                             files=list(family.files or family.shown_files))
        t0 = time.perf_counter()
        model: Model | None
        try:
            module, _, cls_name = (family.loader or "").partition(":")
            cls = getattr(importlib.import_module(module), cls_name)
            root = family.root or (family.files[0] if family.files else None)
            spec = LoadSpec(
                path=self.weights_dir / root if root else None, providers=self.providers, options=dict(family.options),
                det_size=self.det_size, det_thresh=self.det_thresh, builtin_upsample=self.builtin_upsample,
                builtin_min_score=self.builtin_min_score,
            )
            model = cast(Model, cls.load(spec))
            model.prepare()
        except Exception as exc:  # noqa: BLE001 - a broken model file must not take the worker down
            status.error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load", extra={"model": status.name, "error": status.error})
            model = None
        status.load_seconds = round(time.perf_counter() - t0, 3)
        status.loaded = model is not None
        self.statuses.append(status)
        if model is not None:
            self.loaded.setdefault(family.kind, {})[family.key] = model
            log.info("model loaded", extra={"model": status.name, "seconds": status.load_seconds})

    def _slot(self, kind: str) -> dict[str, Model]:
        return self.loaded.get(kind, {})

    @property
    def analysers(self) -> dict[str, Analyser]:
        return cast(dict[str, Analyser], self._slot("analyser"))

    @property
    def swappers(self) -> dict[str, Swapper]:
        return cast(dict[str, Swapper], self._slot("swapper"))

    @property
    def restorers(self) -> dict[str, Restorer]:
        return cast(dict[str, Restorer], self._slot("restorer"))

    @property
    def upscalers(self) -> dict[int, Upscaler]:
        return {int(k): cast(Upscaler, m) for k, m in self._slot("upscaler").items()}

    @property
    def occlusion(self) -> Occluder | None:
        return cast(Occluder | None, self._slot("mask").get("occlusion"))

    @property
    def parser(self) -> Parser | None:
        return cast(Parser | None, self._slot("mask").get("parser"))

    # ---- lookup --------------------------------------------------------------------------------------
    def backends_for(self, job: str) -> list[str]:
        """The job's backends (registry order of preference) with a loaded model of each kind the job combines."""
        spec = JOBS.get(job)
        if spec is None or not spec.kinds:
            return []
        return [b for b in spec.backends if all(b in self._slot(kind) for kind in spec.kinds)]

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

    def restorer(self, requested: str) -> tuple[str, Restorer]:
        """(name, restorer) for ``auto`` (GFPGAN when loaded, else the built-in one) or a named restorer."""
        if requested == "auto":
            requested = "gfpgan" if "gfpgan" in self.restorers else "builtin"
        if requested not in self.restorers:
            family = next((f for f in FAMILIES.values() if f.kind == "restorer" and f.key == requested), None)
            command = self.file_command(*family.files) if family is not None and family.files else None
            hint = f"; fetch its weights with `{command}` and restart" if command else ""
            raise BackendUnavailable(f"the {requested} restorer is not loaded{hint}", command)
        return requested, self.restorers[requested]

    def upscaler(self, scale: int) -> Upscaler | None:
        """The Real-ESRGAN model for a target scale: x4 above 2 when loaded, else x2, else x4; None if neither."""
        order = (4, 2) if scale > 2 else (2, 4)
        upscalers = self.upscalers
        return next((upscalers[s] for s in order if s in upscalers), None)

    def require_occlusion(self) -> Occluder:
        occlusion = self.occlusion
        if occlusion is None:
            files = [f for fam in FAMILIES.values() if fam.kind == "mask" and fam.key == "occlusion" for f in fam.files]
            command = self.file_command(*files)
            raise BackendUnavailable(f"the XSeg occlusion model is not loaded; fetch it with `{command}`", command)
        return occlusion

    def analyser(self, backend: str) -> Analyser:
        return self.analysers[backend]

    def swapper(self, backend: str) -> Swapper:
        return self.swappers[backend]

    # ---- reporting -----------------------------------------------------------------------------------
    def missing_files(self, job: str) -> list[str]:
        if job not in JOBS:
            return []
        return [f for f in files_needed(job) if not (self.weights_dir / f).is_file()]

    def file_command(self, *files: str) -> str | None:
        """The ``weights download`` command that fetches the given weight files."""
        names = weights_providing(files)
        return fetch_command(names) if names else None

    def download_command(self, job: str) -> str | None:
        missing = self.missing_files(job)
        return self.file_command(*missing) if missing else None

    def job_status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for job in self.jobs:
            if job not in IMPLEMENTED_JOBS:
                out[job] = {"ready": False, "backends": [], "default": None, "missing_files": [],
                            "command": None, "detail": "this job is not implemented in this version"}
                continue
            backends = self.backends_for(job) if self.ready else []
            # a loaded neural model from another file of the job's family (e.g. lip sync's ONNX export beside the
            # .pth it stands in for) makes the job whole: nothing is missing then
            missing = [] if "neural" in backends else self.missing_files(job)
            out[job] = {
                "ready": bool(backends),
                "backends": backends,
                "default": backends[0] if backends else None,
                "missing_files": missing,
                "command": self.download_command(job) if missing else None,
                "detail": None if not missing else "neural backend unavailable until its weights are downloaded",
            }
        return out
