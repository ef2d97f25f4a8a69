"""Video probing and a lazy, threaded frame reader on PyAV (its own FFmpeg; no ffmpeg binary needed).

Frames come out as upright BGR uint8 arrays: a phone clip's display matrix (or legacy ``rotate`` tag) is
applied to the pixels, so callers never see sideways faces. Timestamps are seconds on the source timeline.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from app.errors import InvalidMediaError, TooLargeError, UnsupportedMediaError
from app.media.sniff import AUDIO_CONTAINERS, sniff_file

if TYPE_CHECKING:
    from app.config import Settings

# Which PyAV failures mean "the bytes are bad" (422) rather than a bug of ours.
MEDIA_ERRORS: tuple[type[BaseException], ...] = (av.FFmpegError, EOFError, ValueError, IndexError)


def media_reason(exc: BaseException) -> str:
    """What went wrong with a media file, for a user: FFmpeg's own reason ("Invalid data found when processing
    input"), never the exception's text, which names server paths."""
    if isinstance(exc, av.FFmpegError) and exc.strerror:
        return str(exc.strerror)
    if isinstance(exc, EOFError):
        return "the data ends early"
    return "the data is not valid"


@dataclass(frozen=True)
class VideoLimits:
    """What a video may be before it is refused with 413."""

    max_seconds: float = 600.0
    max_pixels: int = 3840 * 2160

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        """Limits from the service settings (``max_video_seconds``, ``max_video_pixels``)."""
        return cls(float(settings.max_video_seconds), int(settings.max_video_pixels))


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learnt. ``width``/``height`` are the upright (displayed) size."""

    container: str
    width: int
    height: int
    rotation: int  # degrees counter-clockwise applied to the coded pixels to show them upright (0/90/180/270)
    fps: Fraction  # exact nominal rate for constant-rate clips (30000/1001), the average rate for VFR clips
    time_base: Fraction  # the video stream's time base; pass it to the writer to keep source timing exactly
    start: float  # first frame's timestamp, seconds
    duration: float  # seconds (video stream, else container)
    frames: int  # frame count: from the container index when it has one, else duration × fps
    codec: str
    vfr: bool  # frame durations vary (phone recordings, screen captures)
    has_audio: bool
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_duration: float | None = None

    @property
    def coded_size(self) -> tuple[int, int]:
        """(width, height) of the frames as stored, before rotation."""
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)


def _rotation_of(frame: av.VideoFrame | None, stream: av.video.stream.VideoStream) -> int:
    """Counter-clockwise degrees (0/90/180/270) from the frame's display matrix, else the stream's rotate tag."""
    deg: float | None = None
    if frame is not None:
        try:
            deg = float(frame.rotation)
        except (AttributeError, ValueError, TypeError):
            deg = None
    if not deg:
        tag = stream.metadata.get("rotate")
        if tag:
            try:
                deg = -float(tag)  # the legacy tag is clockwise
            except ValueError:
                deg = None
    return int(round((deg or 0.0) / 90.0)) % 4 * 90


def upright(bgr: np.ndarray, rotation: int) -> np.ndarray:
    """The frame turned ``rotation`` degrees counter-clockwise (contiguous), i.e. as a player would show it."""
    k = (rotation // 90) % 4
    return bgr if k == 0 else np.ascontiguousarray(np.rot90(bgr, k))


def _scan_timing(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, limit: int = 300
) -> tuple[bool, Fraction | None]:
    """(variable rate?, measured average rate) from the first ``limit`` packets' timestamps (demux only, no decode).

    Variable means the timestamp steps differ by more than one tick plus 2 % of the median step (so a 23.976 fps
    clip stored on a millisecond time base, 41/42 ms steps, is constant).
    """
    pts: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                pts.append(int(packet.pts))
            if len(pts) >= limit:
                break
    except MEDIA_ERRORS:
        pass
    try:
        container.seek(0, stream=stream, backward=True)
    except MEDIA_ERRORS:
        pass
    if len(pts) < 3 or not stream.time_base:
        return False, None
    ordered = np.sort(np.asarray(pts))
    steps = np.diff(ordered)
    steps = steps[steps > 0]
    if steps.size < 2:
        return False, None
    vfr = bool(steps.max() - steps.min() > 1 + 0.02 * float(np.median(steps)))
    span = Fraction(int(ordered[-1] - ordered[0])) * Fraction(stream.time_base)
    average = (Fraction(len(ordered) - 1) / span).limit_denominator(1001) if span > 0 else None
    return vfr, average


def _truncated(container: av.container.InputContainer, size: int) -> bool:
    """True when a stream's index (MP4/MOV keep one in the header) points past the end of the file: the file was
    cut short after its index, which FFmpeg would otherwise decode quietly up to the cut."""
    for stream in (*container.streams.video[:1], *container.streams.audio[:1]):
        try:
            entries = stream.index_entries
            n = len(entries)
            if n and entries[n - 1].size > 0 and entries[n - 1].pos + entries[n - 1].size > size:
                return True
        except (AttributeError, *MEDIA_ERRORS):
            continue
    return False


def _audio_fields(container: av.container.InputContainer) -> dict[str, object]:
    if not container.streams.audio:
        return {"has_audio": False}
    a = container.streams.audio[0]
    dur = float(a.duration * a.time_base) if a.duration and a.time_base else None
    if dur is None and container.duration:
        dur = container.duration / av.time_base
    cc = a.codec_context
    if cc is None:  # a codec FFmpeg does not know: the muxer then refuses the audio by name (it is never dropped)
        return {"has_audio": True, "audio_codec": None, "audio_sample_rate": None, "audio_channels": None,
                "audio_duration": dur}
    return {
        "has_audio": True,
        "audio_codec": cc.codec.canonical_name,
        "audio_sample_rate": int(cc.sample_rate or 0) or None,
        "audio_channels": int(cc.channels or 0) or None,
        "audio_duration": dur,
    }


def probe_video(path: str | Path, field: str, limits: VideoLimits | None = None) -> VideoInfo:
    """Read a video's facts from its header and its first decodable frame, or raise the API error naming ``field``.

    415 when the bytes are no video container we read, or hold audio only (an .m4a, an MP3); 422 when the file
    is empty, truncated or corrupt, or no frame decodes; 413 when it runs longer than ``limits.max_seconds`` or
    a frame has more than ``limits.max_pixels`` pixels (both checked from the header before decoding).
    """
    limits = limits or VideoLimits()
    path = Path(path)
    if not path.is_file() or os.path.getsize(path) == 0:
        raise InvalidMediaError(field, f"{field} is empty")
    kind = sniff_file(path)
    if kind is None:
        raise UnsupportedMediaError(field, f"{field} is not a supported video (MP4, MOV, MKV, WebM, AVI)")
    if kind in AUDIO_CONTAINERS and kind != "m4a":
        raise UnsupportedMediaError(field, f"{field} is an audio file ({kind}), a video is needed")
    try:
        container = av.open(str(path), "r")
    except MEDIA_ERRORS:
        raise InvalidMediaError(field, f"{field} could not be read as {kind} (truncated or corrupt)") from None
    with container:
        if not container.streams.video:
            if container.streams.audio:
                raise UnsupportedMediaError(field, f"{field} holds audio only, a video is needed")
            raise InvalidMediaError(field, f"{field} holds no video stream")
        if _truncated(container, os.path.getsize(path)):
            raise InvalidMediaError(field, f"{field} is truncated (its index points past the end of the file)")
        vs = container.streams.video[0]
        cc = vs.codec_context
        if cc is None:  # FFmpeg has no decoder for this stream's codec
            raise UnsupportedMediaError(field, f"{field} uses a video codec this server cannot decode")
        w, h = int(cc.width or 0), int(cc.height or 0)
        if w <= 0 or h <= 0:
            raise InvalidMediaError(field, f"{field} has a video stream without a frame size (corrupt?)")
        if w * h > limits.max_pixels:
            raise TooLargeError(field, f"{field} is {w}×{h} = {w * h} pixels a frame, over the limit of "
                                       f"{limits.max_pixels}")
        tb = Fraction(vs.time_base) if vs.time_base else Fraction(1, 90000)
        if vs.duration:
            duration = float(vs.duration * tb)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        if duration > limits.max_seconds:
            raise TooLargeError(field, f"{field} runs {duration:.1f} s, over the limit of {limits.max_seconds:g} s")
        vfr, measured = _scan_timing(container, vs)
        try:
            first = next(iter(container.decode(vs)), None)
        except MEDIA_ERRORS:
            raise InvalidMediaError(field, f"{field} has no decodable video frame (truncated or corrupt)") \
                from None
        if first is None:
            raise InvalidMediaError(field, f"{field} has no decodable video frame (truncated or corrupt)")
        rotation = _rotation_of(first, vs)
        nominal = vs.guessed_rate or vs.base_rate or vs.average_rate or measured
        rate = (measured or vs.average_rate or nominal) if vfr else nominal
        fps = Fraction(rate) if rate else Fraction(25)
        start = float(vs.start_time * tb) if vs.start_time is not None else 0.0
        if not duration and container.duration:
            duration = container.duration / av.time_base
        frames = int(vs.frames) if vs.frames else int(round(duration * float(fps)))
        up_w, up_h = (h, w) if rotation in (90, 270) else (w, h)
        return VideoInfo(
            container=kind, width=up_w, height=up_h, rotation=rotation, fps=fps, time_base=tb, start=start,
            duration=duration, frames=frames, codec=cc.codec.canonical_name, vfr=vfr, **_audio_fields(container),  # type: ignore[arg-type]
        )


def iter_frames(
    path: str | Path, field: str = "video", start: float | None = None, end: float | None = None,
    threads: bool = True,
) -> Iterator[tuple[np.ndarray, float]]:
    """Lazily yield ``(upright BGR uint8 frame, pts seconds)`` for frames with ``start <= pts < end``.

    Decoding is multi-threaded inside FFmpeg (``thread_type = "AUTO"``); only one frame is held at a time, so
    memory does not grow with the clip. ``pts`` is on the source timeline (not shifted by ``start``). A decode
    error part-way raises :class:`InvalidMediaError` naming ``field``. Run :func:`probe_video` first: this
    does not check limits.
    """
    try:
        container = av.open(str(path), "r")
    except MEDIA_ERRORS:
        raise InvalidMediaError(field, f"{field} could not be read (truncated or corrupt)") from None
    with container:
        vs = container.streams.video[0]
        if threads:
            vs.thread_type = "AUTO"
        tb = Fraction(vs.time_base) if vs.time_base else Fraction(1, 90000)
        half_tick = float(tb) / 2
        if start:
            try:
                container.seek(int(start / tb), stream=vs, backward=True)
            except MEDIA_ERRORS:
                container.seek(0, stream=vs, backward=True)
        rotation: int | None = None
        try:
            for frame in container.decode(vs):
                t = float(frame.pts * tb) if frame.pts is not None else float(frame.time or 0.0)
                if start is not None and t < start - half_tick:
                    continue
                if end is not None and t >= end - half_tick:
                    break
                if rotation is None:
                    rotation = _rotation_of(frame, vs)
                yield upright(frame.to_ndarray(format="bgr24"), rotation), t
        except MEDIA_ERRORS:
            raise InvalidMediaError(field, f"{field} is corrupt or truncated part-way") from None
