"""Carry a source's audio into an MP4 being written: stream copy when MP4 takes the codec, else AAC.

Audio is never lost silently: when a source has audio that cannot be kept, :class:`AudioCarry` raises a 422
naming the ``audio`` field, unless the caller asked for ``audio="drop"``. What happened is reported as an
:class:`AudioOutcome` the API can put in a header.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

from app.errors import InvalidMediaError
from app.media.video import MEDIA_ERRORS, media_reason

AudioMode = Literal["keep", "drop"]

# Audio codecs MP4 holds as they are and that players handle; anything else (vorbis, PCM, ...) becomes AAC.
MP4_COPY_CODECS = frozenset({"aac", "mp3", "opus", "alac", "flac", "ac3", "eac3"})
AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000})
LOOKAHEAD = 0.5  # seconds of audio muxed ahead of the video, so the file interleaves in small chunks


class AudioOutcome(StrEnum):
    """What became of the source audio (the value is what the API reports)."""

    COPIED = "copied"
    REENCODED = "reencoded-aac"
    NONE = "none-in-source"
    DROPPED = "dropped"


class AudioCarry:
    """The audio of ``source`` between ``start`` and ``end`` seconds (source timeline), muxed into ``out``.

    Construct it before the first packet is muxed (it adds its stream), call :meth:`feed_until` as the video
    advances and :meth:`finish` before closing ``out``. Output audio timestamps are shifted by ``start`` so that
    they line up with a video shifted the same way.
    """

    def __init__(
        self, out: av.container.OutputContainer, source: str | Path | None, mode: AudioMode = "keep",
        start: float = 0.0, end: float | None = None, field: str = "audio",
    ) -> None:
        self.out, self.field, self.start, self.end = out, field, float(start or 0.0), end
        self._input: av.container.InputContainer | None = None
        self._packets: Iterator[tuple[float, av.Packet]] | None = None
        self._pending: tuple[float, av.Packet] | None = None
        if mode == "drop":
            self.outcome = AudioOutcome.DROPPED
            return
        if source is None:
            self.outcome = AudioOutcome.NONE
            return
        try:
            self._input = av.open(str(source), "r")
        except MEDIA_ERRORS as exc:
            self._fail(f"its audio could not be read: {media_reason(exc)}")
        if not self._input.streams.audio:
            self._input.close()
            self._input = None
            self.outcome = AudioOutcome.NONE
            return
        src = self._input.streams.audio[0]
        name = src.codec_context.codec.canonical_name
        try:
            if name in MP4_COPY_CODECS and name in out.supported_codecs:
                self.stream = out.add_stream_from_template(src)
                self.outcome = AudioOutcome.COPIED
                self._packets = self._copied(src)
            else:
                self.stream = self._aac_stream(src)
                self.outcome = AudioOutcome.REENCODED
                self._packets = self._encoded(src)
        except MEDIA_ERRORS as exc:
            self.close()
            self._fail(f"its {name} audio could neither be copied nor re-encoded: {media_reason(exc)}")

    def _fail(self, why: str) -> None:
        raise InvalidMediaError(self.field, f"{self.field}: {why}; send audio=drop to accept a silent video")

    def _aac_stream(self, src: av.audio.stream.AudioStream) -> av.audio.stream.AudioStream:
        rate = int(src.codec_context.sample_rate or 48000)
        rate = rate if rate in AAC_RATES else 48000
        layout = "mono" if (src.codec_context.channels or 2) == 1 else "stereo"
        stream = self.out.add_stream("aac", rate=rate, layout=layout)
        stream.bit_rate = 128_000 if layout == "mono" else 192_000
        return stream

    def _copied(self, src: av.audio.stream.AudioStream) -> Iterator[tuple[float, av.Packet]]:
        assert self._input is not None
        tb = Fraction(src.time_base)
        shift = int(round(self.start / tb))
        trimmed = self.start > 0
        for packet in self._input.demux(src):
            if packet.pts is None or packet.size == 0:
                continue
            t = float(packet.pts * tb)
            if self.end is not None and t >= self.end:
                return
            if trimmed and t < self.start:
                continue  # a copied packet cannot be cut: start at the first whole one (at most ~26 ms late)
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self.stream
            yield t - self.start, packet

    def _encoded(self, src: av.audio.stream.AudioStream) -> Iterator[tuple[float, av.Packet]]:
        assert self._input is not None
        cc = self.stream.codec_context
        rate = int(cc.sample_rate)
        resampler = av.AudioResampler(format="fltp", layout=cc.layout.name, rate=rate)
        first = None if self.start <= 0 else 0
        last = None if self.end is None else int(round((self.end - self.start) * rate))
        pos: int | None = None

        def frames_of(decoded: av.AudioFrame | None) -> Iterator[av.AudioFrame]:
            nonlocal pos
            for rf in resampler.resample(decoded):
                if pos is None:
                    t = float(rf.time) if rf.time is not None else 0.0
                    pos = int(round((t - self.start) * rate))
                arr = rf.to_ndarray()
                a, b = pos, pos + arr.shape[1]
                pos = b
                lo = a if first is None else max(first, a)
                hi = b if last is None else min(last, b)
                if hi <= lo:
                    continue
                piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(arr[:, lo - a: hi - a]), format="fltp",
                                                   layout=cc.layout.name)
                piece.sample_rate, piece.pts, piece.time_base = rate, lo, Fraction(1, rate)
                yield piece

        def packets(frame: av.AudioFrame | None) -> Iterator[tuple[float, av.Packet]]:
            for packet in self.stream.encode(frame):
                t = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
                yield t, packet

        for decoded in self._input.decode(src):
            for piece in frames_of(decoded):
                yield from packets(piece)
            if last is not None and pos is not None and pos >= last:
                break
        for piece in frames_of(None):
            yield from packets(piece)
        yield from packets(None)

    def feed_until(self, t: float | None) -> None:
        """Mux the audio up to ``t`` seconds of output time plus a short look-ahead (all of it when None)."""
        if self._packets is None:
            return
        limit = None if t is None else t + LOOKAHEAD
        try:
            while True:
                if self._pending is None:
                    self._pending = next(self._packets, None)
                    if self._pending is None:
                        self._packets = None
                        return
                when, packet = self._pending
                if limit is not None and when > limit:
                    return
                self.out.mux(packet)
                self._pending = None
        except MEDIA_ERRORS as exc:
            self._packets = None
            self._fail(f"its audio broke off while being {self.outcome.value}: {media_reason(exc)}")

    def finish(self) -> AudioOutcome:
        """Mux what is left, close the source; the outcome."""
        try:
            self.feed_until(None)
        finally:
            self.close()
        return self.outcome

    def close(self) -> None:
        if self._input is not None:
            self._input.close()
            self._input = None
