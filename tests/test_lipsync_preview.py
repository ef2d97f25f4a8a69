"""The built-in lip-sync preview's opened mouth, measured on real faces (insightface's t1 and Tom Hanks, skimage's
astronaut, a small face and a tilted head): silence leaves the frame bit-identical, the interior is dark and meets
the lips without a light seam, the lower lip is moved rather than stretched, the change grows with the level, and
the warp stays inside the lower face, opening along the head's own axis."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.lipsync.preview import BOW, LIFT, MAX_OPEN, PreviewLipSync

LEVELS = (0.3, 0.6, 1.0)


@pytest.fixture(scope="module")
def analyser(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from models.hub import ModelHub

    hub = ModelHub(tmp_path_factory.mktemp("no_weights"), ["analyze"])
    hub.load()
    return hub.analysers["builtin"]


def landmarks(analyser, img: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """The 68 landmarks of the widest face the built-in analyser finds."""
    faces = [f for f in analyser.get(img) if f.landmarks is not None]
    assert faces, "no face found"
    lms = [np.asarray(f.landmarks, np.float32) for f in faces]
    return max(lms, key=lambda lm: float(np.linalg.norm(lm[16] - lm[0])))


def astronaut() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def faces(analyser, t1_bgr: np.ndarray, hanks_bgr: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # noqa: ANN001
    pictures = {
        "t1": t1_bgr,
        "hanks": cv2.copyMakeBorder(cv2.resize(hanks_bgr, (224, 224), interpolation=cv2.INTER_CUBIC), 16, 80, 48, 48,
                                    cv2.BORDER_CONSTANT, value=(110, 110, 110)),  # room for the chin to drop
        "astronaut": astronaut(),
    }
    return {name: (img, landmarks(analyser, img)) for name, img in pictures.items()}


def mouth_axes(lm: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Mouth width, the unit vector along the mouth (corner to corner) and the one towards the chin."""
    mw = float(np.linalg.norm(lm[54] - lm[48]))
    e1 = (lm[54] - lm[48]) / mw
    return mw, e1.astype(np.float32), np.array([-e1[1], e1[0]], np.float32)


def grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)


def profile(g: np.ndarray, p0: np.ndarray, direction: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """``g`` sampled (bilinear) at ``p0 + t · direction`` for each ``t``."""
    pts = (p0[None] + ts[:, None].astype(np.float32) * direction[None]).astype(np.float32)
    return cv2.remap(g, pts[:, :1].copy(), pts[:, 1:].copy(), cv2.INTER_LINEAR)[:, 0]


def fall_before(q: np.ndarray, level: float) -> float:
    """Along ``q`` (from the mouth's inside outwards), the largest fall after a rise before ``q`` first reaches
    ``level``: a light line between the dark and the lip makes one; a clean soft edge rising into the lip does not."""
    reached = np.flatnonzero(q >= level)
    q = q[: int(reached[0]) + 1] if reached.size else q
    return float(np.max(np.maximum.accumulate(q) - q))


def lips_mean(img: np.ndarray, lm: np.ndarray) -> float:
    """Mean luminance of the lips: inside the outer lip line, outside the inner one."""
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(lm[48:60]).astype(np.int32)], 255)
    cv2.fillPoly(mask, [np.round(lm[60:68]).astype(np.int32)], 0)
    return float(cv2.mean(grey(img), mask=mask)[0])


def test_silence_is_bit_identical(faces: dict) -> None:
    preview = PreviewLipSync()
    for name, (img, lm) in faces.items():
        before = img.copy()
        for level in (0.0, 1e-4):
            out = preview.animate(img, lm, level)
            assert out is img, name
            assert np.array_equal(out, before), name
        opened = preview.animate(img, lm, 1.0)
        assert opened is not img and np.array_equal(img, before), name  # the input frame is never written to
        assert opened.shape == img.shape and opened.dtype == np.uint8


