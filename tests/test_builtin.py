"""The built-in backend on real faces: dlib analysis (detection, 68 landmarks, descriptors) and the classical
swap, with the photos that insightface ships."""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import pytest

from models.analysis.dlib_analyser import DlibAnalyser, hog_confidence
from models.analysis.landmarks import MIRROR_68, face_outline, kps_from_68, mirror_68, yaw_ratio
from models.face import Face, best_face
from models.swap.classical_swap import ClassicalSwapper

insightface = pytest.importorskip("insightface")
IMAGES = os.path.join(os.path.dirname(insightface.__file__), "data", "images")


def _read(name: str) -> np.ndarray:
    img = cv2.imread(os.path.join(IMAGES, name))
    if img is None:
        pytest.skip(f"insightface does not ship {name}")
    return img


@pytest.fixture(scope="module")
def analyser() -> DlibAnalyser:
    a = DlibAnalyser()
    a.prepare()
    return a


@pytest.fixture(scope="module")
def swapper() -> ClassicalSwapper:
    s = ClassicalSwapper()
    s.prepare()
    return s


@pytest.fixture(scope="module")
def tom() -> np.ndarray:
    return _read("Tom_Hanks_54745.png")


@pytest.fixture(scope="module")
def t1_faces(analyser: DlibAnalyser, t1: np.ndarray) -> list[Face]:
    return analyser.get(t1, embeddings=True)


@pytest.fixture(scope="module")
def tom_face(analyser: DlibAnalyser, tom: np.ndarray) -> Face:
    faces = analyser.get(tom, embeddings=True)
    assert len(faces) == 1
    return faces[0]


def _hull_mask(shape: tuple[int, ...], face: Face, swapper: ClassicalSwapper, margin: int) -> np.ndarray:
    """Boolean mask of the target's face outline hull, grown by ``margin`` pixels."""
    outline = face_outline(face.landmarks, swapper.forehead_ratio)
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(outline).astype(np.int32)), 255)
    if margin > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2))
    return mask > 0


def _inner_mask(shape: tuple[int, ...], face: Face) -> np.ndarray:
    """The middle of the face (eyes, nose, mouth region), certainly inside the swapped area."""
    lm = face.landmarks
    pts = np.concatenate([lm[17:27], lm[48:60]])
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 255)
    return mask > 0


def _check_swap(img: np.ndarray, out: np.ndarray, target: Face, swapper: ClassicalSwapper) -> None:
    assert out.shape == img.shape and out.dtype == np.uint8
    outside = ~_hull_mask(img.shape, target, swapper, margin=2)
    assert np.array_equal(out[outside], img[outside]), "pixels outside the face hull changed"
    inner = _inner_mask(img.shape, target)
    assert inner.sum() > 0
    diff = np.abs(out.astype(np.int16) - img.astype(np.int16)).sum(axis=2)
    assert float(diff[inner].mean()) > 15.0, "the face region barely changed"
    assert float((diff[inner] > 12).mean()) > 0.5


# --- landmark helpers --------------------------------------------------------------------------------


def test_landmark_helpers() -> None:
    assert sorted(MIRROR_68.tolist()) == list(range(68))
    assert np.array_equal(MIRROR_68[MIRROR_68], np.arange(68))
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 100, (68, 2)).astype(np.float32)
    assert np.allclose(mirror_68(mirror_68(lm, 120), 120), lm)
    kps = kps_from_68(lm)
    assert kps.shape == (5, 2) and kps.dtype == np.float32
    assert np.allclose(kps[0], lm[36:42].mean(axis=0)) and np.allclose(kps[3], lm[48])


def test_hog_confidence_is_monotonic() -> None:
    values = [hog_confidence(x) for x in (-1.0, 0.0, 1.0, 3.0)]
    assert values == sorted(values) and 0.0 < values[0] and values[-1] < 1.0
    assert hog_confidence(0.0) == pytest.approx(0.5)


# --- analysis ----------------------------------------------------------------------------------------


