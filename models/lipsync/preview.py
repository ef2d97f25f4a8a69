"""The built-in lip-sync *preview* (no download): the jaw and lips open with the loudness of each frame's audio
window, by a landmark-driven warp of the lower face, with a darkened mouth interior.

It is not a lip-reading model: every sound opens the mouth the same way, only by how loud it is. It exists so that
``/lipsync`` works on a fresh checkout and so that audio/video sync is testable without weights. Silence keeps the
mouth exactly as it is (the warp is the identity when the level is 0).
"""

from __future__ import annotations

import cv2
import numpy as np

from models.base import LoadSpec
from models.lipsync.geometry import face_size

SILENCE_DB = -50.0  # a window at or below this level keeps the mouth closed
LOUD_DB = -15.0  # at or above this level the mouth is fully open
MAX_OPEN = 0.42  # full opening: the lower lip drops this share of the mouth width
LIFT = 0.15  # ... and the upper lip rises this share of that drop
BOW = 0.5  # the lower lip's drop across the mouth: (1 − r²)^BOW, r = −1 … 1 from inner corner to inner corner
FEATHER = 0.07  # the interior's soft edge, a share of the mouth width
EDGE = 0.35  # the interior's opacity where it meets a lip line (its soft edge reaches a little over the lips)
OPEN_SRC = 0.04  # a source mouth open wider than this share of its width shows its own teeth when opened further
INNER_MID = [61, 62, 63, 65, 66, 67]  # the inner lips, where they meet
UPPER_INNER = [60, 61, 62, 63, 64]  # the upper inner lip line, corner to corner
LOWER_INNER = [60, 67, 66, 65, 64]  # the lower inner lip line, corner to corner
TEETH = 0.45  # how much of the upper-teeth tone shows in the band under the upper lip


