"""The weights manifest and downloader, against a local HTTP server (never the real URLs)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath

import pytest
import requests

from app.weights import download as D
from app.weights import manifest as M

# ---------------------------------------------------------------------------------------------------------
# a local file server with Range support and failure modes
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    range: str | None
    status: int
    sent: int


@dataclass
class FileServer:
    """Serves ``files`` by path. Modes per path: ``range`` (default: honours Range), ``ignore_range`` (always
    200 with the whole body), ``fail`` (500), ``cut`` (announces the full length, sends half, hangs up)."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)

    def add(self, path: str, data: bytes, mode: str = "range") -> str:
        self.files[path] = data
        self.modes[path] = mode
        return f"{self.base}/{path}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _reply(self, status: int, body: bytes, headers: dict[str, str], path: str, rng: str | None, cut=False) -> None:
        fs: FileServer = self.server.fs  # type: ignore[attr-defined]
        payload = body[: len(body) // 2] if cut else body
        # Recorded before anything is sent: a client that gives up after the status line (an error answer) must
        # not be able to reach the next URL before this request is on the list.
        fs.hits.append(Hit(path, rng, status, len(payload)))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        if cut:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()
        if cut:
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        fs: FileServer = self.server.fs  # type: ignore[attr-defined]
        path = self.path.lstrip("/")
        rng = self.headers.get("Range")
        mode = fs.modes.get(path, "range")
        data = fs.files.get(path)
        if data is None:
            return self._reply(404, b"not found", {}, path, rng)
        if mode == "fail":
            return self._reply(500, b"broken mirror", {}, path, rng)
        cut = mode == "cut"
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and mode != "ignore_range":
            start = int(m.group(1))
            if start >= len(data):
                return self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"}, path, rng)
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}", "Accept-Ranges": "bytes"}
            return self._reply(206, data[start:], headers, path, rng, cut)
        return self._reply(200, data, {"Accept-Ranges": "bytes"}, path, rng, cut)


