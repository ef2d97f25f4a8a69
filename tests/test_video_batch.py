"""Video face swap with the swap model batched across frames: a graph with a dynamic batch gets
``FACEAPI_VIDEO_BATCH_SIZE`` faces a call and gives the same video as one face a call; a fixed-batch graph (like
inswapper_128.onnx) keeps one face a call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testkit import standins
from testkit.clips import write_frames_clip
from tests.test_video_swap import FPS, ORIGIN, pan_frames, read_video

FRAMES = 10


@pytest.fixture(scope="module")
def clip_and_faces(tmp_path_factory: pytest.TempPathFactory, t1_bgr: np.ndarray) -> tuple[Path, list]:
    frames = pan_frames(t1_bgr, FRAMES)
    faces = [([b[0] - ORIGIN[0], b[1] - ORIGIN[1], b[2] - ORIGIN[0], b[3] - ORIGIN[1]],
              [[x - ORIGIN[0], y - ORIGIN[1]] for x, y in k]) for b, k in [standins.T1_FACES[3]]]
    clip = write_frames_clip(tmp_path_factory.mktemp("batch") / "pan.mp4", frames, FPS)
    return clip, faces


def _hub(d: Path, shape: tuple[int, ...], faces: list, dynamic: bool):  # noqa: ANN202
    from models.hub import ModelHub

    w = standins.make_weights_dir(d, shape, faces)
    if dynamic:  # the same picture as the fixed-batch stand-in, with a dynamic first dimension
        standins.make_inswapper_heavy(w / "inswapper_128.onnx", convs=1, width=4, batch="B")
    hub = ModelHub(w, ["analyze", "faceswap"], provider_pref="cpu")
    hub.load()
    return hub


def _swap(hub, clip: Path, out: Path, source: Path, batch: int) -> tuple[object, list[int]]:  # noqa: ANN001
    from app.config import Settings
    from app.schemas import VideoSwapOptions
    from app.services.faceswap import swap_context
    from app.services.video_swap import swap_video

    swapper = hub.swappers["neural"]
    sizes: list[int] = []
    real_run = swapper.run

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:  # the real session, recording each call's batch
        sizes.append(int(feeds[swapper.input_names[0]].shape[0]))
        return real_run(feeds)

    swapper.run = run
    try:
        settings = Settings(video_batch_size=batch)
        opts = VideoSwapOptions(backend="neural")
        res = swap_video(swap_context(hub, settings, opts, "source_image", "target_video"), opts, settings,
                         [source], clip, out)
    finally:
        del swapper.run
    return res, sizes


def test_dynamic_batch_graph_gets_faces_from_several_frames(clip_and_faces: tuple[Path, list], t1_bgr: np.ndarray,
                                                            hanks_path: Path, tmp_path: Path) -> None:
    clip, faces = clip_and_faces
    hub = _hub(tmp_path / "w", pan_frames(t1_bgr, 1)[0].shape, faces, dynamic=True)
    assert hub.swappers["neural"].fixed_batch is None
    one, sizes_one = _swap(hub, clip, tmp_path / "one.mp4", hanks_path, 1)
    four, sizes_four = _swap(hub, clip, tmp_path / "four.mp4", hanks_path, 4)
    assert sizes_one == [1] * FRAMES
    assert sizes_four == [4, 4, 2]  # ten frames, one face each
    assert one.frames == four.frames == FRAMES and one.frames_swapped == four.frames_swapped == FRAMES
    a, audio_a, _ = read_video(one.path)
    b, audio_b, _ = read_video(four.path)
    assert audio_a is not None and audio_b is not None
    src = pan_frames(t1_bgr, FRAMES)
    box = (452 - ORIGIN[0], 300 - ORIGIN[1], 577 - ORIGIN[0], 424 - ORIGIN[1])
    for x, y, s in zip(a, b, src, strict=True):
        assert np.abs(x.astype(np.int16) - y).mean() < 0.5  # the same swap, in the same order
        face = (slice(box[1], box[3]), slice(box[0], box[2]))
        assert np.abs(y[face].astype(np.int16) - s[face]).mean() > 5  # and it is a swap


def test_fixed_batch_graph_keeps_one_face_a_call(clip_and_faces: tuple[Path, list], t1_bgr: np.ndarray,
                                                 hanks_path: Path, tmp_path: Path) -> None:
    clip, faces = clip_and_faces
    hub = _hub(tmp_path / "w", pan_frames(t1_bgr, 1)[0].shape, faces, dynamic=False)
    assert hub.swappers["neural"].fixed_batch == 1
    res, sizes = _swap(hub, clip, tmp_path / "out.mp4", hanks_path, 4)
    assert sizes == [1] * FRAMES and res.frames_swapped == FRAMES


def test_batched_detector_gets_several_frames_a_call(clip_and_faces: tuple[Path, list], t1_bgr: np.ndarray,
                                                     hanks_path: Path, tmp_path: Path) -> None:
    """An SCRFD export with a batch dimension detects ``FACEAPI_VIDEO_BATCH_SIZE`` frames a call, with the same
    faces as one frame a call; buffalo_l's det_10g layout (no batch dimension) keeps one frame a call."""
    clip, faces = clip_and_faces
    shape = pan_frames(t1_bgr, 1)[0].shape
    hub = _hub(tmp_path / "w", shape, faces, dynamic=True)
    analyser = hub.analysers["neural"]
    assert not analyser.batch_detect  # the det_10g layout
    standins.make_scrfd_for_image(tmp_path / "w" / "buffalo_l" / "det_10g.onnx", shape, faces, batched=True)
    hub = _hub_from(tmp_path / "w")
    analyser = hub.analysers["neural"]
    assert analyser.batch_detect
    frames = pan_frames(t1_bgr, 3)
    one_by_one = [analyser.get(f) for f in frames]
    together = analyser.get_batch(frames)
    for a, b in zip(one_by_one, together, strict=True):
        assert len(a) == len(b) == 1
        assert np.allclose(a[0].bbox, b[0].bbox) and np.allclose(a[0].kps, b[0].kps) and a[0].score == b[0].score
    session = analyser.detector.session
    real_run = session.run
    sizes: list[int] = []

    def run(names, feeds, *args):  # noqa: ANN001, ANN002, ANN202 - the real session, recording each batch
        sizes.append(int(next(iter(feeds.values())).shape[0]))
        return real_run(names, feeds, *args)

    session.run = run
    try:
        four, swap_sizes = _swap(hub, clip, tmp_path / "four.mp4", hanks_path, 4)
        det_four, sizes[:] = list(sizes), []
        one, _ = _swap(hub, clip, tmp_path / "one.mp4", hanks_path, 1)
    finally:
        del session.run
    assert det_four == [4, 4, 2] and sizes == [] and swap_sizes == [4, 4, 2]
    assert one.frames_swapped == four.frames_swapped == FRAMES
    a, _, _ = read_video(one.path)
    b, _, _ = read_video(four.path)
    assert max(float(np.abs(x.astype(np.int16) - y).mean()) for x, y in zip(a, b, strict=True)) < 0.5


