"""The one registry of jobs and model families.

``JOBS`` says which jobs exist, which model families each one's backends need and which they use when present.
``FAMILIES`` says how each family loads: its class, its kind, the slot it fills and the weight files it reads
(relative to the weights dir; ``weights`` names the ``weights/manifest.toml`` entry that provides them, which
holds where to download them from). The hub loads and reports from these tables, and the weights CLI derives
each manifest entry's jobs from them, so a new family is one entry here plus one class with a ``load``
classmethod, and a new job is one ``Job`` entry.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["analyser", "swapper", "restorer", "upscaler", "mask", "landmarks", "lipsync", "diffusion"]


@dataclass(frozen=True)
class Family:
    """One model family: what loads it and from which files."""

    name: str  # reported by /models, e.g. "inswapper_128"
    kind: Kind
    key: str  # the slot it fills: a backend name ("neural"), a restorer name ("gfpgan"), a scale ("4"), a mask
    loader: str | None  # "module:Class" whose ``load(spec)`` builds it; None: not loadable by this version
    weights: str | None = None  # manifest entry providing ``files``; None: built in, nothing to download
    files: tuple[str, ...] = ()  # the files it reads, relative to the weights dir
    root: str | None = None  # what the class is given: this folder (relative) instead of the first file
    options: tuple[tuple[str, str | int], ...] = ()  # fixed constructor arguments
    shown_files: tuple[str, ...] = ()  # what /models lists for a built-in family

    @property
    def backend(self) -> str:
        return "builtin" if self.weights is None else "neural"


@dataclass(frozen=True)
class Job:
    """One job: the kinds a backend combines, its backends by preference and the families it needs or uses."""

    name: str
    implemented: bool
    kinds: tuple[Kind, ...] = ()  # a backend serves the job when a model of each kind is loaded under its name
    backends: tuple[str, ...] = ()  # in order of preference (``auto`` picks the first loaded)
    needs: tuple[str, ...] = ()  # families its neural path cannot run without
    uses: tuple[str, ...] = ()  # families it loads and uses when present (built-in ones, optional weights)
    builds_on: tuple[str, ...] = field(default=())  # jobs whose needed families it needs too (e.g. analysis)


_ENHANCERS = ("builtin_restorer", "gfpgan", "codeformer", "real_esrgan_x2", "real_esrgan_x4", "xseg_1",
              "bisenet_resnet_34")
_ANALYSIS = ("buffalo_l/det_10g.onnx", "buffalo_l/w600k_r50.onnx")

JOBS: dict[str, Job] = {j.name: j for j in (
    Job("analyze", True, kinds=("analyser",), backends=("neural", "builtin"),
        needs=("buffalo_l",), uses=("dlib_analyser", "2dfan4")),
    Job("faceswap", True, kinds=("analyser", "swapper"), backends=("neural", "builtin"),
        needs=("buffalo_l", "inswapper_128"), uses=("dlib_analyser", "classical_swap", *_ENHANCERS)),
    Job("enhance", True, kinds=("restorer",), backends=("gfpgan", "codeformer", "builtin"),
        needs=("gfpgan",), uses=("dlib_analyser", *_ENHANCERS), builds_on=("analyze",)),
    Job("lipsync", True, kinds=("lipsync",), backends=("neural", "builtin"), needs=("wav2lip_gan",),
        uses=("lipsync_preview", "wav2lip_gan_96", "dlib_analyser", "buffalo_l", "gfpgan", "codeformer")),
    # The diffusion model alone makes the backend; buffalo_l gives the gender and age the prompt is built from (the
    # built-in analyser stands in without them), BiSeNet the face-and-hair inpaint region.
    Job("genderswap", True, kinds=("diffusion",), backends=("neural",),
        needs=("buffalo_l", "realistic_vision_v6", "sd15_vocab", "sd15_merges"),
        uses=("dlib_analyser", "bisenet_resnet_34")),
)}

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("dlib_analyser", "analyser", "builtin", "models.analysis.dlib_analyser:DlibAnalyser",
           shown_files=("face-recognition-models (package)",)),
    Family("classical_swap", "swapper", "builtin", "models.swap.classical_swap:ClassicalSwapper"),
    Family("buffalo_l", "analyser", "neural", "models.analysis.neural_analyser:NeuralAnalyser",
           weights="buffalo_l", files=_ANALYSIS, root="buffalo_l"),
    Family("inswapper_128", "swapper", "neural", "models.swap.inswapper:InSwapper",
           weights="inswapper_128", files=("inswapper_128.onnx",)),
    Family("builtin_restorer", "restorer", "builtin", "models.restore.builtin_enhance:BuiltinRestorer"),
    Family("gfpgan", "restorer", "gfpgan", "models.restore.restorer:FaceRestorer",
           weights="gfpgan_1.4", files=("gfpgan_1.4.onnx",), options=(("kind", "gfpgan"),)),
    Family("codeformer", "restorer", "codeformer", "models.restore.restorer:FaceRestorer",
           weights="codeformer", files=("codeformer.onnx",), options=(("kind", "codeformer"),)),
    Family("real_esrgan_x2", "upscaler", "2", "models.restore.upscaler:RealEsrganUpscaler",
           weights="real_esrgan_x2", files=("real_esrgan_x2.onnx",), options=(("scale", 2),)),
    Family("real_esrgan_x4", "upscaler", "4", "models.restore.upscaler:RealEsrganUpscaler",
           weights="real_esrgan_x4", files=("real_esrgan_x4.onnx",), options=(("scale", 4),)),
    Family("xseg_1", "mask", "occlusion", "models.masks.face_masks:OcclusionMasker",
           weights="xseg_1", files=("xseg_1.onnx",)),
    Family("bisenet_resnet_34", "mask", "parser", "models.masks.face_masks:FaceParser",
           weights="bisenet_resnet_34", files=("bisenet_resnet_34.onnx",)),
    Family("2dfan4", "landmarks", "neural", None, weights="2dfan4", files=("2dfan4.onnx",)),
    Family("lipsync_preview", "lipsync", "builtin", "models.lipsync.preview:PreviewLipSync"),
    # Both Wav2Lip families fill the neural slot; the ONNX one loads last, so it is used when present.
    Family("wav2lip_gan", "lipsync", "neural", "models.lipsync.wav2lip:TorchLipSync", weights="wav2lip_gan",
           files=("wav2lip_gan.pth",)),
    Family("wav2lip_gan_96", "lipsync", "neural", "models.lipsync.wav2lip:OnnxLipSync", weights="wav2lip_gan_96",
           files=("wav2lip_gan_96.onnx",)),
    Family("realistic_vision_v6", "diffusion", "neural", "models.diffusion.genderswap:GenderSwapPipeline",
           weights="realistic_vision_v6", files=("realisticVisionV60B1_v20Novae.safetensors",)),
    # The CLIP BPE files of SD 1.5's tokenizer, read by the family above (its JSON configs ship in the repo).
    Family("sd15_vocab", "diffusion", "vocab", None, weights="sd15_vocab", files=("sd15/tokenizer/vocab.json",)),
    Family("sd15_merges", "diffusion", "merges", None, weights="sd15_merges", files=("sd15/tokenizer/merges.txt",)),
)}

JOB_NAMES: tuple[str, ...] = tuple(JOBS)
IMPLEMENTED_JOBS: tuple[str, ...] = tuple(n for n, j in JOBS.items() if j.implemented)


def needed(job: str) -> tuple[str, ...]:
    """Families the job's neural path cannot run without, including those of the jobs it builds on."""
    j = JOBS[job]
    out = list(j.needs)
    for base in j.builds_on:
        out += [f for f in needed(base) if f not in out]
    return tuple(out)


