"""POST /faceswap/video on a real two-worker server with the built-in backend: a short clip made from a real photo
(the camera pans over t1.jpg's faces) with an AAC tone, swapped synchronously and as a job."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from testkit.clips import write_frames_clip
from testkit.server import wait_for_job

FPS = 25
FRAMES = 12
SIZE = (320, 240)  # a crop of t1.jpg around one face (x 452–577), panned 3 px per frame
ORIGIN = (400, 240)


def pan_frames(t1: np.ndarray, frames: int = FRAMES) -> list[np.ndarray]:
    x0, y0 = ORIGIN
    w, h = SIZE
    return [np.ascontiguousarray(t1[y0: y0 + h, x0 + 3 * i: x0 + 3 * i + w]) for i in range(frames)]


def read_video(path: Path) -> tuple[list[np.ndarray], float | None, float]:
    """(frames as BGR, audio duration in seconds or None, video duration)."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(vs)]
        vdur = float(vs.duration * vs.time_base) if vs.duration else len(frames) / FPS
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return frames, None, vdur
        a = c.streams.audio[0]
        samples = sum(fr.samples for fr in c.decode(a))
        return frames, samples / a.sample_rate, vdur


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory: pytest.TempPathFactory, t1_bgr: np.ndarray) -> Path:
    return write_frames_clip(tmp_path_factory.mktemp("video") / "pan.mp4", pan_frames(t1_bgr), FPS)


def _post(server, clip: Path, source: Path, headers: dict | None = None, **options: str):  # noqa: ANN001, ANN202
    with server.client() as c:
        return c.post("/faceswap/video", headers=headers or {}, data=options, files={
            "source_image": (source.name, source.read_bytes(), "image/png"),
            "target_video": (clip.name, clip.read_bytes(), "video/mp4"),
        })


def test_video_swap_keeps_timing_and_audio(builtin_server, face_clip: Path, hanks_path: Path, t1_bgr: np.ndarray,
                                           tmp_path: Path) -> None:
    r = _post(builtin_server, face_clip, hanks_path, mode="one_to_many")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["x-face-backend"] == "builtin"
    assert r.headers["x-audio"] == "copied"
    assert int(r.headers["x-frames"]) == FRAMES
    assert int(r.headers["x-faces-swapped-frames"]) == FRAMES
    out = tmp_path / "out.mp4"
    out.write_bytes(r.content)
    frames, audio_seconds, video_seconds = read_video(out)
    assert len(frames) == FRAMES
    assert frames[0].shape[:2] == (SIZE[1], SIZE[0])
    assert audio_seconds is not None and abs(audio_seconds - FRAMES / FPS) < 0.05
    assert abs(video_seconds - FRAMES / FPS) <= 1 / FPS
    # the faces changed, the frame as a whole did not move: compare with the input frames
    originals = pan_frames(t1_bgr)
    diffs = [cv2.absdiff(a, b).astype(np.float32).mean(axis=2) for a, b in zip(frames, originals, strict=True)]
    for d in diffs:
        changed = d > 25
        assert changed.mean() > 0.01  # a face region was replaced
        assert changed.mean() < 0.35  # the background was not
        assert np.median(d) < 6  # the frame is the same frame (H.264 noise only)


def test_video_swap_drop_audio_and_trim(builtin_server, face_clip: Path, hanks_path: Path, tmp_path: Path) -> None:
    r = _post(builtin_server, face_clip, hanks_path, audio="drop", start="0.2", end="0.4")
    assert r.status_code == 200, r.text
    assert r.headers["x-audio"] == "dropped"
    out = tmp_path / "trim.mp4"
    out.write_bytes(r.content)
    frames, audio_seconds, _ = read_video(out)
    assert audio_seconds is None
    assert len(frames) == 5  # frames at 0.20, 0.24, 0.28, 0.32, 0.36 s


