"""Containers named by a file's first bytes (never by its name or the client's content type)."""

from __future__ import annotations

from pathlib import Path

# Containers that usually hold video. ``mp4`` may still turn out to be audio-only (an .m4a with an mp4 brand):
# only probing its streams tells, which app.media.video.probe_video does.
VIDEO_CONTAINERS = frozenset({"mp4", "mov", "matroska", "avi"})
AUDIO_CONTAINERS = frozenset({"wav", "mp3", "aac", "m4a", "ogg", "flac"})
HEAD_BYTES = 64

_M4A_BRANDS = (b"M4A ", b"M4B ", b"M4P ", b"F4A ")


def _mp3_frame_sync(head: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, a valid version, layer III/II/I, a usable bitrate and rate."""
    if len(head) < 4 or head[0] != 0xFF or (head[1] & 0xE0) != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 0x3, (head[1] >> 1) & 0x3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 0x3
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def _adts(head: bytes) -> bool:
    """An AAC ADTS header: 12 sync bits, layer 00, a valid sampling index."""
    return len(head) >= 7 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0 and ((head[2] >> 2) & 0xF) < 13


def sniff_container(head: bytes) -> str | None:
    """The container named by the first bytes of a file, or None when it is none we read.

    Returns one of ``mp4``, ``mov``, ``m4a`` (mp4 with an audio brand; a plain ``mp4`` brand may still be
    audio-only), ``matroska`` (MKV and WebM), ``avi``, ``wav``, ``mp3``, ``aac`` (ADTS), ``ogg`` (Ogg/Opus/Vorbis),
    ``flac``. Needs at most :data:`HEAD_BYTES` bytes.
    """
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _M4A_BRANDS:
            return "m4a"
        return "mov" if brand == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "mov"  # old QuickTime files without ftyp
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if len(head) >= 12 and head[:4] == b"RIFF":
        return {b"AVI ": "avi", b"WAVE": "wav"}.get(head[8:12])
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"ID3":
        return "mp3"
    if _adts(head):
        return "aac"
    if _mp3_frame_sync(head):
        return "mp3"
    return None


def sniff_file(path: str | Path) -> str | None:
    """:func:`sniff_container` on the first bytes of the file at ``path``."""
    with open(path, "rb") as f:
        return sniff_container(f.read(HEAD_BYTES))
