"""The storage bucket ``/swap_url`` reads its inputs from and writes its results to.

A :class:`Bucket` is a root directory behind fsspec: a local directory (a plain path or ``file://…``),
``gs://bucket/prefix`` (needs ``pip install gcsfs``), ``s3://bucket/prefix`` (needs ``pip install s3fs``) or
``memory://prefix`` (fsspec's in-process filesystem, for tests). Every name a client sends goes through
:func:`safe_name` first, and on local buckets the resolved real path must stay inside the real root, so a
name (or a symlink inside the bucket) can never reach a file outside it.

Results are written under ``results_prefix`` with a fresh random suffix and an exclusive create, so a
result never replaces an input or another result. :meth:`Bucket.url_for` returns plain ``file://``,
``gs://`` or ``s3://`` URLs; signed (time-limited, public) URLs are out of scope.

All methods are synchronous and may block on I/O: run them in a worker thread from async code. The
exceptions are plain Python so this module does not depend on the web layer.
"""

from __future__ import annotations

import errno
import importlib
import os
import re
import stat
import threading
import unicodedata
import uuid
from pathlib import Path
from typing import Any

MAX_NAME_BYTES = 1024
MAX_COMPONENT_BYTES = 255
# the longest stem (in UTF-8 bytes) kept in a result's file name, so suffix + extension still fit in 255 bytes
MAX_RESULT_STEM_BYTES = 160
# how many fresh suffixes write_result tries when a name is already taken
NAME_ATTEMPTS = 5

REMOTE_PROTOCOLS = {"gs": "gcsfs", "s3": "s3fs", "memory": None}

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_EXT = re.compile(r"^[A-Za-z0-9]{1,10}$")


class StorageError(Exception):
    """Base class of every storage failure."""


class StorageNotFound(StorageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name} was not found in the bucket")
        self.name = name


class StorageTooLarge(StorageError):
    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(f"{name} is {size} bytes, over the limit of {limit} bytes")
        self.name = name
        self.size = size
        self.limit = limit


