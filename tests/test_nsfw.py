"""The content gate (FACEAPI_NSFW) with the real NudeNet 320n detector that the nudenet wheel ships.

No unsuitable pictures are needed: the detector also reports faces (FACE_FEMALE, FACE_MALE), so the policies here act
on those classes, and the block path runs for real on the test photos. On insightface's t1.jpg the detector finds
FACE_FEMALE 0.74, 0.70, 0.61, 0.38 and FACE_MALE 0.60, 0.51; on Tom_Hanks_54745.png FACE_FEMALE 0.75 and no FACE_MALE.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.config import Settings
from app.errors import ApiError
from app.services import nsfw
from app.services.nsfw import Finding, NsfwGate, header_value
from models.safety.labels import LABELS
from models.safety.nudenet import NudeNetDetector, packaged_model_path, preprocess
from testkit.server import Server, wait_for_job


@pytest.fixture(scope="module")
def detector() -> NudeNetDetector:
    path = packaged_model_path()
    assert path is not None and path.stat().st_size > 10_000_000, "the nudenet wheel (320n.onnx) is not installed"
    d = NudeNetDetector(path, ["CPUExecutionProvider"])
    d.prepare()
    return d


def gate(mode: str, classes: tuple[str, ...], threshold: float, detector: NudeNetDetector) -> NsfwGate:
    g = NsfwGate(mode, classes, threshold)
    g.detector = detector  # the loaded detector, shared by the tests instead of one session per gate
    return g


# ---- the detector: our pre/post-processing against nudenet's own ------------------------------------------------


def test_same_detections_as_nudenet(detector: NudeNetDetector, t1_path: Path, hanks_path: Path) -> None:
    """nudenet's NudeDetector (its own code and session) and ours find the same classes, scores and boxes."""
    ref = importlib.import_module("nudenet").NudeDetector()
    for path in (t1_path, hanks_path):
        theirs = ref.detect(str(path))
        ours = detector.detect(cv2.imread(str(path)))
        assert ours.names() == [d["class"] for d in theirs], path.name
        assert len(ours) > 0
        for (x1, y1, x2, y2), score, d in zip(ours.boxes, ours.scores, theirs, strict=True):
            assert abs(float(score) - d["score"]) < 0.01, (path.name, score, d)
            x, y, w, h = d["box"]  # nudenet truncates to int
            assert np.allclose([x1, y1, x2 - x1, y2 - y1], [x, y, w, h], atol=3.0), (path.name, d)


@pytest.mark.parametrize("shape", [(112, 112), (886, 600), (300, 1280), (200, 150)])
def test_preprocessing_matches_pad_and_resize(t1_bgr: np.ndarray, shape: tuple[int, int]) -> None:
    """One warpAffine gives nudenet's input (pad to a black square, blobFromImage to 320²), BGR order kept."""
    img = np.ascontiguousarray(cv2.resize(t1_bgr, (shape[1], shape[0]), interpolation=cv2.INTER_AREA))
    side = max(shape)
    padded = cv2.copyMakeBorder(img, 0, side - shape[0], 0, side - shape[1], cv2.BORDER_CONSTANT)
    ref = cv2.dnn.blobFromImage(padded, 1 / 255.0, (320, 320), (0, 0, 0), swapRB=False, crop=False)
    ours, scale = preprocess(img)
    assert ours.shape == ref.shape == (1, 3, 320, 320)
    assert scale == pytest.approx(side / 320)
    diff = np.abs(ours - ref) * 255  # grey levels: OpenCV's fixed-point rounding differs between the two
    assert diff.max() <= 1.5 and diff.mean() < 0.2


def test_labels_are_the_models(detector: NudeNetDetector) -> None:
    assert detector.session.get_outputs()[0].shape[1] == 4 + len(LABELS)
    assert "FACE_FEMALE" in LABELS and "FEMALE_BREAST_EXPOSED" in LABELS


# ---- the policy -----------------------------------------------------------------------------------------------------


def test_block_raises_422_naming_the_field(detector: NudeNetDetector, t1_bgr: np.ndarray) -> None:
    g = gate("block", ("FACE_FEMALE",), 0.5, detector)
    with pytest.raises(ApiError) as err:
        g.check(t1_bgr, "target_image")
    assert (err.value.status, err.value.code, err.value.field) == (422, "nsfw_content", "target_image")
    assert "FACE_FEMALE:0.74" in err.value.message


