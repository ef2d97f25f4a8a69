"""Download and verify weight files of the manifest.

Downloads are resumable, try the mirrors in order, check size and sha256 (or the published CRC32), rename into
place atomically and unpack zip archives atomically. Files without a published sha256 are trusted on first use:
the hash of the first download is recorded in ``<weights_dir>/.tofu-sha256.json`` and later checks use it.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import requests

from app.weights.manifest import WeightFile, WeightsError

TOFU_FILE = ".tofu-sha256.json"
CHUNK = 1 << 20  # file reads (hashing, unpacking)
NET_CHUNK = 1 << 16  # network reads: small, so little is lost when a connection drops mid-chunk
TIMEOUT = (15.0, 60.0)  # connect, read (seconds between bytes)
USER_AGENT = "face-studio-weights/1"


class DownloadError(WeightsError):
    """No URL of an entry produced a good file."""


class ChecksumError(DownloadError):
    """A downloaded file's size, sha256 or CRC32 is not the expected one."""


class UnsafeArchiveError(WeightsError):
    """An archive holds a member that would land outside its folder (zip-slip) or is a link."""


# ---------------------------------------------------------------------------------------------------------
# hashing and the trust-on-first-use record
# ---------------------------------------------------------------------------------------------------------
def file_digests(path: Path) -> tuple[str, int]:
    """sha256 (hex) and CRC32 of a file, read in chunks."""
    sha = hashlib.sha256()
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            crc = zlib.crc32(chunk, crc)
    return sha.hexdigest(), crc


def sha256_file(path: Path) -> str:
    return file_digests(path)[0]


