"""POST /lipsync: the built-in preview over HTTP on the two-worker server (durations, loop modes, a still image, no
face, bad input, a job), audio/video sync at 25, 29.97 and 60 fps measured on the output file, and the neural path
on a random-weight Wav2Lip exported to ONNX. Every input is made here from Tom Hanks' photo and generated audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from app.services.lipsync import loop_index
from testkit.server import wait_for_job

SR = 48000
FPS = 25
FACE = 176  # Tom Hanks (112 px) scaled up; dlib finds the face reliably at this size
SIZE = (320, 240)


def hanks_face(hanks_bgr: np.ndarray) -> np.ndarray:
    return cv2.resize(hanks_bgr, (FACE, FACE), interpolation=cv2.INTER_CUBIC)


def face_frame(face: np.ndarray, i: int, marker: bool = True) -> np.ndarray:
    """The face on a grey canvas, drifting 1 px a frame; a white block in the top rows at x = 4·i marks the source
    frame (so the loop order can be read back from the output)."""
    w, h = SIZE
    img = np.full((h, w, 3), 110, np.uint8)
    x = 60 + (i % 40)
    img[40: 40 + FACE, x: x + FACE] = face
    if marker:
        img[:10, 4 * i: 4 * i + 4] = 255
    return img


def write_video(path: Path, frames: list[np.ndarray], fps: Fraction | int = FPS) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps))
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        vs.options = {"crf": "12"}
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="bgr24")
            vf.pts = i
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return path


def bursts(seconds: float, pattern: list[tuple[float, float]] | None = None, rate: int = SR) -> np.ndarray:
    """Tone bursts (220 + 660 Hz, amplitude 0.3) of different lengths: (on, off) seconds, repeated to fill."""
    pattern = pattern or [(0.12, 0.2), (0.32, 0.16), (0.44, 0.24), (0.08, 0.3), (0.2, 0.28)]
    n = int(round(seconds * rate))
    env = np.zeros(n, np.float32)
    t = 0.0
    k = 0
    while t < seconds:
        on, off = pattern[k % len(pattern)]
        env[int(t * rate): int(min(t + on, seconds) * rate)] = 1.0
        t += on + off
        k += 1
    tt = np.arange(n) / rate
    return (0.3 * env * (0.7 * np.sin(2 * np.pi * 220 * tt) + 0.3 * np.sin(2 * np.pi * 660 * tt))).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = SR) -> Path:
    with av.open(str(path), "w", format="wav") as out:
        st = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)[None]
        fr = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        fr.sample_rate = rate
        for p in st.encode(fr):
            out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    return path


def read_output(path: Path) -> tuple[list[np.ndarray], Fraction, np.ndarray, int]:
    """(frames, frame rate, decoded audio as mono float, audio rate) of an output MP4."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        rate = vs.average_rate
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(vs)]
    with av.open(str(path)) as c:
        assert c.streams.audio, "the output has no audio stream"
        a = c.streams.audio[0]
        chunks = [f.to_ndarray().reshape(f.to_ndarray().shape[0], -1).mean(axis=0) for f in c.decode(a)]
        return frames, Fraction(rate), np.concatenate(chunks).astype(np.float32), a.sample_rate


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, hanks_bgr: np.ndarray) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("lipsync")
    face = hanks_face(hanks_bgr)
    blank = [np.full((SIZE[1], SIZE[0], 3), 90 + 3 * i, np.uint8) for i in range(10)]
    cv2.imwrite(str(d / "portrait.png"), np.ascontiguousarray(face_frame(face, 0, marker=False)))
    return {
        "video": write_video(d / "face.mp4", [face_frame(face, i) for i in range(20)]),  # 0.8 s
        "audio": write_wav(d / "speech.wav", bursts(1.3)),  # longer than the video: loops
        "short": write_wav(d / "short.wav", bursts(0.5)),
        "blank": write_video(d / "blank.mp4", blank),
        "image": d / "portrait.png",
        "long": write_wav(d / "long.wav", np.zeros(31 * 8000, np.float32), rate=8000),  # over the 30 s limit
    }