def test_threshold_and_classes_are_respected(detector: NudeNetDetector, t1_bgr: np.ndarray) -> None:
    assert gate("block", ("FACE_FEMALE",), 0.8, detector).check(t1_bgr, "image") == []  # best 0.74
    assert gate("block", ("FACE_MALE",), 0.65, detector).check(t1_bgr, "image") == []  # best 0.60
    assert gate("block", ("FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED"), 0.0, detector).check(t1_bgr, "image") == []
    with pytest.raises(ApiError):
        gate("block", ("FACE_MALE",), 0.55, detector).check(t1_bgr, "image")


def test_flag_collects_and_off_does_nothing(detector: NudeNetDetector, t1_bgr: np.ndarray) -> None:
    with nsfw.collecting() as found:
        got = gate("flag", ("FACE_FEMALE", "FACE_MALE"), 0.5, detector).check(t1_bgr, "image")
    assert got == found and len(found) == 5
    assert header_value(found) == "image=FACE_FEMALE:0.74 FACE_MALE:0.60"
    off = NsfwGate("off", ("FACE_FEMALE",), 0.0)
    assert off.check(t1_bgr, "image") == [] and off.detector is None  # nothing loaded, nothing checked
    off.load()
    assert off.detector is None and off.model_info() == []


def test_header_value_per_field() -> None:
    found = [Finding("source_image", "FACE_MALE", 0.61), Finding("result", "FACE_FEMALE", 0.7),
             Finding("source_image", "FACE_FEMALE", 0.9), Finding("source_image", "FACE_MALE", 0.66)]
    assert header_value(found) == "source_image=FACE_FEMALE:0.90 FACE_MALE:0.66, result=FACE_FEMALE:0.70"


def test_video_checker_samples_frames(detector: NudeNetDetector, t1_bgr: np.ndarray) -> None:
    g = gate("flag", ("FACE_FEMALE",), 0.5, detector)
    g.video_interval = 0.5
    blank = np.zeros_like(t1_bgr)
    with nsfw.collecting() as found:
        check = g.video_checker("video", fps=10.0)  # every 5th frame
        for i in range(12):
            check(i, t1_bgr if i in (3, 5) else blank)  # frame 3 is skipped, frame 5 is sampled
    assert {f.field for f in found} == {"video"} and len(found) == 3  # frame 5's three FACE_FEMALE ≥ 0.5


def test_settings_validate_classes() -> None:
    assert Settings().nsfw == "off"
    assert set(Settings().nsfw_classes) == {"FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
                                           "FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED", "ANUS_EXPOSED"}
    assert Settings(nsfw_classes="face_female, FACE_MALE").nsfw_classes == ["FACE_FEMALE", "FACE_MALE"]
    with pytest.raises(ValueError, match="unknown NudeNet class"):
        Settings(nsfw_classes="FACE_FEMALE,NAKED")


# ---- the lip-sync output (in process: the plan, with its image input, is made before the gate is on) ---------------


def portrait(hanks_bgr: np.ndarray) -> np.ndarray:
    img = np.full((240, 320, 3), 110, np.uint8)
    img[40:216, 60:236] = cv2.resize(hanks_bgr, (176, 176), interpolation=cv2.INTER_CUBIC)
    return img


def test_lipsync_output_is_gated(detector: NudeNetDetector, hanks_bgr: np.ndarray, tmp_path: Path) -> None:
    from app.schemas import LipsyncOptions
    from app.services.lipsync import plan_lipsync, run_plan
    from models.hub import ModelHub
    from testkit.clips import write_audio

    hub = ModelHub(tmp_path / "no_weights", ["lipsync"])
    hub.load()
    cv2.imwrite(str(tmp_path / "portrait.png"), portrait(hanks_bgr))
    audio = write_audio(tmp_path / "a.wav", "pcm", seconds=0.5, rate=16000)
    options, settings = LipsyncOptions(backend="builtin"), Settings()
    plan = plan_lipsync(hub, options, settings, audio, image_path=tmp_path / "portrait.png")
    before = nsfw.gate()
    nsfw._gate = gate("block", ("FACE_FEMALE",), 0.5, detector)
    try:
        with pytest.raises(ApiError) as err:
            run_plan(plan, options, settings, audio, tmp_path / "out.mp4", None)
    finally:
        nsfw._gate = before
    assert (err.value.code, err.value.field) == ("nsfw_content", "result")
    assert not (tmp_path / "out.mp4").exists()  # the refused output is not left behind
    plan = plan_lipsync(hub, options, settings, audio, image_path=tmp_path / "portrait.png")
    out = run_plan(plan, options, settings, audio, tmp_path / "out.mp4", None)  # the gate off: the same job passes
    assert out.path.exists() and out.frames > 0