def _hub_from(w: Path):  # noqa: ANN202
    from models.hub import ModelHub

    hub = ModelHub(w, ["analyze", "faceswap"], provider_pref="cpu")
    hub.load()
    return hub


def test_batched_restorer_gets_faces_from_several_frames(clip_and_faces: tuple[Path, list], t1_bgr: np.ndarray,
                                                         hanks_path: Path, tmp_path: Path) -> None:
    """A restorer graph with a dynamic batch restores the faces of consecutive frames together (here beside the
    fixed-batch swapper, which keeps one face a call), with the same video as one face a call."""
    from testkit.standins_enhance import FILENAMES, make_enhance_weights, make_gfpgan

    clip, faces = clip_and_faces
    w = standins.make_weights_dir(tmp_path / "w", pan_frames(t1_bgr, 1)[0].shape, faces)
    make_enhance_weights(w)
    make_gfpgan(w / FILENAMES["gfpgan"], batch="B")
    hub = _hub_from(w)
    restorer = hub.restorers["gfpgan"]
    assert restorer.fixed_batch is None
    sizes: list[int] = []
    real_run = restorer.run

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:  # the real session, recording each call's batch
        sizes.append(int(feeds[restorer.input_name].shape[0]))
        return real_run(feeds)

    restorer.run = run
    try:
        results = {}
        for batch in (4, 1):
            from app.config import Settings
            from app.schemas import VideoSwapOptions
            from app.services.faceswap import swap_context
            from app.services.video_swap import swap_video

            settings = Settings(video_batch_size=batch)
            opts = VideoSwapOptions(backend="neural", face_upsample=True)
            results[batch] = (swap_video(swap_context(hub, settings, opts, "source_image", "target_video"), opts,
                                         settings, [hanks_path], clip, tmp_path / f"b{batch}.mp4"), list(sizes))
            sizes.clear()
    finally:
        del restorer.run
    (four, sizes_four), (one, sizes_one) = results[4], results[1]
    assert sizes_four == [4, 4, 2] and sizes_one == [1] * FRAMES
    assert four.enhancer == one.enhancer == "gfpgan" and four.frames_swapped == one.frames_swapped == FRAMES
    a, _, _ = read_video(one.path)
    b, _, _ = read_video(four.path)
    assert max(float(np.abs(x.astype(np.int16) - y).mean()) for x, y in zip(a, b, strict=True)) < 0.5