def loudness(samples: np.ndarray) -> float:
    """RMS of one frame's audio window in dBFS (−120 for silence or an empty window)."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(max(rms, 1e-6))


def openness(samples: np.ndarray) -> float:
    """How far the mouth opens for this window, in [0, 1]: linear in dB between ``SILENCE_DB`` and ``LOUD_DB``."""
    return float(np.clip((loudness(samples) - SILENCE_DB) / (LOUD_DB - SILENCE_DB), 0.0, 1.0))


def _smooth01(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / max(e1 - e0, 1e-6), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class PreviewLipSync:
    """The built-in backend (``builtin``): a landmark-driven jaw drop, arrays in and out."""

    name = "builtin"
    crop_size = None  # works on the frame itself, not on a 96² crop

    @classmethod
    def load(cls, spec: LoadSpec) -> PreviewLipSync:
        return cls()

    def prepare(self) -> None:
        return None

    def animate(self, frame: np.ndarray, landmarks: np.ndarray, level: float) -> np.ndarray:
        """``frame`` (BGR uint8) with the mouth of the face at ``landmarks`` (68 points, frame pixels) opened by
        ``level`` in [0, 1]. Returns the input object itself when there is nothing to do (level 0, tiny face).

        The work is done in the mouth's own axes (``s`` along the line between the mouth corners, ``t`` towards the
        chin), so a tilted head opens along its own chin direction. The lower inner lip line and everything below
        it move down by ``drop · bow(s)`` (``bow`` is 1 mid-mouth and 0 at the inner corners: the lower lip bows and
        is moved, not stretched), widening with depth to the jaw's fall-off so the chin drops as a whole and the
        neck below it is compressed; the upper inner lip line rises a little (``LIFT``), the skin up to the nose
        taking the stretch. Closed lips open from the darkest line between them (the landmarks are often a pixel
        off it). The gap between the two moved lines is the mouth interior, bounded by the same curves, so the
        dark meets the lips exactly; under its soft edge (which straddles the lines) each gap pixel holds the edge
        pixel of the nearer lip, so the lip's own colour runs into the dark without a lighter line. Under the upper
        lip a band of upper teeth: the source's own where its mouth was open, else a faint tone never lighter than
        the lip edge."""
        lm = np.asarray(landmarks, np.float32)
        corner = lm[54] - lm[48]
        mouth_w = float(np.linalg.norm(corner))
        drop = float(np.clip(level, 0.0, 1.0)) * MAX_OPEN * mouth_w
        if drop < 0.5 or mouth_w < 4:
            return frame
        h, w = frame.shape[:2]
        size = face_size(lm)
        e1 = corner / mouth_w  # along the mouth
        e2 = np.array([-e1[1], e1[0]], np.float32)  # towards the chin
        centre = lm[INNER_MID].mean(axis=0)
        rel = lm - centre
        s_lm, t_lm = rel @ e1, rel @ e2
        s_left, s_right = float(s_lm[60]), float(s_lm[64])
        if s_right - s_left < 2.0:
            return frame
        lift = LIFT * drop
        half = 0.5 * float(np.linalg.norm(lm[13] - lm[3]))  # the jaw's half width at the mouth
        chin, nose = float(t_lm[8]), float(t_lm[33])
        bottom = chin + drop + 0.35 * size
        # The region the warp touches: the frame box round the rectangle in mouth axes.
        box = np.array([[a * 1.15 * half, b] for a in (-1, 1) for b in (nose - 2.0, bottom)], np.float32)
        corners = centre + box @ np.stack([e1, e2])
        x1, y1 = (max(0, int(np.floor(v)) - 1) for v in corners.min(axis=0))
        x2, y2 = (min(n, int(np.ceil(v)) + 2) for v, n in zip(corners.max(axis=0), (w, h), strict=True))
        if x2 - x1 < 4 or y2 - y1 < 4:
            return frame
        # Per-s tables (half-pixel steps) of the inner lip lines and the horizontal profiles, looked up per pixel.
        s0 = -1.2 * half - 2.0
        grid = np.arange(s0, -s0 + 0.5, 0.5, dtype=np.float32)
        upper = np.interp(grid, np.maximum.accumulate(s_lm[UPPER_INNER]), t_lm[UPPER_INNER]).astype(np.float32)
        lower = np.interp(grid, np.maximum.accumulate(s_lm[LOWER_INNER]), t_lm[LOWER_INNER]).astype(np.float32)
        # Where the source mouth is open the lower inner lip landmarks often sit on the teeth: take the line a
        # little into the lip there, so no edge of tooth is held along the moved lip.
        lower += (0.04 * mouth_w) * np.clip((lower - upper) / (0.1 * mouth_w), 0.0, 1.0)
        upper, lower = self._snap_closed(frame, centre, e1, e2, grid, upper, lower, s_left, s_right, mouth_w)
        r = (grid - 0.5 * (s_left + s_right)) / (0.5 * (s_right - s_left))
        bow = np.clip(1.0 - r * r, 0.0, 1.0) ** np.float32(BOW)
        jaw = (1.0 - _smoothstep(0.45 * half, half, np.abs(grid))).astype(np.float32)  # the chin's share
        raised, opened = upper - lift * bow, lower + drop * bow  # the moved inner lip lines
        # 1/√(1 + slope²): a distance along t times this is the distance across the line (the feather's width)
        across = np.stack([1.0 / np.sqrt(1.0 + np.gradient(line, 0.5) ** 2) for line in (raised, opened)]
                          ).astype(np.float32)
        xs = np.arange(x1, x2, dtype=np.float32)[None, :]
        ys = np.arange(y1, y2, dtype=np.float32)[:, None]
        rx, ry = xs - centre[0], ys - centre[1]
        s = rx * e1[0] + ry * e1[1]
        t = rx * e2[0] + ry * e2[1]
        k = ((s - s0) * 2.0 + 0.5).astype(np.int32)
        # One gather from an interleaved table, 8 columns wide (several times cheaper than one gather per table).
        to_lip = 1.0 / np.maximum(raised - nose, 1.0)  # 1 / (the nose to the raised upper lip)
        per_s = np.zeros((grid.size, 8), np.float32)
        per_s[:, :5] = np.stack([bow, raised, opened, jaw, to_lip], axis=1)
        per_s = np.take(per_s, k, axis=0, mode="clip")
        b, up, opn, jaw_k, to_lip_k = (per_s[..., i] for i in range(5))
        # Below the moved lower lip: shifted by the local drop (lower lip → chin: bow → jaw; fading under the chin).
        below = t - opn
        depth = _smoothstep(max(1.0, float(t_lm[57] - t_lm[66])), max(2.0, chin - float(t_lm[66])), below)
        share = b + depth * (jaw_k - b)
        shift = -drop * share * (1.0 - _smoothstep(chin + drop, bottom, t))
        # Above the raised upper lip: lifted, the stretch spread up to the nose.
        raise_ = (lift * b) * _smooth01((t - nose) * to_lip_k)
        shift = np.where(below >= 0, shift, raise_)
        # In the gap (under the interior's soft edges): the edge pixel of the nearer lip line held, so the colour at
        # each moved line runs on into the interior and fades to dark (no lighter lip or skin pulled in from either
        # side, no repeated crease); where the source mouth was open (teeth showing), under the upper lip its own
        # inside, carried up with the lip.
        gap = (t >= up) & (below < 0)
        rows, cols = np.flatnonzero(gap.any(axis=1)), np.flatnonzero(gap.any(axis=0))
        pad = int(np.ceil(max(0.8, FEATHER * mouth_w))) + 1  # the soft edge reaches half a feather over the lips
        sub = (slice(max(0, int(rows[0]) - pad), int(rows[-1]) + 1 + pad) if rows.size else slice(0, 0),
               slice(max(0, int(cols[0]) - pad), int(cols[-1]) + 1 + pad) if cols.size else slice(0, 0))
        ts, ks, b_in = t[sub], k[sub], b[sub]
        up0_in, low0_in, near_top, near_low = np.moveaxis(
            np.take(np.stack([upper, lower, across[0], across[1]], axis=1), ks, axis=0, mode="clip"), -1, 0)
        near = np.stack([near_top, near_low])
        nearer_top = (ts - up[sub]) * near[0] < (opn[sub] - ts) * near[1]
        was_open = low0_in - up0_in
        top = np.where(was_open > OPEN_SRC * mouth_w, np.minimum(ts + lift * b_in, low0_in), up0_in)
        shift[sub] = np.where(gap[sub], np.where(nearer_top, top, low0_in) - ts, shift[sub])
        map_x = xs + shift * e2[0]
        map_y = ys + shift * e2[1]
        roi = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if rows.size:
            roi[sub] = self._interior(roi[sub], self._mouth_colours(frame, lm), ts, up[sub], opn[sub],
                                      was_open * nearer_top, b_in, near, mouth_w, min(1.0, drop / 3.0))
        out = frame.copy()
        out[y1:y2, x1:x2] = roi
        return out

    @staticmethod
    def _snap_closed(frame: np.ndarray, centre: np.ndarray, e1: np.ndarray, e2: np.ndarray, grid: np.ndarray,
                     upper: np.ndarray, lower: np.ndarray, s_left: float, s_right: float,
                     mouth_w: float) -> tuple[np.ndarray, np.ndarray]:
        """Where the source lips meet, both inner lip lines on the darkest line between them (the landmarks are often
        a pixel or two off it, and a lip edge held a little inside the other lip would read as a light line), found
        per ``s`` within ``±0.04 · mouth_w`` and smoothed along the mouth. Lines up to 6 % of the mouth width apart
        count as closed, from 12 % as open (kept as they are), blended in between."""
        reach = max(1.0, 0.04 * mouth_w)
        span = np.flatnonzero((grid >= s_left) & (grid <= s_right))  # beyond the corners the lines are not used
        if span.size < 2:
            return upper, lower
        upper, lower = upper.copy(), lower.copy()
        g, up, low = grid[span], upper[span], lower[span]
        offsets = np.linspace(-reach, reach, min(2 * int(np.ceil(2 * reach)) + 1, 13), dtype=np.float32)
        base = 0.5 * (up + low)
        tt = base[:, None] + offsets[None, :]
        px = centre[0] + g[:, None] * e1[0] + tt * e2[0]
        py = centre[1] + g[:, None] * e1[1] + tt * e2[1]
        bgr = cv2.remap(frame, px.astype(np.float32), py.astype(np.float32), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        crease = base + offsets[np.argmin(bgr @ np.array([0.114, 0.587, 0.299], np.float32), axis=1)]
        crease = np.convolve(np.concatenate([crease[:1].repeat(3), crease, crease[-1:].repeat(3)]),
                             np.full(7, 1 / 7, np.float32), mode="valid")
        held = np.clip((low - up) / (0.06 * mouth_w) - 1.0, 0.0, 1.0)  # 0 closed … 1 open: the landmarks' own
        upper[span] = crease + held * (up - crease)
        lower[span] = crease + held * (low - crease)
        return upper, lower

    @staticmethod
    def _interior(roi: np.ndarray, colours: tuple[np.ndarray, np.ndarray], t: np.ndarray, up: np.ndarray,
                  opn: np.ndarray, was_open: np.ndarray, bow: np.ndarray, across: np.ndarray, mouth_w: float,
                  strength: float) -> np.ndarray:
        """The mouth interior over the gap between ``up`` and ``opn`` (the moved inner lip lines at each pixel's
        ``t``), blended over the warped ``roi``: its soft edge straddles both lines (a third of it over the lips,
        a shadow at their inner edge, the rest in the gap; ``across`` is 1/√(1 + slope²) of each line, so the edge
        has the same width on the steep sides) and fading out at the corners; the shadowed inside, darker in the
        corners and under the teeth; upper teeth under the upper lip: the warped source's own where its mouth was
        open (``was_open``: the source gap between the inner lips), else a faint shadowed tone."""
        dark, light = colours
        height = opn - up
        widest = max(0.8, FEATHER * mouth_w)
        feather = np.minimum(widest, 0.5 * height + 0.5)
        a_top = _smooth01(EDGE + (t - up) * across[0] / feather)
        a = a_top * _smooth01(EDGE + (opn - t) * across[1] / feather) * _smooth01(height / (0.5 * widest)) * strength
        q = np.clip((t - up) / np.maximum(height, 1e-3), 0.0, 1.0)
        shade = (0.7 + 0.6 * q * q) * (0.55 + 0.45 * bow)
        band = np.maximum(0.1 * mouth_w * np.minimum(1.0, height / (0.3 * mouth_w)), 0.6)
        teeth = TEETH * a_top * (1.0 - _smooth01(2.0 * (t - up) / band - 1.0))  # flat, then fading out
        keep = (_smooth01((was_open - OPEN_SRC * mouth_w) / (0.05 * mouth_w))
                * (1.0 - _smooth01((t - up - 0.5 * was_open) / np.maximum(0.5 * was_open, 1e-3))))
        # inside = c_dark · dark + c_light · light, worked on as two scalar fields (cheaper than colour arrays)
        c_dark, c_light = shade * (1.0 - teeth), teeth
        # never lighter than the lip edge held in the gap (a lip darker than the teeth tone, or a dark crease, would
        # otherwise get a light line inside it): dimmed to its luminance, keeping the interior's own hue
        luma = np.array([0.114, 0.587, 0.299], np.float32)
        edge = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY).astype(np.float32)
        cap = np.minimum(1.0, (edge + 1.0) / (c_dark * float(dark @ luma) + c_light * float(light @ luma) + 1.0))
        # out = roi · (1 − a) + a · (inside + keep · (0.9 · roi − inside)), a channel at a time (numpy's broadcasting
        # of a field against a colour costs several times more), rounded and saturated by OpenCV
        mix = a * (1.0 - keep) * cap
        over, m_dark, m_light = 1.0 - a + 0.9 * a * keep, mix * c_dark, mix * c_light
        return cv2.convertScaleAbs(cv2.merge([c.astype(np.float32) * over + m_dark * float(dark[i])
                                              + m_light * float(light[i]) for i, c in enumerate(cv2.split(roi))]))

    @staticmethod
    def _mouth_colours(frame: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shadowed inside of this mouth and the tone of its upper teeth in that shadow, from the lips' own mean
        colour: the inside is that colour dimmed (a grey face gets a grey-dark mouth, a warm one a dark red-brown,
        rather than one fixed colour that reads as a purple patch); the teeth are its grey, somewhat warm, and
        darker than the lips, so the band under the upper lip never reads as a light seam."""
        x, y, bw, bh = cv2.boundingRect(np.round(lm[48:60]).astype(np.int32))
        x, y = max(0, x), max(0, y)
        patch = frame[y:y + bh + 1, x:x + bw + 1]
        if patch.size == 0:
            mean = np.array([110, 100, 136], np.float32)
        else:
            lips = np.zeros(patch.shape[:2], np.uint8)
            cv2.fillPoly(lips, [np.round(lm[48:60] - (x, y)).astype(np.int32)], 255)
            mean = np.asarray(cv2.mean(patch, mask=lips if lips.any() else None)[:3], np.float32)
        grey = float(mean @ np.array([0.114, 0.587, 0.299], np.float32))
        return mean * 0.22, (0.6 * grey + 0.4 * mean) * 0.8
