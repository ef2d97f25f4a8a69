"""``python -m bench genderswap``: seconds per image of the Stable Diffusion gender swap at 512², real-size networks.

The UNet, VAE and CLIP text encoder are built at their real SD 1.5 sizes from ``models/diffusion/sd15_config/``
with random weights (the compute is real; the pictures are noise). They enter ``GenderSwapPipeline.prepare``
in place of ``from_pretrained`` (nothing is written to disk, nothing touches a hub), so the pipeline, its SDPA
attention processor and its img2img / inpaint views are the ones the server runs, fp32 on CPU. The tokenizer is a
small byte-level CLIP BPE written here (the real vocabulary is a download); the text encoder runs on 77 padded
tokens either way, so its compute is the real one.

Configurations, 512² input, guidance 12, 30 steps × strength 0.6 = 18 denoising steps in production:

- ``ours-inpaint``: our default, inpaint of the face+hair crop at the working size (512², the upper bound of a
  crop whose long side is 512), feathered face mask, DPM++ SDE Karras;
- ``ours-img2img``: ``method=img2img`` with our default sampler (DPM++ SDE Karras), the whole picture;
- ``reference``: the reference's settings, whole-picture img2img with Euler.

On this CPU only ``--steps`` denoising steps run (2 by default: 30 steps with strength (steps + 0.5) / 30, so the
scheduler is the 30-step one). Forward hooks time every UNet call (classifier-free guidance batches the two prompts
into one call; DPM++ SDE Karras makes two calls a step, 2k - 1 for k steps, Euler one), the text encoder and the VAE
encoder / decoder. ``step_s`` is the median of the UNet calls after the first (the first carries the process's
one-time warm-up, reported as ``first_step_s``), and ``proj_18_s = total_s + (calls of 18 steps - calls run) ×
step_s`` (35 calls for DPM++ SDE, 18 for Euler) is the projected time of one image at the production settings, the
first call's warm-up included. Each configuration runs in a fresh subprocess: ``load_rss_mb`` is the peak RSS
(/proc VmHWM) after the pipeline is built, ``peak_rss_mb`` after the image, i.e. one worker's peak.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import run_child, status_mb, table, write
from testkit.tiny_tokenizer import write_tokenizer

COLUMNS = ["config", "method", "sampler", "size", "steps", "unet_calls", "text_s", "vae_enc_s", "first_step_s",
           "step_s", "vae_dec_s", "other_s", "total_s", "proj_18_s", "load_rss_mb", "peak_rss_mb"]
SIZE = 512
PROD_STEPS, PROD_STRENGTH, GUIDANCE = 30, 0.6, 12.0
PROD_RUN = int(PROD_STEPS * PROD_STRENGTH)  # 18 denoising steps
CONFIGS: dict[str, dict[str, Any]] = {
    "ours-inpaint": {"method": "inpaint", "sampler": "dpmpp_sde_karras"},
    "ours-img2img": {"method": "img2img", "sampler": "dpmpp_sde_karras"},
    "reference": {"method": "img2img", "sampler": "euler"},
}


def random_sd15(config_dir: Path, tokenizer_dir: Path, seed: int = 0) -> dict[str, Any]:
    """The SD 1.5 UNet, VAE and text encoder at their real sizes from the repo's configs, random weights."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(config_dir / "unet")))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(config_dir / "vae")))
    text = CLIPTextModel(CLIPTextConfig.from_json_file(str(config_dir / "text_encoder" / "config.json")))
    scheduler = PNDMScheduler.from_config(PNDMScheduler.load_config(str(config_dir / "scheduler")))
    tokenizer = CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"),
                              model_max_length=77)
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text.eval(), "tokenizer": tokenizer,
            "scheduler": scheduler}


