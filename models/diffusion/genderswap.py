"""Stable Diffusion 1.5 (Realistic Vision V6 by default) through diffusers, for the gender swap: arrays in, arrays out.

Loading is offline by construction: ``from_single_file(ckpt, config=<local folder>, local_files_only=True)`` with the
SD 1.5 configuration of ``sd15_config/`` (overridable file by file from ``<weights>/sd15/``) and the CLIP tokenizer
built from the downloaded ``vocab.json`` + ``merges.txt``; ``HF_HUB_OFFLINE`` is set before diffusers is imported.
Without ``config`` diffusers would ask the hub even with ``local_files_only`` (and hang on a machine without a
network), so a missing file is a ``FileNotFoundError`` naming the download command instead.

diffusers, transformers and torch are imported in ``prepare`` only: a server without the genderswap job never pays
for them. One pipeline per worker process; its calls are serialised by a lock (schedulers and attention processors
are state on the shared modules).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_DIR = Path(__file__).resolve().parent / "sd15_config"
OVERRIDE_DIR = "sd15"  # relative to the weights dir: configs that override CONFIG_DIR's, and the tokenizer files
TOKENIZER_FILES = ("vocab.json", "merges.txt")
DOWNLOAD_COMMAND = "python -m app weights download genderswap"
SAMPLERS = ("dpmpp_sde_karras", "dpmpp_2m_sde_karras", "euler")
# Model (UNet) calls per denoising step: DPM++ SDE is a second-order single-step solver (two calls a step, the
# first step one); the multistep and Euler solvers make one.
SAMPLER_ORDER = {"dpmpp_sde_karras": 2, "dpmpp_2m_sde_karras": 1, "euler": 1}


def unet_calls(denoising_steps: int, sampler: str) -> int:
    """UNet calls (pipeline steps) of ``denoising_steps`` steps: 2k − 1 for DPM++ SDE, k otherwise."""
    order = SAMPLER_ORDER[sampler]
    return max(1, order * denoising_steps - (order - 1))
Progress = Callable[[int, int], None]  # (denoising steps done, total)


def set_offline() -> None:
    """Never let huggingface_hub reach a network: a missing file must fail at once, not hang."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["DIFFUSERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DISABLE_TELEMETRY", "1")


def pick_device(providers: list[str] | None) -> str:
    """``cuda`` when the hub chose the CUDA provider and torch sees a GPU, else ``cpu``."""
    import torch

    wants_cuda = providers is None or "CUDAExecutionProvider" in providers
    return "cuda" if wants_cuda and torch.cuda.is_available() else "cpu"