class UnsafePath(StorageError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class StorageUnavailable(StorageError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _unique_suffix() -> str:
    """12 random hex digits for a result's name (a function so tests can force collisions)."""
    return uuid.uuid4().hex[:12]


def safe_name(name: str, field: str) -> str:
    """Validate a client-supplied file name relative to the bucket and return it normalised.

    Accepted: ``a/b/c.jpg``-style relative names; ``./`` components and repeated slashes are dropped.
    Rejected with :class:`UnsafePath` (naming ``field``): empty names, ``..`` components, absolute paths,
    URL schemes and Windows drive letters (anything starting ``letters:``), ``://`` anywhere, backslashes,
    NUL and other control characters, a leading ``~``, names over 1024 UTF-8 bytes or with a component over
    255 (what file systems allow), and names that end
    in ``/`` (or ``/.``), i.e. name a directory.
    """
    if not isinstance(name, str) or name == "":
        raise UnsafePath(field, "the name is empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise UnsafePath(field, "the name is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise UnsafePath(field, f"the name is longer than {MAX_NAME_BYTES} bytes")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise UnsafePath(field, "the name contains control characters")
    if "\\" in name:
        raise UnsafePath(field, "the name contains a backslash")
    if name.startswith("/"):
        raise UnsafePath(field, "absolute paths are not allowed")
    if name.startswith("~"):
        raise UnsafePath(field, "names may not start with ~")
    if _SCHEME.match(name) or "://" in name:
        raise UnsafePath(field, "URLs and drive letters are not allowed; give a name inside the bucket")
    parts = name.split("/")
    if parts[-1] in ("", "."):
        raise UnsafePath(field, "the name ends with a slash (names a directory, not a file)")
    if ".." in parts:
        raise UnsafePath(field, ".. components are not allowed")
    kept = [p for p in parts if p not in ("", ".")]
    if not kept:
        raise UnsafePath(field, "the name is empty")
    if any(len(p.encode("utf-8")) > MAX_COMPONENT_BYTES for p in kept):
        raise UnsafePath(field, f"a path component is longer than {MAX_COMPONENT_BYTES} bytes")
    return "/".join(kept)


def _split_url(url: str) -> tuple[str, str]:
    """(protocol, root) for a bucket URL; protocol "file" for local directories."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", url)
    if not m:
        return "file", url
    protocol, rest = m.group(1).lower(), m.group(2)
    if protocol == "file":
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        return "file", rest
    return protocol, rest


class Bucket:
    """Files under one root, addressed by names relative to it.

    ``url``: a local directory (path or ``file://``), ``gs://bucket/prefix``, ``s3://bucket/prefix`` or
    ``memory://prefix``. ``results_prefix``: the folder results are written under (``""`` puts them next
    to their inputs; exclusive creation still keeps inputs from being overwritten). ``storage_options``
    are passed to the fsspec filesystem of remote buckets (credentials, endpoint_url, …).

    Remote filesystem classes are imported here, so a missing optional package fails at start-up with
    :class:`StorageUnavailable`; the filesystem itself is created on first use (it may look for
    credentials).
    """

    def __init__(self, url: str, results_prefix: str = "results/", storage_options: dict[str, Any] | None = None):
        if not url or not url.strip():
            raise StorageUnavailable("no storage URL is configured")
        self.url = url
        self.protocol, root = _split_url(url.strip())
        self._storage_options = dict(storage_options or {})
        self._fs: Any = None
        self._fs_lock = threading.Lock()

        stripped = results_prefix.strip("/")
        self.results_prefix = safe_name(stripped, "results_prefix") + "/" if stripped else ""

        if self.protocol == "file":
            if not root:
                raise StorageUnavailable(f"storage URL {url!r} names no directory")
            self.root = os.path.abspath(root)
            self._fs_class: Any = None
        elif self.protocol in REMOTE_PROTOCOLS:
            self.root = root.strip("/")
            if self.protocol != "memory" and not self.root.split("/")[0]:
                raise StorageUnavailable(f"storage URL {url!r} names no bucket")
            self._fs_class = self._import_fs_class()
        else:
            supported = "a local directory, file://, " + ", ".join(f"{p}://" for p in REMOTE_PROTOCOLS)
            raise StorageUnavailable(f"unsupported storage URL {url!r}: use {supported}")

    def __repr__(self) -> str:
        return f"Bucket({self.url!r}, results_prefix={self.results_prefix!r})"

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    # ------------------------------------------------------------------ public API

    def read(self, name: str, max_bytes: int, field: str = "filename") -> bytes:
        """The bytes of ``name``; the size is checked before any byte is read.

        Raises :class:`UnsafePath`, :class:`StorageNotFound` (missing, or not a regular file),
        :class:`StorageTooLarge` (over ``max_bytes``) or :class:`StorageUnavailable`.
        """
        rel = safe_name(name, field)
        if self.is_local:
            return self._read_local(rel, max_bytes, field)
        return self._read_remote(rel, max_bytes)

    def write_result(self, input_name: str, data: bytes, ext: str, field: str = "filename") -> str:
        """Store ``data`` as a new result for ``input_name`` and return the result's name in the bucket.

        The name is ``<results_prefix><dir of input>/<stem>-<12 hex>.<ext>``. Nothing is ever overwritten:
        local files are written to a temporary file and hard-linked into place (the link fails if the name
        exists), remote ones use fsspec's exclusive create. A taken name is retried with a fresh suffix a
        few times, then :class:`StorageError` is raised.
        """
        rel = safe_name(input_name, field)
        if self.is_local:
            self._local_path(rel, field)  # the input itself must not lead outside either
        clean_ext = ext.lstrip(".")
        if not _EXT.match(clean_ext):
            raise ValueError(f"invalid result extension {ext!r}")
        parent, _, base = rel.rpartition("/")
        stem = Path(base).stem or base
        stem = stem.encode("utf-8")[:MAX_RESULT_STEM_BYTES].decode("utf-8", errors="ignore")
        folder = self.results_prefix + (parent + "/" if parent else "")
        for _ in range(NAME_ATTEMPTS):
            out = f"{folder}{stem}-{_unique_suffix()}.{clean_ext.lower()}"
            out = safe_name(out, field)
            created = self._create_local(out, data, field) if self.is_local else self._create_remote(out, data)
            if created:
                return out
        raise StorageError(f"could not find an unused result name for {rel} after {NAME_ATTEMPTS} attempts")

    def url_for(self, name: str, field: str = "filename") -> str:
        """A URL for ``name``: ``file:///abs/path`` locally, else ``gs://``, ``s3://`` or ``memory://``.

        These are plain locations, not signed or public URLs (out of scope here).
        """
        rel = safe_name(name, field)
        if self.is_local:
            return Path(self._local_path(rel, field)).as_uri()
        return f"{self.protocol}://{self._remote_path(rel).lstrip('/')}"

    def exists(self, name: str, field: str = "filename") -> bool:
        """Whether ``name`` is an existing regular file in the bucket."""
        rel = safe_name(name, field)
        if self.is_local:
            try:
                return stat.S_ISREG(os.stat(self._local_path(rel, field)).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                return False
            except OSError as e:
                raise StorageUnavailable(f"cannot check {rel}: {e.strerror or e}") from e
        try:
            info = self._get_fs().info(self._remote_path(rel))
        except FileNotFoundError:
            return False
        except StorageError:
            raise
        except Exception as e:  # remote backends raise their own error types
            raise StorageUnavailable(f"cannot check {rel}: {type(e).__name__}: {e}") from e
        return info.get("type") == "file"

    # ------------------------------------------------------------------ local

    def _real_root(self) -> str:
        real = os.path.realpath(self.root)
        if not os.path.isdir(real):
            raise StorageUnavailable(f"the storage directory {self.root} does not exist")
        return real

    def _local_path(self, rel: str, field: str) -> str:
        """The real path of ``rel``, after checking that symlinks do not lead outside the real root."""
        root = self._real_root()
        real = os.path.realpath(os.path.join(root, rel))
        if real != root and not real.startswith(root + os.sep):
            raise UnsafePath(field, "the name leads outside the bucket")
        return real

    def _read_local(self, rel: str, max_bytes: int, field: str) -> bytes:
        path = self._local_path(rel, field)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise StorageNotFound(rel) from None
        except OSError as e:
            raise StorageUnavailable(f"cannot read {rel}: {e.strerror or e}") from e
        if not stat.S_ISREG(st.st_mode):
            raise StorageNotFound(rel)
        if st.st_size > max_bytes:
            raise StorageTooLarge(rel, st.st_size, max_bytes)
        # O_NOFOLLOW: the path is already resolved, so a symlink here means it was swapped in since
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise StorageNotFound(rel) from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafePath(field, "the name leads outside the bucket") from None
            raise StorageUnavailable(f"cannot read {rel}: {e.strerror or e}") from e
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise StorageNotFound(rel)
            if st.st_size > max_bytes:
                raise StorageTooLarge(rel, st.st_size, max_bytes)
            data = f.read(max_bytes + 1)  # the file may grow between the checks and the read
        if len(data) > max_bytes:
            raise StorageTooLarge(rel, len(data), max_bytes)
        return data

    def _create_local(self, rel: str, data: bytes, field: str) -> bool:
        """Write ``rel`` atomically and exclusively; False when the name is taken."""
        target = self._local_path(rel, field)
        if os.path.lexists(target):
            return False
        folder, base = os.path.split(target)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise StorageUnavailable(f"cannot create the results folder for {rel}: {e.strerror or e}") from e
        # the folder may have been created through a symlink just now: check again once it exists
        self._local_path(rel, field)
        tmp = os.path.join(folder, f".{base}.{uuid.uuid4().hex}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        made_tmp = False
        try:
            fd = os.open(tmp, flags, 0o644)
            made_tmp = True
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, target)  # atomic, and unlike os.replace it fails when target exists
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                return self._create_local_direct(target, data)  # filesystems without hard links
            return True
        except OSError as e:
            raise StorageUnavailable(f"cannot write {rel}: {e.strerror or e}") from e
        finally:
            if made_tmp:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass

    @staticmethod
    def _create_local_direct(target: str, data: bytes) -> bool:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(target, flags, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(target)  # never leave a partial result behind
            raise
        return True

    # ------------------------------------------------------------------ remote (fsspec)

    def _import_fs_class(self) -> Any:
        package = REMOTE_PROTOCOLS[self.protocol]
        if package is not None:
            try:
                importlib.import_module(package)
            except ImportError as e:
                raise StorageUnavailable(
                    f"{self.protocol}:// storage needs the optional package {package}: pip install {package}"
                ) from e
        import fsspec

        return fsspec.get_filesystem_class(self.protocol)

    def _get_fs(self) -> Any:
        with self._fs_lock:
            if self._fs is None:
                try:
                    self._fs = self._fs_class(**self._storage_options)
                except Exception as e:  # credentials, bad options: anything the backend raises
                    raise StorageUnavailable(f"cannot open {self.protocol}:// storage: {type(e).__name__}: {e}") from e
            return self._fs

    def _remote_path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root else rel

    def _read_remote(self, rel: str, max_bytes: int) -> bytes:
        fs = self._get_fs()
        path = self._remote_path(rel)
        try:
            info = fs.info(path)
            if info.get("type") != "file":
                raise StorageNotFound(rel)
            size = info.get("size")
            if size is not None and size > max_bytes:
                raise StorageTooLarge(rel, int(size), max_bytes)
            with fs.open(path, "rb") as f:
                data = f.read(max_bytes + 1)
        except StorageError:
            raise
        except FileNotFoundError:
            raise StorageNotFound(rel) from None
        except Exception as e:  # remote backends raise their own error types
            raise StorageUnavailable(f"cannot read {rel}: {type(e).__name__}: {e}") from e
        if len(data) > max_bytes:
            raise StorageTooLarge(rel, len(data), max_bytes)
        return data

    def _create_remote(self, rel: str, data: bytes) -> bool:
        """Exclusive create through fsspec (native conditional writes where the backend has them)."""
        fs = self._get_fs()
        try:
            fs.pipe_file(self._remote_path(rel), data, mode="create")
        except FileExistsError:
            return False
        except Exception as e:  # remote backends raise their own error types
            raise StorageUnavailable(f"cannot write {rel}: {type(e).__name__}: {e}") from e
        return True
