"""The weights manifest: ``weights/manifest.toml`` read, validated and queried.

It lists every file the neural backend can use: where to fetch it, its size, hashes and licence, and which jobs
use it. ``app.weights.download`` fetches and verifies the files; the CLI (``python -m app weights …``) uses both.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from models.registry import JOB_NAMES as JOBS
from models.registry import fetch_command, jobs_of_weights

DEFAULT_MANIFEST = Path(__file__).resolve().parents[2] / "weights" / "manifest.toml"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class WeightsError(Exception):
    """Base class of every error this module raises."""


class ManifestError(WeightsError):
    """The manifest is malformed."""


# ---------------------------------------------------------------------------------------------------------
# manifest
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightFile:
    """One downloadable file of the manifest (fields mirror ``weights/manifest.toml``)."""

    name: str
    filename: str
    urls: tuple[str, ...]
    license: str
    jobs: tuple[str, ...]
    required: bool = False
    required_for: tuple[str, ...] = ()
    backend: str = "neural"
    description: str = ""
    size: int | None = None
    approx_size: int | None = None
    sha256: str | None = None
    crc32_url: str | None = None
    note: str | None = None
    unpack: str | None = None
    provides: tuple[str, ...] = ()
    provides_size: tuple[tuple[str, int], ...] = ()
    provides_sha256: tuple[tuple[str, str], ...] = ()

    @property
    def is_archive(self) -> bool:
        return self.unpack is not None

    def path(self, weights_dir: Path) -> Path:
        """Where the entry lives once installed: the unpacked folder for an archive, else the file."""
        return Path(weights_dir) / (self.unpack if self.unpack else self.filename)

    def files(self) -> tuple[str, ...]:
        """Relative paths that exist on disk once the entry is installed."""
        return self.provides if self.is_archive else (self.filename,)

    def is_required_for(self, job: str) -> bool:
        return self.required and job in self.required_for

    def expected_sha256(self, relpath: str) -> str | None:
        if relpath == self.filename and not self.is_archive:
            return self.sha256
        return dict(self.provides_sha256).get(relpath)

    def expected_size(self, relpath: str) -> int | None:
        if relpath == self.filename and not self.is_archive:
            return self.size
        return dict(self.provides_size).get(relpath)

    def is_present(self, weights_dir: Path) -> bool:
        return all((Path(weights_dir) / rel).is_file() for rel in self.files())

    def display_size(self) -> str:
        if self.size is not None:
            return _human(self.size)
        if self.approx_size is not None:
            return "~" + _human(self.approx_size)
        return "?"


@dataclass
class Manifest:
    entries: dict[str, WeightFile]
    path: Path | None = None

    def __iter__(self) -> Iterator[WeightFile]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def get(self, name: str) -> WeightFile:
        """The entry called ``name``; ``KeyError`` naming the valid names when there is none."""
        try:
            return self.entries[name]
        except KeyError:
            raise KeyError(f"unknown weight {name!r}; valid names: {', '.join(self.entries)}") from None

    def for_jobs(self, jobs: Iterable[str]) -> list[WeightFile]:
        """Every entry (required or optional) used by any of ``jobs``, in manifest order."""
        wanted = set(jobs)
        return [e for e in self if wanted.intersection(e.jobs)]

    def required_for(self, jobs: Iterable[str]) -> list[WeightFile]:
        """Entries without which one of ``jobs`` cannot run its neural path."""
        wanted = set(jobs)
        return [e for e in self if e.required and wanted.intersection(e.required_for)]

    def entry_for_path(self, relpath: str | Path) -> WeightFile | None:
        """The entry whose ``filename`` or ``provides`` is ``relpath`` (relative to the weights dir)."""
        rel = PurePosixPath(Path(relpath).as_posix()).as_posix()
        for e in self:
            if rel == e.filename or rel in e.provides:
                return e
        return None

    def missing(self, weights_dir: Path, jobs: Iterable[str]) -> list[WeightFile]:
        """Required entries of ``jobs`` whose files are absent from ``weights_dir``."""
        return [e for e in self.required_for(jobs) if not e.is_present(weights_dir)]

    def resolve(self, names: Iterable[str], include_optional: bool = False) -> list[WeightFile]:
        """Expand names typed by a user: a job name gives its required files (all of its files with
        ``include_optional``), any other name must be an entry. Raises ``KeyError`` on an unknown name."""
        out: list[WeightFile] = []
        unknown: list[str] = []
        for name in names:
            if name in self.entries:
                found = [self.entries[name]]
            elif name in JOBS:
                found = self.for_jobs([name]) if include_optional else self.required_for([name])
            else:
                unknown.append(name)
                continue
            out.extend(e for e in found if e not in out)
        if unknown:
            raise KeyError(
                f"unknown name(s): {', '.join(unknown)}. Valid jobs: {', '.join(JOBS)}; "
                f"valid weights: {', '.join(self.entries)}"
            )
        return out


def _str_tuple(raw: object, what: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ManifestError(f"{what} must be a list of strings")
    return tuple(raw)


def _safe_relpath(rel: str, what: str) -> str:
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel or ":" in rel:
        raise ManifestError(f"{what}: {rel!r} is not a plain relative path")
    return p.as_posix()


def _parse_entry(name: str, raw: dict) -> WeightFile:
    where = f"weights.{name}"
    for key in ("filename", "urls", "license"):
        if key not in raw:
            raise ManifestError(f"{where}: missing {key!r}")
    urls = _str_tuple(raw["urls"], f"{where}.urls")
    if not urls:
        raise ManifestError(f"{where}.urls is empty")
    # Entries of models/registry.py take their jobs from it; only a file it does not know (a custom manifest)
    # declares `jobs`, `required` and `required_for` itself.
    using, needing = jobs_of_weights(name)
    if using:
        if {"jobs", "required", "required_for"} & set(raw):
            raise ManifestError(f"{where}: its jobs come from models/registry.py; drop jobs/required/required_for")
        jobs, required, required_for = using, bool(needing), needing
    else:
        if "jobs" not in raw:
            raise ManifestError(f"{where}: missing 'jobs' (the file is not in models/registry.py)")
        jobs = _str_tuple(raw["jobs"], f"{where}.jobs")
        required = bool(raw.get("required", False))
        required_for = _str_tuple(raw["required_for"], f"{where}.required_for") if "required_for" in raw else jobs
    bad = [j for j in jobs if j not in JOBS]
    if bad:
        raise ManifestError(f"{where}.jobs: unknown job(s) {bad}; known: {list(JOBS)}")
    if not set(required_for) <= set(jobs):
        raise ManifestError(f"{where}.required_for must be a subset of jobs")
    sha = raw.get("sha256")
    if sha is not None:
        sha = str(sha).lower()
        if not _SHA256_RE.match(sha):
            raise ManifestError(f"{where}.sha256 is not 64 hex characters")
    unpack = raw.get("unpack")
    provides = tuple(_safe_relpath(p, f"{where}.provides") for p in _str_tuple(raw.get("provides", []), where))
    if unpack is not None:
        unpack = _safe_relpath(str(unpack), f"{where}.unpack")
        if not provides:
            raise ManifestError(f"{where}: an archive needs `provides`")
        for p in provides:
            if PurePosixPath(p).parts[0] != PurePosixPath(unpack).parts[0] or not p.startswith(unpack + "/"):
                raise ManifestError(f"{where}.provides: {p!r} is not inside {unpack!r}")
    elif provides:
        raise ManifestError(f"{where}: `provides` only makes sense with `unpack`")
    psize = raw.get("provides_size", {})
    psha = raw.get("provides_sha256", {})
    for key, table in (("provides_size", psize), ("provides_sha256", psha)):
        if not isinstance(table, dict) or not set(table) <= set(provides):
            raise ManifestError(f"{where}.{key} must map paths listed in `provides`")
    for rel, h in psha.items():
        if not isinstance(h, str) or not _SHA256_RE.match(h.lower()):
            raise ManifestError(f"{where}.provides_sha256[{rel!r}] is not 64 hex characters")
    for key in ("size", "approx_size"):
        if key in raw and (not isinstance(raw[key], int) or raw[key] <= 0):
            raise ManifestError(f"{where}.{key} must be a positive integer")
    return WeightFile(
        name=name,
        filename=_safe_relpath(str(raw["filename"]), f"{where}.filename"),
        urls=urls,
        license=str(raw["license"]),
        jobs=jobs,
        required=required,
        required_for=required_for if required else (),
        backend=str(raw.get("backend", "neural")),
        description=str(raw.get("description", "")),
        size=raw.get("size"),
        approx_size=raw.get("approx_size"),
        sha256=sha,
        crc32_url=raw.get("crc32_url"),
        note=raw.get("note"),
        unpack=unpack,
        provides=provides,
        provides_size=tuple((k, int(v)) for k, v in psize.items()),
        provides_sha256=tuple((k, v.lower()) for k, v in psha.items()),
    )


def load_manifest(path: Path | None = None) -> Manifest:
    """Read and validate a manifest (default: the repository's ``weights/manifest.toml``)."""
    path = Path(path) if path is not None else DEFAULT_MANIFEST
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    tables = data.get("weights")
    if not isinstance(tables, dict):
        raise ManifestError(f"{path}: no [weights.<name>] tables")
    entries: dict[str, WeightFile] = {}
    seen: dict[str, str] = {}
    for name, raw in tables.items():
        if name in JOBS:
            raise ManifestError(f"weights.{name}: an entry may not be named like a job")
        if not isinstance(raw, dict):
            raise ManifestError(f"weights.{name} must be a table")
        entry = _parse_entry(name, raw)
        for rel in (entry.filename, *entry.provides):
            if rel in seen:
                raise ManifestError(f"{rel!r} is claimed by both {seen[rel]!r} and {name!r}")
            seen[rel] = name
        entries[name] = entry
    return Manifest(entries=entries, path=path)


def download_command(entries: Iterable[WeightFile]) -> str:
    """The CLI line that fetches ``entries``: ``python -m app weights download inswapper_128 buffalo_l``."""
    return fetch_command(e.name for e in entries)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