@pytest.fixture()
def server() -> Iterator[FileServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    fs = FileServer(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.fs = fs  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fs
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture()
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False  # no proxy settings from the environment for 127.0.0.1
    yield s
    s.close()


def payload(n: int, seed: int = 0) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry(name: str = "model", filename: str = "model.onnx", urls: tuple[str, ...] = (), **kw: object) -> M.WeightFile:
    return M.WeightFile(name=name, filename=filename, urls=tuple(urls), license="test", jobs=("faceswap",), **kw)


class Logs(list):
    def __call__(self, msg: str) -> None:
        self.append(msg)


def fetch(e: M.WeightFile, d: Path, session: requests.Session, log: Logs | None = None) -> Path:
    return D.download(e, d, progress=False, session=session, log=log if log is not None else Logs())


# ---------------------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------------------


def test_download_checks_sha_and_skips_when_present(server: FileServer, session, tmp_path: Path) -> None:
    data = payload(300_000)
    url = server.add("m.onnx", data)
    e = entry(urls=(url,), size=len(data), sha256=sha(data))

    path = fetch(e, tmp_path, session)
    assert path == tmp_path / "model.onnx"
    assert path.read_bytes() == data
    assert not (tmp_path / "model.onnx.part").exists()
    result = D.verify(e, tmp_path)
    assert result.ok and result.files[0].hash_source == "manifest"

    log = Logs()
    assert fetch(e, tmp_path, session, log) == path
    assert len(server.hits) == 1, "a present, verified file must not be fetched again"
    assert any("present and verified" in m for m in log)


def test_resume_from_partial_part_with_range(server: FileServer, session, tmp_path: Path) -> None:
    data = payload(250_000, seed=1)
    url = server.add("m.onnx", data)
    e = entry(urls=(url,), size=len(data), sha256=sha(data))
    (tmp_path / "model.onnx.part").write_bytes(data[:100_000])

    fetch(e, tmp_path, session)

    assert (tmp_path / "model.onnx").read_bytes() == data
    [hit] = server.hits
    assert hit.range == "bytes=100000-" and hit.status == 206
    assert hit.sent == len(data) - 100_000


def test_restart_when_server_ignores_range(server: FileServer, session, tmp_path: Path) -> None:
    data = payload(200_000, seed=2)
    url = server.add("m.onnx", data, mode="ignore_range")
    e = entry(urls=(url,), size=len(data), sha256=sha(data))
    (tmp_path / "model.onnx.part").write_bytes(b"\xff" * 50_000)  # would corrupt the file if appended to

    fetch(e, tmp_path, session)

    assert (tmp_path / "model.onnx").read_bytes() == data
    [hit] = server.hits
    assert hit.range == "bytes=50000-" and hit.status == 200 and hit.sent == len(data)


def test_interrupted_download_keeps_part_and_resumes(server: FileServer, session, tmp_path: Path) -> None:
    data = payload(400_000, seed=3)
    url = server.add("m.onnx", data, mode="cut")
    e = entry(urls=(url,), size=len(data), sha256=sha(data))

    with pytest.raises(D.DownloadError, match="partial download kept"):
        fetch(e, tmp_path, session)
    part = tmp_path / "model.onnx.part"
    assert 0 < part.stat().st_size < len(data)
    assert not (tmp_path / "model.onnx").exists()

    have = part.stat().st_size
    server.modes["m.onnx"] = "range"
    fetch(e, tmp_path, session)
    assert (tmp_path / "model.onnx").read_bytes() == data
    last = server.hits[-1]
    assert last.range == f"bytes={have}-" and last.sent == len(data) - have


def test_mirror_fallback(server: FileServer, session, tmp_path: Path) -> None:
    data = payload(120_000, seed=4)
    bad = server.add("primary/m.onnx", data, mode="fail")
    missing = f"{server.base}/nowhere/m.onnx"
    good = server.add("mirror/m.onnx", data)
    e = entry(urls=(bad, missing, good), size=len(data), sha256=sha(data))
    log = Logs()

    fetch(e, tmp_path, session, log)

    assert (tmp_path / "model.onnx").read_bytes() == data
    assert [h.path for h in server.hits] == ["primary/m.onnx", "nowhere/m.onnx", "mirror/m.onnx"]
    assert any("trying the next mirror" in m for m in log)


def test_every_mirror_failing_raises(server: FileServer, session, tmp_path: Path) -> None:
    url = server.add("m.onnx", b"x", mode="fail")
    with pytest.raises(D.DownloadError, match="500"):
        fetch(entry(urls=(url,)), tmp_path, session)
    assert not (tmp_path / "model.onnx").exists()


def test_sha_mismatch_deletes_part_and_raises(server: FileServer, session, tmp_path: Path) -> None:
    data = payload(90_000, seed=5)
    url = server.add("m.onnx", data)
    e = entry(urls=(url,), sha256=sha(b"something else"))

    with pytest.raises(D.ChecksumError, match="sha256 mismatch"):
        fetch(e, tmp_path, session)
    assert not (tmp_path / "model.onnx").exists()
    assert not (tmp_path / "model.onnx.part").exists()


def test_sha_mismatch_on_one_mirror_falls_back(server: FileServer, session, tmp_path: Path) -> None:
    data = payload(90_000, seed=6)
    bad = server.add("evil/m.onnx", payload(90_000, seed=7))
    good = server.add("good/m.onnx", data)
    fetch(entry(urls=(bad, good), sha256=sha(data)), tmp_path, session)
    assert (tmp_path / "model.onnx").read_bytes() == data


def test_size_mismatch_is_refused(server: FileServer, session, tmp_path: Path) -> None:
    url = server.add("m.onnx", payload(1000))
    with pytest.raises(D.ChecksumError, match="1000 bytes"):
        fetch(entry(urls=(url,), size=999), tmp_path, session)
    assert not (tmp_path / "model.onnx").exists()


def test_trust_on_first_use_records_hash_and_detects_tampering(server: FileServer, session, tmp_path: Path) -> None:
    data = payload(150_000, seed=8)
    url = server.add("m.onnx", data)
    e = entry(urls=(url,))  # no sha256 in the manifest
    log = Logs()

    path = fetch(e, tmp_path, session, log)

    assert any("trusted on first use" in m for m in log)
    record = json.loads((tmp_path / D.TOFU_FILE).read_text())
    assert record == {"model.onnx": sha(data)}
    result = D.verify(e, tmp_path)
    assert result.ok and result.files[0].hash_source == "tofu"

    tampered = bytearray(data)
    tampered[1234] ^= 0xFF
    path.write_bytes(bytes(tampered))
    result = D.verify(e, tmp_path)
    assert result.status is D.Status.SHA_MISMATCH
    assert "tofu" in result.detail

    # A new download is checked against the recorded hash, and repairs the file.
    fetch(e, tmp_path, session)
    assert path.read_bytes() == data and D.verify(e, tmp_path).ok

    # Upstream changed: the recorded hash no longer matches, so the download is refused.
    path.unlink()
    server.files["m.onnx"] = payload(150_000, seed=9)
    with pytest.raises(D.ChecksumError):
        fetch(e, tmp_path, session)
    assert not path.exists()


def test_crc32_hash_file_is_checked_without_sha(server: FileServer, session, tmp_path: Path) -> None:
    data = payload(64_000, seed=10)
    url = server.add("m.onnx", data)
    good = server.add("m.hash", f"{zlib.crc32(data):08x}".encode())
    bad = server.add("bad.hash", b"00000000")

    with pytest.raises(D.ChecksumError, match="CRC32"):
        fetch(entry(urls=(url,), crc32_url=bad), tmp_path, session)
    assert not (tmp_path / "model.onnx").exists()

    fetch(entry(urls=(url,), crc32_url=good), tmp_path, session)
    assert (tmp_path / "model.onnx").read_bytes() == data


# ---------------------------------------------------------------------------------------------------------
# archives
# ---------------------------------------------------------------------------------------------------------


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def pack_entry(url: str, archive: bytes, **kw: object) -> M.WeightFile:
    return entry(
        name="pack",
        filename="pack.zip",
        urls=(url,),
        sha256=sha(archive),
        unpack="pack",
        provides=("pack/det.onnx", "pack/sub/rec.onnx"),
        **kw,
    )


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested-folder"])
def test_zip_is_unpacked_and_members_verified(server: FileServer, session, tmp_path: Path, nested: bool) -> None:
    det, rec = payload(5000, seed=11), payload(7000, seed=12)
    prefix = "pack/" if nested else ""
    archive = make_zip({f"{prefix}det.onnx": det, f"{prefix}sub/rec.onnx": rec})
    url = server.add("pack.zip", archive)
    e = pack_entry(url, archive, provides_sha256=(("pack/det.onnx", sha(det)),))

    path = fetch(e, tmp_path, session)

    assert path == tmp_path / "pack"
    assert (path / "det.onnx").read_bytes() == det and (path / "sub" / "rec.onnx").read_bytes() == rec
    assert not (tmp_path / "pack.zip").exists() and not (tmp_path / "pack.zip.part").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pack")] == []
    # The member without a manifest hash was trusted on first use.
    assert json.loads((tmp_path / D.TOFU_FILE).read_text()) == {"pack/sub/rec.onnx": sha(rec)}
    result = D.verify(e, tmp_path)
    assert result.ok, result.detail

    (path / "det.onnx").write_bytes(payload(5000, seed=13))
    assert D.verify(e, tmp_path).status is D.Status.SHA_MISMATCH
    (path / "det.onnx").unlink()
    assert D.verify(e, tmp_path).status is D.Status.INCOMPLETE

    # Downloading again replaces the damaged folder as a whole.
    fetch(e, tmp_path, session)
    assert D.verify(e, tmp_path).ok


@pytest.mark.parametrize("evil", ["../evil.onnx", "/abs/evil.onnx", "sub/../../evil.onnx"])
def test_zip_slip_member_is_refused(server: FileServer, session, tmp_path: Path, evil: str) -> None:
    weights_dir = tmp_path / "weights"
    archive = make_zip({"det.onnx": b"d", "sub/rec.onnx": b"r", evil: b"owned"})
    url = server.add("pack.zip", archive)

    with pytest.raises(D.UnsafeArchiveError, match="escape"):
        fetch(pack_entry(url, archive), weights_dir, session)

    assert not (tmp_path / "evil.onnx").exists()
    assert not (weights_dir / "pack").exists()
    assert sorted(p.name for p in weights_dir.iterdir()) == []
    assert not list(tmp_path.rglob("evil.onnx"))


def test_zip_lacking_a_provided_file_installs_nothing(server: FileServer, session, tmp_path: Path) -> None:
    archive = make_zip({"det.onnx": b"d"})
    url = server.add("pack.zip", archive)
    with pytest.raises(D.DownloadError, match="lacks sub/rec.onnx"):
        fetch(pack_entry(url, archive), tmp_path, session)
    assert not (tmp_path / "pack").exists()


# ---------------------------------------------------------------------------------------------------------
# manifest
# ---------------------------------------------------------------------------------------------------------


def test_real_manifest_schema() -> None:
    text = M.DEFAULT_MANIFEST.read_text()
    m = M.load_manifest()
    assert len(m) >= 10
    names = re.findall(r"^\[weights\.(\"[^\"]+\"|[A-Za-z0-9_]+)\]$", text, flags=re.M)
    assert len(names) == len(set(names)) == len(m), "keys must be unique"
    filenames = [e.filename for e in m]
    assert len(filenames) == len(set(filenames))
    for e in m:
        assert e.urls and all(u.startswith("https://") for u in e.urls), e.name
        assert e.license.strip(), e.name
        assert e.jobs and set(e.jobs) <= set(M.JOBS), e.name
        assert e.backend == "neural"
        assert e.description.strip(), e.name
        assert e.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", e.sha256), e.name
        for rel in (e.filename, *e.provides):
            p = PurePosixPath(rel)
            assert not p.is_absolute() and ".." not in p.parts, rel
        for rel in e.provides:
            assert rel.startswith(f"{e.unpack}/"), rel
        for _, h in e.provides_sha256:
            assert re.fullmatch(r"[0-9a-f]{64}", h)
        assert set(e.required_for) <= set(e.jobs)
    # Facts the rest of the project relies on.
    assert m.get("inswapper_128").sha256 == "e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af"
    assert m.get("inswapper_128").size == 554_253_681
    buffalo = m.get("buffalo_l")
    assert buffalo.unpack == "buffalo_l" and "buffalo_l/genderage.onnx" in buffalo.provides
    assert buffalo.expected_sha256("buffalo_l/det_10g.onnx") == (
        "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91"
    )
    assert buffalo.expected_sha256("buffalo_l/w600k_r50.onnx") == (
        "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43"
    )
    for job in M.JOBS:
        assert m.required_for([job]), f"{job} has no required weight"


def test_manifest_lookups(tmp_path: Path) -> None:
    m = M.load_manifest()
    assert m.entry_for_path("buffalo_l/det_10g.onnx") is m.get("buffalo_l")
    assert m.entry_for_path("inswapper_128.onnx") is m.get("inswapper_128")
    assert m.entry_for_path("nothing.onnx") is None
    assert [e.name for e in m.missing(tmp_path, ["faceswap"])] == ["buffalo_l", "inswapper_128"]
    assert M.download_command(m.missing(tmp_path, ["faceswap"])) == (
        "python -m app weights download buffalo_l inswapper_128"
    )
    (tmp_path / "inswapper_128.onnx").write_bytes(b"x")
    assert [e.name for e in m.missing(tmp_path, ["faceswap"])] == ["buffalo_l"]
    # gfpgan is required for enhance only, optional for faceswap.
    assert m.get("gfpgan_1.4") in m.for_jobs(["faceswap"])
    assert m.get("gfpgan_1.4") not in m.required_for(["faceswap"])
    assert m.get("gfpgan_1.4") in m.required_for(["enhance"])
    assert [e.name for e in m.resolve(["faceswap", "inswapper_128"])] == ["buffalo_l", "inswapper_128"]
    with pytest.raises(KeyError, match="nope"):
        m.resolve(["nope"])


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('filename = "a"\nurls = ["http://x"]\nlicense = "l"\njobs = ["dance"]', "unknown job"),
        ('filename = "a"\nurls = ["http://x"]\nlicense = "l"\njobs = ["analyze"]\nsha256 = "abc"', "64 hex"),
        ('filename = "../a"\nurls = ["http://x"]\nlicense = "l"\njobs = ["analyze"]', "relative path"),
        ('filename = "a"\nurls = []\nlicense = "l"\njobs = ["analyze"]', "empty"),
        ('filename = "a"\nurls = ["http://x"]\njobs = ["analyze"]', "license"),
        (
            'filename = "a.zip"\nurls = ["http://x"]\nlicense = "l"\njobs = ["analyze"]\nunpack = "p"\n'
            'provides = ["q/x.onnx"]',
            "not inside",
        ),
    ],
)
def test_bad_manifest_is_rejected(tmp_path: Path, body: str, error: str) -> None:
    p = tmp_path / "manifest.toml"
    p.write_text(f"[weights.thing]\n{body}\n")
    with pytest.raises(M.ManifestError, match=error):
        M.load_manifest(p)