def test_video_without_audio_says_so(builtin_server, hanks_path: Path, t1_bgr: np.ndarray, tmp_path: Path) -> None:
    clip = write_frames_clip(tmp_path / "silent.mp4", pan_frames(t1_bgr, 4), FPS, audio=False)
    r = _post(builtin_server, clip, hanks_path)
    assert r.status_code == 200, r.text
    assert r.headers["x-audio"] == "none-in-source"


@pytest.mark.parametrize(
    ("options", "target", "status", "field"),
    [
        ({}, b"not a video at all" * 10, 415, "target_video"),
        ({"start": "0.4", "end": "0.2"}, None, 422, "end"),
        ({"start": "5"}, None, 422, "start"),
        ({"smoothing": "2"}, None, 422, "smoothing"),
        ({"audio": "mute"}, None, 422, "audio"),
        ({"colour": "red"}, None, 422, "colour"),
    ],
)
def test_video_swap_bad_input(builtin_server, face_clip: Path, hanks_path: Path, tmp_path: Path,
                              options: dict, target: bytes | None, status: int, field: str) -> None:
    clip = face_clip
    if target is not None:
        clip = tmp_path / "bad.mp4"
        clip.write_bytes(target)
    r = _post(builtin_server, clip, hanks_path, **options)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field


def test_video_swap_bad_media(builtin_server, face_clip: Path, hanks_path: Path, tmp_path: Path) -> None:
    """Truncated, empty, audio-only and too-long videos: 4xx naming target_video, and nothing left in the temp dir."""
    from testkit.clips import write_audio, write_clip

    data = face_clip.read_bytes()
    cases = {
        "truncated.mp4": (data[: len(data) // 2], 422),
        "empty.mp4": (b"", 422),
        "audio.m4a": (write_audio(tmp_path / "a.m4a", "aac", seconds=0.5, container="mp4").read_bytes(), None),
        "long.mp4": (write_clip(tmp_path / "long.mp4", size=(64, 48), fps=2, seconds=31).read_bytes(), 413),
    }
    for name, (content, status) in cases.items():
        clip = tmp_path / name
        clip.write_bytes(content)
        r = _post(builtin_server, clip, hanks_path)
        assert (r.status_code == status) if status else (400 <= r.status_code < 500), (name, r.text)
        assert r.json()["error"]["field"] == "target_video", (name, r.text)
    assert not [p for p in (builtin_server.data / "tmp").rglob("*") if p.is_file()]


def test_video_swap_source_without_face(builtin_server, face_clip: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 120, 3), 128, np.uint8))
    r = _post(builtin_server, face_clip, blank)
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "no_face", "message": r.json()["error"]["message"], "field": "source_image"}


