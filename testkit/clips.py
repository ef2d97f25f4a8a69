"""Short synthetic clips and audio files written with PyAV itself (no network, no ffmpeg binary)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def pattern(width: int, height: int, i: int) -> np.ndarray:
    """A BGR frame that differs from its neighbours: a gradient, a moving white bar, a frame-number stripe, and a
    red top-left marker (so rotation is visible)."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(width - 1, 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(height - 1, 1)).astype(np.uint8)
    bar = (i * 4) % max(width - 8, 1)
    img[:, bar: bar + 8] = 255
    img[: max(height // 4, 2), : max(width // 4, 2)] = (0, 0, 255)
    img[-4:, :] = (i * 17) % 256
    return img


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """A sine tone, float32 (channels, samples), amplitude 0.3."""
    t = np.arange(int(round(seconds * rate))) / rate
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[None, :], channels, axis=0)


def noise(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """White noise, float32 (channels, samples), σ 0.2: unlike a tone, any time shift of it is measurable."""
    wave = (np.random.default_rng(seed).standard_normal(int(round(seconds * rate))) * 0.2).clip(-1, 1)
    return np.repeat(wave.astype(np.float32)[None, :], channels, axis=0)


_AUDIO_CODEC = {"aac": ("aac", "fltp"), "mp3": ("libmp3lame", "fltp"), "opus": ("libopus", "flt"),
                "flac": ("flac", "s16"), "pcm": ("pcm_s16le", "s16"), "vorbis": ("vorbis", "fltp")}


def encode_all(out: av.container.OutputContainer, stream: av.stream.Stream, frames: Iterable[av.frame.Frame]
               ) -> None:
    """Encode ``frames`` on ``stream``, mux every packet into ``out``, then flush the encoder."""
    for frame in frames:
        for p in stream.encode(frame):
            out.mux(p)
    for p in stream.encode(None):
        out.mux(p)


def _encode_audio(
    out: av.container.OutputContainer, codec: str, seconds: float, rate: int, channels: int, signal: str = "tone",
) -> list:
    name, fmt = _AUDIO_CODEC[codec]
    layout = "mono" if channels == 1 else "stereo"
    stream = out.add_stream(name, rate=rate, layout=layout)
    if codec == "vorbis":
        stream.codec_context.options = {"strict": "experimental"}
    samples = tone(seconds, rate, channels) if signal == "tone" else noise(seconds, rate, channels)
    chunks = []
    step = 1024
    for s in range(0, samples.shape[1], step):
        piece = samples[:, s: s + step]
        if fmt == "s16":
            arr = (piece * 32767).astype(np.int16)
            arr = arr.T.reshape(1, -1)
        elif fmt == "flt":
            arr = piece.T.reshape(1, -1).copy()
        else:
            arr = piece.copy()
        frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, s, Fraction(1, rate)
        chunks.append(frame)
    return [stream, chunks]


def write_clip(
    path: str | Path, *, size: tuple[int, int] = (96, 64), fps: Fraction | int = 25, seconds: float = 1.0,
    audio: str | None = None, audio_rate: int = 48000, rotation: int = 0, vfr: bool = False,
    container: str = "mp4", codec: str = "libx264", signal: str = "tone",
) -> Path:
    """Write a clip: ``seconds`` of :func:`pattern` frames at ``fps`` (or, with ``vfr``, alternating 1/fps and
    2/fps frame durations on a 1/90000 time base), an optional tone (or ``signal="noise"``) in ``audio`` codec, and
    an optional display rotation (counter-clockwise degrees, as a phone would set). Returns the path."""
    path = Path(path)
    fps = Fraction(fps)
    w, h = size
    out = av.open(str(path), "w", format=container)
    vs = out.add_stream(codec, rate=fps)
    vs.width, vs.height = w, h
    vs.pix_fmt = "yuv444p" if (w | h) & 1 and codec == "libx264" else "yuv420p"  # x264 4:2:0 needs even sides
    tb = Fraction(1, 90000) if vfr else 1 / fps
    vs.time_base = tb
    vs.codec_context.time_base = tb
    if rotation:
        vs.set_display_rotation(rotation)
    audio_parts = _encode_audio(out, audio, seconds, audio_rate, 2, signal) if audio else None

    def video_frames() -> Iterator[av.VideoFrame]:
        t, i = Fraction(0), 0
        while t < Fraction(seconds).limit_denominator(1000) - Fraction(1, 100000):
            frame = av.VideoFrame.from_ndarray(pattern(w, h, i), format="bgr24")
            frame.pts, frame.time_base = int(t / tb), tb
            yield frame
            t += (1 / fps) * (2 if vfr and i % 2 else 1)
            i += 1

    encode_all(out, vs, video_frames())
    if audio_parts:
        encode_all(out, *audio_parts)
    out.close()
    return path


def write_audio(
    path: str | Path, codec: str, seconds: float = 1.0, rate: int = 44100, channels: int = 1,
    container: str | None = None,
) -> Path:
    """A tone as a plain audio file: codec ``pcm`` → WAV, ``flac`` → FLAC, ``mp3`` → MP3, ``aac`` → ADTS,
    ``opus``/``vorbis`` → Ogg, unless ``container`` names another (``mp4`` makes an audio-only .m4a-like file)."""
    path = Path(path)
    default = {"pcm": "wav", "flac": "flac", "mp3": "mp3", "aac": "adts", "opus": "ogg", "vorbis": "ogg"}
    fmt = container or default[codec]
    out = av.open(str(path), "w", format=fmt)
    encode_all(out, *_encode_audio(out, codec, seconds, rate, channels))
    out.close()
    return path


def write_frames_clip(path: str | Path, frames: list[np.ndarray], fps: int = 25, audio: bool = True,
                      crf: int = 12) -> Path:
    """H.264 MP4 (yuv420p, even sizes) of the given BGR ``frames`` at ``fps``, with a 440 Hz mono AAC tone exactly
    as long as the video when ``audio``."""
    path = Path(path)
    h, w = frames[0].shape[:2]
    out = av.open(str(path), "w", format="mp4")
    vs = out.add_stream("libx264", rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    vs.options = {"crf": str(crf)}
    if audio:
        rate = 48000
        aus = out.add_stream("aac", rate=rate, layout="mono")
        n = int(rate * len(frames) / fps)
        wave = tone(n / rate, rate)
        encode_all(out, aus, audio_frames(wave, rate))
    encode_all(out, vs, video_frames(frames))
    out.close()
    return path


def audio_frames(wave: np.ndarray, rate: int, size: int = 1024) -> Iterator[av.AudioFrame]:
    """A float32 (channels, samples) signal as planar audio frames of ``size`` samples with their pts."""
    layout = "mono" if wave.shape[0] == 1 else "stereo"
    for start in range(0, wave.shape[1], size):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start: start + size]), format="fltp",
                                        layout=layout)
        af.sample_rate, af.pts, af.time_base = rate, start, Fraction(1, rate)
        yield af


def video_frames(frames: Iterable[np.ndarray]) -> Iterator[av.VideoFrame]:
    """BGR arrays as video frames numbered 0, 1, 2… (pts in frame periods)."""
    for i, f in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(f, format="bgr24")
        vf.pts = i
        yield vf