def post(server, files: dict[str, Path], headers: dict | None = None, **options: str):  # noqa: ANN001, ANN201
    with server.client() as c:
        return c.post("/lipsync", headers=headers or {}, data=options,
                      files={k: (p.name, p.read_bytes(), "application/octet-stream") for k, p in files.items()})


def save(r, tmp_path: Path, name: str = "out.mp4") -> Path:  # noqa: ANN001
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    out = tmp_path / name
    out.write_bytes(r.content)
    return out


def marker_of(frame: np.ndarray) -> int:
    """The source frame number written by :func:`face_frame` into the top rows."""
    row = frame[2:8, :, :].mean(axis=(0, 2))
    return int(np.argmax(row > 180) // 4)


# ---- over HTTP ---------------------------------------------------------------------------------------------------


def test_duration_follows_the_audio_with_pingpong(builtin_server, media: dict[str, Path], tmp_path: Path) -> None:
    r = post(builtin_server, {"video": media["video"], "audio": media["audio"]})
    out = save(r, tmp_path)
    frames, rate, audio, arate = read_output(out)
    assert rate == FPS
    assert r.headers["x-face-backend"] == "builtin"
    assert r.headers["x-audio"] in ("copied", "reencoded-aac")
    assert int(r.headers["x-frames"]) == len(frames) == round(1.3 * FPS)
    assert int(r.headers["x-lipsync-frames"]) >= len(frames) - 2
    assert "model;dur=" in r.headers["server-timing"]
    assert abs(len(frames) / FPS - 1.3) <= 1 / FPS
    assert abs(audio.size / arate - 1.3) <= 1 / FPS
    assert [marker_of(f) for f in frames] == [loop_index(j, 20, "pingpong") for j in range(len(frames))]


@pytest.mark.parametrize("loop", ["repeat", "freeze"])
def test_loop_modes(builtin_server, media: dict[str, Path], tmp_path: Path, loop: str) -> None:
    r = post(builtin_server, {"video": media["video"], "audio": media["audio"]}, loop=loop)
    frames, _, _, _ = read_output(save(r, tmp_path))
    assert [marker_of(f) for f in frames] == [loop_index(j, 20, loop) for j in range(len(frames))]


def test_duration_video_cuts_the_audio(builtin_server, media: dict[str, Path], tmp_path: Path) -> None:
    r = post(builtin_server, {"video": media["video"], "audio": media["audio"]}, duration="video")
    frames, _, audio, arate = read_output(save(r, tmp_path))
    assert len(frames) == 20
    assert abs(audio.size / arate - 0.8) <= 1 / FPS
    # audio shorter than the video: the video's length is kept, the audio stream is there for its own length
    r = post(builtin_server, {"video": media["video"], "audio": media["short"]}, duration="video")
    frames, _, audio, arate = read_output(save(r, tmp_path, "short.mp4"))
    assert len(frames) == 20 and abs(audio.size / arate - 0.5) <= 1 / FPS


def test_still_image_with_fps(builtin_server, media: dict[str, Path], tmp_path: Path) -> None:
    r = post(builtin_server, {"image": media["image"], "audio": media["audio"]}, fps="30")
    frames, rate, audio, arate = read_output(save(r, tmp_path))
    assert rate == 30 and len(frames) == round(1.3 * 30)
    assert int(r.headers["x-lipsync-frames"]) == len(frames)
    assert abs(audio.size / arate - 1.3) <= 1 / 30
    # silent windows keep the mouth closed; loud ones open it
    still = cv2.imread(str(media["image"]))
    diffs = [float(np.abs(f.astype(np.int16) - still).mean()) for f in frames]
    assert max(diffs) > min(diffs) + 1.0


def test_video_without_a_face_passes_through(builtin_server, media: dict[str, Path], tmp_path: Path) -> None:
    r = post(builtin_server, {"video": media["blank"], "audio": media["short"]})
    frames, _, _, _ = read_output(save(r, tmp_path))
    assert r.headers["x-lipsync-frames"] == "0"
    assert len(frames) == round(0.5 * FPS)


@pytest.mark.parametrize(("files", "options", "status", "field"), [
    ({"video": "video", "audio": "image"}, {}, 415, "audio"),
    ({"video": "video", "audio": "long"}, {}, 413, "audio"),
    ({"video": "audio", "audio": "audio"}, {}, 415, "video"),
    ({"video": "video", "image": "image", "audio": "audio"}, {}, 422, None),
    ({"audio": "audio"}, {}, 422, "video"),
    ({"image": "image", "audio": "audio"}, {"fps": "0.5"}, 422, "fps"),
    ({"image": "image", "audio": "audio"}, {"fps": "240"}, 422, "fps"),
    ({"video": "video", "audio": "audio"}, {"pads": "0,10"}, 422, "pads"),
    ({"video": "video", "audio": "audio"}, {"enhance": "true"}, 503, "enhance"),
    ({"video": "video", "audio": "audio"}, {"backend": "neural"}, 503, "backend"),
])
def test_bad_input_names_the_field(builtin_server, media: dict[str, Path], files: dict, options: dict, status: int,
                                   field: str | None) -> None:
    r = post(builtin_server, {k: media[v] for k, v in files.items()}, **options)
    assert r.status_code == status, r.text
    got = r.json()["error"]["field"]
    assert got == field if field else got in ("video", "image")


def test_as_a_job(builtin_server, media: dict[str, Path], tmp_path: Path) -> None:
    r = post(builtin_server, {"video": media["video"], "audio": media["short"]}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    with builtin_server.client() as c:
        job = wait_for_job(c, location)
        assert job["state"] == "succeeded", job
        assert job["kind"] == "lipsync"
        assert job["progress"]["unit"] == "frames"
        assert job["progress"]["done"] == round(0.5 * FPS)
        assert job["result"]["headers"]["X-Face-Backend"] == "builtin"
        got = c.get(location + "/result")
    frames, _, audio, arate = read_output(save(got, tmp_path))
    assert len(frames) == round(0.5 * FPS) and audio.size > 0


# ---- audio/video sync, measured on the output file ---------------------------------------------------------------


def envelope(audio: np.ndarray, rate: int, fps: Fraction, n: int) -> np.ndarray:
    """RMS of the audio over each frame's display interval [i/fps, (i+1)/fps)."""
    out = np.zeros(n)
    for i in range(n):
        a, b = int(i * rate / fps), int((i + 1) * rate / fps)
        seg = audio[a:b]
        out[i] = float(np.sqrt(np.mean(seg.astype(np.float64) ** 2))) if seg.size else 0.0
    return out


def best_lag(x: np.ndarray, y: np.ndarray, max_lag: int = 6) -> tuple[int, float]:
    """The lag (frames; positive: y follows x) of the highest normalised cross-correlation, and its value."""
    x = (x - x.mean()) / (x.std() + 1e-9)
    y = (y - y.mean()) / (y.std() + 1e-9)
    scores = {}
    for lag in range(-max_lag, max_lag + 1):
        a, b = (x[: len(x) - lag], y[lag:]) if lag >= 0 else (x[-lag:], y[: len(y) + lag])
        scores[lag] = float(np.mean(a * b))
    lag = max(scores, key=scores.get)  # type: ignore[arg-type]
    return lag, scores[lag]


@pytest.fixture(scope="module")
def builtin_hub(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from models.hub import ModelHub

    hub = ModelHub(tmp_path_factory.mktemp("no_weights"), ["analyze", "lipsync"])
    hub.load()
    return hub


SYNC_RESULTS: dict[str, tuple[int, float]] = {}


@pytest.mark.parametrize("fps", [Fraction(25), Fraction(30000, 1001), Fraction(60)], ids=["25", "29.97", "60"])
def test_mouth_follows_the_audio_at_lag_zero(builtin_hub, hanks_bgr: np.ndarray, tmp_path: Path,
                                             fps: Fraction) -> None:
    from app.config import Settings
    from app.schemas import LipsyncOptions
    from app.services.lipsync import lipsync

    face = hanks_face(hanks_bgr)
    still = face_frame(face, 0, marker=False)
    seconds = 2.4
    video = write_video(tmp_path / "still.mp4", [still] * int(round(seconds * float(fps))), fps)
    audio = write_wav(tmp_path / "bursts.wav", bursts(seconds))
    result = lipsync(builtin_hub, LipsyncOptions(backend="builtin"), Settings(), audio, tmp_path / "out.mp4",
                     video_path=video)
    frames, rate, heard, arate = read_output(result.path)
    assert rate == fps
    # the mouth region: below the nose, between the mouth corners (from the landmarks of the still)
    lm = builtin_hub.analysers["builtin"].get(still)[0].landmarks
    x1, x2 = int(lm[48, 0]) - 4, int(lm[54, 0]) + 4
    y1, y2 = int(lm[33, 1]), int(lm[8, 1])
    change = np.array([np.abs(f[y1:y2, x1:x2].astype(np.float32) - still[y1:y2, x1:x2]).mean() for f in frames])
    env = envelope(heard, arate, fps, len(frames))
    lag, score = best_lag(env, change)
    SYNC_RESULTS[str(float(fps))] = (lag, score)
    print(f"sync at {float(fps):.2f} fps: peak at lag {lag} frames, correlation {score:.3f}")
    assert abs(lag) <= 1, (lag, score)
    assert score > 0.8


# ---- the neural path: the real Wav2Lip architecture with random weights, exported to ONNX -------------------------


@pytest.fixture(scope="module")
def wav2lip_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from Wav2Lip.export import export_onnx
    from Wav2Lip.model import Wav2Lip

    d = tmp_path_factory.mktemp("w2l_weights")
    torch.manual_seed(0)
    export_onnx(Wav2Lip().eval(), d / "wav2lip_gan_96.onnx")
    return d


def test_neural_backend_on_a_random_weight_export(wav2lip_weights: Path, hanks_bgr: np.ndarray,
                                                  tmp_path: Path) -> None:
    from app.config import Settings
    from app.schemas import LipsyncOptions
    from app.services.lipsync import lipsync
    from models.hub import ModelHub

    hub = ModelHub(wav2lip_weights, ["lipsync"])
    hub.load()
    assert hub.backends_for("lipsync") == ["neural", "builtin"]
    assert type(hub.loaded["lipsync"]["neural"]).__name__ == "OnnxLipSync"
    # the ONNX export stands in for wav2lip_gan.pth: /readyz reports the job whole, with nothing to download
    status = hub.job_status()["lipsync"]
    assert status["ready"] and status["missing_files"] == [] and status["command"] is None
    face = hanks_face(hanks_bgr)
    frames = [face_frame(face, i, marker=False) for i in range(12)]
    video = write_video(tmp_path / "face.mp4", frames)
    audio = write_wav(tmp_path / "a.wav", bursts(0.6))
    result = lipsync(hub, LipsyncOptions(backend="auto", batch_size=5), Settings(weights_dir=wav2lip_weights), audio,
                     tmp_path / "out.mp4", video_path=video)
    assert result.backend == "neural"
    assert result.frames == 15 and result.frames_synced >= 13
    out, _, heard, arate = read_output(result.path)
    assert len(out) == 15 and abs(heard.size / arate - 0.6) <= 1 / FPS
    # random weights paint noise into the lower face only: the eyes and the background stay the source's
    lm = hub.analysers["builtin"].get(frames[0])[0].landmarks
    eyes = slice(int(lm[19, 1]) - 4, int(lm[38, 1])), slice(int(lm[36, 0]), int(lm[45, 0]))
    mouth = slice(int(lm[51, 1]), int(lm[57, 1])), slice(int(lm[48, 0]), int(lm[54, 0]))
    d_eyes = np.abs(out[0][eyes].astype(np.float32) - frames[0][eyes]).mean()
    d_mouth = np.abs(out[0][mouth].astype(np.float32) - frames[0][mouth]).mean()
    d_background = np.abs(out[0][:, :40].astype(np.float32) - frames[0][:, :40]).mean()  # two H.264 round trips
    assert d_mouth > 10 and d_eyes < d_background + 2 and d_background < 8, (d_mouth, d_eyes, d_background)


def test_enhance_restores_the_mouth_region_only(hanks_bgr: np.ndarray, tmp_path: Path) -> None:
    """enhance=true runs the loaded restorer (here the GFPGAN stand-in: a blur and brightening) on the face and keeps
    it only inside the feathered lower-face mask: the mouth changes against enhance=false, the eyes do not."""
    from app.config import Settings
    from app.schemas import LipsyncOptions
    from app.services.lipsync import lipsync
    from models.hub import ModelHub
    from testkit.standins_enhance import FILENAMES, make_gfpgan

    weights = tmp_path / "weights"
    weights.mkdir()
    make_gfpgan(weights / FILENAMES["gfpgan"])
    hub = ModelHub(weights, ["analyze", "lipsync"])
    hub.load()
    assert "gfpgan" in hub.restorers
    face = hanks_face(hanks_bgr)
    frames = [face_frame(face, i, marker=False) for i in range(10)]
    video = write_video(tmp_path / "face.mp4", frames)
    audio = write_wav(tmp_path / "a.wav", bursts(0.4))
    outs = {}
    for enhance in (False, True):
        result = lipsync(hub, LipsyncOptions(backend="builtin", enhance=enhance), Settings(weights_dir=weights),
                         audio, tmp_path / f"out-{enhance}.mp4", video_path=video)
        assert result.headers().get("X-Face-Enhancer") == ("gfpgan" if enhance else None)
        outs[enhance] = read_output(result.path)[0]
    lm = hub.analysers["builtin"].get(frames[0])[0].landmarks
    eyes = slice(int(lm[19, 1]) - 4, int(lm[38, 1])), slice(int(lm[36, 0]), int(lm[45, 0]))
    mouth = slice(int(lm[51, 1]), int(lm[57, 1])), slice(int(lm[48, 0]), int(lm[54, 0]))
    plain, restored = outs[False][0].astype(np.float32), outs[True][0].astype(np.float32)
    d_mouth = np.abs(restored[mouth] - plain[mouth]).mean()
    d_eyes = np.abs(restored[eyes] - plain[eyes]).mean()
    print(f"enhance: mouth {d_mouth:.1f}, eyes {d_eyes:.2f}")
    assert d_mouth > 3.0 and d_eyes < 1.0, (d_mouth, d_eyes)


def test_preview_mouth_takes_the_lips_colour(builtin_hub, hanks_bgr: np.ndarray) -> None:
    """The built-in preview darkens the open mouth with the lips' own colour, dimmed: a black-and-white portrait
    gets a grey-dark mouth (it used to get a fixed purple one), and a tinted one a mouth of its tint."""
    from models.lipsync.preview import PreviewLipSync

    preview = PreviewLipSync()
    face = face_frame(hanks_face(hanks_bgr), 0, marker=False)
    grey = cv2.cvtColor(cv2.cvtColor(face, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    lm = builtin_hub.analysers["builtin"].get(grey)[0].landmarks
    for picture, tinted in ((grey, False), (np.clip(grey.astype(np.float32) * (0.8, 0.9, 1.2), 0, 255)
                                            .astype(np.uint8), True)):
        out = preview.animate(picture, lm, 1.0).astype(np.int16)
        dark = (np.abs(out - picture).max(axis=2) > 20) & (out.max(axis=2) < 60)  # the opened, darkened mouth
        assert dark.sum() > 20
        b, g, r = (out[..., c][dark].mean() for c in range(3))
        if tinted:
            assert r > b + 1  # the tint carries into the mouth
        else:
            assert max(b, g, r) - min(b, g, r) < 2.0, (b, g, r)