@pytest.mark.parametrize("name", ["t1", "hanks", "astronaut"])
@pytest.mark.parametrize("level", [0.6, 1.0])
def test_interior_is_dark_and_meets_the_lips_without_a_seam(faces: dict, name: str, level: float) -> None:
    """Across three columns of the mouth: the middle of the opening is far darker than the lips, and from there
    outwards to each lip the profile only rises (no light line at the inner lip edge). The astronaut smiles with her
    teeth showing, which the preview keeps under the upper lip, so only her lower lip edge is checked."""
    img, lm = faces[name]
    out = grey(PreviewLipSync().animate(img, lm, level))
    src = grey(img)
    mw, _, e2 = mouth_axes(lm)
    drop = MAX_OPEN * level * mw
    lips = lips_mean(img, lm)
    was_open = float((lm[66] - lm[62]) @ e2) / mw
    for frac in (0.35, 0.5, 0.65):
        bow = (1.0 - (2.0 * frac - 1.0) ** 2) ** BOW
        p0 = (lm[60] + frac * (lm[64] - lm[60])).astype(np.float32)

        def t(i: int, p0: np.ndarray = p0) -> float:
            return float((lm[i] - p0) @ e2)

        upper = (t(61) + t(62) + t(63)) / 3 - LIFT * drop * bow  # the moved inner lip lines
        lower = (t(65) + t(66) + t(67)) / 3 + drop * bow
        mid = 0.5 * (upper + lower)
        inside = float(profile(out, p0, e2, np.array([mid - 1, mid, mid + 1])).mean())
        assert inside < 0.4 * lips, (frac, inside, lips)
        lower_lip = float(profile(src, p0, e2, np.linspace(t(66), t(57), 12)).max())
        down = profile(out, p0, e2, np.arange(mid, lower + 0.5 * (t(57) - t(66)), 0.25))
        assert fall_before(down, 0.9 * lower_lip) < 8.0, (frac, np.round(down[::4]))
        if was_open < 0.1:
            upper_lip = float(profile(src, p0, e2, np.linspace(t(51), t(62), 12)).max())
            up = profile(out, p0, e2, np.arange(mid, upper - 0.5 * (t(62) - t(51)), -0.25))
            assert fall_before(up, 0.9 * upper_lip) < 8.0, (frac, np.round(up[::4]))


@pytest.mark.parametrize("name", ["t1", "hanks"])
def test_the_lower_lip_is_moved_not_stretched(faces: dict, name: str) -> None:
    """Mid-mouth the lower lip drops as a whole: its luminance profile in the output, ``drop`` further down, is the
    source's own."""
    img, lm = faces[name]
    out = grey(PreviewLipSync().animate(img, lm, 1.0))
    mw, _, e2 = mouth_axes(lm)
    drop = MAX_OPEN * mw
    p0 = (0.5 * (lm[60] + lm[64])).astype(np.float32)
    t66, t57 = (float((lm[i] - p0) @ e2) for i in (66, 57))
    ts = np.linspace(t66 + 0.15 * (t57 - t66), t57, 16)
    before, after = profile(grey(img), p0, e2, ts), profile(out, p0, e2, ts + drop)
    assert float(np.abs(after - before).mean()) < 6.0, (np.round(before), np.round(after))


def test_change_grows_with_the_level(faces: dict) -> None:
    """The mouth region's change (the region the sync tests correlate with the audio) grows strictly with the
    level, so louder audio always reads as a wider mouth."""
    preview = PreviewLipSync()
    for name, (img, lm) in faces.items():
        x1, x2 = int(lm[48, 0]) - 4, int(lm[54, 0]) + 4
        y1, y2 = int(lm[33, 1]), int(lm[8, 1])
        ref = img[y1:y2, x1:x2].astype(np.float32)
        change = [float(np.abs(preview.animate(img, lm, lv)[y1:y2, x1:x2] - ref).mean())
                  for lv in np.linspace(0.0, 1.0, 11)]
        assert change[0] == 0.0
        assert all(b > a for a, b in zip(change, change[1:], strict=False)), (name, np.round(change, 2))


