"""enhance_image over arrays: exact output sizes, faces pasted at their upscaled positions, masks, flags."""

from __future__ import annotations

import numpy as np
import pytest

from models.face import Face
from models.providers import CPU
from models.restore.builtin_enhance import BuiltinRestorer
from models.restore.enhance_pipeline import crop_footprint, enhance_image, scale_face
from models.restore.restorer import FaceRestorer, align_face
from models.restore.upscaler import LanczosUpscaler
from testkit import standins, standins_enhance
from tests.test_restorer import changed, footprint

CPU_ONLY = [CPU]


@pytest.fixture(scope="module")
def one_face(t1: np.ndarray) -> tuple[np.ndarray, Face]:
    """A 260x240 window of t1.jpg around face 3, with that face in window coordinates."""
    b, k = standins.T1_FACES[3]
    x0, y0 = 390, 230
    img = np.ascontiguousarray(t1[y0:y0 + 260, x0:x0 + 240])
    off = np.array([x0, y0], np.float32)
    face = Face(bbox=np.asarray(b, np.float32) - np.tile(off, 2), score=0.9, kps=np.asarray(k, np.float32) - off)
    return img, face


def lanczos(img: np.ndarray, scale: float) -> np.ndarray:
    return LanczosUpscaler().upscale(img, scale)


# ------------------------------------------------------------------------------------------ sizes
@pytest.mark.parametrize("scale", [1, 2, 3, 4, 1.5])
@pytest.mark.parametrize("background", [False, True])
def test_output_size_is_exact(one_face, gfpgan, x2, scale: float, background: bool) -> None:
    img, face = one_face
    img = img[:257, :239]  # odd sizes: 1.5x is not an integer
    out = enhance_image(img, [face], gfpgan, x2, scale=scale, background_enhance=background)
    assert out.shape == (round(257 * scale), round(239 * scale), 3) and out.dtype == np.uint8


def test_scale_face_maps_pixel_centres() -> None:
    f = Face(bbox=np.array([10, 20, 30, 40], np.float32), score=0.9, kps=np.zeros((5, 2), np.float32),
             landmarks=np.ones((68, 2), np.float32))
    g = scale_face(f, 2.0, 3.0)
    np.testing.assert_allclose(g.bbox, [20.5, 61.0, 60.5, 121.0])
    np.testing.assert_allclose(g.kps[0], [0.5, 1.0])
    np.testing.assert_allclose(g.landmarks[0], [2.5, 4.0])
    assert f.bbox[0] == 10 and scale_face(f, 1.0, 1.0) is f


# ------------------------------------------------------------------------------- face positions
@pytest.mark.parametrize("scale", [2, 1.5])
def test_every_face_is_pasted_at_its_upscaled_position(t1, faces, gfpgan, scale: float) -> None:
    out = enhance_image(t1, faces, gfpgan, None, scale=scale)
    base = lanczos(t1, scale)
    assert out.shape == base.shape
    diff = changed(out, base)
    sx, sy = base.shape[1] / t1.shape[1], base.shape[0] / t1.shape[0]
    placed = [scale_face(face, sx, sy) for face in faces]
    areas = [footprint(base.shape, align_face(base, p)[1]) for p in placed]
    allowed = np.logical_or.reduce(areas)
    assert not diff[~allowed].any()
    for face, p, area in zip(faces, placed, areas, strict=True):
        x1, y1, x2, y2 = (int(round(v)) for v in p.bbox)
        # The scaled face box is restored, and the changed pixels of this face centre on it.
        assert diff[y1:y2, x1:x2].mean() > 0.9
        ys, xs = np.nonzero(diff & area)
        assert abs(xs.mean() - (x1 + x2) / 2) < 0.25 * (x2 - x1)
        assert abs(ys.mean() - (y1 + y2) / 2) < 0.35 * (y2 - y1)
        # Nothing lands at the face's pre-upscale box (the old bug) unless some face's paste covers it.
        ox1, oy1, ox2, oy2 = (int(v) for v in face.bbox)
        if not allowed[oy1:oy2, ox1:ox2].any():
            assert not diff[oy1:oy2, ox1:ox2].any()


def test_only_the_given_faces_are_touched(t1, faces, gfpgan) -> None:
    out = enhance_image(t1, faces[:2], gfpgan, None, scale=1)
    diff = changed(out, t1)
    for face in faces[2:]:
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        assert not diff[y1:y2, x1:x2].any()
    for face in faces[:2]:
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        assert diff[y1:y2, x1:x2].mean() > 0.9
    np.testing.assert_array_equal(enhance_image(t1, [], gfpgan, None, scale=1), t1)


# ------------------------------------------------------------------------------------ background
def test_background_enhance_uses_the_model_upscaler(one_face, gfpgan, x2) -> None:
    img, face = one_face
    plain = enhance_image(img, [face], gfpgan, x2, scale=2, background_enhance=False)
    model = enhance_image(img, [face], gfpgan, x2, scale=2, background_enhance=True)
    no_model = enhance_image(img, [face], gfpgan, None, scale=2, background_enhance=True)
    np.testing.assert_array_equal(plain, no_model)  # no model upscaler: Lanczos
    corner = (slice(0, 40), slice(0, 40))  # far from the face
    np.testing.assert_array_equal(model[corner], x2.upscale(img, 2)[corner])
    np.testing.assert_array_equal(plain[corner], lanczos(img, 2)[corner])
    assert not np.array_equal(model[corner], plain[corner])