def used(job: str) -> tuple[str, ...]:
    """Every family the job needs or uses."""
    needs = needed(job)
    return needs + tuple(f for f in JOBS[job].uses if f not in needs)


def families_for(jobs: Iterable[str]) -> list[Family]:
    """The loadable families the given jobs use (implemented jobs only), in registry order."""
    wanted: set[str] = set()
    for job in jobs:
        if job in JOBS and JOBS[job].implemented:
            wanted.update(used(job))
    return [f for f in FAMILIES.values() if f.name in wanted and f.loader is not None]


def files_needed(job: str) -> tuple[str, ...]:
    """Weight files without which the job has no neural backend (the job's own needs: what /readyz reports)."""
    out: list[str] = []
    for name in JOBS[job].needs:
        out += [f for f in FAMILIES[name].files if f not in out]
    return tuple(out)


def jobs_of_weights(weights: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(jobs using, jobs needing) the manifest entry ``weights``, in job order; both empty when unknown."""
    names = {f.name for f in FAMILIES.values() if f.weights == weights}
    using = tuple(j for j in JOBS if names & set(used(j)))
    needing = tuple(j for j in JOBS if names & set(needed(j)))
    return using, needing


def weights_providing(files: Iterable[str]) -> list[str]:
    """Manifest entries that provide ``files`` (unknown files are skipped), in first-seen order."""
    out: list[str] = []
    for rel in files:
        for f in FAMILIES.values():
            if f.weights is not None and rel in f.files and f.weights not in out:
                out.append(f.weights)
    return out


def fetch_command(weights: Iterable[str]) -> str:
    """The CLI line that downloads the given manifest entries: ``python -m app weights download buffalo_l …``."""
    names: list[str] = []
    for n in weights:
        if n not in names:
            names.append(n)
    return " ".join(["python -m app weights download", *(shlex.quote(n) for n in names)])