def chin_shift(img: np.ndarray, out: np.ndarray, lm: np.ndarray, reach: int) -> np.ndarray:
    """How far (x, y pixels) the patch between the lower lip and the chin moved from ``img`` to ``out``: the best
    match of the source patch in the output within ``reach`` pixels."""
    mw = float(np.linalg.norm(lm[54] - lm[48]))
    cx, cy = (lm[57] + 0.4 * (lm[8] - lm[57])).astype(int)
    r = max(4, int(0.2 * mw))
    patch = img[cy - r: cy + r + 1, cx - r: cx + r + 1]
    window = out[cy - r - reach: cy + r + reach + 1, cx - r - reach: cx + r + reach + 1]
    scores = cv2.matchTemplate(window, patch, cv2.TM_SQDIFF)
    y, x = np.unravel_index(int(np.argmin(scores)), scores.shape)
    return np.array([x - reach, y - reach], np.float32)


def assert_opens_inside_the_lower_face(img: np.ndarray, lm: np.ndarray, max_angle: float) -> None:
    """At each level: only pixels below the nose and within the jaw's width change and the mouth opens dark; at
    full opening the chin drops along the head's own chin direction (within ``max_angle`` degrees)."""
    mw, e1, e2 = mouth_axes(lm)
    centre = lm[[61, 62, 63, 65, 66, 67]].mean(axis=0)
    half_jaw = 0.5 * float(np.linalg.norm(lm[13] - lm[3]))
    size = float(np.linalg.norm(lm[16] - lm[0]))
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]].astype(np.float32)
    s = (xs - centre[0]) * e1[0] + (ys - centre[1]) * e1[1]
    t = (xs - centre[0]) * e2[0] + (ys - centre[1]) * e2[1]
    g = grey(img)
    for level in LEVELS:
        out = PreviewLipSync().animate(img, lm, level)
        assert out.shape == img.shape and out.dtype == np.uint8
        changed = np.abs(out.astype(np.int16) - img).max(axis=2) > 2
        drop = MAX_OPEN * level * mw
        nose = float((lm[33] - centre) @ e2)
        chin = float((lm[8] - centre) @ e2) + drop
        assert t[changed].min() >= nose - 2, "a change above the nose"
        assert np.abs(s[changed]).max() <= 1.2 * half_jaw + 2, "a change beyond the jaw"
        assert t[changed].max() <= chin + 0.4 * size, "a change far below the chin"
        mouth = (np.abs(s) < 0.5 * mw) & (t > float((lm[51] - centre) @ e2)) & (t < chin)
        darkened = (grey(out) < 0.5 * g) & changed & mouth
        assert darkened.sum() >= 0.02 * mw * drop, "the mouth did not open"
    moved = chin_shift(img, out, lm, reach=int(drop) + 4)
    angle = float(np.degrees(np.arccos(float(moved @ e2) / max(float(np.linalg.norm(moved)), 1e-6))))
    assert abs(float(np.linalg.norm(moved)) - drop) < 0.25 * drop + 1, (moved, drop)
    assert angle < max_angle, (moved, e2, angle)


@pytest.mark.parametrize("degrees", [20, -20])
def test_tilted_head(analyser, degrees: int) -> None:  # noqa: ANN001
    img = astronaut()
    h, w = img.shape[:2]
    rot = cv2.warpAffine(img, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h),
                         borderMode=cv2.BORDER_REFLECT)
    lm = landmarks(analyser, rot)
    _, e1, _ = mouth_axes(lm)
    assert abs(abs(np.degrees(np.arctan2(e1[1], e1[0]))) - 20) < 8  # the mouth is tilted in the picture
    assert_opens_inside_the_lower_face(rot, lm, max_angle=8.0)


def test_small_face(faces: dict) -> None:
    """An 80 px face (Hanks' landmarks scaled with the picture, as the service scales them back from its detection
    copy) on a small frame, and the same face cut by the frame's edge."""
    img, lm = faces["hanks"]
    k = 80.0 / float(np.linalg.norm(lm[16] - lm[0]))
    small = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    frame = cv2.copyMakeBorder(small, 24, 24, 24, 24, cv2.BORDER_REPLICATE)
    small_lm = lm * k + 24
    assert abs(float(np.linalg.norm(small_lm[16] - small_lm[0])) - 80) < 1
    assert_opens_inside_the_lower_face(frame, small_lm, max_angle=15.0)
    cut = frame[:, : int(small_lm[57, 0])]  # the right half of the mouth and jaw outside the frame
    for level in LEVELS:
        out = PreviewLipSync().animate(cut, small_lm, level)
        assert out.shape == cut.shape
