"""Wav2Lip's audio features: the normalised 80-band mel spectrogram its checkpoints were trained on, and the
16-column mel window each video frame is paired with.

Input is 16 kHz mono float audio as numpy (decode files with ``app.media.audio.decode_audio`` or, for bounded
memory, ``app.media.audio.iter_audio``; this module does no I/O). The pipeline (Wav2Lip's ``audio.py`` +
``hparams.py``):

1. pre-emphasis ``y[n] = x[n] − 0.97·x[n−1]`` (``scipy.signal.lfilter([1, −0.97], [1], x)``);
2. centred STFT, n_fft 800, hop 200, periodic Hann window of 800: the signal is padded by 400 samples on both
   sides in **reflect** mode (``np.pad(..., mode="reflect")``), giving ``1 + len(x) // 200`` columns. Reflect is
   what the reference got: it pins librosa 0.7.0, whose ``stft`` defaulted to ``pad_mode='reflect'``; librosa
   0.10+ changed that default to ``'constant'`` (zeros), which would alter the first and last two columns;
3. magnitude, then 80 Slaney-scale mel filters from 55 to 7600 Hz with Slaney area normalisation (as
   ``librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, htk=False, norm='slaney')``,
   computed here by :func:`mel_filterbank`, rounded to float32 like librosa's default);
4. ``20·log10(max(1e-5, m)) − 20`` dB, then ``clip(8·((dB + 100)/100) − 4, −4, 4)``.

That gives 80 mel columns per second. Video frame ``i`` at ``fps`` uses columns ``[⌊80·i/fps⌋, +16)``; a window
that would run past the end takes the final 16 columns instead (:func:`mel_chunks`). :func:`stream_mel_chunks`
yields the same windows from an iterator of audio chunks while holding only a few hundred samples and columns::

    from app.media.audio import iter_audio
    from Wav2Lip.audio import stream_mel_chunks
    for window in stream_mel_chunks(iter_audio(path), fps=Fraction(30000, 1001), n_frames=n):
        ...  # window: float32 [80, 16]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction

import numpy as np
from scipy.signal import lfilter

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
MEL_STEP = 16  # columns per video-frame window
MEL_FPS = SAMPLE_RATE // HOP  # 80 columns per second
SILENCE = -MAX_ABS_VALUE  # the normalised value of silence (and of the padding of a too-short mel)

_PAD = N_FFT // 2
_BLOCK = 1024  # STFT frames computed at once (bounds the temporary frame matrix to ~6.5 MB)

Fps = int | float | Fraction


# --- Slaney mel scale and filterbank -----------------------------------------------------------------------------

_F_SP = 200.0 / 3  # Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's (Auditory Toolbox) mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    lin = hz / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, lin)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    lin = _F_SP * mel
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, lin)


@functools.cache
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN,
                   fmax: float = FMAX) -> np.ndarray:
    """Triangular Slaney mel filters, shape ``[n_mels, 1 + n_fft // 2]``, float32, read-only.

    Band edges are ``n_mels + 2`` points evenly spaced on the Slaney mel scale between ``fmin`` and ``fmax``;
    filter ``i`` rises from edge ``i`` to a peak at edge ``i+1`` and falls to edge ``i+2`` (evaluated at the FFT
    bin frequencies ``k·sr/n_fft``), and is scaled by ``2 / (f[i+2] − f[i])`` so every triangle has unit area
    (Slaney normalisation). This is ``librosa.filters.mel(..., htk=False, norm='slaney')``.
    """
    if not 0 <= fmin < fmax <= sr / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    fft_hz = np.linspace(0.0, sr / 2, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    out = weights.astype(np.float32)
    out.flags.writeable = False
    return out


@functools.cache
def hann_window(n: int = WIN) -> np.ndarray:
    """The periodic ("DFT-even") Hann window of length ``n`` (``scipy.signal.get_window('hann', n)``)."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.flags.writeable = False
    return w


# --- whole-array features ------------------------------------------------------------------------------------------

def _as_mono(wav: np.ndarray) -> np.ndarray:
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"expected mono audio as a 1-D array, got shape {wav.shape}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise ValueError(f"expected float samples in [-1, 1], got dtype {wav.dtype}")
    return wav.astype(np.float64, copy=False)


def preemphasis(wav: np.ndarray, k: float = PREEMPHASIS) -> np.ndarray:
    """``y[n] = x[n] − k·x[n−1]`` (``x[−1] = 0``), float64."""
    return lfilter([1.0, -k], [1.0], _as_mono(wav))


def normalize(mel_amp: np.ndarray) -> np.ndarray:
    """Mel magnitudes → Wav2Lip's normalised dB: ``clip(8·((20·log10(max(1e-5, m)) − 20 + 100)/100) − 4, −4, 4)``."""
    db = 20.0 * np.log10(np.maximum(10.0 ** (MIN_LEVEL_DB / 20.0), mel_amp)) - REF_LEVEL_DB
    return np.clip(2 * MAX_ABS_VALUE * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE,
                   -MAX_ABS_VALUE, MAX_ABS_VALUE)


def _columns(padded: np.ndarray, n: int) -> np.ndarray:
    """Normalised mel columns of the first ``n`` STFT frames of an already padded, pre-emphasised signal.

    Frame ``t`` is ``padded[t·HOP : t·HOP + N_FFT]``; ``padded`` must hold at least ``(n−1)·HOP + N_FFT`` samples.
    Returns float32 ``[N_MELS, n]``; works in blocks of ``_BLOCK`` frames so memory stays small.
    """
    out = np.empty((N_MELS, n), np.float32)
    if n == 0:
        return out
    frames = np.lib.stride_tricks.sliding_window_view(padded[: (n - 1) * HOP + N_FFT], N_FFT)[::HOP]
    basis = mel_filterbank()
    win = hann_window()
    for a in range(0, n, _BLOCK):
        b = min(n, a + _BLOCK)
        mag = np.abs(np.fft.rfft(frames[a:b] * win, n=N_FFT, axis=1))  # [frames, 401]
        out[:, a:b] = normalize(basis @ mag.T)
    return out


def n_columns(n_samples: int) -> int:
    """How many mel columns :func:`melspectrogram` gives for ``n_samples`` samples: ``1 + n_samples // 200``."""
    return 1 + n_samples // HOP


def _mel_of_preemphasized(y: np.ndarray) -> np.ndarray:
    if y.size == 0:
        raise ValueError("no audio samples")
    padded = np.pad(y, _PAD, mode="reflect")
    return _columns(padded, n_columns(y.size))


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's normalised mel spectrogram of 16 kHz mono float audio: float32 ``[80, 1 + len(wav) // 200]``,
    values in [−4, 4] (−4 is silence). Raises ValueError for empty, multi-channel or integer input."""
    return _mel_of_preemphasized(preemphasis(wav))


# --- frame ↔ mel-window mapping ------------------------------------------------------------------------------------

def fps_fraction(fps: Fps) -> Fraction:
    """``fps`` as an exact fraction: ints and Fractions as given; a float as the nearest fraction with a
    denominator up to 1,000,000 (so ``29.97`` is 2997/100 and ``30000/1001`` as a float is 30000/1001)."""
    frac = Fraction(fps) if isinstance(fps, int | Fraction) else Fraction(float(fps)).limit_denominator(1_000_000)
    if frac <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return frac


def window_start(i: int, fps: Fps) -> int:
    """First mel column of video frame ``i``: ``⌊80·i/fps⌋`` computed exactly (no float rounding)."""
    return _starts(fps_fraction(fps))(i)


def _starts(f: Fraction) -> Callable[[int], int]:
    """``i ↦ ⌊80·i/f⌋`` in integer arithmetic."""
    num, den = f.numerator, f.denominator
    return lambda i: (MEL_FPS * i * den) // num


def reference_count(n_cols: int, fps: Fps) -> int:
    """How many windows Wav2Lip's ``inference.py`` makes from ``n_cols`` columns: every frame whose window fits,
    plus one final window (the last 16 columns). The video is cut (or looped) to this many frames there."""
    f = fps_fraction(fps)
    if n_cols < MEL_STEP:
        return 1
    # frames i with ⌊80·i/fps⌋ ≤ n_cols − 16  ⟺  80·i < (n_cols − 15)·fps
    bound = (n_cols - MEL_STEP + 1) * f / MEL_FPS
    return math.ceil(bound) + 1


def _window(cols: np.ndarray, first_col: int, total: int | None, start: int) -> np.ndarray:
    """The window for a frame starting at column ``start`` from a buffer ``cols`` whose column 0 is absolute column
    ``first_col``; ``total`` (the final column count, when known) triggers the last-16-columns rule."""
    if total is not None and start + MEL_STEP > total:
        if total < MEL_STEP:  # the whole mel is in the buffer (first_col == 0): pad it with silence
            out = np.full((N_MELS, MEL_STEP), SILENCE, np.float32)
            out[:, :total] = cols[:, :total]
            return out
        start = total - MEL_STEP
    a = start - first_col
    return cols[:, a: a + MEL_STEP].copy()


def iter_mel_chunks(mel: np.ndarray, fps: Fps, n_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the float32 ``[80, 16]`` window of each video frame ``i`` (0, 1, …) of a whole mel ``[80, T]``.

    Frame ``i`` gets columns ``[⌊80·i/fps⌋, +16)``; when that runs past ``T`` it gets the final 16 columns (a mel
    shorter than 16 columns is padded on the right with silence, −4). ``n_frames`` windows are yielded (frames past
    the audio repeat the final window); with ``n_frames=None`` the count is :func:`reference_count`, as Wav2Lip's
    ``inference.py`` makes.
    """
    mel = np.asarray(mel, np.float32)
    if mel.ndim != 2 or mel.shape[0] != N_MELS:
        raise ValueError(f"expected a mel of shape [80, T], got {mel.shape}")
    total = mel.shape[1]
    count = reference_count(total, fps) if n_frames is None else n_frames
    start = _starts(fps_fraction(fps))
    for i in range(count):
        yield _window(mel, 0, total, start(i))


def mel_chunks(mel: np.ndarray, fps: Fps, n_frames: int | None = None) -> np.ndarray:
    """All windows of :func:`iter_mel_chunks` stacked: float32 ``[N, 80, 16]``."""
    windows = list(iter_mel_chunks(mel, fps, n_frames))
    return np.stack(windows) if windows else np.zeros((0, N_MELS, MEL_STEP), np.float32)


# --- streaming ----------------------------------------------------------------------------------------------------

class MelStream:
    """Incremental :func:`melspectrogram`: ``push`` audio chunks, get the mel columns that are final so far;
    ``finish`` returns the rest. Concatenated, the columns equal ``melspectrogram`` of the concatenated audio (to
    float32 rounding), while the object holds at most ``N_FFT`` + one chunk of samples.

    The left reflect pad needs samples 1..400, so nothing comes out before 401 samples are in; the right pad
    needs the end of the stream, so the last two or three columns come from ``finish``.
    """

    def __init__(self) -> None:
        self._zi = np.zeros(1)  # pre-emphasis filter state
        self._head: list[np.ndarray] = []  # pre-emphasised samples before the left pad could be built
        self._head_len = 0
        self._buf: np.ndarray | None = None  # padded signal from column self._col * HOP on
        self._col = 0  # columns emitted
        self._n = 0  # samples pushed
        self._done = False

    @property
    def samples(self) -> int:
        """Samples pushed so far."""
        return self._n

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Feed the next chunk (1-D float, any length); returns float32 ``[80, k]`` new final columns (k ≥ 0)."""
        if self._done:
            raise RuntimeError("MelStream already finished")
        y, self._zi = lfilter([1.0, -PREEMPHASIS], [1.0], _as_mono(chunk), zi=self._zi)
        self._n += y.size
        if self._buf is None:
            self._head.append(y)
            self._head_len += y.size
            if self._head_len <= _PAD:
                return np.zeros((N_MELS, 0), np.float32)
            x = np.concatenate(self._head)
            self._head = []
            self._buf = np.concatenate([x[_PAD:0:-1], x])
        else:
            self._buf = np.concatenate([self._buf, y])
        return self._drain()

    def _drain(self) -> np.ndarray:
        assert self._buf is not None
        n = 0 if self._buf.size < N_FFT else 1 + (self._buf.size - N_FFT) // HOP
        cols = _columns(self._buf, n)
        self._buf = self._buf[n * HOP:]
        self._col += n
        return cols

    def finish(self) -> np.ndarray:
        """The remaining columns (the stream then has ``1 + samples // 200`` in all). Raises ValueError when no
        sample was pushed."""
        if self._done:
            raise RuntimeError("MelStream already finished")
        self._done = True
        if self._buf is None:  # at most 400 samples: numpy's repeated reflection, exactly as the whole-array path
            return _mel_of_preemphasized(np.concatenate(self._head) if self._head else np.zeros(0))
        # the buffer starts at padded index col·HOP, i.e. sample col·HOP − 400; the right pad mirrors about the
        # last sample: padded[L + 400 + k] = x[L − 2 − k]
        tail = self._buf[-2: -2 - _PAD: -1]
        self._buf = np.concatenate([self._buf, tail])
        cols = self._drain()
        self._buf = None
        assert self._col == n_columns(self._n)
        return cols


def stream_mel_chunks(audio_chunks: Iterable[np.ndarray], fps: Fps,
                      n_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield exactly what ``iter_mel_chunks(melspectrogram(concatenate(audio_chunks)), fps, n_frames)`` yields,
    reading the audio lazily: memory is bounded by one chunk plus a few hundred samples and the columns between
    the current frame's window and the newest column. With ``n_frames`` set, stops reading once every frame's
    window is out."""
    start = _starts(fps_fraction(fps))
    stream = MelStream()
    cols = np.zeros((N_MELS, 0), np.float32)
    first = 0  # absolute index of cols[:, 0]
    i = 0

    def ready(known: int) -> Iterator[np.ndarray]:
        nonlocal i
        while n_frames is None or i < n_frames:
            s = start(i)
            if s + MEL_STEP > known:
                return
            yield _window(cols, first, None, s)
            i += 1

    for chunk in audio_chunks:
        new = stream.push(chunk)
        if new.shape[1] == 0:
            continue
        cols = np.concatenate([cols, new], axis=1)
        known = first + cols.shape[1]
        yield from ready(known)
        if n_frames is not None and i >= n_frames:
            return
        keep = max(first, min(start(i), known - MEL_STEP))
        cols = cols[:, keep - first:]
        first = keep
    cols = np.concatenate([cols, stream.finish()], axis=1)
    total = first + cols.shape[1]
    yield from ready(total)
    count = reference_count(total, fps) if n_frames is None else n_frames
    while i < count:
        yield _window(cols, first, total, start(i))
        i += 1
