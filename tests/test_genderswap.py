"""Gender swap on a tiny random-weight Stable Diffusion built here from configs: the single-file loading path (the
checkpoint written in the original SD key layout, loaded offline with a local config folder), and the endpoints
in-process (inpaint keeps the pixels outside its mask, size/alpha/EXIF kept, seeds reproduce, /api/swap/'s contract,
503 with the download command, 422/413 naming fields, the black-image retry, per-step job progress). No network."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

pytest.importorskip("diffusers")

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from models.diffusion.genderswap import GenderSwapPipeline  # noqa: E402
from testkit.tiny_tokenizer import write_tokenizer

CKPT = "realisticVisionV60B1_v20Novae.safetensors"
COMMAND = "python -m app weights download genderswap"
FAST = {"steps": "4", "strength": "0.5", "width": "256", "target_gender": "female"}  # 2 denoising steps at 256²


# ---- a tiny SD 1.x, written in the layouts the loader reads ----------------------------------------------------
def tiny_components(seed: int = 0) -> dict[str, Any]:
    """diffusers' fast-test sizes: UNet blocks 32/64 with cross-attention 32 (attention on the coarse level only), a
    4-level VAE of 32 channels (so the latent is 1/8 of the image, as SD's), a 2-layer CLIP text model of width 32."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 32, 32), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
        sample_size=256)
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-5,
        num_attention_heads=4, num_hidden_layers=2, pad_token_id=1, vocab_size=1000, max_position_embeddings=77))
    return {"unet": unet, "vae": vae, "text_encoder": text}


def write_tiny_weights(weights: Path) -> tuple[Path, dict[str, Any]]:
    """``weights/<Realistic Vision file name>`` (single file, original key layout) and ``weights/sd15/`` (the tiny
    configs overriding the repo's SD 1.5 ones, and the tokenizer files), as the hub loads them."""
    from safetensors.torch import save_file

    from models.diffusion.checkpoint import to_single_file

    comps = tiny_components()
    weights.mkdir(parents=True, exist_ok=True)
    save_file(to_single_file(comps["unet"], comps["vae"], comps["text_encoder"]), str(weights / CKPT))
    sd15 = weights / "sd15"
    for name in ("unet", "vae"):
        (sd15 / name).mkdir(parents=True, exist_ok=True)
        (sd15 / name / "config.json").write_text(json.dumps(dict(comps[name].config)))
    comps["text_encoder"].config.save_pretrained(sd15 / "text_encoder")
    write_tokenizer(sd15 / "tokenizer")
    return weights, comps


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return write_tiny_weights(tmp_path_factory.mktemp("gs") / "weights")