def test_video_swap_as_a_job(builtin_server, face_clip: Path, hanks_path: Path, tmp_path: Path) -> None:
    r = _post(builtin_server, face_clip, hanks_path, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    with builtin_server.client() as c:
        job = wait_for_job(c, location)
        assert job["state"] == "succeeded", job
        assert job["kind"] == "faceswap_video"
        assert job["progress"]["unit"] == "frames"
        assert job["progress"]["done"] == FRAMES
        assert job["result"]["headers"]["X-Audio"] == "copied"
        got = c.get(location + "/result")
    assert got.status_code == 200
    assert got.headers["content-type"] == "video/mp4"
    out = tmp_path / "job.mp4"
    out.write_bytes(got.content)
    frames, audio_seconds, _ = read_video(out)
    assert len(frames) == FRAMES and audio_seconds is not None


# ---- scenario clips, swapped in-process (the same service the endpoint runs) -------------------------------------

PATCH = 180  # a square crop of t1.jpg around one face; dlib finds faces of this size reliably
T1_FACE_A = (514, 362)  # centre of t1's face [452, 300, 577, 424] (125 px)
T1_FACE_B = (785, 417)  # centre of t1's face [734, 365, 837, 469] (103 px)


def patch(t1: np.ndarray, centre: tuple[int, int]) -> np.ndarray:
    cx, cy = centre
    return np.ascontiguousarray(t1[cy - PATCH // 2: cy + PATCH // 2, cx - PATCH // 2: cx + PATCH // 2])


def canvas(w: int, h: int) -> np.ndarray:
    """A textured background (no face in it) so H.264 has something to code besides the faces."""
    y, x = np.mgrid[0:h, 0:w]
    bg = np.zeros((h, w, 3), np.uint8)
    bg[..., 0] = 90 + (x * 60 // w)
    bg[..., 1] = 110 + (y * 40 // h)
    bg[..., 2] = 140
    return bg


def place(frame: np.ndarray, img: np.ndarray, x: int, y: int) -> tuple[int, int, int, int]:
    """Paste ``img`` at (x, y), clipped to the frame; returns the box of its central face region (60 % of it)."""
    h, w = img.shape[:2]
    fh, fw = frame.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, fw), min(y + h, fh)
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = img[y0 - y: y1 - y, x0 - x: x1 - x]
    m = int(w * 0.2)
    return x + m, y + m, x + w - m, y + h - m


def region_diff(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = (max(v, 0) for v in box)
    return float(cv2.absdiff(a[y0:y1, x0:x1], b[y0:y1, x0:x1]).mean())


@pytest.fixture(scope="module")
def builtin_hub(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from models.hub import ModelHub

    hub = ModelHub(tmp_path_factory.mktemp("no-weights"), ["analyze", "faceswap"])
    hub.load()
    return hub


def run_swap(hub, clip: Path, out: Path, source: Path, **options: object):  # noqa: ANN001, ANN201
    from app.config import Settings
    from app.schemas import VideoSwapOptions
    from app.services.faceswap import swap_context
    from app.services.video_swap import swap_video

    settings = Settings()
    opts = VideoSwapOptions(**options)
    return swap_video(swap_context(hub, settings, opts, "source_image", "target_video"), opts, settings, [source],
                      clip, out)


def test_crossing_faces_keep_their_assignment(builtin_hub, t1_bgr: np.ndarray, hanks_path: Path,
                                               tmp_path: Path) -> None:
    """one_to_one picks the larger face (A) at the start and keeps swapping A while B crosses its path."""
    a, b = patch(t1_bgr, T1_FACE_A), patch(t1_bgr, T1_FACE_B)
    frames, boxes = [], []
    n = 24
    for i in range(n):
        f = canvas(640, 300)
        xa = 10 + i * 18  # A: left → right, upper lane
        xb = 450 - i * 18  # B: right → left, lower lane (overlapping A's lane by 60 px)
        box_b = place(f, b, xb, 120)
        box_a = place(f, a, xa, 0)  # A in front
        frames.append(f)
        boxes.append((box_a, box_b, abs(xa - xb) >= PATCH))
    clip = write_frames_clip(tmp_path / "cross.mp4", frames, FPS, audio=False)
    res = run_swap(builtin_hub, clip, tmp_path / "out.mp4", hanks_path, mode="one_to_one")
    out, _, _ = read_video(res.path)
    assert len(out) == n
    apart = [i for i in range(n) if boxes[i][2]]
    assert apart[0] == 0 and apart[-1] == n - 1  # frames before and after the crossing
    for i in apart:
        box_a, box_b, _ = boxes[i]
        assert region_diff(out[i], frames[i], box_a) > 12, i  # A swapped in every frame where the faces are apart
        assert region_diff(out[i], frames[i], box_b) < 6, i  # B never


def test_face_leaving_and_reentering_and_frames_without_face(builtin_hub, t1_bgr: np.ndarray, hanks_path: Path,
                                                             tmp_path: Path) -> None:
    """Frames without a face pass through unchanged (no face is painted where it was: the look-ahead sees that it
    left); the face is swapped again when it comes back."""
    a = patch(t1_bgr, T1_FACE_A)
    frames, boxes = [], []
    n = 27
    for i in range(n):
        f = canvas(400, 240)
        box = place(np.zeros_like(f), a, 110 + (i % 9) * 4, 30)
        if i < 9 or i >= 18:
            place(f, a, 110 + (i % 9) * 4, 30)
            boxes.append((box, True))
        else:
            boxes.append((box, False))  # 9 frames (0.36 s, longer than the tracker's gap filling) with nobody
        frames.append(f)
    clip = write_frames_clip(tmp_path / "leave.mp4", frames, FPS, audio=False)
    res = run_swap(builtin_hub, clip, tmp_path / "out.mp4", hanks_path)
    out, _, _ = read_video(res.path)
    decoded, _, _ = read_video(clip)  # compare with what the pipeline decoded (H.264 noise on both sides)
    for i, (box, visible) in enumerate(boxes):
        d = region_diff(out[i], decoded[i], box)
        assert (d > 12) if visible else (d < 4), (i, d)
    assert res.frames_swapped == sum(v for _, v in boxes)


def test_scene_cut_and_zoom_rotate(builtin_hub, t1_bgr: np.ndarray, hanks_path: Path, tmp_path: Path) -> None:
    """Shot 1 zooms and rotates over face A, shot 2 (after a cut) is another person: every frame is swapped."""
    a, b = patch(t1_bgr, T1_FACE_A), patch(t1_bgr, T1_FACE_B)
    frames = []
    for i in range(12):  # zoom 1.0 → 1.3 and rotate 0 → 11° around the face
        m = cv2.getRotationMatrix2D((PATCH / 2, PATCH / 2), i, 1.0 + i * 0.025)
        f = canvas(320, 240)
        place(f, cv2.warpAffine(a, m, (PATCH, PATCH), borderMode=cv2.BORDER_REFLECT), 70, 30)
        frames.append(f)
    for i in range(10):  # the cut: another face, another background
        f = np.full((240, 320, 3), (40, 60, 30), np.uint8)
        place(f, b, 20 + i * 3, 40)
        frames.append(f)
    clip = write_frames_clip(tmp_path / "cut.mp4", frames, FPS, audio=False)
    res = run_swap(builtin_hub, clip, tmp_path / "out.mp4", hanks_path, mode="one_to_one")
    assert res.frames == len(frames)
    assert res.frames_swapped == len(frames)
    out, _, _ = read_video(res.path)
    assert region_diff(out[15], frames[15], place(np.zeros_like(frames[15]), b, 20 + 3 * 3, 40)) > 10


def test_2997_fps_keeps_rate_and_audio_bit_exact(builtin_hub, t1_bgr: np.ndarray, hanks_path: Path,
                                                   tmp_path: Path) -> None:
    """29.97 fps with AAC: frame count, exact rate and duration kept; the AAC packets are copied unchanged."""
    frames = pan_frames(t1_bgr, 15)
    clip = tmp_path / "ntsc.mp4"
    out_path = tmp_path / "out.mp4"
    rate = Fraction(30000, 1001)
    write_frames_clip(clip, frames, rate)
    res = run_swap(builtin_hub, clip, out_path, hanks_path)
    assert res.audio == "copied"
    with av.open(str(out_path)) as c:
        vs = c.streams.video[0]
        assert vs.average_rate == rate
        assert sum(1 for _ in c.decode(vs)) == 15

    def packets(path: Path) -> list[bytes]:
        with av.open(str(path)) as c:
            return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]

    src, dst = packets(clip), packets(out_path)
    assert src and dst == src  # stream copy: the same AAC access units, byte for byte


def test_smoothing_lowers_keypoint_jitter(t1_bgr: np.ndarray) -> None:
    """A static shot with sensor noise: the tracked key points move less with smoothing on than off."""
    from models.analysis.dlib_analyser import DlibAnalyser
    from models.face import best_face
    from models.tracking import FaceTracker

    analyser = DlibAnalyser()
    analyser.prepare()
    rng = np.random.default_rng(7)
    still = patch(t1_bgr, T1_FACE_A)
    noisy = [np.clip(still.astype(np.int16) + rng.normal(0, 6, still.shape), 0, 255).astype(np.uint8)
             for _ in range(30)]
    detections = [best_face(analyser.get(f)) for f in noisy]
    assert all(d is not None for d in detections)

    def jitter(smoothing: float) -> float:
        tracker = FaceTracker(smoothing=smoothing, fps=FPS)
        kps = []
        for i, d in enumerate(detections):
            (track,) = tracker.update([d], i / FPS)
            kps.append(track.face.kps.copy())
        return float(np.std(np.asarray(kps)[5:], axis=0).mean())  # after the filter settles

    raw, smooth = jitter(0.0), jitter(0.8)
    assert raw > 0.1  # dlib's key points do jitter on noisy frames
    assert smooth < 0.7 * raw


def test_mouth_mask_keeps_the_target_mouth(builtin_hub, face_clip: Path, hanks_path: Path, t1_bgr: np.ndarray,
                                           tmp_path: Path) -> None:
    plain = run_swap(builtin_hub, face_clip, tmp_path / "plain.mp4", hanks_path)
    kept = run_swap(builtin_hub, face_clip, tmp_path / "mouth.mp4", hanks_path, mouth_mask=True)
    a, _, _ = read_video(plain.path)
    b, _, _ = read_video(kept.path)
    original = pan_frames(t1_bgr)
    from models.analysis.dlib_analyser import DlibAnalyser
    from models.face import best_face
    from models.masks.mouth import mouth_polygon

    analyser = DlibAnalyser()
    analyser.prepare()
    face = best_face(analyser.get(original[6]))
    x0, y0 = mouth_polygon(face).min(axis=0).astype(int)
    x1, y1 = mouth_polygon(face).max(axis=0).astype(int)
    box = (x0, y0, x1, y1)
    # Over the mouth's box (lips and some cheek) the plain swap changes ≈ 20 levels, the kept mouth ≈ 12–13: a ratio
    # of 0.59–0.64 on frames 3, 6 and 9 (it moves by a few hundredths with half-pixel landmark differences, e.g.
    # whole-frame detection against the window search); without the mask it would be 1.
    plain_diff = sum(region_diff(a[i], original[i], box) for i in (3, 6, 9))
    kept_diff = sum(region_diff(b[i], original[i], box) for i in (3, 6, 9))
    assert plain_diff > 3 * 15 and kept_diff < 0.7 * plain_diff, (kept_diff, plain_diff)


def test_neural_standins_apply_one_source_embedding(tmp_path: Path, t1_bgr: np.ndarray, hanks_path: Path) -> None:
    """The neural backend (interface-exact stand-ins) swaps every frame with the same source identity."""
    from models.hub import ModelHub
    from testkit import standins

    frames = pan_frames(t1_bgr, 6)
    faces = [([b[0] - ORIGIN[0], b[1] - ORIGIN[1], b[2] - ORIGIN[0], b[3] - ORIGIN[1]],
              [[x - ORIGIN[0], y - ORIGIN[1]] for x, y in k]) for b, k in [standins.T1_FACES[3]]]
    hub = ModelHub(standins.make_weights_dir(tmp_path / "w", frames[0].shape, faces), ["analyze", "faceswap"],
                   provider_pref="cpu")
    hub.load()
    real = hub.swappers["neural"]
    seen: list[np.ndarray] = []

    class Recording:  # the real swapper, recording which identity each call received
        name, needs_source_embedding = real.name, real.needs_source_embedding

        def get(self, img, target, source, source_img):  # noqa: ANN001, ANN201
            seen.append(np.asarray(source.normed_embedding).copy())
            return real.get(img, target, source, source_img)

    hub.swappers["neural"] = Recording()
    clip = write_frames_clip(tmp_path / "n.mp4", frames, FPS)
    res = run_swap(hub, clip, tmp_path / "out.mp4", hanks_path, backend="neural")
    assert res.backend == "neural" and res.frames_swapped == len(frames) == len(seen)
    assert all(np.array_equal(e, seen[0]) for e in seen)
    out, audio_seconds, _ = read_video(res.path)
    assert audio_seconds is not None
    box = (452 - ORIGIN[0], 300 - ORIGIN[1], 577 - ORIGIN[0], 424 - ORIGIN[1])  # where the stand-in SCRFD sees it
    assert all(region_diff(o, f, box) > 5 for o, f in zip(out, frames, strict=True))
