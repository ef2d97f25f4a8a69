"""The /swap_url storage bucket: name validation, reads with size limits, exclusive result writes."""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from app import storage
from app.storage import (
    Bucket,
    StorageError,
    StorageNotFound,
    StorageTooLarge,
    StorageUnavailable,
    UnsafePath,
    safe_name,
)

MB = 1024 * 1024


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "bucket"
    (d / "faces").mkdir(parents=True)
    (d / "faces" / "me.jpg").write_bytes(b"source-bytes")
    (d / "pic.jpg").write_bytes(b"target-bytes")
    return d


@pytest.fixture
def bucket(root: Path) -> Bucket:
    return Bucket(str(root))


@pytest.fixture
def mem_url() -> Iterator[str]:
    prefix = f"faceapi-test-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"/{prefix}/faces/me.jpg", b"source-bytes")
    yield f"memory://{prefix}"
    fs.rm(f"/{prefix}", recursive=True)


def files_under(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- local reads and writes


def test_read_write_roundtrip(bucket: Bucket, root: Path) -> None:
    assert bucket.read("faces/me.jpg", max_bytes=MB) == b"source-bytes"
    name = bucket.write_result("faces/me.jpg", b"result-bytes", "png")
    assert name.startswith("results/faces/me-") and name.endswith(".png")
    assert len(name) == len("results/faces/me-") + 12 + len(".png")
    assert bucket.read(name, max_bytes=MB) == b"result-bytes"
    assert (root / name).read_bytes() == b"result-bytes"
    assert bucket.exists(name) and bucket.exists("faces/me.jpg")
    assert not bucket.exists("faces/nope.jpg") and not bucket.exists("faces")
    assert bucket.url_for(name) == (root / name).resolve().as_uri()
    assert bucket.url_for(name).startswith("file:///")


def test_file_url_and_names_are_normalised(root: Path) -> None:
    b = Bucket(root.as_uri())
    assert b.is_local
    assert b.read("./faces//me.jpg", max_bytes=100) == b"source-bytes"
    name = b.write_result("./pic.jpg", b"x", ".PNG")
    assert name.startswith("results/pic-") and name.endswith(".png")


def test_two_writes_give_two_files_and_inputs_stay(bucket: Bucket, root: Path) -> None:
    before = files_under(root)
    a = bucket.write_result("pic.jpg", b"one", "png")
    b = bucket.write_result("pic.jpg", b"two", "png")
    assert a != b
    assert a.startswith("results/pic-") and b.startswith("results/pic-")
    after = files_under(root)
    assert after[a] == b"one" and after[b] == b"two"
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) == set(before) | {a, b}  # no temporary files left behind


def test_concurrent_writes_are_all_kept(bucket: Bucket, root: Path) -> None:
    names: list[str] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        n = bucket.write_result("pic.jpg", str(i).encode(), "png")
        with lock:
            names.append(n)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 16
    assert sorted(bucket.read(n, 10) for n in names) == sorted(str(i).encode() for i in range(16))


@pytest.mark.parametrize("results_prefix", ["results/", ""])
def test_colliding_name_never_overwrites(
    root: Path, monkeypatch: pytest.MonkeyPatch, results_prefix: str
) -> None:
    b = Bucket(str(root), results_prefix=results_prefix)
    taken = root / results_prefix / "pic-aaaaaaaaaaaa.png"
    taken.parent.mkdir(parents=True, exist_ok=True)
    taken.write_bytes(b"an input the client owns")
    before = files_under(root)
    monkeypatch.setattr(storage, "_unique_suffix", lambda: "aaaaaaaaaaaa")
    with pytest.raises(StorageError):
        b.write_result("pic.jpg", b"result", "png")
    assert files_under(root) == before
    # a fresh suffix on the next attempt succeeds
    suffixes = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(storage, "_unique_suffix", lambda: next(suffixes))
    name = b.write_result("pic.jpg", b"result", "png")
    assert name == f"{results_prefix}pic-bbbbbbbbbbbb.png"
    assert taken.read_bytes() == b"an input the client owns"