def load_tofu(weights_dir: Path) -> dict[str, str]:
    """Hashes recorded on first download, keyed by path relative to the weights dir."""
    p = Path(weights_dir) / TOFU_FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{p} is unreadable ({exc}); delete it to re-trust the current files") from exc
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _record_tofu(weights_dir: Path, updates: dict[str, str]) -> None:
    if not updates:
        return
    weights_dir = Path(weights_dir)
    data = load_tofu(weights_dir)
    data.update(updates)
    fd, tmp = tempfile.mkstemp(prefix=".tofu-", suffix=".tmp", dir=weights_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(dict(sorted(data.items())), fh, indent=2)
        fh.write("\n")
    os.replace(tmp, weights_dir / TOFU_FILE)


# ---------------------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------------------
class Status(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    SIZE_MISMATCH = "size mismatch"
    SHA_MISMATCH = "sha mismatch"
    INCOMPLETE = "incomplete"  # an unpacked archive with some of its files gone


_SEVERITY = {Status.OK: 0, Status.MISSING: 1, Status.INCOMPLETE: 2, Status.SIZE_MISMATCH: 3, Status.SHA_MISMATCH: 4}


@dataclass
class FileCheck:
    relpath: str
    status: Status
    detail: str = ""
    hash_source: str = "none"  # manifest | tofu | none (nothing to compare with: size only)


@dataclass
class VerifyResult:
    entry: WeightFile
    status: Status
    files: list[FileCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def missing(self) -> bool:
        return self.status is Status.MISSING

    @property
    def detail(self) -> str:
        if self.status is Status.MISSING:
            return "not downloaded"
        bad = [f"{f.relpath}: {f.detail or f.status}" for f in self.files if f.status is not Status.OK]
        if bad:
            return "; ".join(bad)
        unchecked = [f.relpath for f in self.files if f.hash_source == "none"]
        return f"no known sha256 for {', '.join(unchecked)}" if unchecked else ""

    def __str__(self) -> str:
        return f"{self.entry.name}: {self.status}" + (f" ({self.detail})" if self.detail else "")


def _check_file(weights_dir: Path, relpath: str, size: int | None, sha: str | None, tofu: dict[str, str]) -> FileCheck:
    p = Path(weights_dir) / relpath
    if not p.is_file():
        return FileCheck(relpath, Status.MISSING, "not downloaded")
    actual_size = p.stat().st_size
    if size is not None and actual_size != size:
        return FileCheck(relpath, Status.SIZE_MISMATCH, f"{actual_size} bytes, expected {size}")
    source = "manifest" if sha else "none"
    if not sha and relpath in tofu:
        sha, source = tofu[relpath], "tofu"
    if sha:
        actual = sha256_file(p)
        if actual != sha:
            return FileCheck(relpath, Status.SHA_MISMATCH, f"sha256 {actual}, expected {sha} ({source})", source)
    return FileCheck(relpath, Status.OK, "", source)


def verify(entry: WeightFile, weights_dir: Path) -> VerifyResult:
    """Check the installed files of ``entry``: presence, size, sha256 (from the manifest, else the
    trust-on-first-use record). An archive is checked through the files it provides."""
    tofu = load_tofu(weights_dir)
    checks = [
        _check_file(weights_dir, rel, entry.expected_size(rel), entry.expected_sha256(rel), tofu)
        for rel in entry.files()
    ]
    status = max((c.status for c in checks), key=_SEVERITY.__getitem__, default=Status.OK)
    if status is Status.MISSING and any(c.status is not Status.MISSING for c in checks):
        status = Status.INCOMPLETE
    return VerifyResult(entry, status, checks)


# ---------------------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------------------
def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _progress_bar(enabled: bool, total: int | None, initial: int, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not enabled,
        file=sys.stderr,
        leave=True,
    )


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-(\d+)?/?(\d+|\*)?", value or "")
    return int(m.group(1)) if m else None


def _fetch(
    url: str, part: Path, session: requests.Session, expected_size: int | None, progress: bool, desc: str
) -> None:
    """Stream ``url`` into ``part``, resuming an existing partial file with a Range request."""
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    if expected_size is not None and have == expected_size:
        return  # a previous run got every byte; the checksum decides
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with session.get(url, headers=headers, stream=True, timeout=TIMEOUT, allow_redirects=True) as resp:
        if resp.status_code == 416 and have:
            # Nothing left to send at this offset: the part is complete or longer than the file. Start over once.
            resp.close()
            part.unlink()
            return _fetch(url, part, session, expected_size, progress, desc)
        resp.raise_for_status()
        if have and resp.status_code == 206 and _content_range_start(resp.headers.get("Content-Range")) == have:
            mode = "ab"
        else:
            # The server ignored Range (200) or answered another range: restart from byte 0.
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = have + remaining if remaining is not None else expected_size
        received = 0
        with _progress_bar(progress, total, have, desc) as bar, open(part, mode) as fh:
            for chunk in resp.iter_content(NET_CHUNK):
                if chunk:
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if remaining is not None and received != remaining:
            raise DownloadError(f"connection closed after {received} of {remaining} bytes")


def _fetch_crc32(url: str, session: requests.Session) -> int | None:
    try:
        resp = session.get(url, headers={"User-Agent": USER_AGENT}, timeout=TIMEOUT)
        resp.raise_for_status()
        text = resp.text.strip().split()[0] if resp.text.strip() else ""
        if re.fullmatch(r"[0-9a-fA-F]{8}", text):
            return int(text, 16)
        _say(f"warning: {url} does not hold a CRC32; skipping that check")
    except requests.RequestException as exc:
        _say(f"warning: could not fetch {url} ({exc}); skipping the CRC32 check")
    return None


def _check_download(entry: WeightFile, part: Path, expected_sha: str | None, expected_crc: int | None) -> str:
    """Size + checksum of a complete ``.part``; returns its sha256. Raises ``ChecksumError``."""
    size = part.stat().st_size
    if entry.size is not None and size != entry.size:
        raise ChecksumError(f"{entry.name}: downloaded {size} bytes, the manifest says {entry.size}")
    sha, crc = file_digests(part)
    if expected_sha and sha != expected_sha:
        raise ChecksumError(
            f"{entry.name}: sha256 mismatch: got {sha}, expected {expected_sha}. "
            "The download is corrupt or the file was changed upstream; it was deleted."
        )
    if expected_crc is not None and crc != expected_crc:
        raise ChecksumError(f"{entry.name}: CRC32 mismatch: got {crc:08x}, the published .hash says {expected_crc:08x}")
    return sha


def _member_target(name: str) -> PurePosixPath | None:
    """The relative path of a zip member, or ``None`` when it would escape the folder."""
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if not norm or p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", norm):
        return None
    return p


def unpack_archive(archive: Path, dest: Path, expect: Iterable[str] = ()) -> Path:
    """Unpack a zip into ``dest`` atomically: extract into a temporary sibling folder, then rename it into
    place. A member with an absolute path, ``..`` or a symlink makes the whole archive refused
    (``UnsafeArchiveError``) and nothing is written. A single top-level folder named like ``dest`` is
    flattened (archives built either way work). ``expect`` lists paths (relative to ``dest``) that must be in
    the archive; when one is absent nothing is installed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            if _member_target(info.filename) is None:
                raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} would escape {dest.name}/")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} is a symbolic link")
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpack-", dir=dest.parent))
        try:
            root = tmp.resolve()
            for info in infos:
                rel = _member_target(info.filename)
                assert rel is not None
                out = (tmp / rel).resolve()
                if root not in out.parents and out != root:
                    raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} would escape {dest.name}/")
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            content = tmp
            children = [c for c in tmp.iterdir() if c.name != "__MACOSX"]
            if len(children) == 1 and children[0].is_dir() and children[0].name == dest.name:
                content = children[0]
            absent = [rel for rel in expect if not (content / rel).is_file()]
            if absent:
                raise DownloadError(f"{archive.name} lacks {', '.join(absent)}")
            old = None
            if dest.exists():
                old = dest.parent / f".{dest.name}.old-{os.getpid()}"
                if old.exists():
                    shutil.rmtree(old)
                os.replace(dest, old)
            os.replace(content, dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def download(
    entry: WeightFile,
    weights_dir: Path,
    progress: bool = True,
    session: requests.Session | None = None,
    log: Callable[[str], None] = _say,
) -> Path:
    """Fetch ``entry`` into ``weights_dir`` and return its installed path (the folder for an archive).

    Skips an entry whose files are present and verify; otherwise streams to ``<file>.part`` (resuming a
    partial one with a Range request), trying the URLs in order, checks size and sha256 (or the published
    CRC32, or records the sha256 on first use), renames into place with ``os.replace`` and unpacks archives.
    """
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / entry.filename
    installed = entry.path(weights_dir)
    tofu = load_tofu(weights_dir)

    current = verify(entry, weights_dir)
    if current.ok:
        log(f"{entry.name}: present and verified ({installed})")
        return installed
    if current.status is not Status.MISSING:
        log(f"{entry.name}: {current.detail}; downloading again")

    expected_sha = entry.sha256 or (None if entry.is_archive else tofu.get(entry.filename))
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    own_session = session is None
    session = session or requests.Session()
    errors: list[str] = []
    try:
        expected_crc = _fetch_crc32(entry.crc32_url, session) if entry.crc32_url and not expected_sha else None
        sha: str | None = None
        bad_checksum = False
        for i, url in enumerate(entry.urls):
            nxt = "; trying the next mirror" if i + 1 < len(entry.urls) else ""
            try:
                _fetch(url, part, session, entry.size, progress, entry.name)
                sha = _check_download(entry, part, expected_sha, expected_crc)
                break
            except ChecksumError as exc:
                part.unlink(missing_ok=True)
                bad_checksum = True
                errors.append(f"{url}: {exc}")
                log(f"{exc}{nxt}")
            except (requests.RequestException, DownloadError, OSError) as exc:
                errors.append(f"{url}: {exc}")
                log(f"{entry.name}: {url} failed ({exc}){nxt}")
        if sha is None:
            kept = f" (partial download kept in {part} for resuming)" if part.exists() else ""
            cls = ChecksumError if bad_checksum else DownloadError
            raise cls(f"{entry.name}: no URL gave a good file{kept}:\n  " + "\n  ".join(errors))
    finally:
        if own_session:
            session.close()

    tofu_updates: dict[str, str] = {}
    if not expected_sha and not entry.is_archive:
        tofu_updates[entry.filename] = sha
        log(
            f"{entry.name}: no published sha256, trusted on first use: {sha} "
            f"(recorded in {weights_dir / TOFU_FILE}; `weights verify` checks against it)"
        )
    os.replace(part, target)

    if entry.is_archive:
        prefix = PurePosixPath(entry.unpack or "")
        expect = [PurePosixPath(rel).relative_to(prefix).as_posix() for rel in entry.provides]
        try:
            unpack_archive(target, installed, expect)
        finally:
            target.unlink(missing_ok=True)
        for rel in entry.provides:
            # An archive checked against a published sha256 vouches for its members; otherwise a member
            # already recorded keeps its record (and the verify below holds the new file against it).
            if entry.expected_sha256(rel) is None and (entry.sha256 or rel not in tofu):
                tofu_updates[rel] = sha256_file(weights_dir / rel)
        _record_tofu(weights_dir, tofu_updates)
        if not entry.sha256:
            log(f"{entry.name}: no published sha256 for the archive, trusted on first use")
        if tofu_updates:
            log(f"{entry.name}: recorded sha256 of {', '.join(tofu_updates)} (trusted on first use)")
        result = verify(entry, weights_dir)
        if not result.ok:
            raise ChecksumError(f"{entry.name}: unpacked files do not verify: {result.detail}")
    else:
        _record_tofu(weights_dir, tofu_updates)
    log(f"{entry.name}: installed {installed}")
    return installed
