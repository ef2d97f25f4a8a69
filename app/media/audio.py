"""Audio decode on PyAV: any common file (WAV, MP3, AAC/M4A, Ogg/Opus, FLAC, or a video's audio track) to float32
mono at the rate a model wants (16 kHz for Wav2Lip), streamed in chunks or as one array."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from app.errors import InvalidMediaError, TooLargeError, UnsupportedMediaError
from app.media.sniff import sniff_file
from app.media.video import MEDIA_ERRORS


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream of a file."""

    container: str
    codec: str
    sample_rate: int
    channels: int
    duration: float  # seconds


def _stream_duration(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def probe_audio(path: str | Path, field: str = "audio", max_seconds: float | None = None) -> AudioInfo:
    """Facts of the first audio stream of an audio file or a video, or the API error naming ``field``.

    415 when the bytes are no container we read; 422 when the file is empty, corrupt or has no audio stream;
    413 when it runs longer than ``max_seconds``. When the header carries no duration the stream is decoded once
    to measure it.
    """
    path = Path(path)
    if not path.is_file() or os.path.getsize(path) == 0:
        raise InvalidMediaError(field, f"{field} is empty")
    kind = sniff_file(path)
    if kind is None:
        raise UnsupportedMediaError(field, f"{field} is not a supported audio or video file "
                                           "(WAV, MP3, AAC, M4A, Ogg/Opus, FLAC, MP4, MOV, MKV, WebM, AVI)")
    try:
        with av.open(str(path), "r") as container:
            if not container.streams.audio:
                raise InvalidMediaError(field, f"{field} has no audio stream")
            a = container.streams.audio[0]
            if a.codec_context is None:  # a codec FFmpeg does not know (e.g. an unknown WAV format tag)
                raise UnsupportedMediaError(field, f"{field} uses an audio codec that cannot be decoded; "
                                                   "send PCM WAV, MP3, AAC, Opus or FLAC")
            duration = _stream_duration(container, a)
            if not duration:
                duration = sum(f.samples for f in container.decode(a)) / float(a.codec_context.sample_rate or 1)
            info = AudioInfo(kind, a.codec_context.codec.canonical_name, int(a.codec_context.sample_rate or 0),
                             int(a.codec_context.channels or 0), duration)
    except MEDIA_ERRORS:
        raise InvalidMediaError(field, f"{field} could not be read as {kind} (truncated or corrupt)") from None
    if info.sample_rate <= 0:
        raise InvalidMediaError(field, f"{field} has an audio stream without a sample rate")
    if max_seconds is not None and info.duration > max_seconds:
        raise TooLargeError(field, f"{field} runs {info.duration:.1f} s, over the limit of {max_seconds:g} s")
    return info


def audio_duration(path: str | Path, field: str = "audio") -> float:
    """Seconds of the first audio stream (422 naming ``field`` when there is none)."""
    return probe_audio(path, field).duration


def iter_audio(
    path: str | Path, sample_rate: int = 16000, field: str = "audio", start: float = 0.0, end: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield float32 mono chunks (1-D, values in [-1, 1]) at ``sample_rate``, in order, covering ``[start, end)``.

    Resampling and downmixing are FFmpeg's (``av.AudioResampler``). Chunks are one decoded frame each (a few
    thousand samples), so memory does not grow with the file. Sample positions count from the first decoded
    sample (the stream's own start), which is what a model aligning audio to video frames wants.
    """
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    first = int(round(start * sample_rate))
    last = None if end is None else int(round(end * sample_rate))
    pos = 0

    def cut(frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
        nonlocal pos
        for rf in frames:
            arr = rf.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            a, b = pos, pos + arr.size
            pos = b
            lo, hi = max(first, a), b if last is None else min(last, b)
            if hi > lo:
                yield arr[lo - a: hi - a]

    try:
        with av.open(str(path), "r") as container:
            if not container.streams.audio:
                raise InvalidMediaError(field, f"{field} has no audio stream")
            stream = container.streams.audio[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield from cut(resampler.resample(frame))
                if last is not None and pos >= last:
                    return
            yield from cut(resampler.resample(None))
    except MEDIA_ERRORS:
        raise InvalidMediaError(field, f"{field} is corrupt or truncated part-way") from None


def decode_audio(
    path: str | Path, sample_rate: int = 16000, field: str = "audio", start: float = 0.0, end: float | None = None,
) -> np.ndarray:
    """The whole of :func:`iter_audio` as one float32 mono array (empty when the stream has no samples)."""
    chunks = list(iter_audio(path, sample_rate, field, start, end))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