def test_write_without_hard_links_is_still_exclusive(
    bucket: Bucket, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(*_: object, **__: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(storage.os, "link", no_link)
    name = bucket.write_result("pic.jpg", b"direct", "png")
    assert (root / name).read_bytes() == b"direct"
    monkeypatch.setattr(storage, "_unique_suffix", lambda: name[-16:-4])
    with pytest.raises(StorageError):
        bucket.write_result("pic.jpg", b"other", "png")
    assert (root / name).read_bytes() == b"direct"
    assert not [p for p in root.rglob("*.tmp")]


def test_missing_is_not_found(bucket: Bucket, root: Path) -> None:
    with pytest.raises(StorageNotFound) as e:
        bucket.read("faces/nobody.jpg", max_bytes=MB)
    assert e.value.name == "faces/nobody.jpg"
    with pytest.raises(StorageNotFound):
        bucket.read("pic.jpg/below.jpg", max_bytes=MB)  # a file used as a folder
    with pytest.raises(StorageNotFound):
        bucket.read("faces", max_bytes=MB)  # a directory is not a file


def test_fifo_is_not_read(bucket: Bucket, root: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(root / "pipe.jpg")
    with pytest.raises(StorageNotFound):
        bucket.read("pipe.jpg", max_bytes=MB)  # would block forever if it were opened for reading


def test_too_large_is_refused_before_reading(bucket: Bucket, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = root / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(50 * MB)  # sparse: no disk space used
    opened: list[str] = []
    real_open = os.open

    def spy(path: str, *args: object, **kwargs: object) -> int:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(storage.os, "open", spy)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(StorageTooLarge) as e:
            bucket.read("big.jpg", max_bytes=MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < MB
    assert not any("big.jpg" in p for p in opened)
    assert (e.value.size, e.value.limit, e.value.name) == (50 * MB, MB, "big.jpg")
    # exactly at the limit is fine
    (root / "edge.jpg").write_bytes(b"x" * 100)
    assert len(bucket.read("edge.jpg", max_bytes=100)) == 100
    with pytest.raises(StorageTooLarge):
        bucket.read("edge.jpg", max_bytes=99)


# ---------------------------------------------------------------- names


TRAVERSALS = [
    "../x.jpg",
    "a/../../x.jpg",
    "a/..",
    "..",
    "/etc/passwd",
    "//etc/passwd",
    "file:///etc/passwd",
    "file:x.jpg",
    "s3://other/x",
    "gs://other/x",
    "a/s3://other/x",
    "a\\..\\x",
    "a\\x.jpg",
    "a\x00.jpg",
    "a\x1fb.jpg",
    "a\x7f.jpg",
    "a\nb.jpg",
    "~/x",
    "~root/x",
    "C:/x",
    "c:x.jpg",
    "dir/",
    "dir/.",
    "./",
    ".",
    "",
    "a" * 1025,
    "é" * 513,  # 1026 bytes in UTF-8
    "\udcff.jpg",  # a lone surrogate cannot be encoded
    "dir/" + "x" * 256 + ".jpg",  # a component over the 255 bytes file systems allow
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_unsafe_names_are_refused_everywhere(bucket: Bucket, root: Path, name: str) -> None:
    before = files_under(root.parent)
    with pytest.raises(UnsafePath) as e:
        safe_name(name, "face_filename")
    assert e.value.field == "face_filename" and e.value.reason
    for call in (
        lambda: bucket.read(name, MB, field="face_filename"),
        lambda: bucket.exists(name, field="face_filename"),
        lambda: bucket.url_for(name, field="face_filename"),
        lambda: bucket.write_result(name, b"x", "png", field="face_filename"),
    ):
        with pytest.raises(UnsafePath) as e:
            call()
        assert e.value.field == "face_filename"
    assert files_under(root.parent) == before


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", "a.jpg"),
        ("./a.jpg", "a.jpg"),
        ("a//b/./c.jpg", "a/b/c.jpg"),
        ("a/.hidden.jpg", "a/.hidden.jpg"),
        ("dots...jpg", "dots...jpg"),
        ("a~b/x.jpg", "a~b/x.jpg"),
        ("photo 1 (copy).JPG", "photo 1 (copy).JPG"),
        ("/".join(["a" * 255] * 4), "/".join(["a" * 255] * 4)),  # 1023 bytes, components at the 255 limit
    ],
)
def test_safe_names(name: str, expected: str) -> None:
    assert safe_name(name, "f") == expected


def test_symlink_out_of_the_bucket_is_not_followed(bucket: Bucket, root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"secret")
    (root / "link.jpg").symlink_to(outside / "secret.jpg")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "dangling.jpg").symlink_to(outside / "not-yet.jpg")
    for name in ("link.jpg", "linkdir/secret.jpg", "dangling.jpg"):
        with pytest.raises(UnsafePath) as e:
            bucket.read(name, MB, field="model_filenames")
        assert e.value.field == "model_filenames"
        with pytest.raises(UnsafePath):
            bucket.exists(name)
        with pytest.raises(UnsafePath):
            bucket.url_for(name)
    # an input reached through a link to outside is refused for writing too
    with pytest.raises(UnsafePath):
        bucket.write_result("linkdir/secret.jpg", b"x", "png")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.jpg"]
    assert not (outside / "not-yet.jpg").exists()


def test_symlinked_results_folder_outside_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "results").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePath):
        Bucket(str(root)).write_result("pic.jpg", b"x", "png")
    assert list(outside.iterdir()) == []


def test_symlink_inside_the_bucket_is_fine(bucket: Bucket, root: Path) -> None:
    (root / "alias.jpg").symlink_to(root / "faces" / "me.jpg")
    assert bucket.read("alias.jpg", MB) == b"source-bytes"


def test_bucket_root_behind_a_symlink(root: Path, tmp_path: Path) -> None:
    (tmp_path / "via").symlink_to(root, target_is_directory=True)
    b = Bucket(str(tmp_path / "via"))
    assert b.read("faces/me.jpg", MB) == b"source-bytes"
    assert (root / b.write_result("faces/me.jpg", b"r", "png")).read_bytes() == b"r"


def test_result_names_stay_short(bucket: Bucket, root: Path) -> None:
    long_stem = "é" * 120  # 240 bytes
    (root / f"{long_stem}.jpg").write_bytes(b"x")
    name = bucket.write_result(f"{long_stem}.jpg", b"r", "png")
    assert len(Path(name).name.encode()) <= 255
    assert bucket.read(name, 10) == b"r"


def test_bad_extension(bucket: Bucket) -> None:
    for ext in ("", "../png", "p/ng", "a" * 11, "png\x00"):
        with pytest.raises(ValueError):
            bucket.write_result("pic.jpg", b"x", ext)


# ---------------------------------------------------------------- configuration


def test_missing_root_is_unavailable(tmp_path: Path) -> None:
    b = Bucket(str(tmp_path / "absent"))
    with pytest.raises(StorageUnavailable):
        b.read("x.jpg", MB)


@pytest.mark.parametrize("url", ["", "   ", "ftp://host/x", "http://example.com/b", "file://", "gs://", "s3:///x"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(StorageUnavailable):
        Bucket(url)


def test_unsafe_results_prefix(root: Path) -> None:
    with pytest.raises(UnsafePath) as e:
        Bucket(str(root), results_prefix="../out/")
    assert e.value.field == "results_prefix"


@pytest.mark.parametrize(("url", "package"), [("gs://my-bucket/faces", "gcsfs"), ("s3://my-bucket/faces", "s3fs")])
def test_cloud_without_its_package(monkeypatch: pytest.MonkeyPatch, url: str, package: str) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # makes the import fail even where it is installed
    with pytest.raises(StorageUnavailable) as e:
        Bucket(url)
    assert f"pip install {package}" in str(e.value)


# ---------------------------------------------------------------- generic fsspec path (memory://)


def test_memory_backend_roundtrip(mem_url: str) -> None:
    b = Bucket(mem_url)
    assert not b.is_local
    assert b.read("faces/me.jpg", MB) == b"source-bytes"
    one = b.write_result("faces/me.jpg", b"one", "png")
    two = b.write_result("faces/me.jpg", b"two", "png")
    assert one != two and one.startswith("results/faces/me-") and two.endswith(".png")
    assert (b.read(one, MB), b.read(two, MB)) == (b"one", b"two")
    assert b.exists(one) and not b.exists("faces/other.jpg") and not b.exists("faces")
    assert b.url_for(one) == f"{mem_url}/{one}"
    assert b.read("faces/me.jpg", MB) == b"source-bytes"
    with pytest.raises(StorageNotFound):
        b.read("faces/other.jpg", MB)
    with pytest.raises(StorageNotFound):
        b.read("faces", MB)
    with pytest.raises(UnsafePath):
        b.read("../elsewhere/x.jpg", MB)


def test_memory_backend_never_overwrites(mem_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    b = Bucket(mem_url, results_prefix="")
    fs = fsspec.filesystem("memory")
    root = mem_url.removeprefix("memory://")
    fs.pipe_file(f"/{root}/faces/me-aaaaaaaaaaaa.png", b"client file")
    monkeypatch.setattr(storage, "_unique_suffix", lambda: "aaaaaaaaaaaa")
    with pytest.raises(StorageError):
        b.write_result("faces/me.jpg", b"result", "png")
    assert fs.cat_file(f"/{root}/faces/me-aaaaaaaaaaaa.png") == b"client file"


def test_memory_backend_too_large_is_not_opened(mem_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = fsspec.filesystem("memory")
    root = mem_url.removeprefix("memory://")
    fs.pipe_file(f"/{root}/big.jpg", b"x" * (2 * MB))

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("the file was opened")

    monkeypatch.setattr(MemoryFileSystem, "_open", boom)
    with pytest.raises(StorageTooLarge) as e:
        Bucket(mem_url).read("big.jpg", MB)
    assert e.value.size == 2 * MB


def test_backend_errors_become_unavailable(mem_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("connection reset")

    monkeypatch.setattr(MemoryFileSystem, "info", broken)
    monkeypatch.setattr(MemoryFileSystem, "pipe_file", broken)
    b = Bucket(mem_url)
    with pytest.raises(StorageUnavailable):
        b.read("faces/me.jpg", MB)
    with pytest.raises(StorageUnavailable):
        b.exists("faces/me.jpg")
    with pytest.raises(StorageUnavailable):
        b.write_result("faces/me.jpg", b"x", "png")