def _config_folder(dest: Path, overrides: Path | None, base: Path = CONFIG_DIR) -> Path:
    """``base`` copied to ``dest`` with every file found under ``overrides`` (same relative path) laid over it."""
    shutil.copytree(base, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
    if overrides is not None and overrides.is_dir():
        shutil.copytree(overrides, dest, dirs_exist_ok=True)
    return dest


@dataclass
class SwapResult:
    image: np.ndarray  # BGR uint8 at the size that was passed in
    steps: int  # denoising steps actually run (steps × strength)


class GenderSwapPipeline:
    """One SD 1.x checkpoint with an img2img and an inpaint view over the same modules (no second copy)."""

    name = "realistic_vision_v6"
    kind = "diffusion"

    def __init__(self, checkpoint: Path | None = None, *, folder: Path | None = None, overrides: Path | None = None,
                 config_dir: Path = CONFIG_DIR, device: str | None = None, providers: list[str] | None = None,
                 fp16: bool | None = None) -> None:
        if (checkpoint is None) == (folder is None):
            raise ValueError("give either a single-file checkpoint or a diffusers folder")
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.folder = Path(folder) if folder is not None else None
        self.overrides = Path(overrides) if overrides is not None else None
        self.config_dir = Path(config_dir)
        self._device = device
        self._providers = providers
        self._fp16 = fp16
        self.device = "cpu"
        self.dtype_name = "float32"
        self.pipe: Any = None
        self._views: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._memory: tuple[str, bool] | None = None

    # ---- loading ---------------------------------------------------------------------------------------
    @classmethod
    def load(cls, spec: Any) -> GenderSwapPipeline:
        """The hub's entry point: ``spec.path`` is the checkpoint; ``<weights>/sd15/`` holds the tokenizer files
        (and any config override)."""
        ckpt = Path(spec.path)
        return cls(ckpt, overrides=ckpt.parent / OVERRIDE_DIR, providers=list(spec.providers))

    def missing_files(self) -> list[str]:
        if self.folder is not None:
            return [] if (self.folder / "model_index.json").is_file() else [str(self.folder / "model_index.json")]
        missing = [] if self.checkpoint is not None and self.checkpoint.is_file() else [str(self.checkpoint)]
        tok = self._tokenizer_dir()
        return missing + [str(tok / f) for f in TOKENIZER_FILES if not (tok / f).is_file()]

    def _tokenizer_dir(self) -> Path:
        over = self.overrides / "tokenizer" if self.overrides is not None else None
        if over is not None and all((over / f).is_file() for f in TOKENIZER_FILES):
            return over
        base = self.config_dir / "tokenizer"
        return base if all((base / f).is_file() for f in TOKENIZER_FILES) else (over or base)

    def prepare(self) -> None:
        if self.pipe is not None:
            return
        missing = self.missing_files()
        if missing:
            raise FileNotFoundError(f"gender swap weights missing: {', '.join(missing)}; fetch them with "
                                    f"`{DOWNLOAD_COMMAND}`")
        set_offline()
        import torch
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

        self.device = self._device or pick_device(self._providers)
        fp16 = self._fp16 if self._fp16 is not None else self.device == "cuda"
        dtype = torch.float16 if fp16 else torch.float32
        self.dtype_name = "float16" if fp16 else "float32"
        common = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False,
                  "torch_dtype": dtype, "local_files_only": True}
        if self.folder is not None:
            pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(self.folder), **common)
        else:
            from transformers import CLIPTokenizer

            tokenizer = CLIPTokenizer.from_pretrained(str(self._tokenizer_dir()), local_files_only=True,
                                                      model_max_length=77)
            with tempfile.TemporaryDirectory(prefix="sd15-config-") as tmp:
                config = _config_folder(Path(tmp), self.overrides, self.config_dir)
                pipe = StableDiffusionImg2ImgPipeline.from_single_file(
                    str(self.checkpoint), config=str(config), tokenizer=tokenizer, **common)
        pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
            from diffusers.models.attention_processor import AttnProcessor2_0

            pipe.unet.set_attn_processor(AttnProcessor2_0())  # SDPA (flash / memory-efficient kernels on CUDA)
        self._base_scheduler = pipe.scheduler.config
        self.pipe = pipe
        self._views = {"img2img": pipe, "inpaint": StableDiffusionInpaintPipeline(**pipe.components)}
        for view in self._views.values():
            view.set_progress_bar_config(disable=True)

    # ---- settings ----------------------------------------------------------------------------------------
    def configure(self, attention_slicing: str = "off", vae_tiling: bool = False) -> None:
        """Memory settings (FACEAPI_DIFFUSION_ATTENTION_SLICING / _VAE_TILING): applied once, changed on demand."""
        wanted = (str(attention_slicing), bool(vae_tiling))
        if self._memory == wanted or self.pipe is None:
            return
        with self._lock:
            slicing, tiling = wanted
            if slicing == "off":
                self.pipe.disable_attention_slicing()
                from diffusers.models.attention_processor import AttnProcessor2_0

                self.pipe.unet.set_attn_processor(AttnProcessor2_0())
            else:
                self.pipe.enable_attention_slicing(int(slicing) if slicing.isdigit() else slicing)
            if tiling:
                self.pipe.vae.enable_tiling()
            else:
                self.pipe.vae.disable_tiling()
            self._memory = wanted

    def scheduler(self, sampler: str, seed: int = 0) -> Any:
        """A fresh scheduler per call, named as in the A1111 UI the checkpoint's card uses:
        ``dpmpp_sde_karras`` = DPM++ SDE Karras (Realistic Vision's recommended sampler: diffusers'
        DPMSolverSDEScheduler with Karras sigmas; its Brownian-tree noise is seeded with ``seed``, so a seed gives
        the same pixels), ``dpmpp_2m_sde_karras`` = DPM++ 2M SDE Karras (one UNet call a step, about half the
        time), ``euler`` = the reference's Euler."""
        from diffusers import DPMSolverMultistepScheduler, DPMSolverSDEScheduler, EulerDiscreteScheduler

        if sampler == "euler":
            return EulerDiscreteScheduler.from_config(self._base_scheduler)
        if sampler == "dpmpp_sde_karras":
            return DPMSolverSDEScheduler.from_config(self._base_scheduler, use_karras_sigmas=True,
                                                     noise_sampler_seed=int(seed))
        if sampler == "dpmpp_2m_sde_karras":
            return DPMSolverMultistepScheduler.from_config(
                self._base_scheduler, algorithm_type="sde-dpmsolver++", use_karras_sigmas=True, solver_order=2)
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")

    # ---- inference ---------------------------------------------------------------------------------------
    def swap(self, image_bgr: np.ndarray, mask: np.ndarray | None, prompt: str, negative: str, strength: float,
             steps: int, guidance: float, seed: int, callback: Progress | None = None,
             sampler: str = "dpmpp_sde_karras") -> SwapResult:
        """Repaint ``image_bgr`` (H and W multiples of 8): the whole picture (img2img) when ``mask`` is None, else
        the pixels where ``mask`` (H, W, float or uint8) is set (inpaint). Same seed, same input → same pixels."""
        import torch
        from PIL import Image

        if self.pipe is None:
            self.prepare()
        h, w = image_bgr.shape[:2]
        init = Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1]))
        kwargs: dict[str, Any] = {
            "prompt": prompt, "negative_prompt": negative or None, "image": init, "strength": float(strength),
            "num_inference_steps": int(steps), "guidance_scale": float(guidance), "output_type": "np",
        }
        if mask is not None:
            m = np.asarray(mask, np.float32)
            if m.max() > 1.0:
                m = m / 255.0
            kwargs.update(mask_image=Image.fromarray((m > 0).astype(np.uint8) * 255, "L"), height=h, width=w)
        done = [0]

        def on_step(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            done[0] = step + 1
            if callback is not None:
                callback(step + 1, int(getattr(pipe, "num_timesteps", 0) or steps))
            return tensors

        with self._lock:
            view = self._views["inpaint" if mask is not None else "img2img"]
            view.scheduler = self.scheduler(sampler, seed)
            generator = torch.Generator(device="cpu").manual_seed(int(seed))
            with torch.inference_mode():
                out = view(generator=generator, callback_on_step_end=on_step, **kwargs).images[0]
        rgb = np.nan_to_num(np.asarray(out, np.float32), nan=0.0)
        img = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)[:, :, ::-1]
        if img.shape[:2] != (h, w):
            import cv2

            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
        return SwapResult(np.ascontiguousarray(img), done[0])
