"""Box mask, XSeg occlusion masker and BiSeNet face parser (stand-in weights) on aligned t1.jpg crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.face import Face
from models.masks.face_masks import FACE_CLASSES, FaceParser, OcclusionMasker, box_mask, feather
from models.providers import CPU
from models.restore.restorer import align_face
from testkit import standins, standins_enhance

CPU_ONLY = [CPU]


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    img = cv2.imread(standins.t1_path())
    b, k = standins.T1_FACES[3]
    face = Face(bbox=np.asarray(b, np.float32), score=0.9, kps=np.asarray(k, np.float32))
    c, _ = align_face(img, face)
    return c


# ------------------------------------------------------------------------------------------ box mask
def test_box_mask_border_and_feather() -> None:
    m = box_mask(512, 0.3)
    assert m.shape == (512, 512) and m.dtype == np.float32
    # b = int(512·0.5·0.3) = 76: a 38 px zero border, blurred with sigma 19.
    assert m[256, 256] == pytest.approx(1.0, abs=1e-3)
    assert m[256, 0] < 0.06 and m[0, 256] < 0.06 and m[0, 0] < 3e-3
    assert m[256, 38] == pytest.approx(0.5, abs=0.05) and m[256, 512 - 39] == pytest.approx(0.5, abs=0.05)
    np.testing.assert_allclose(m, m[::-1, ::-1], atol=1e-6)
    assert np.all(np.diff(m[256, :256]) >= -1e-6)  # rises monotonically towards the centre
    hard = box_mask((200, 100), 0.0)
    assert hard.shape == (100, 200) and hard[0].max() == 0 and hard[1:-1, 1:-1].min() == 1.0
    padded = box_mask(100, 0.0, padding=(20, 0, 0, 0))
    assert padded[:20].max() == 0 and padded[20:-1, 1:-1].min() == 1.0


def test_feather_fades_inward() -> None:
    region = np.zeros((512, 512), np.float32)
    region[100:400, 100:400] = 1.0
    m = feather(region)
    assert m[250, 250] == 1.0 and m[99, 250] == 0.0 and m[50, 50] == 0.0
    assert 0.0 <= m[102, 250] < 0.5  # soft edge just inside the region


# ------------------------------------------------------------------------------------------- XSeg
def test_xseg_steps(xseg: OcclusionMasker, crop: np.ndarray) -> None:
    blob = xseg.preprocess(crop)
    assert blob.shape == (1, 256, 256, 3) and blob.dtype == np.float32
    assert 0.0 <= blob.min() and blob.max() <= 1.0
    small = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(blob[0, 128, 128], small[128, 128] / 255.0, atol=1e-6)  # BGR, as trained
    out = xseg.inference(blob)
    assert out.shape == (1, 256, 256, 1)
    mask = xseg.postprocess(out, crop.shape[:2])
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0


def test_xseg_mask_marks_the_occluded_square(xseg: OcclusionMasker, crop: np.ndarray) -> None:
    mask = xseg.mask(crop)
    (r0, r1), (c0, c1) = standins_enhance.XSEG_OCCLUDED  # 256 grid → ×2 on the 512 crop
    assert mask[2 * r0 + 4:2 * r1 - 4, 2 * c0 + 4:2 * c1 - 4].max() == 0.0
    outside = np.ones((512, 512), bool)
    outside[2 * r0 - 24:2 * r1 + 24, 2 * c0 - 24:2 * c1 + 24] = False
    assert mask[outside].min() > 0.999
    # Any crop size in, a mask of that size out.
    small = xseg.mask(cv2.resize(crop, (128, 128)))
    assert small.shape == (128, 128) and small[r0 // 2 + 4, c0 // 2 + 4] == 0.0 and small[5, 5] > 0.999


# ----------------------------------------------------------------------------------------- BiSeNet
def test_parser_steps(parser: FaceParser, crop: np.ndarray) -> None:
    blob = parser.preprocess(crop)
    assert blob.shape == (1, 3, 512, 512) and blob.dtype == np.float32
    b, g, r = (float(v) / 255.0 for v in crop[200, 300])
    np.testing.assert_allclose(blob[0, :, 200, 300], [(r - 0.485) / 0.229, (g - 0.456) / 0.224, (b - 0.406) / 0.225],
                               atol=1e-5)
    logits = parser.inference(blob)
    assert logits.shape == (1, 19, 512, 512)
    labels = parser.postprocess(logits)
    assert labels.shape == (512, 512) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, standins_enhance.bisenet_labels(64).repeat(8, 0).repeat(8, 1))
    np.testing.assert_array_equal(parser.parse(crop), labels)


def test_parser_region_masks(parser: FaceParser, crop: np.ndarray) -> None:
    face = parser.region_mask(crop)
    assert face.shape == (512, 512) and face.dtype == np.float32 and 0.0 <= face.min() and face.max() <= 1.0
    (cx, cy), _ = standins_enhance.BISENET_SKIN
    assert face[int(cy), int(cx)] == 1.0 and face[5, 5] == 0.0 and face[75, 256] == 0.0  # centre, corner, hair
    hair = parser.region_mask(crop, classes=(17,))
    assert hair[75, 30] == 1.0 and hair[int(cy), int(cx)] == 0.0
    assert set(FACE_CLASSES) == {1, 2, 3, 4, 5, 10, 11, 12, 13}
    assert parser.region_mask(cv2.resize(crop, (256, 256))).shape == (256, 256)