def face_mask(size: int) -> np.ndarray:
    """A feathered face+hair ellipse in the crop (float32 0..1), about the share of a real face+hair crop."""
    import cv2

    m = np.zeros((size, size), np.float32)
    cv2.ellipse(m, (size // 2, int(size * 0.48)), (int(size * 0.36), int(size * 0.42)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(m, (0, 0), size * 0.03)


class _Clock:
    """Forward pre/post hooks that time each call of a module (seconds, in call order)."""

    def __init__(self, module: Any) -> None:
        self.calls: list[float] = []
        self._t = 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, *_: Any) -> None:
        self._t = time.perf_counter()

    def _post(self, *_: Any) -> None:
        self.calls.append(time.perf_counter() - self._t)


# ------------------------------------------------------------------------------------------- one subprocess
def child(args: Any) -> None:
    """One configuration in this (fresh) process: build, one image, the breakdown and VmHWM. Prints one JSON."""
    import diffusers
    import torch

    from app.services.genderswap import build_prompt, negative_prompt
    from models.diffusion.genderswap import CONFIG_DIR, GenderSwapPipeline, unet_calls

    cfg = CONFIGS[args.child]
    size, steps = args.size, args.steps
    with tempfile.TemporaryDirectory(prefix="bench-gs-") as tmp:
        comps = random_sd15(CONFIG_DIR, write_tokenizer(Path(tmp) / "tokenizer"))

    def from_pretrained(_folder: str, **kw: Any) -> Any:  # the checkpoint load, replaced by the random modules
        pipe = diffusers.StableDiffusionImg2ImgPipeline(**comps, safety_checker=None, feature_extractor=None,
                                                        requires_safety_checker=False)
        return pipe.to(dtype=kw.get("torch_dtype", torch.float32))

    t0 = time.perf_counter()
    diffusers.StableDiffusionImg2ImgPipeline.from_pretrained = from_pretrained  # type: ignore[method-assign]
    model = GenderSwapPipeline(folder=CONFIG_DIR, device="cpu", fp16=False)  # CONFIG_DIR has a model_index.json
    model.prepare()
    build_s = time.perf_counter() - t0
    load_rss = status_mb("VmHWM")
    pipe = model.pipe
    unet, text, enc, dec = (_Clock(m) for m in (pipe.unet, pipe.text_encoder, pipe.vae.encoder, pipe.vae.decoder))

    yy, xx = np.mgrid[0:size, 0:size]
    image = np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size], -1).astype(np.uint8)
    mask = face_mask(size) if cfg["method"] == "inpaint" else None
    strength = (steps + 0.5) / PROD_STEPS  # int(30 × strength) = steps on the 30-step schedule
    t0, c0 = time.perf_counter(), time.process_time()
    res = model.swap(image, mask, build_prompt("female", 35), negative_prompt(), strength, PROD_STEPS, GUIDANCE,
                     seed=0, sampler=cfg["sampler"])
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    calls = unet_calls(steps, cfg["sampler"])  # DPM++ SDE: two UNet calls a step (2k - 1)
    assert res.steps == calls == len(unet.calls), (res.steps, calls, unet.calls)
    step = statistics.median(unet.calls[1:]) if calls > 1 else unet.calls[0]
    timed = sum(text.calls) + sum(enc.calls) + sum(unet.calls) + sum(dec.calls)
    row = {
        "config": args.child, **cfg, "size": f"{size}²", "steps": steps, "unet_calls": calls,
        "text_s": sum(text.calls), "vae_enc_s": sum(enc.calls), "first_step_s": unet.calls[0], "step_s": step,
        "vae_dec_s": sum(dec.calls), "other_s": total - timed, "total_s": total,
        "proj_18_s": total + (unet_calls(PROD_RUN, cfg["sampler"]) - calls) * step,
        "load_rss_mb": load_rss, "peak_rss_mb": status_mb("VmHWM"), "build_s": build_s, "cpu_s": cpu,
        "unet_calls_s": unet.calls, "threads": torch.get_num_threads(), "guidance": GUIDANCE,
        "unet_params_m": sum(p.numel() for p in pipe.unet.parameters()) / 1e6,
        "vae_params_m": sum(p.numel() for p in pipe.vae.parameters()) / 1e6,
        "text_params_m": sum(p.numel() for p in pipe.text_encoder.parameters()) / 1e6,
    }
    print(json.dumps(row), flush=True)


def _run_child(config: str, size: int, steps: int) -> dict[str, Any]:
    return run_child(["-m", "bench", "genderswap", "--child", config, "--size", str(size), "--steps", str(steps)])


def main(args: Any) -> None:
    if args.child:
        child(args)
        return
    wanted = [c.strip() for c in args.configs.split(",") if c.strip()] if args.configs else list(CONFIGS)
    rows: list[dict[str, Any]] = []
    for name in wanted:
        rows.append(_run_child(name, args.size, args.steps))
        print(table([rows[-1]], COLUMNS).splitlines()[-1], flush=True)
    r = rows[0]
    print(f"\ngender swap, real-size SD 1.5 (UNet {r['unet_params_m']:.0f} M, VAE {r['vae_params_m']:.0f} M, text "
          f"{r['text_params_m']:.0f} M parameters, random weights, fp32, {r['threads']} torch threads, "
          f"{os.cpu_count()} CPUs), {args.size}², guidance {GUIDANCE:g}; {args.steps} denoising steps run on the "
          f"30-step schedule; proj_18_s = total_s + (UNet calls of 18 steps - calls run) × step_s ({PROD_STEPS} "
          f"steps × strength {PROD_STRENGTH:g}); each configuration in a fresh process, RSS = /proc VmHWM")
    print(table(rows, COLUMNS))
    print(f"\nwrote {write('genderswap', {'columns': COLUMNS, 'rows': rows, 'size': args.size, 'steps': args.steps})}")
