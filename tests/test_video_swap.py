"""POST /faceswap/video on a real two-worker server with the built-in backend: a short clip made from a real photo
(the camera pans over t1.jpg's faces) with an AAC tone, swapped synchronously and as a job."""

from __future__ import annotations

import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from testkit.clips import write_frames_clip

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
    deadline = time.monotonic() + 60
    with builtin_server.client() as c:
        while time.monotonic() < deadline:
            job = c.get(location).json()
            if job["state"] in ("succeeded", "failed", "canceled"):
                break
            time.sleep(0.2)
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