def _img() -> np.ndarray:
    return (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def single(tiny: tuple[Path, dict[str, Any]]) -> GenderSwapPipeline:
    weights, _ = tiny
    return GenderSwapPipeline(weights / CKPT, overrides=weights / "sd15")


def test_single_file_loads_offline_with_the_local_config(tiny: tuple[Path, dict[str, Any]], single: GenderSwapPipeline,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint in Realistic Vision's layout loads through from_single_file(config=<local folder>,
    local_files_only=True) with every socket refused, and gives back exactly the weights that were saved."""
    import torch

    weights, comps = tiny

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    pipe = single
    pipe.prepare()
    assert pipe.device == "cpu" and pipe.dtype_name == "float32"
    for name in ("unet", "vae", "text_encoder"):
        saved, loaded = comps[name].state_dict(), getattr(pipe.pipe, name).state_dict()
        assert saved.keys() == loaded.keys(), name
        assert all(torch.equal(saved[k], loaded[k]) for k in saved), name
    mask = np.zeros((64, 64), np.float32)
    mask[16:48, 16:48] = 1
    steps: list[tuple[int, int]] = []
    a = pipe.swap(_img(), mask, "a photo of a woman", "nsfw", 0.5, 4, 7.5, 7, lambda d, t: steps.append((d, t)))
    b = pipe.swap(_img(), mask, "a photo of a woman", "nsfw", 0.5, 4, 7.5, 7, sampler="euler")
    c = pipe.swap(_img(), mask, "a photo of a woman", "nsfw", 0.5, 4, 7.5, 7, sampler="dpmpp_2m_sde_karras")
    again = pipe.swap(_img(), mask, "a photo of a woman", "nsfw", 0.5, 4, 7.5, 7)
    other = pipe.swap(_img(), mask, "a photo of a woman", "nsfw", 0.5, 4, 7.5, 8)
    assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8
    # DPM++ SDE Karras (the default) is second order: 2 denoising steps are 3 UNet calls, and progress counts them
    assert steps == [(1, 3), (2, 3), (3, 3)] and a.steps == 3 and b.steps == 2 and c.steps == 2
    assert not np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)  # really switched
    # its Brownian-tree noise is seeded by the request's seed: same seed, same pixels; another seed, others
    assert np.array_equal(a.image, again.image) and not np.array_equal(a.image, other.image)


def test_missing_files_fail_at_once_with_the_command(tmp_path: Path, tiny: tuple[Path, dict[str, Any]]) -> None:
    weights, _ = tiny
    (tmp_path / CKPT).symlink_to(weights / CKPT)
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="python -m app weights download genderswap"):
        GenderSwapPipeline(tmp_path / CKPT, overrides=tmp_path / "sd15").prepare()
    assert time.perf_counter() - t0 < 2


def test_diffusers_folder_layout_gives_the_same_pixels(tmp_path: Path, tiny: tuple[Path, dict[str, Any]],
                                                       single: GenderSwapPipeline) -> None:
    """A diffusers folder (save_pretrained) loads too, and the same weights + seed give the same image."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    weights, comps = tiny
    tok = CLIPTokenizer.from_pretrained(str(weights / "sd15" / "tokenizer"), model_max_length=77)
    sched = single.config_dir / "scheduler"
    from diffusers import PNDMScheduler

    StableDiffusionPipeline(**comps, tokenizer=tok, scheduler=PNDMScheduler.from_pretrained(str(sched)),
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(tmp_path / "folder")
    # the published scheduler file, as a downloaded SD 1.5 folder has it (save_pretrained writes every default out,
    # e.g. PNDM's timestep_spacing, which the samplers would then inherit instead of their own)
    shutil.copy(sched / "scheduler_config.json", tmp_path / "folder" / "scheduler" / "scheduler_config.json")
    folder = GenderSwapPipeline(folder=tmp_path / "folder")
    args = (_img(), None, "a photo of a man", "", 0.5, 4, 7.5, 3)
    assert np.array_equal(single.swap(*args).image, folder.swap(*args).image)


# ---- the endpoints, in-process ----------------------------------------------------------------------------------
def _settings(root: Path, weights: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {"enabled_jobs": ["analyze", "genderswap"], "execution_provider": "cpu", **extra}
    return Settings(weights_dir=weights, data_dir=root / "data", temp_dir=root / "data" / "tmp",
                    storage_url=str(root / "bucket"), **values)


def _client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        hub = client.app.state.hub  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while not hub.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        yield client


@pytest.fixture(scope="module")
def client(tiny: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    weights, _ = tiny
    yield from _client(_settings(tmp_path_factory.mktemp("gs_app"), weights))


@pytest.fixture(scope="module")
def face_box(client: TestClient, t1_bgr: np.ndarray) -> np.ndarray:
    from models.face import best_face

    faces = client.app.state.hub.analyser("builtin").get(t1_bgr)  # type: ignore[attr-defined]
    return np.asarray(best_face(faces).bbox, np.float32)


def _png(img: np.ndarray, alpha: np.ndarray | None = None) -> bytes:
    rgb = img[:, :, ::-1]
    im = Image.fromarray(np.dstack([rgb, alpha]) if alpha is not None else rgb)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _open(content: bytes) -> Image.Image:
    return Image.open(io.BytesIO(content))


def _bgr(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"))[:, :, ::-1]


def _around(box: np.ndarray, shape: tuple[int, ...], grow: float) -> np.ndarray:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    m = np.zeros(shape[:2], bool)
    m[max(int(y1 - grow * h), 0):int(y2 + grow * h), max(int(x1 - grow * w), 0):int(x2 + grow * w)] = True
    return m


def _post(client: TestClient, data: bytes, **fields: str) -> Any:
    return client.post("/genderswap", files={"image": ("in.png", data)}, data={**FAST, **fields})


def test_inpaint_repaints_face_and_hair_only_and_keeps_size_and_alpha(
        client: TestClient, t1_bgr: np.ndarray, face_box: np.ndarray) -> None:
    alpha = np.full(t1_bgr.shape[:2], 255, np.uint8)
    alpha[:40, :40] = 0
    alpha[-60:, :] = 128
    r = _post(client, _png(t1_bgr, alpha), seed="1234")
    assert r.status_code == 200, r.text
    assert r.headers["x-face-backend"] == "neural" and r.headers["x-seed"] == "1234"
    assert r.headers["x-target-gender"] == "female" and r.headers["x-faces-swapped"] == "1"
    assert r.headers["x-genderswap-mask"] == "landmarks" and r.headers["x-black-retry"] == "0"
    im = _open(r.content)
    assert im.mode == "RGBA" and im.size == (t1_bgr.shape[1], t1_bgr.shape[0])
    assert np.array_equal(np.asarray(im)[:, :, 3], alpha)
    diff = np.abs(_bgr(im).astype(int) - t1_bgr.astype(int)).max(axis=2)
    assert diff[~_around(face_box, diff.shape, 0.9)].max() == 0  # every pixel away from the face is the input's
    assert diff[_around(face_box, diff.shape, -0.2)].mean() > 10  # the face itself was repainted
    changed = diff > 0
    assert changed.sum() < 0.2 * changed.size


def test_the_same_seed_gives_the_same_bytes(client: TestClient, t1_bgr: np.ndarray) -> None:
    data = _png(t1_bgr)
    a, b, c = (_post(client, data, seed=s) for s in ("77", "77", "78"))
    assert a.status_code == b.status_code == c.status_code == 200
    assert a.content == b.content and a.content != c.content
    d = _post(client, data)  # seed -1: a random seed, reported
    assert d.status_code == 200 and 0 <= int(d.headers["x-seed"]) < 2**32
    again = _post(client, data, seed=d.headers["x-seed"])
    assert again.content == d.content


def test_exif_orientation_is_applied_and_kept_upright(client: TestClient, t1_bgr: np.ndarray,
                                                      face_box: np.ndarray) -> None:
    stored = Image.fromarray(t1_bgr[:, :, ::-1]).transpose(Image.Transpose.ROTATE_90)  # displayed upright with tag 6
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif)
    from PIL import ImageOps

    upright = _bgr(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
    r = client.post("/genderswap", files={"image": ("in.jpg", buf.getvalue())}, data={**FAST, "seed": "5"})
    assert r.status_code == 200, r.text
    out = _bgr(_open(r.content))
    assert out.shape == t1_bgr.shape
    diff = np.abs(out.astype(int) - upright.astype(int)).max(axis=2)
    assert diff[~_around(face_box, diff.shape, 0.9)].max() == 0


def test_img2img_repaints_the_whole_picture(client: TestClient, t1_bgr: np.ndarray, face_box: np.ndarray) -> None:
    r = _post(client, _png(t1_bgr), method="img2img", seed="9", sampler="euler")
    assert r.status_code == 200, r.text
    assert r.headers["x-genderswap-mask"] == "none" and r.headers["x-sampler"] == "euler"
    out = _bgr(_open(r.content))
    assert out.shape == t1_bgr.shape
    diff = np.abs(out.astype(int) - t1_bgr.astype(int)).max(axis=2)
    assert diff[~_around(face_box, diff.shape, 0.9)].mean() > 10  # the background too, as the reference does
    # provenance: a whole repainted picture is made by the model; an inpainted face is an edit of the user's photo
    assert _source_type(r.content).endswith("/trainedAlgorithmicMedia")
    inpaint = _post(client, _png(t1_bgr), seed="9")
    assert _source_type(inpaint.content).endswith("/compositeWithTrainedAlgorithmicMedia")


def _source_type(data: bytes) -> str:
    from app.media import provenance

    im = _open(data)
    packet = im.info.get("xmp") or im.info.get(provenance.PNG_XMP_KEY)
    return provenance.read_xmp_fields(packet or b"").get("DigitalSourceType", "")


def test_api_swap_keeps_the_reference_contract(client: TestClient, t1_bgr: np.ndarray) -> None:
    ok, jpg = cv2.imencode(".jpg", t1_bgr)
    form = {"encoded_base_img": base64.b64encode(jpg.tobytes()).decode(), "current_gender": "male",
            "img_width": "256", "seed": "42", "num_inference_steps": "4", "guidance_scale": "12", "strength": "0.5"}
    r = client.post("/api/swap/", data=form)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"mime", "image"} and body["mime"] == "image/png"
    out = _open(base64.b64decode(body["image"]))
    assert out.format == "PNG" and out.size == (t1_bgr.shape[1], t1_bgr.shape[0])
    assert r.headers["x-seed"] == "42" and r.headers["x-target-gender"] == "female"
    # the same request as multipart, with a data: URL, answers the same image
    form["encoded_base_img"] = "data:image/jpeg;base64," + form["encoded_base_img"]
    r2 = client.post("/api/swap/", files={k: (None, v) for k, v in form.items()})
    assert r2.status_code == 200 and r2.json() == body
    bad = client.post("/api/swap/", data={**form, "current_gender": "robot"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "current_gender"
    bad = client.post("/api/swap/", data={**form, "num_inference_steps": "0"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "num_inference_steps"


@pytest.mark.parametrize(("field", "value"), [
    ("strength", "0"), ("strength", "1.5"), ("steps", "0"), ("steps", "101"), ("guidance", "-1"),
    ("guidance", "31"), ("target_gender", "robot"), ("method", "txt2img"), ("faces", "some"), ("width", "64"),
    ("colour", "red"),
])
def test_bad_options_are_422_naming_the_field(client: TestClient, field: str, value: str) -> None:
    r = client.post("/genderswap", files={"image": ("x.png", b"not read")}, data={field: value})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_bad_input_cases(client: TestClient, t1_bgr: np.ndarray) -> None:
    r = _post(client, _png(np.full((300, 300, 3), 128, np.uint8)))
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_face"
    r = _post(client, _png(t1_bgr), faces="all")  # t1 has 6 faces; FACEAPI_GENDERSWAP_MAX_FACES is 4
    assert r.status_code == 422 and r.json()["error"]["field"] == "faces"
    tall = np.vstack([t1_bgr, np.full((900, t1_bgr.shape[1], 3), 90, np.uint8)])
    r = _post(client, _png(tall), method="img2img", width="1024")
    assert r.status_code == 413 and r.json()["error"]["field"] == "image"
    r = _post(client, _png(t1_bgr), target_gender="auto")  # the built-in analyser estimates no gender
    assert r.status_code == 422 and r.json()["error"]["field"] == "target_gender"
    r = _post(client, b"GIF89a broken")
    assert r.status_code == 422 and r.json()["error"]["field"] == "image"


class _BlackFirst:
    """Wraps the loaded pipeline: the first ``black`` outputs are all black (a checkpoint's safety behaviour)."""

    def __init__(self, inner: Any, black: int) -> None:
        self.inner, self.black, self.strengths = inner, black, []

    def configure(self, *args: Any) -> None:
        self.inner.configure(*args)

    def swap(self, image: np.ndarray, mask: Any, prompt: str, negative: str, strength: float, *args: Any,
             **kwargs: Any) -> Any:
        self.strengths.append(strength)
        res = self.inner.swap(image, mask, prompt, negative, strength, *args, **kwargs)
        if self.black > 0:
            self.black -= 1
            res.image = np.zeros_like(res.image)
        return res


@pytest.mark.parametrize("black", [1, 2])
def test_an_all_black_output_is_retried_once_with_more_strength(client: TestClient, t1_bgr: np.ndarray,
                                                                 black: int) -> None:
    hub = client.app.state.hub  # type: ignore[attr-defined]
    real = hub.loaded["diffusion"]["neural"]
    stand_in = _BlackFirst(real, black)
    hub.loaded["diffusion"]["neural"] = stand_in
    try:
        r = _post(client, _png(t1_bgr), seed="3")
    finally:
        hub.loaded["diffusion"]["neural"] = real
    assert stand_in.strengths == [0.5, 0.6]
    if black == 1:
        assert r.status_code == 200, r.text
        assert r.headers["x-black-retry"] == "1" and r.headers["x-strength"] == "0.6"
        assert _bgr(_open(r.content)).max() > 3
    else:
        assert r.status_code == 500 and r.json()["error"]["code"] == "black_output"
        assert "all-black" in r.json()["error"]["message"]


def test_a_job_reports_progress_per_denoising_step(client: TestClient, t1_bgr: np.ndarray) -> None:
    from app.schemas import GenderSwapOptions
    from app.services.genderswap import genderswap, genderswap_request

    hub = client.app.state.hub  # type: ignore[attr-defined]
    settings = client.app.state.settings  # type: ignore[attr-defined]
    calls: list[tuple[int, int | None]] = []
    opts = GenderSwapOptions(steps=6, strength=0.5, width=256, target_gender="male", seed=11)
    genderswap(hub, genderswap_request(settings, opts, _png(t1_bgr)), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 5) for i in range(1, 6)]  # 3 denoising steps of DPM++ SDE: 5 UNet calls

    r = client.post("/genderswap", files={"image": ("in.png", _png(t1_bgr))}, data={**FAST, "seed": "21"},
                    headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    url = r.headers["location"]
    deadline = time.monotonic() + 60
    while (job := client.get(url).json())["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job["state"] == "succeeded", job
    assert job["progress"]["unit"] == "steps" and job["progress"]["done"] == job["progress"]["total"] == 3
    result = client.get(url + "/result")
    assert result.status_code == 200
    sync = _post(client, _png(t1_bgr), seed="21")
    assert result.content == sync.content  # the job did the work of the endpoint


def test_without_weights_503_names_the_command_before_reading_the_image(tmp_path: Path) -> None:
    for jobs, hint in ((["analyze", "genderswap"], COMMAND), (["analyze"], "FACEAPI_ENABLED_JOBS")):
        settings = _settings(tmp_path / "-".join(jobs), tmp_path / "empty", enabled_jobs=jobs)
        for client in _client(settings):
            r = client.post("/genderswap", files={"image": ("x.png", b"not an image at all")})
            assert r.status_code == 503, r.text
            assert hint in r.json()["error"]["message"] and COMMAND in r.json()["error"]["message"]
            r = client.post("/api/swap/", data={"encoded_base_img": "bm90IGFuIGltYWdl"})
            assert r.status_code == 503 and COMMAND in r.json()["error"]["message"]
            ready = client.get("/readyz").json()["jobs"]
            if "genderswap" in jobs:
                assert ready["genderswap"]["ready"] is False
                assert CKPT in ready["genderswap"]["missing_files"]


def test_the_inpaint_region_is_face_and_hair_from_the_parser_else_the_landmarks(t1_bgr: np.ndarray, faces: list,
                                                                               parser: Any) -> None:
    """BiSeNet (the stand-in: skin in an ellipse, hair in a band above it) gives the region when loaded; without it,
    the enlarged landmark hull. Either way the mask is feathered and exactly 0 away from the face."""
    from app.services.genderswap import region_mask

    face = max(faces, key=lambda f: f.area)
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    # The parser sees the face's ffhq crop zoomed out 4/3 (about 3 face widths), so long hair may reach that far.
    for p, kind, reach in ((parser, "bisenet", 2.0), (None, "landmarks", 1.0)):
        soft, got = region_mask(t1_bgr, face, p)
        assert got == kind
        assert soft.shape == t1_bgr.shape[:2] and soft.dtype == np.float32
        assert soft.min() == 0.0 and soft.max() == 1.0
        assert soft[int((y1 + y2) / 2), int((x1 + x2) / 2)] == 1.0  # the face centre is fully repainted
        assert soft[~_around(face.bbox, soft.shape, reach)].max() == 0.0  # nothing far from the face
        assert soft[: int(y1), int(x1):int(x2)].max() > 0.5  # the hair above the face box is in
        assert 0 < np.count_nonzero((soft > 0) & (soft < 1)) < np.count_nonzero(soft == 1)  # a feathered edge