def test_detects_six_faces_on_t1(t1_faces: list[Face], t1: np.ndarray) -> None:
    assert len(t1_faces) == 6
    areas = [f.area for f in t1_faces]
    assert areas == sorted(areas, reverse=True)
    assert best_face(t1_faces) is t1_faces[0] or best_face(t1_faces).area == t1_faces[0].area
    for f in t1_faces:
        assert f.bbox.shape == (4,) and f.bbox.dtype == np.float32
        assert f.kps.shape == (5, 2) and f.kps.dtype == np.float32
        assert f.landmarks is not None and f.landmarks.shape == (68, 2)
        assert 0.0 < f.score < 1.0 and "hog_score" in f.extra
        x1, y1, x2, y2 = f.bbox
        assert np.all((f.kps[:, 0] >= x1) & (f.kps[:, 0] <= x2) & (f.kps[:, 1] >= y1) & (f.kps[:, 1] <= y2))
        eyes_y = f.kps[:2, 1].mean()
        mouth_y = f.kps[3:, 1].mean()
        assert eyes_y < f.kps[2, 1] < mouth_y, "eyes above the nose above the mouth"
        assert f.kps[0, 0] < f.kps[1, 0] and f.kps[3, 0] < f.kps[4, 0], "image-left before image-right"
        assert f.embedding is not None and f.embedding.shape == (128,) and f.embedding.dtype == np.float32


def test_detects_tight_aligned_crop(tom_face: Face, tom: np.ndarray) -> None:
    x1, y1, x2, y2 = tom_face.bbox
    assert x2 - x1 > 40 and y2 - y1 > 40
    assert tom_face.kps[:2, 1].mean() < tom_face.kps[3:, 1].mean()


def test_max_num_keeps_largest(analyser: DlibAnalyser, t1: np.ndarray, t1_faces: list[Face]) -> None:
    faces = analyser.get(t1, max_num=2)
    assert len(faces) == 2
    assert [f.area for f in faces] == [f.area for f in t1_faces[:2]]


def test_embeddings(analyser: DlibAnalyser, tom: np.ndarray, tom_face: Face, t1_faces: list[Face]) -> None:
    mirrored = np.ascontiguousarray(tom[:, ::-1])
    faces = analyser.get(mirrored, embeddings=True)
    assert len(faces) == 1
    assert float(np.linalg.norm(faces[0].embedding - tom_face.embedding)) < 0.4
    assert float(np.linalg.norm(t1_faces[0].embedding - t1_faces[1].embedding)) > 0.5
    for i in range(len(t1_faces)):
        for j in range(i + 1, len(t1_faces)):
            assert float(np.linalg.norm(t1_faces[i].embedding - t1_faces[j].embedding)) > 0.5
    # embed() on an already detected face gives the same vector and stores it.
    again = Face(bbox=tom_face.bbox.copy(), score=tom_face.score, kps=tom_face.kps.copy(), landmarks=tom_face.landmarks)
    vec = analyser.embed(tom, again)
    assert again.embedding is vec and vec.shape == (128,) and vec.dtype == np.float32
    assert float(np.linalg.norm(vec - tom_face.embedding)) < 0.05
    # Without landmarks, embed() computes them from the box.
    bare = Face(bbox=tom_face.bbox.copy(), score=1.0, kps=tom_face.kps.copy())
    assert float(np.linalg.norm(analyser.embed(tom, bare) - tom_face.embedding)) < 0.1


def test_rejects_non_bgr(analyser: DlibAnalyser) -> None:
    with pytest.raises(ValueError):
        analyser.get(np.zeros((50, 50), np.uint8))