# ---- over HTTP: a real server per policy --------------------------------------------------------------------------


def _server(tmp: Path, jobs: str, **env: str) -> Server:
    return Server({
        "FACEAPI_WEIGHTS_DIR": str(tmp / "weights"), "FACEAPI_STORAGE_URL": str(tmp / "bucket"),
        "FACEAPI_DATA_DIR": str(tmp / "data"), "FACEAPI_TEMP_DIR": str(tmp / "tmp"), "FACEAPI_ENABLED_JOBS": jobs,
        **env,
    }, workers=1, log_path=tmp / "server.log")


@pytest.fixture(scope="module")
def block_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Blocks FACE_MALE ≥ 0.55: t1.jpg (a man at 0.60) is refused, Tom Hanks (no FACE_MALE) passes."""
    s = _server(tmp_path_factory.mktemp("nsfw_block"), "analyze,faceswap,enhance",
                FACEAPI_NSFW="block", FACEAPI_NSFW_CLASSES="FACE_MALE", FACEAPI_NSFW_THRESHOLD="0.55").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def flag_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = _server(tmp_path_factory.mktemp("nsfw_flag"), "analyze,lipsync",
                FACEAPI_NSFW="flag", FACEAPI_NSFW_CLASSES="FACE_FEMALE,FACE_MALE").start()
    yield s
    s.stop()


def _file(path: Path) -> tuple[str, bytes, str]:
    return path.name, path.read_bytes(), "application/octet-stream"


def test_block_over_http(block_server: Server, t1_path: Path, hanks_path: Path) -> None:
    with block_server.client() as c:
        r = c.post("/faceswap", files={"source_image": _file(hanks_path), "target_image": _file(t1_path)})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "nsfw_content" and r.json()["error"]["field"] == "target_image"
        r = c.post("/faceswap", files={"source_image": _file(t1_path), "target_image": _file(hanks_path)})
        assert (r.status_code, r.json()["error"]["field"]) == (422, "source_image")
        r = c.post("/enhance", files={"image": _file(t1_path)}, data={"faces": "[]"})
        assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["field"]) == (422, "nsfw_content", "image")
        r = c.post("/analyze", files={"image": _file(hanks_path)})  # passes the gate
        assert r.status_code == 200 and "x-nsfw" not in r.headers
        job = c.post("/enhance", files={"image": _file(t1_path)}, data={"faces": "[]"},
                     headers={"Prefer": "respond-async"})
        assert job.status_code == 202, job.text
        done = wait_for_job(c, job.headers["Location"])
        assert done["state"] == "failed" and done["error"]["code"] == "nsfw_content"
        assert done["error"]["field"] == "image"
        models = c.get("/models").json()["models"]
        assert any(m["name"] == "nudenet_320n" and m["loaded"] for m in models)
        doc = c.get("/openapi.json").json()["paths"]["/faceswap"]["post"]["responses"]["422"]
        assert "nsfw_content" in doc["content"]["application/json"]["examples"]


def test_video_frames_are_sampled_over_http(block_server: Server, t1_bgr: np.ndarray, hanks_path: Path,
                                           tmp_path: Path) -> None:
    """/faceswap/video: frame 0 is checked, and frame 10 (2 s at 5 fps), while frames between are not."""
    from testkit.clips import write_frames_clip

    group = cv2.resize(t1_bgr, (320, 220), interpolation=cv2.INTER_AREA)  # FACE_MALE 0.63
    blank = np.full_like(group, 120)
    first = write_frames_clip(tmp_path / "first.mp4", [group] * 2, fps=5, audio=False)
    later = write_frames_clip(tmp_path / "later.mp4", [blank] * 10 + [group], fps=5, audio=False)
    between = write_frames_clip(tmp_path / "between.mp4", [blank] * 3 + [group] + [blank] * 6, fps=5,
                                audio=False)
    with block_server.client() as c:
        for clip, status in ((first, 422), (later, 422), (between, 200)):
            r = c.post("/faceswap/video", files={"source_image": _file(hanks_path), "target_video": _file(clip)},
                       data={"audio": "drop"})
            assert r.status_code == status, (clip.name, r.text[:300])
            if status == 422:
                assert r.json()["error"]["code"] == "nsfw_content" and r.json()["error"]["field"] == "target_video"


def test_flag_over_http_and_lipsync_output(flag_server: Server, t1_path: Path, hanks_bgr: np.ndarray,
                                           tmp_path: Path) -> None:
    from testkit.clips import write_audio, write_frames_clip

    with flag_server.client() as c:
        r = c.post("/analyze", files={"image": _file(t1_path)})
        assert r.status_code == 200
        assert r.headers["x-nsfw"] == "image=FACE_FEMALE:0.74 FACE_MALE:0.60"
        cv2.imwrite(str(tmp_path / "portrait.png"), portrait(hanks_bgr))
        audio = write_audio(tmp_path / "a.wav", "pcm", seconds=0.5, rate=16000)
        r = c.post("/lipsync", files={"image": _file(tmp_path / "portrait.png"), "audio": _file(audio)},
                   data={"backend": "builtin"})
        assert r.status_code == 200, r.text
        fields = dict(part.split("=", 1) for part in r.headers["x-nsfw"].split(", "))
        assert set(fields) == {"image", "result"}  # the input and the lip-synced output were both checked
        assert fields["result"].startswith("FACE_FEMALE:")
        assert r.content[4:8] == b"ftyp"
        clip = write_frames_clip(tmp_path / "face.mp4", [portrait(hanks_bgr)] * 5, fps=10, audio=False)
        r = c.post("/lipsync", files={"video": _file(clip), "audio": _file(audio)}, data={"backend": "builtin"})
        assert r.status_code == 200, r.text
        assert {part.split("=", 1)[0] for part in r.headers["x-nsfw"].split(", ")} == {"video", "result"}
        job = c.post("/lipsync", files={"image": _file(tmp_path / "portrait.png"), "audio": _file(audio)},
                     data={"backend": "builtin"}, headers={"Prefer": "respond-async"})
        assert job.status_code == 202, job.text
        done = wait_for_job(c, job.headers["Location"])
        assert done["state"] == "succeeded", done
        flagged = done["result"]["headers"]["X-NSFW"]  # a job keeps what it flagged with its result
        assert {part.split("=", 1)[0] for part in flagged.split(", ")} == {"image", "result"}


# ---- the gender swap output (in process, on a tiny random-weight SD 1.5 built like tests/test_genderswap.py's) ------


def test_genderswap_output_is_checked(tmp_path_factory: pytest.TempPathFactory, t1_bgr: np.ndarray) -> None:
    """Flag mode on FACE_FEMALE: the picture that comes back is checked as ``result`` beside the input ``image``
    (t1's other faces are left as they were, so the result still shows them)."""
    pytest.importorskip("diffusers")
    from tests.test_genderswap import _client, _png, _settings, write_tiny_weights

    root = tmp_path_factory.mktemp("nsfw_gs")
    weights, _ = write_tiny_weights(root / "weights")
    settings = _settings(root, weights, nsfw="flag", nsfw_classes=["FACE_FEMALE"], nsfw_threshold=0.5)
    try:
        for client in _client(settings):
            small = cv2.resize(t1_bgr, (640, 443), interpolation=cv2.INTER_AREA)
            one_step = {"steps": "2", "strength": "0.5", "width": "256", "target_gender": "female", "sampler": "euler"}
            r = client.post("/genderswap", files={"image": ("in.png", _png(small))}, data=one_step)
            assert r.status_code == 200, r.text
            flagged = dict(part.split("=", 1) for part in r.headers["x-nsfw"].split(", "))
            assert set(flagged) == {"image", "result"}
            assert "nsfw;dur=" in r.headers["server-timing"]
    finally:
        nsfw.configure(Settings())  # the in-process app set this process's gate: back to off for other tests
