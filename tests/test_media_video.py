"""Video and audio on PyAV (app.media): probe, reader, writer, audio carry, audio decode, the streaming pipeline,
and bad media. Clips are synthesised by testkit/clips.py with PyAV itself: no network, no ffmpeg binary."""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from app.errors import ApiError
from app.media.audio import audio_duration, decode_audio, iter_audio, probe_audio
from app.media.mux import AudioOutcome
from app.media.pipeline import Canceled, process_video
from app.media.sniff import sniff_container, sniff_file
from app.media.video import VideoLimits, iter_frames, probe_video
from app.media.writer import VideoWriter, even_size
from testkit.clips import noise, write_audio, write_clip

NTSC = Fraction(30000, 1001)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


def _audio_stream_seconds(path: Path) -> float | None:
    """Seconds of the first audio stream, from the container, or None when it has none."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        a = c.streams.audio[0]
        return float(a.duration * a.time_base)


def _identity(src: Path, dst: Path, **kw: object) -> object:
    return process_video(src, dst, per_frame=lambda f: f, **kw)  # type: ignore[arg-type]


# --- sniffing -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("head", "kind"), [
    (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "mp4"),
    (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00", "mov"),
    (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00", "m4a"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "matroska"),
    (b"RIFF\x10\x00\x00\x00AVI LIST", "avi"),
    (b"RIFF\x10\x00\x00\x00WAVEfmt ", "wav"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
    (b"\xff\xfb\x90\x64\x00\x00\x00\x00", "mp3"),
    (b"\xff\xf1\x50\x80\x02\x1f\xfc", "aac"),
    (b"OggS\x00\x02\x00\x00", "ogg"),
    (b"fLaC\x00\x00\x00\x22", "flac"),
    (b"hello, world, not media", None),
    (b"\x89PNG\r\n\x1a\n\x00\x00", None),
])
def test_sniff_names_containers_by_bytes(head: bytes, kind: str | None) -> None:
    assert sniff_container(head) == kind


def test_sniff_real_files(clips: Path) -> None:
    assert sniff_file(write_clip(clips / "s.mov", seconds=0.2)) == "mp4"  # a name says nothing
    assert sniff_file(write_clip(clips / "s.webm", seconds=0.2, container="matroska")) == "matroska"
    assert sniff_file(write_clip(clips / "s.bin", seconds=0.2, container="avi", codec="mpeg4")) == "avi"
    for codec, kind in [("pcm", "wav"), ("flac", "flac"), ("mp3", "mp3"), ("aac", "aac"), ("opus", "ogg")]:
        assert sniff_file(write_audio(clips / f"s.{codec}", codec, seconds=0.2, rate=48000)) == kind


# --- probe and reader -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [Fraction(25), NTSC, Fraction(24000, 1001), Fraction(60)], ids=str)
def test_constant_rates_are_exact(clips: Path, fps: Fraction) -> None:
    path = write_clip(clips / f"cfr{float(fps):.3f}.mp4", fps=fps, seconds=1.0)
    info = probe_video(path, "video")
    assert info.fps == fps and not info.vfr
    assert (info.width, info.height, info.rotation, info.codec) == (96, 64, 0, "h264")
    n = int(np.ceil(1.0 * fps))
    frames = list(iter_frames(path))
    assert len(frames) == n == info.frames
    times = np.array([t for _, t in frames])
    assert np.allclose(times, np.arange(n) / float(fps), atol=1e-6)
    assert abs(info.duration - n / float(fps)) < 1 / float(fps)
    assert frames[0][0].shape == (64, 96, 3) and frames[0][0].dtype == np.uint8
    assert not np.array_equal(frames[0][0], frames[1][0])  # the pattern moves


@pytest.mark.parametrize("fps", [Fraction(25), NTSC, Fraction(60)], ids=str)
def test_round_trip_keeps_rate_count_and_timestamps(clips: Path, fps: Fraction) -> None:
    src = write_clip(clips / f"rt{float(fps):.3f}.mp4", fps=fps, seconds=1.0, audio="aac")
    res = _identity(src, clips / f"rt{float(fps):.3f}.out.mp4")
    out = probe_video(res.path, "video")
    assert out.fps == fps and out.frames == res.frames == int(np.ceil(fps))
    src_t = [t for _, t in iter_frames(src)]
    out_t = [t for _, t in iter_frames(res.path)]
    assert np.allclose(src_t, out_t, atol=1e-6)
    assert abs(out.duration - probe_video(src, "video").duration) < 1 / float(fps)
    assert res.audio is AudioOutcome.COPIED and out.has_audio
    assert abs(_audio_stream_seconds(res.path) - _audio_stream_seconds(src)) < 1 / float(fps)  # type: ignore[operator]


def test_variable_frame_rate_timing_survives(clips: Path) -> None:
    src = write_clip(clips / "vfr.mp4", fps=30, seconds=1.0, vfr=True)
    info = probe_video(src, "video")
    assert info.vfr
    src_t = np.array([t for _, t in iter_frames(src)])
    steps = np.round(np.diff(src_t) * 30).astype(int)
    assert set(steps.tolist()) == {1, 2}  # really variable: 1/30 and 2/30 s steps
    res = _identity(src, clips / "vfr.out.mp4")
    out_t = np.array([t for _, t in iter_frames(res.path)])
    assert len(out_t) == len(src_t)
    assert np.allclose(out_t, src_t, atol=1e-4)
    assert probe_video(res.path, "video").vfr


@pytest.mark.parametrize(("rotation", "marker"), [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")])
def test_rotation_is_applied_to_pixels(clips: Path, rotation: int, marker: str) -> None:
    src = write_clip(clips / f"rot{rotation}.mp4", size=(96, 64), seconds=0.4, rotation=rotation)
    info = probe_video(src, "video")
    turned = rotation % 360 in (90, 270)
    assert info.rotation == rotation % 360 and info.coded_size == (96, 64)
    assert (info.width, info.height) == ((64, 96) if turned else (96, 64))
    frame, _ = next(iter(iter_frames(src)))
    assert frame.shape == ((96, 64, 3) if turned else (64, 96, 3))
    # the red marker, top-left as coded, lands where a player shows it
    corners = {"top-left": frame[:8, :8], "bottom-left": frame[-8:, :8], "top-right": frame[:8, -8:],
               "bottom-right": frame[-8:, -8:]}
    for name, patch in corners.items():
        red = patch.reshape(-1, 3).mean(0)
        assert (red[2] > 180 and red[1] < 80) == (name == marker), name
    res = _identity(src, clips / f"rot{rotation}.out.mp4")
    out = probe_video(res.path, "video")
    assert (out.rotation, out.width, out.height) == (0, info.width, info.height)  # upright pixels, no matrix left


def test_odd_sizes_are_padded_by_one_repeated_pixel(clips: Path) -> None:
    src = write_clip(clips / "odd.mkv", size=(97, 71), seconds=0.4, container="matroska")
    assert even_size(97, 71) == (98, 72)
    info = probe_video(src, "video")
    assert (info.width, info.height) == (97, 71)
    res = _identity(src, clips / "odd.out.mp4")
    assert (res.width, res.height) == (98, 72)
    src_f = next(iter(iter_frames(src)))[0].astype(int)
    out_f = next(iter(iter_frames(res.path)))[0].astype(int)
    assert np.abs(out_f[:71, :97] - src_f).mean() < 6  # same picture (lossy)
    assert np.abs(out_f[:71, 97] - out_f[:71, 96]).mean() < 6  # the added column repeats the last one


def test_clip_shorter_than_a_second(clips: Path) -> None:
    src = write_clip(clips / "short.mp4", fps=25, seconds=0.32, audio="aac")
    info = probe_video(src, "video")
    assert info.frames == 8 and abs(info.duration - 0.32) < 0.04
    res = _identity(src, clips / "short.out.mp4")
    assert res.frames == 8 and abs(res.duration - 0.32) < 0.04
    assert abs(_audio_stream_seconds(res.path) - 0.32) < 0.04  # type: ignore[operator]


def test_trim_start_end_shifts_video_and_audio(clips: Path) -> None:
    src = write_clip(clips / "trim.mp4", fps=25, seconds=2.0, audio="aac")
    frames = list(iter_frames(src, start=0.4, end=1.4))
    assert len(frames) == 25 and abs(frames[0][1] - 0.4) < 1e-6
    res = _identity(src, clips / "trim.out.mp4", start=0.4, end=1.4)
    out_t = [t for _, t in iter_frames(res.path)]
    assert len(out_t) == 25 and abs(out_t[0]) < 1e-6 and abs(out_t[-1] - 0.96) < 1e-6
    assert abs(_audio_stream_seconds(res.path) - 1.0) < 0.05  # type: ignore[operator]


# --- audio carried into the output ----------------------------------------------------------------------------


@pytest.mark.parametrize(("codec", "container", "outcome"), [
    ("aac", "mp4", AudioOutcome.COPIED),
    ("mp3", "mp4", AudioOutcome.COPIED),
    ("opus", "mp4", AudioOutcome.COPIED),
    ("vorbis", "matroska", AudioOutcome.REENCODED),
    ("pcm", "matroska", AudioOutcome.REENCODED),
])
def test_source_audio_is_kept(clips: Path, codec: str, container: str, outcome: AudioOutcome) -> None:
    src = write_clip(clips / f"a_{codec}.{container}", fps=NTSC, seconds=1.0, audio=codec, container=container)
    res = _identity(src, clips / f"a_{codec}.out.mp4")
    assert res.audio is outcome
    with av.open(str(res.path)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.codec.canonical_name == (codec if outcome is AudioOutcome.COPIED else "aac")
    kept = decode_audio(res.path, 16000)
    assert abs(kept.size / 16000 - 1.0) < 1 / 29.97 + 0.03  # within a frame (+ one codec frame of padding)
    assert float(np.sqrt(np.mean(kept[2000:-2000] ** 2))) > 0.15  # the tone (0.3 a channel), not silence


@pytest.mark.parametrize(("codec", "container"), [("aac", "mp4"), ("opus", "mp4"), ("pcm", "matroska")])
def test_trimmed_audio_stays_in_sync(clips: Path, codec: str, container: str) -> None:
    src = write_clip(clips / f"sync_{codec}.{container}", fps=25, seconds=2.0, audio=codec, container=container,
                     signal="noise")
    res = _identity(src, clips / f"sync_{codec}.out.mp4", start=0.4, end=1.6)
    ref = noise(2.0, 48000)[0]
    with av.open(str(res.path)) as c:
        a = c.streams.audio[0]
        starts_at = float(next(iter(c.decode(a))).time)  # a copied stream starts at its first whole packet
    out = decode_audio(res.path, 48000)
    window = out[4800:4800 + 9600]
    holds = (int(np.argmax(np.correlate(ref, window, mode="valid"))) - 4800) / 48000  # source time of out[0]
    assert abs(holds - (0.4 + starts_at)) < 0.002  # plays when the trimmed video shows that moment


def test_no_audio_and_dropped_audio(clips: Path) -> None:
    silent = write_clip(clips / "silent.mp4", seconds=0.4)
    assert _identity(silent, clips / "silent.out.mp4").audio is AudioOutcome.NONE
    loud = write_clip(clips / "loud.mp4", seconds=0.4, audio="aac")
    res = _identity(loud, clips / "loud.out.mp4", audio="drop")
    assert res.audio is AudioOutcome.DROPPED and _audio_stream_seconds(res.path) is None


def test_audio_that_cannot_be_kept_is_422_naming_audio(clips: Path) -> None:
    src = write_clip(clips / "for_bad_audio.mp4", seconds=0.4)
    bad = clips / "bad_audio.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 40)
    dst = clips / "bad_audio.out.mp4"
    with pytest.raises(ApiError) as err:
        _identity(src, dst, audio_source=bad)
    assert (err.value.status, err.value.field) == (422, "audio") and not dst.exists()
    assert _identity(src, dst, audio_source=bad, audio="drop").audio is AudioOutcome.DROPPED


@pytest.mark.parametrize(("codec", "rate", "outcome"), [
    ("pcm", 44100, AudioOutcome.REENCODED),
    ("flac", 44100, AudioOutcome.COPIED),
    ("mp3", 44100, AudioOutcome.COPIED),
    ("aac", 44100, AudioOutcome.COPIED),
    ("opus", 48000, AudioOutcome.COPIED),
])
def test_separate_audio_file_decodes_and_muxes(clips: Path, codec: str, rate: int, outcome: AudioOutcome) -> None:
    audio = write_audio(clips / f"speech_{codec}.{codec}", codec, seconds=1.5, rate=rate, channels=2)
    info = probe_audio(audio)
    assert abs(info.duration - 1.5) < 0.06 and abs(audio_duration(audio) - 1.5) < 0.06
    pcm = decode_audio(audio, 16000)
    assert pcm.dtype == np.float32 and pcm.ndim == 1 and abs(pcm.size - 24000) < 0.06 * 16000
    spectrum = np.abs(np.fft.rfft(pcm[:16000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) < 3  # the tone survives resampling to 16 kHz mono
    chunks = list(iter_audio(audio, 16000))
    assert len(chunks) > 3 and sum(c.size for c in chunks) == pcm.size
    video = write_clip(clips / f"lips_{codec}.mp4", fps=25, seconds=1.5)
    res = _identity(video, clips / f"lips_{codec}.out.mp4", audio_source=audio)
    assert res.audio is outcome
    assert abs(_audio_stream_seconds(res.path) - 1.5) < 0.06  # type: ignore[operator]


# --- the pipeline ---------------------------------------------------------------------------------------------


def test_pipeline_batches_progress_and_processing(clips: Path) -> None:
    src = write_clip(clips / "pipe.mp4", fps=25, seconds=1.0)
    seen: list[tuple[int, int]] = []
    sizes: list[int] = []

    def invert(batch: list[np.ndarray]) -> list[np.ndarray]:
        sizes.append(len(batch))
        return [255 - f for f in batch]

    res = process_video(src, clips / "pipe.out.mp4", per_batch=invert, batch_size=4,
                        progress=lambda d, t: seen.append((d, t)))
    assert sizes == [4] * 6 + [1] and seen[-1] == (25, 25) and res.frames == 25
    a = next(iter(iter_frames(src)))[0].astype(int)
    b = next(iter(iter_frames(res.path)))[0].astype(int)
    assert np.abs((255 - a) - b).mean() < 6


def test_cancel_stops_threads_and_removes_output(clips: Path) -> None:
    src = write_clip(clips / "cancel.mp4", fps=25, seconds=2.0, audio="aac")
    dst = clips / "cancel.out.mp4"
    before = threading.active_count()

    def progress(done: int, total: int) -> None:
        if done >= 10:
            raise Canceled("user canceled")

    with pytest.raises(Canceled):
        process_video(src, dst, per_frame=lambda f: f, progress=progress)
    assert not dst.exists() and threading.active_count() == before

    def boom(f: np.ndarray) -> np.ndarray:
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        process_video(src, dst, per_frame=boom)
    assert not dst.exists() and threading.active_count() == before


def test_writer_output_has_index_first(clips: Path) -> None:
    dst = clips / "faststart.mp4"
    with VideoWriter(dst, NTSC) as w:
        for i in range(5):
            w.write(np.full((64, 96, 3), i * 40, np.uint8))
    head = dst.read_bytes()
    assert head.find(b"moov") < head.find(b"mdat")  # +faststart: playable while it downloads
    assert probe_video(dst, "video").fps == NTSC



def test_writer_keeps_colours_over_generations(clips: Path) -> None:
    """Colours survive an encode → decode within a level and grey stays grey (no tint) over five generations (BT.709,
    tagged). The plain swscale bgr24 → yuv420p path wrote Cb = Cr = 127 for grey: (110, 110, 110) came back as
    (106, 109, 107), and the green-magenta shift grew with every generation."""
    patches = [(110, 110, 110), (40, 120, 200), (200, 60, 30), (16, 16, 16), (235, 235, 235), (128, 128, 128)]
    frame = np.zeros((64, len(patches) * 32, 3), np.uint8)
    for i, colour in enumerate(patches):
        frame[:, i * 32:(i + 1) * 32] = colour

    def means(img: np.ndarray) -> np.ndarray:
        return np.array([img[16:48, i * 32 + 8:(i + 1) * 32 - 8].reshape(-1, 3).mean(axis=0)
                         for i in range(len(patches))])

    generations = []
    for gen in range(5):
        dst = clips / f"gen{gen}.mp4"
        with VideoWriter(dst, 25) as w:
            for _ in range(3):
                w.write(frame)
        with av.open(str(dst)) as c:
            cc = c.streams.video[0].codec_context
            assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (1, 1, 1, 1)
        frame = next(iter(iter_frames(dst)))[0]
        generations.append(means(frame))
    assert np.abs(generations[0] - np.array(patches)).max() <= 1.5, generations[0]
    greys = generations[-1][[0, 3, 4, 5]]
    assert np.abs(greys - greys.mean(axis=1, keepdims=True)).max() <= 0.5, greys  # B = G = R: no tint
    assert np.abs(greys.mean(axis=1) - [110, 16, 235, 128]).max() <= 2, greys

# --- bad media ------------------------------------------------------------------------------------------------


def _status(path: Path, limits: VideoLimits | None = None) -> tuple[int, str | None]:
    with pytest.raises(ApiError) as err:
        probe_video(path, "target_video", limits)
    return err.value.status, err.value.field


def test_bad_media(clips: Path) -> None:
    text = clips / "notes.mp4"
    text.write_text("this is not a video at all, whatever its name says\n" * 4)
    assert _status(text) == (415, "target_video")
    empty = clips / "empty.mp4"
    empty.write_bytes(b"")
    assert _status(empty) == (422, "target_video")
    good = write_clip(clips / "whole.mp4", fps=25, seconds=1.0, size=(160, 120))
    cut = clips / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # moov sits at the end: lost
    assert _status(cut) == (422, "target_video")
    ours = _identity(write_clip(clips / "to_cut.mp4", fps=25, seconds=1.0, audio="aac"), clips / "fs.mp4").path
    fs_cut = clips / "fs_cut.mp4"
    fs_cut.write_bytes(ours.read_bytes()[: ours.stat().st_size // 2])  # index first (+faststart), media cut off
    assert _status(fs_cut) == (422, "target_video")
    garbage = clips / "garbage.mp4"
    garbage.write_bytes(good.read_bytes()[:64] + bytes(range(256)) * 8)
    assert _status(garbage) == (422, "target_video")
    assert _status(good, VideoLimits(max_seconds=0.5)) == (413, "target_video")
    assert _status(good, VideoLimits(max_pixels=160 * 120 - 1)) == (413, "target_video")
    wav = write_audio(clips / "speech.wav", "pcm", seconds=0.3)
    assert _status(wav) == (415, "target_video")
    m4a = write_audio(clips / "speech.m4a", "aac", seconds=0.3, container="mp4")
    assert sniff_file(m4a) == "mp4"  # only its streams tell it holds no video
    assert _status(m4a) == (415, "target_video")
    with pytest.raises(ApiError) as err:
        probe_audio(text, "audio")
    assert (err.value.status, err.value.field) == (415, "audio")
    with pytest.raises(ApiError) as err:
        probe_audio(write_clip(clips / "mute.mp4", seconds=0.2), "audio")
    assert (err.value.status, err.value.field) == (422, "audio")


def test_pipeline_stage_may_hold_frames_back(tmp_path: Path) -> None:
    """A look-ahead stage returns frames later than it gets them: every frame is still written once, in order, with
    its own timestamp, and the rest comes out at flush."""
    src = write_clip(tmp_path / "s.mp4", size=(64, 48), fps=25, seconds=0.6)

    class Delay:
        def __init__(self) -> None:
            self.held: list[np.ndarray] = []

        def push(self, frame: np.ndarray) -> list[np.ndarray]:
            self.held.append(frame)
            return [self.held.pop(0)] if len(self.held) > 3 else []

        def flush(self) -> list[np.ndarray]:
            out, self.held = self.held, []
            return out

    seen: list[tuple[int, int]] = []
    res = process_video(src, tmp_path / "d.mp4", stage=Delay(), progress=lambda d, t: seen.append((d, t)))
    assert res.frames == 15
    ref = [f for f, _ in iter_frames(src)]
    got = [f for f, _ in iter_frames(tmp_path / "d.mp4")]
    times = [t for _, t in iter_frames(tmp_path / "d.mp4")]
    assert len(got) == 15 and np.allclose(times, np.arange(15) / 25, atol=1e-3)
    assert all(float(np.abs(a.astype(int) - b.astype(int)).mean()) < 4 for a, b in zip(ref, got, strict=True))
    assert seen[-1][0] == 15
