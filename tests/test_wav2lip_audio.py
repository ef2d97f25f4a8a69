"""Wav2Lip audio features: parity with the reference pipeline (librosa), the Slaney filterbank, the frame → mel
window mapping of inference.py for any fps, and the streaming variant (same windows, bounded memory)."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
from scipy.signal import chirp, get_window, lfilter

from Wav2Lip import audio as A

SR = 16000


def synth(seconds: float, seed: int = 0) -> np.ndarray:
    """A chirp 100 Hz → 6 kHz plus noise, with a fade-in and a silent gap (espeak-free test audio)."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    wav = 0.5 * chirp(t, 100, t[-1], 6000) + 0.05 * rng.standard_normal(t.size)
    n = min(4000, t.size)
    wav[:n] *= np.linspace(0, 1, n)
    wav[t.size // 3: t.size // 3 + 1600] = 0.0
    return wav.astype(np.float32)


def reference_mel_librosa(wav: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
    """Wav2Lip's audio.melspectrogram with hparams' values, written with librosa calls as the reference does.
    The reference pins librosa 0.7.0, whose stft pads in 'reflect' mode by default (0.10+ default: 'constant')."""
    import librosa

    d = librosa.stft(y=lfilter([1, -0.97], [1], wav), n_fft=800, hop_length=200, win_length=800, pad_mode=pad_mode)
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    s = 20 * np.log10(np.maximum(1e-5, np.dot(basis, np.abs(d)))) - 20
    return np.clip(8 * ((s + 100) / 100) - 4, -4, 4)


def reference_chunks(mel: np.ndarray, fps: float) -> list[np.ndarray]:
    """inference.py's loop, as data: float multiplier 80/fps, stop after the first window that overruns."""
    chunks, mult, i = [], 80.0 / fps, 0
    while True:
        start = int(i * mult)
        if start + 16 > len(mel[0]):
            chunks.append(mel[:, len(mel[0]) - 16:])
            return chunks
        chunks.append(mel[:, start: start + 16])
        i += 1


# --- parity with librosa -----------------------------------------------------------------------------------------

def test_filterbank_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, htk=False, norm="slaney")
    ours = A.mel_filterbank()
    assert ours.shape == ref.shape == (80, 401) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-7


@pytest.mark.filterwarnings("ignore:n_fft=800 is too large")
@pytest.mark.parametrize("seconds", [0.03, 0.3, 3.3])
def test_melspectrogram_matches_reference_pipeline(seconds: float) -> None:
    pytest.importorskip("librosa")
    wav = synth(seconds)
    ours = A.melspectrogram(wav)
    ref = reference_mel_librosa(wav)
    assert ours.shape == ref.shape == (80, 1 + wav.size // 200) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-4  # measured ~1.5e-7


def test_current_librosa_default_padding_differs_at_the_edges() -> None:
    """Documents why we pad in reflect mode: librosa's newer default ('constant') changes the edge columns."""
    pytest.importorskip("librosa")
    wav = synth(1.0)
    diff = np.abs(A.melspectrogram(wav) - reference_mel_librosa(wav, pad_mode="constant")).max(axis=0)
    changed = np.nonzero(diff > 1e-3)[0]
    assert set(changed) <= {0, 1, diff.size - 2, diff.size - 1} and len(changed) > 0


# --- without librosa: the formulas ------------------------------------------------------------------------------

def test_slaney_scale_and_filterbank_properties() -> None:
    assert float(A.hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(A.hz_to_mel(200.0)) == pytest.approx(3.0)
    assert float(A.hz_to_mel(6400.0)) == pytest.approx(15.0 + 27.0)  # 27 log steps of 6.4^(1/27) per ×6.4
    hz = np.array([0.0, 55.0, 999.0, 1000.0, 1001.0, 7600.0])
    assert np.allclose(A.mel_to_hz(A.hz_to_mel(hz)), hz)

    fb = A.mel_filterbank().astype(np.float64)
    edges = A.mel_to_hz(np.linspace(A.hz_to_mel(55.0), A.hz_to_mel(7600.0), 82))
    bins = np.arange(401) * 20.0  # 16000 / 800 Hz per bin
    for i in (0, 10, 40, 79):
        lo, mid, hi = edges[i: i + 3]
        tri = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
        assert np.allclose(fb[i], tri * 2.0 / (hi - lo), rtol=1e-6, atol=1e-9)
        assert fb[i][(bins <= lo) | (bins >= hi)].max() == 0.0
    # Slaney normalisation: each triangle has unit area in Hz (sampled every 20 Hz); wide filters integrate to ~1
    area = fb.sum(axis=1) * 20.0
    assert np.allclose(area[40:], 1.0, atol=0.02)
    assert not A.mel_filterbank().flags.writeable


def test_window_and_normalisation() -> None:
    assert np.allclose(A.hann_window(), get_window("hann", 800, fftbins=True))
    assert A.normalize(np.array([0.0]))[0] == -4.0  # silence
    assert A.normalize(np.array([1e6]))[0] == 4.0  # clipped
    # 1.0 → 0 dB − 20 = −20 dB → 8·0.8 − 4 = 2.4
    assert A.normalize(np.array([1.0]))[0] == pytest.approx(2.4)


def test_tone_lands_in_its_band_and_silence_is_minus_four() -> None:
    t = np.arange(SR) / SR
    mel = A.melspectrogram((0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32))
    centres = A.mel_to_hz(np.linspace(A.hz_to_mel(55.0), A.hz_to_mel(7600.0), 82))[1:-1]
    assert abs(int(np.argmax(mel[:, 40])) - int(np.argmin(np.abs(centres - 1000.0)))) <= 1
    assert np.all(A.melspectrogram(np.zeros(4000, np.float32)) == -4.0)


def test_input_validation() -> None:
    with pytest.raises(ValueError):
        A.melspectrogram(np.zeros(0, np.float32))
    with pytest.raises(ValueError):
        A.melspectrogram(np.zeros(100, np.int16))
    with pytest.raises(ValueError):
        A.melspectrogram(np.zeros((2, 100), np.float32))


# --- frame → window mapping --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fps", [24, 25, 30, 60, 30000 / 1001, 29.97, 23.976])
def test_chunks_match_inference_loop(fps: float) -> None:
    mel = A.melspectrogram(synth(2.7))
    ours = A.mel_chunks(mel, fps)
    ref = reference_chunks(mel, fps)
    assert ours.shape == (len(ref), 80, 16) and ours.dtype == np.float32
    assert all(np.array_equal(a, b) for a, b in zip(ours, ref, strict=True))


def test_fps_forms_and_exact_starts() -> None:
    ntsc = Fraction(30000, 1001)
    assert A.fps_fraction(30000 / 1001) == ntsc
    assert A.fps_fraction(29.97) == Fraction(2997, 100)
    assert A.fps_fraction(25) == 25
    # frame 3003 of NTSC video starts at exactly 80·3003·1001/30000 = 8016.008 → 8016; frame 30000 at 80080
    assert A.window_start(3003, ntsc) == 8016 and A.window_start(30000, ntsc) == 80080
    assert A.window_start(30000, 30000 / 1001) == 80080
    assert [A.window_start(i, 25) for i in range(6)] == [0, 3, 6, 9, 12, 16]
    mel = A.melspectrogram(synth(1.3))
    assert np.array_equal(A.mel_chunks(mel, ntsc), A.mel_chunks(mel, 30000 / 1001))
    with pytest.raises(ValueError):
        A.fps_fraction(0)


def test_last_window_padding_and_n_frames() -> None:
    mel = A.melspectrogram(synth(0.5))  # 41 columns
    assert mel.shape[1] == 41
    more = A.mel_chunks(mel, 25, n_frames=40)
    assert more.shape == (40, 80, 16)
    assert np.array_equal(more[5], mel[:, 16:32])  # frame 5 starts at column 16
    assert all(np.array_equal(w, mel[:, -16:]) for w in more[9:])  # frame 9 would start at 28 > 41 − 16
    assert A.mel_chunks(mel, 25, n_frames=0).shape == (0, 80, 16)

    short = A.melspectrogram(synth(0.05))  # 5 columns
    w = A.mel_chunks(short, 25)
    assert w.shape == (1, 80, 16)
    assert np.array_equal(w[0, :, :5], short) and np.all(w[0, :, 5:] == A.SILENCE)


# --- streaming ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [1, 37, 400, 401, 1024, 16000])
def test_mel_stream_equals_whole(chunk: int) -> None:
    wav = synth(1.23)
    stream = A.MelStream()
    parts = [stream.push(wav[i: i + chunk]) for i in range(0, wav.size, chunk)]
    parts.append(stream.finish())
    got = np.concatenate(parts, axis=1)
    assert np.allclose(got, A.melspectrogram(wav), atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError):
        stream.finish()


@pytest.mark.parametrize("n", [1, 150, 399, 400, 401, 402, 799, 800, 801])
def test_mel_stream_short_inputs(n: int) -> None:
    wav = synth(0.1)[:n]
    stream = A.MelStream()
    parts = [stream.push(wav[i: i + 64]) for i in range(0, n, 64)] + [stream.finish()]
    assert np.allclose(np.concatenate(parts, axis=1), A.melspectrogram(wav), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fps", [24, 25, Fraction(30000, 1001), 29.97, 30, 60])
@pytest.mark.parametrize("n_frames", [None, 7, 100])
def test_stream_chunks_equal_whole(fps: float, n_frames: int | None) -> None:
    wav = synth(1.7, seed=3)
    whole = A.mel_chunks(A.melspectrogram(wav), fps, n_frames)
    for size in (333, 4096):
        got = list(A.stream_mel_chunks((wav[i: i + size] for i in range(0, wav.size, size)), fps, n_frames))
        assert len(got) == len(whole)
        assert all(np.allclose(a, b, atol=1e-5, rtol=0) for a, b in zip(got, whole, strict=True))


def test_stream_stops_reading_when_frames_are_done() -> None:
    wav = synth(2.0)
    read = []

    def chunks():
        for i in range(0, wav.size, 1000):
            read.append(i)
            yield wav[i: i + 1000]

    assert len(list(A.stream_mel_chunks(chunks(), 25, n_frames=3))) == 3
    # frame 2 needs columns 6..21; column 21 is final once samples up to 21·200 + 400 = 4600 are in: 5 chunks of 32
    assert len(read) == 5


def test_stream_memory_is_flat() -> None:
    """Ninety seconds of audio (11.5 MB as float64, 7,200 mel columns; the whole-array path peaks near 35 MB) streamed
    in 4096-sample chunks: the peak of numpy/Python-tracked memory stays under 2 MB."""
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(4096)).astype(np.float32)
    n_chunks = 90 * SR // 4096

    def chunks():
        for _ in range(n_chunks):
            yield noise

    tracemalloc.start()
    try:
        count = sum(1 for _ in A.stream_mel_chunks(chunks(), 25))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    n_cols = 1 + n_chunks * 4096 // 200
    assert count == A.reference_count(n_cols, 25)
    assert peak < 2_000_000