# -------------------------------------------------------------------------------------------- masks
def test_occlusion_changes_only_the_occluded_square(t1, faces, gfpgan, xseg) -> None:
    face = faces[3]
    off = enhance_image(t1, [face], gfpgan, None, scale=2)
    on = enhance_image(t1, [face], gfpgan, None, scale=2, occlusion=xseg)
    base = lanczos(t1, 2)
    placed = scale_face(face, 2.0, 2.0)
    _, m = align_face(base, placed)
    (r0, r1), (c0, c1) = standins_enhance.XSEG_OCCLUDED
    square = (2 * c0, 2 * r0, 2 * c1, 2 * r1)  # the 256 grid on the 512 crop
    diff = changed(on, off)
    assert diff.sum() > 1000
    # The feather widens an occluded hole by up to 4 sigma = 20 crop pixels.
    near = (square[0] - 22, square[1] - 22, square[2] + 22, square[3] + 22)
    assert not diff[~footprint(base.shape, m, rect=near, grow=2)].any()
    assert diff[footprint(base.shape, m, rect=square, grow=0)].mean() > 0.9
    # Deep inside the square the original (upscaled) pixels are kept.
    inner = footprint(base.shape, m, rect=(square[0] + 24, square[1] + 24, square[2] - 24, square[3] - 24), grow=0)
    np.testing.assert_array_equal(on[inner], base[inner])


def test_parser_limits_the_paste_to_the_face_classes(t1, faces, gfpgan, parser) -> None:
    face = faces[3]
    off = enhance_image(t1, [face], gfpgan, None, scale=1)
    on = enhance_image(t1, [face], gfpgan, None, scale=1, parser=parser)
    _, m = align_face(t1, face)
    (cx, cy), (ax, ay) = standins_enhance.BISENET_SKIN
    inside = footprint(t1.shape, m, rect=(int(cx - ax / 2), int(cy - ay / 2), int(cx + ax / 2), int(cy + ay / 2)),
                       grow=0)
    hair = footprint(t1.shape, m, rect=(100, standins_enhance.BISENET_HAIR_ROWS[0] + 10, 412,
                                        standins_enhance.BISENET_HAIR_ROWS[1] - 10), grow=0)
    np.testing.assert_array_equal(on[inside], off[inside])  # skin: pasted as before
    np.testing.assert_array_equal(on[hair], t1[hair])  # hair class: kept original
    assert changed(off, t1)[hair].mean() > 0.5


# ------------------------------------------------------------------------------------ face_upsample
def test_face_upsample_upscales_the_restored_crop(one_face, gfpgan, x2) -> None:
    img, face = one_face
    placed = scale_face(face, 4.0, 4.0)
    _, m = align_face(lanczos(img, 4), placed)
    assert crop_footprint(m) > 512  # the face covers more canvas pixels than the crop holds
    plain = enhance_image(img, [face], gfpgan, x2, scale=4)
    upsampled = enhance_image(img, [face], gfpgan, x2, scale=4, face_upsample=True)
    assert upsampled.shape == plain.shape == (1040, 960, 3)
    diff = changed(upsampled, plain)
    assert diff.sum() > 10_000
    assert not diff[~footprint(plain.shape, m)].any()
    # Without a model upscaler, or for the built-in restorer, the flag changes nothing.
    np.testing.assert_array_equal(enhance_image(img, [face], gfpgan, None, scale=4, face_upsample=True),
                                  enhance_image(img, [face], gfpgan, None, scale=4))
    builtin = BuiltinRestorer()
    np.testing.assert_array_equal(enhance_image(img, [face], builtin, x2, scale=2, face_upsample=True),
                                  enhance_image(img, [face], builtin, x2, scale=2))


def test_face_upsample_skips_small_faces(one_face, gfpgan, x2) -> None:
    img, face = one_face
    np.testing.assert_array_equal(enhance_image(img, [face], gfpgan, x2, scale=1, face_upsample=True),
                                  enhance_image(img, [face], gfpgan, x2, scale=1))


# -------------------------------------------------------------------------------- other restorers
def test_builtin_through_the_pipeline_changes_only_faces(t1, faces) -> None:
    out = enhance_image(t1, faces, BuiltinRestorer(), None, scale=1.5)
    base = lanczos(t1, 1.5)
    diff = changed(out, base)
    sx, sy = base.shape[1] / t1.shape[1], base.shape[0] / t1.shape[0]
    allowed = np.zeros(diff.shape, bool)
    for face in faces:
        placed = scale_face(face, sx, sy)
        _, m = align_face(base, placed)
        allowed |= footprint(base.shape, m)
        x1, y1, x2, y2 = (int(round(v)) for v in placed.bbox)
        assert diff[y1:y2, x1:x2].mean() > 0.3
    assert not diff[~allowed].any()


def test_codeformer_fidelity_reaches_the_model(enhance_weights, one_face) -> None:
    img, face = one_face
    cf = FaceRestorer(enhance_weights / "codeformer.onnx", CPU_ONLY, "codeformer")
    a = enhance_image(img, [face], cf, None, fidelity=0.0, blend=1.0)
    b = enhance_image(img, [face], cf, None, fidelity=1.0, blend=1.0)
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    assert np.abs(a.astype(int) - b)[y1:y2, x1:x2].mean() > 10


def test_bad_scale(one_face, gfpgan) -> None:
    img, face = one_face
    with pytest.raises(ValueError):
        enhance_image(img, [face], gfpgan, None, scale=0)
