"""Alignment maths: templates, similarity estimation, crops and paste-back."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from models import align


def _random_kps(rng: np.random.Generator, n: int = 50) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        angle = rng.uniform(-0.8, 0.8)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * rng.uniform(0.3, 5)
        centre = rng.uniform(0, 1000, 2)
        pts = (align.ARCFACE_112 - 56) @ rot.T + centre + rng.normal(0, 2, (5, 2))
        out.append(pts.astype(np.float32))
    return out


def _skimage_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    tf = SimilarityTransform()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tf.estimate(src, dst)
    return tf.params[0:2, :]


def test_templates() -> None:
    assert align.ARCFACE_112.shape == (5, 2) and align.FFHQ_512.shape == (5, 2)
    np.testing.assert_allclose(align.ARCFACE_128[:, 0], align.ARCFACE_112[:, 0] + 8.0)
    np.testing.assert_allclose(align.ARCFACE_128[:, 1], align.ARCFACE_112[:, 1])
    np.testing.assert_allclose(align.template_points(224), align.ARCFACE_112 * 2)
    np.testing.assert_allclose(align.template_points(256), align.ARCFACE_112 * 2 + [16.0, 0.0])
    np.testing.assert_allclose(align.template_points(256, "ffhq"), align.FFHQ_512 / 2)
    with pytest.raises(ValueError):
        align.template_points(100)


@pytest.mark.parametrize("size,template", [(112, "arcface"), (128, "arcface"), (512, "ffhq")])
def test_estimate_norm_matches_skimage(size: int, template: str) -> None:
    dst = align.template_points(size, template)
    for kps in _random_kps(np.random.default_rng(size)):
        ours = align.estimate_norm(kps, size, template)
        assert ours.shape == (2, 3)
        np.testing.assert_allclose(ours, _skimage_matrix(kps, dst), atol=1e-4)


def test_estimate_norm_explicit_template_and_exact_fit() -> None:
    # A pure similarity of the template is recovered exactly.
    angle, scale, shift = 0.3, 2.5, np.array([400.0, 250.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    kps = (align.ARCFACE_112 @ rot.T + shift).astype(np.float32)
    m = align.estimate_norm(kps, 112, template=align.ARCFACE_112)
    np.testing.assert_allclose(align.transform_points(kps, m), align.ARCFACE_112, atol=1e-3)


def test_norm_crop_lands_template_points() -> None:
    # Synthetic image: a bright dot at each of five known points, far from the crop's template scale.
    img = np.zeros((600, 800, 3), np.uint8)
    angle = 0.25
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * 3.0
    kps = (align.ARCFACE_128 - 64) @ rot.T + np.array([420.0, 300.0])
    for x, y in kps:
        cv2.circle(img, (int(round(x)), int(round(y))), 6, (255, 255, 255), -1)
    crop, m = align.norm_crop(img, kps.astype(np.float32), 128)
    assert crop.shape == (128, 128, 3)
    gray = crop[:, :, 0].astype(np.float64)
    for tx, ty in align.ARCFACE_128:
        x0, y0 = int(tx) - 4, int(ty) - 4
        win = gray[y0:y0 + 9, x0:x0 + 9]
        ys, xs = np.mgrid[y0:y0 + 9, x0:x0 + 9]
        cx, cy = (win * xs).sum() / win.sum(), (win * ys).sum() / win.sum()
        assert abs(cx - tx) < 0.7 and abs(cy - ty) < 0.7


def test_inverse_mapping() -> None:
    kps = _random_kps(np.random.default_rng(3), 1)[0]
    m = align.estimate_norm(kps, 128)
    im = align.invert(m)
    pts = np.random.default_rng(4).uniform(0, 128, (20, 2))
    back = align.transform_points(align.transform_points(pts, im), m)
    np.testing.assert_allclose(back, pts, atol=1e-3)
    # The template maps back close to the detected points (least-squares residual only).
    np.testing.assert_allclose(align.transform_points(align.ARCFACE_128, im), kps, atol=8.0)


def test_paste_back_identity_crop_keeps_image() -> None:
    rng = np.random.default_rng(5)
    img = cv2.GaussianBlur(rng.integers(0, 256, (400, 500, 3), dtype=np.uint8), (0, 0), 3)
    kps = (align.ARCFACE_128 - 64) * 1.6 + np.array([250.0, 200.0])
    crop, m = align.norm_crop(img, kps.astype(np.float32), 128)
    out = align.paste_back(img, crop, m)
    assert out.shape == img.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - img.astype(int))
    assert diff.max() <= 12 and diff.mean() < 0.5


def test_paste_back_touches_only_the_face() -> None:
    img = np.full((300, 400, 3), 100, np.uint8)
    kps = (align.ARCFACE_128 - 64) + np.array([200.0, 150.0])
    crop = np.full((128, 128, 3), 200, np.uint8)
    m = align.estimate_norm(kps.astype(np.float32), 128)
    out = align.paste_back(img, crop, m)
    changed = np.argwhere((out != img).any(axis=2))
    assert len(changed) > 0
    assert changed[:, 1].min() >= 200 - 65 and changed[:, 1].max() <= 200 + 65
    assert changed[:, 0].min() >= 150 - 65 and changed[:, 0].max() <= 150 + 65
    assert tuple(out[150, 200]) == (200, 200, 200)  # the centre is fully replaced
    # An extra crop-space mask of zeros cancels the paste; a face outside the frame changes nothing.
    np.testing.assert_array_equal(align.paste_back(img, crop, m, mask=np.zeros((128, 128), np.float32)), img)
    far = align.estimate_norm((kps + 5000).astype(np.float32), 128)
    np.testing.assert_array_equal(align.paste_back(img, crop, far), img)


def test_paste_back_ffhq_512() -> None:
    img = np.full((700, 700, 3), 50, np.uint8)
    kps = (align.FFHQ_512 - 256) * 0.6 + np.array([350.0, 350.0])
    crop, m = align.norm_crop(img, kps.astype(np.float32), 512, "ffhq")
    crop[:] = 250
    out = align.paste_back(img, crop, m)
    assert tuple(out[350, 350]) == (250, 250, 250)
    assert tuple(out[5, 5]) == (50, 50, 50)