def test_thread_safety(analyser: DlibAnalyser, t1: np.ndarray, tom: np.ndarray, tom_face: Face) -> None:
    small = cv2.resize(t1, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    expected = analyser.get(small)
    expected_vec = analyser.embed(
        tom, Face(bbox=tom_face.bbox, score=1.0, kps=tom_face.kps, landmarks=tom_face.landmarks)
    )
    assert len(expected) == 6
    errors: list[BaseException] = []
    mismatches: list[str] = []
    barrier = threading.Barrier(6)

    def work(k: int) -> None:
        try:
            barrier.wait()
            for it in range(3):
                if (k + it) % 3 == 2:
                    face = Face(bbox=tom_face.bbox, score=1.0, kps=tom_face.kps, landmarks=tom_face.landmarks)
                    if not np.array_equal(analyser.embed(tom, face), expected_vec):
                        mismatches.append(f"thread {k} iteration {it}: embedding")
                    continue
                got = analyser.get(small)
                same = len(got) == len(expected) and all(
                    np.array_equal(a.bbox, b.bbox) and np.array_equal(a.landmarks, b.landmarks) and a.score == b.score
                    for a, b in zip(got, expected, strict=True)
                )
                if not same:
                    mismatches.append(f"thread {k} iteration {it}: faces")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not mismatches, mismatches


# --- classical swap ---------------------------------------------------------------------------------------


def test_swap_every_t1_face(
    swapper: ClassicalSwapper, t1: np.ndarray, t1_faces: list[Face], tom: np.ndarray, tom_face: Face
) -> None:
    before = t1.copy()
    # A padded copy of the tight crop as the source (landmarks shifted accordingly).
    pad = 40
    tom_padded = cv2.copyMakeBorder(tom, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    padded_face = Face(
        bbox=tom_face.bbox + pad, score=tom_face.score, kps=tom_face.kps + pad, landmarks=tom_face.landmarks + pad
    )
    for target in t1_faces:
        for src_img, src_face in ((tom, tom_face), (tom_padded, padded_face)):
            out = swapper.get(t1, target, src_face, src_img)
            _check_swap(t1, out, target, swapper)
    assert np.array_equal(t1, before), "the input image was modified"


def test_swap_face_cut_by_image_border(
    analyser: DlibAnalyser, swapper: ClassicalSwapper, t1: np.ndarray, tom: np.ndarray, tom_face: Face
) -> None:
    # Left border: the detector still finds the cut face; its box and landmarks run off the image.
    crop = np.ascontiguousarray(t1[:, 470:])
    faces = [f for f in analyser.get(crop) if f.bbox[0] < 0]
    assert faces, "the face cut by the left border was not found"
    out = swapper.get(crop, faces[0], tom_face, tom)
    _check_swap(crop, out, faces[0], swapper)
    # Top and right borders: landmarks from the full image, shifted so that part of the face is outside.
    for target in analyser.get(t1):
        x1, y1 = int(target.bbox[0]), int(target.bbox[1])
        shifted_crop = np.ascontiguousarray(t1[y1 + 25 :, : x1 + 60])
        off = np.array([0.0, y1 + 25], np.float32)
        shifted = Face(
            bbox=target.bbox - np.tile(off, 2),
            score=target.score,
            kps=target.kps - off,
            landmarks=target.landmarks - off,
        )
        out = swapper.get(shifted_crop, shifted, tom_face, tom)
        assert out.shape == shifted_crop.shape
        assert not np.array_equal(out, shifted_crop)
        # Only pixels within the face hull may change.
        outside = ~_hull_mask(shifted_crop.shape, shifted, swapper, margin=2)
        assert np.array_equal(out[outside], shifted_crop[outside])
    # Source face cut by its own border: the tight crop cut further.
    cut = np.ascontiguousarray(tom[20:, 15:])
    cut_face = Face(
        bbox=tom_face.bbox - (15, 20, 15, 20),
        score=1.0,
        kps=tom_face.kps - (15, 20),
        landmarks=tom_face.landmarks - (15, 20),
    )
    big_target = analyser.get(t1, max_num=1)[0]
    out = swapper.get(t1, big_target, cut_face, cut)
    assert np.array_equal(
        out[~_hull_mask(t1.shape, big_target, swapper, 2)], t1[~_hull_mask(t1.shape, big_target, swapper, 2)]
    )


def test_swap_very_different_sizes(
    analyser: DlibAnalyser, swapper: ClassicalSwapper, t1: np.ndarray, tom: np.ndarray, tom_face: Face
) -> None:
    big = cv2.resize(t1[250:430, 420:600], None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # one face ≈ 430 px
    small = cv2.resize(t1, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)  # faces ≈ 35 px
    big_faces = analyser.get(big)
    small_faces = analyser.get(small)
    assert big_faces and len(small_faces) >= 4
    big_face = big_faces[0]
    assert big_face.bbox[2] - big_face.bbox[0] > 300
    # Big source onto small targets.
    for target in small_faces:
        out = swapper.get(small, target, big_face, big)
        outside = ~_hull_mask(small.shape, target, swapper, margin=2)
        assert np.array_equal(out[outside], small[outside])
        assert not np.array_equal(out, small)
    # Small (112 px) source onto a huge target.
    out = swapper.get(big, big_face, tom_face, tom)
    _check_swap(big, out, big_face, swapper)
    # Big source onto the small tight crop.
    out = swapper.get(tom, tom_face, big_face, big)
    _check_swap(tom, out, tom_face, swapper)


def test_swap_options_and_errors(
    swapper: ClassicalSwapper, t1: np.ndarray, t1_faces: list[Face], tom: np.ndarray
) -> None:
    target = t1_faces[0]
    tom_like = Face(bbox=target.bbox, score=1.0, kps=target.kps)  # no 68 landmarks
    with pytest.raises(ValueError):
        swapper.get(t1, target, tom_like, tom)
    source = t1_faces[1]
    for kwargs in ({"poisson": True}, {"mirror": False, "keep_mouth": False, "relight": 0.0}):
        out = ClassicalSwapper(**kwargs).get(t1, target, source, t1)
        _check_swap(t1, out, target, swapper)
    assert yaw_ratio(target.landmarks) == pytest.approx(1.0 - yaw_ratio(mirror_68(target.landmarks, t1.shape[1])))
