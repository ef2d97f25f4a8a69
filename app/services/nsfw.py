"""The content gate (``FACEAPI_NSFW``): NudeNet's 320n detector on image and video inputs and on the outputs of
gender swap and lip sync.

* ``off`` (the default: a local tool whose operator decides what it is for) loads nothing and checks nothing;
* ``flag`` answers as usual and names what was found in an ``X-NSFW`` header, e.g.
  ``X-NSFW: target_image=FEMALE_BREAST_EXPOSED:0.81, result=FEMALE_BREAST_EXPOSED:0.77``;
* ``block`` answers 422 ``nsfw_content`` naming the field (``result`` for an output, which is never returned).

Only detections of ``FACEAPI_NSFW_CLASSES`` scoring at least ``FACEAPI_NSFW_THRESHOLD`` count. Every decoded image
upload passes the gate (``app.media.image.DECODE_CHECKS``); videos are checked on their first frame and one frame
every ``FACEAPI_NSFW_VIDEO_INTERVAL`` seconds. The detector is loaded once per worker process, at start-up, and
only when the gate is on; a gate that is on without its model refuses gated requests with 503 ``nsfw_unavailable``
rather than let them through.

In ``flag`` mode the findings of a request are gathered in a context variable that ``NsfwHeaderMiddleware`` turns
into the header; the job runner gathers a job's the same way and keeps the header with its result. Work outside
both (a direct service call) only logs them (``nsfw content flagged``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.config import Settings
from app.errors import ApiError, error_responses

log = logging.getLogger("app.nsfw")
HEADER = "X-NSFW"
OUTPUT_FIELD = "result"
INSTALL = "pip install --no-deps nudenet==3.4.2"


@dataclass(frozen=True)
class Finding:
    field: str
    label: str
    score: float


_found: ContextVar[list[Finding] | None] = ContextVar("nsfw_found", default=None)


def header_value(findings: list[Finding]) -> str:
    """``field=CLASS:score CLASS:score, field=…``: per field its classes, best score each, best first."""
    best: dict[str, dict[str, float]] = {}
    for f in findings:
        per = best.setdefault(f.field, {})
        per[f.label] = max(per.get(f.label, 0.0), f.score)
    return ", ".join(f"{field}=" + " ".join(f"{k}:{v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
                     for field, per in best.items())


class NsfwGate:
    """The policy of one worker process. ``check`` is thread-safe; the detector loads once (``load``)."""

    def __init__(self, mode: str = "off", classes: tuple[str, ...] = (), threshold: float = 0.5,
                 video_interval: float = 2.0, provider_pref: str = "auto") -> None:
        self.mode = mode
        self.classes = frozenset(classes)
        self.threshold = float(threshold)
        self.video_interval = float(video_interval)
        self.provider_pref = provider_pref
        self.detector: Any = None
        self.error: str | None = None
        self.load_seconds: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> NsfwGate:
        return cls(settings.nsfw, tuple(settings.nsfw_classes), settings.nsfw_threshold,
                   settings.nsfw_video_interval, settings.execution_provider)

    @property
    def on(self) -> bool:
        return self.mode != "off"

    def load(self) -> None:
        """Load the detector from the installed nudenet wheel (once; a failure is kept and reported)."""
        if not self.on:
            return
        with self._lock:
            if self.detector is not None or self.error is not None:
                return
            t0 = time.perf_counter()
            try:
                from models.providers import resolve_providers
                from models.safety.nudenet import NudeNetDetector, packaged_model_path

                path = packaged_model_path()
                if path is None:
                    raise FileNotFoundError(f"the nudenet package (its 320n.onnx) is not installed: {INSTALL}")
                detector = NudeNetDetector(path, resolve_providers(self.provider_pref))
                detector.prepare()
            except Exception as exc:  # noqa: BLE001 - reported by /models, and gated requests get 503
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("nsfw detector failed to load", extra={"error": self.error})
                return
            self.detector = detector
            self.load_seconds = time.perf_counter() - t0
            log.info("nsfw detector loaded", extra={"seconds": round(self.load_seconds, 3), "mode": self.mode})

    def status(self) -> dict[str, object]:
        """What ``/models`` reports about the gate."""
        return {"mode": self.mode, "classes": sorted(self.classes), "threshold": self.threshold,
                "loaded": self.detector is not None, "load_seconds": self.load_seconds, "error": self.error}

    def model_info(self) -> list[dict[str, object]]:
        """The detector as a ``/models`` entry (none while the gate is off: nothing is loaded then)."""
        if not self.on:
            return []
        return [{"name": "nudenet_320n", "backend": "builtin", "kind": "safety", "loaded": self.detector is not None,
                 "load_seconds": self.load_seconds, "error": self.error,
                 "files": ["nudenet (package): 320n.onnx"]}]

    def scan(self, bgr: np.ndarray, field: str) -> list[Finding]:
        """The detections of the gated classes at or over the threshold (loads the detector on first use)."""
        if self.detector is None:
            self.load()
        if self.detector is None:
            raise ApiError(503, "nsfw_unavailable", f"the content gate is on (FACEAPI_NSFW={self.mode}) but its "
                           f"detector is not loaded ({self.error}); install it with `{INSTALL}` and restart")
        found = self.detector.detect(bgr)
        return [Finding(field, name, float(score)) for name, score in zip(found.names(), found.scores, strict=True)
                if name in self.classes and score >= self.threshold]

    def check(self, bgr: np.ndarray, field: str, into: list[Finding] | None = None) -> list[Finding]:
        """Apply the policy to one image (or frame) of ``field``: 422 ``nsfw_content`` in block mode, else the
        findings, also added to ``into`` (default: the request's collector)."""
        if not self.on:
            return []
        findings = self.scan(bgr, field)
        if not findings:
            return []
        what = header_value(findings).split("=", 1)[1]
        if self.mode == "block":
            log.info("nsfw content blocked", extra={"field": field, "found": what})
            where = "the result" if field == OUTPUT_FIELD else field
            raise ApiError(422, "nsfw_content", f"{where} was refused by the content policy (found {what})", field)
        sink = _found.get() if into is None else into
        if sink is None:
            log.warning("nsfw content flagged", extra={"field": field, "found": what})
        else:
            sink.extend(findings)
        return findings

    def video_checker(self, field: str, fps: float) -> Callable[[int, np.ndarray], None]:
        """``check(index, frame)`` for the frames of a video in order: frame 0 and one every ``video_interval``
        seconds pass the gate. Call it where the request's context is (it keeps the collector for other threads)."""
        if not self.on:
            return lambda index, frame: None
        every = max(1, int(round(self.video_interval * max(float(fps), 1e-3))))
        sink = _found.get()

        def check(index: int, frame: np.ndarray) -> None:
            if index % every == 0:
                self.check(frame, field, sink)

        return check


_gate = NsfwGate()


def gate() -> NsfwGate:
    """This process's gate (off until ``configure``)."""
    return _gate


def configure(settings: Settings) -> NsfwGate:
    """Set this worker's policy from the settings, load the detector when the gate is on and make every decoded
    upload pass it. Called once per worker process, at start-up."""
    global _gate
    from app.media import image

    _gate = NsfwGate.from_settings(settings)
    _gate.load()
    if check_input not in image.DECODE_CHECKS:
        image.DECODE_CHECKS.append(check_input)
    return _gate


def check_input(bgr: np.ndarray, field: str) -> None:
    """The decode hook: a decoded upload of ``field`` passes this process's gate."""
    _gate.check(bgr, field)


def check_output(bgr: np.ndarray) -> None:
    """An image the service is about to return (gender swap) passes the gate as ``result``."""
    _gate.check(bgr, OUTPUT_FIELD)


@contextmanager
def collecting() -> Iterator[list[Finding]]:
    """Gather the findings of the work done inside (and of threads it hands a checker to)."""
    found: list[Finding] = []
    token = _found.set(found)
    try:
        yield found
    finally:
        _found.reset(token)


class NsfwHeaderMiddleware:
    """Gathers each HTTP request's findings and sends them as ``X-NSFW`` (flag mode)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _gate.on:
            await self.app(scope, receive, send)
            return
        with collecting() as found:

            async def send_with_header(message: dict) -> None:
                if message["type"] == "http.response.start" and found:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-nsfw"]
                    headers.append((HEADER.lower().encode(), header_value(found).encode("latin-1")))
                    message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, send_with_header)


def nsfw_responses(field: str, outputs: bool = False) -> dict[int | str, dict]:
    """``error_responses(422)`` for a gated endpoint: the usual 422 text plus ``nsfw_content``."""
    out = error_responses(422)
    entry = dict(out[422])
    where = f"`{field}`" + (" or the `result` (outputs are checked too)" if outputs else "")
    entry["description"] = (f"{entry['description']}. `nsfw_content`: with `FACEAPI_NSFW=block`, {where} shows "
                             "a class of `FACEAPI_NSFW_CLASSES` (the image is not returned)")
    entry["content"] = {"application/json": {"examples": {
        "invalid": {"value": entry["content"]["application/json"]["example"]},
        "nsfw_content": {"value": {"error": {
            "code": "nsfw_content", "field": field,
            "message": f"{field} was refused by the content policy (found FEMALE_BREAST_EXPOSED:0.81)"}}},
    }}}
    return {422: entry}
