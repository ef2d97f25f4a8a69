"""API keys, per-key rate limits and the /metrics access rule, as one ASGI middleware.

Keys come from ``FACEAPI_API_KEYS`` (comma list) and ``FACEAPI_API_KEYS_FILE`` (one per line). Each entry is either
the key itself or ``sha256:<64 hex digits>``, the SHA-256 of the key's UTF-8 bytes (``python -m app keys hash``), so
a keys file never needs to hold a usable secret. No keys configured = no authentication (local use).

A request sends its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The key's id, the first 12 hex
digits of its SHA-256, becomes ``request.state.owner``: the jobs it submits belong to it (never the key itself).

Rate limits (``FACEAPI_RATE_LIMIT`` requests per second, bursts of ``FACEAPI_RATE_LIMIT_BURST``) are one token bucket
per key shared by every worker through a small SQLite file under ``FACEAPI_DATA_DIR``; over the limit → 429 with
``Retry-After``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from app import metrics
from app.config import Settings
from app.errors import error_json
from app.routers.studio import PAGE_PATHS

log = logging.getLogger("app.security")
HASH_PREFIX = "sha256:"
_HASHED = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
OPEN_PATHS = frozenset({"/healthz", "/readyz"}) | PAGE_PATHS  # + the studio page and its assets (no data in them)
METRICS_PATH = "/metrics"
ID_LENGTH = 12


def hash_key(key: str) -> str:
    """The form a keys file stores: ``sha256:<hex>``."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id(digest_hex: str) -> str:
    return digest_hex[:ID_LENGTH]


class KeyConfigError(ValueError):
    """A malformed configured key."""


def parse_entry(entry: str) -> str:
    """One configured key (plain or ``sha256:<hex>``) → its lower-case hex digest."""
    entry = entry.strip()
    m = _HASHED.match(entry)
    if m:
        return m.group(1).lower()
    if entry.lower().startswith(HASH_PREFIX):
        raise KeyConfigError(f"{entry[:12]}…: a hashed key is sha256: followed by 64 hex digits")
    return hashlib.sha256(entry.encode("utf-8")).hexdigest()


def load_keys(keys: list[str], keys_file: Path | None) -> set[str]:
    """The digests of every configured key. A keys file: one key per line (plain or ``sha256:<hex>``), anything
    after the first whitespace is a comment (e.g. who holds the key); blank lines and ``#`` lines are skipped."""
    entries = [k for k in keys if k.strip()]
    if keys_file is not None:
        for line in Path(keys_file).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append(line.split()[0])
    return {parse_entry(e) for e in entries}


def presented_key(scope: Scope) -> tuple[str | None, str]:
    """The key a request sends and the header it came in (``Authorization`` or ``X-API-Key``)."""
    auth = xkey = None
    for k, v in scope.get("headers") or []:
        if k == b"authorization":
            auth = v.decode("latin-1")
        elif k == b"x-api-key":
            xkey = v.decode("latin-1")
    if xkey is not None and xkey.strip():
        return xkey.strip(), "X-API-Key"
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip(), "Authorization"
        return None, "Authorization"
    return None, "Authorization"


# ---- rate limits ---------------------------------------------------------------------------------------------------
@dataclass
class Decision:
    allowed: bool
    retry_after: int = 0


class RateLimiter:
    """A token bucket per key (``rate`` tokens a second, at most ``burst``), in SQLite so that every worker draws
    from the same bucket. One short ``BEGIN IMMEDIATE`` transaction per request."""

    def __init__(self, path: Path, rate: float, burst: int) -> None:
        self.path = Path(path)
        self.rate = rate
        self.burst = burst
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL, "
                         "updated REAL NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = OFF")  # losing a bucket's last tokens in a crash does not matter
            self._local.conn = conn
        return conn

    def take(self, key: str, now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT tokens, updated FROM buckets WHERE key = ?", (key,)).fetchone()
            tokens = float(self.burst) if row is None else min(
                float(self.burst), row[0] + max(0.0, now - row[1]) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            conn.execute("INSERT OR REPLACE INTO buckets (key, tokens, updated) VALUES (?, ?, ?)", (key, tokens, now))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if allowed:
            return Decision(True)
        return Decision(False, max(1, math.ceil((1.0 - tokens) / self.rate)))


# ---- middleware ----------------------------------------------------------------------------------------------------
class AccessMiddleware:
    """401 without a valid key (except /healthz, /readyz, CORS preflights and, per ``FACEAPI_METRICS_ACCESS``,
    /metrics), 429 over a key's rate; sets ``request.state.owner`` / ``api_key_id`` to the key's id."""

    def __init__(self, app: ASGIApp, keys: set[str], metrics_access: str = "api_key",
                 metrics_key: str | None = None, limiter: RateLimiter | None = None) -> None:
        self.app = app
        self.keys = {bytes.fromhex(k) for k in keys}
        self.metrics_access = metrics_access
        self.metrics_key = bytes.fromhex(parse_entry(metrics_key)) if metrics_key else None
        self.limiter = limiter

    def _match(self, key: str, allowed: set[bytes]) -> bytes | None:
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        for candidate in allowed:  # compare every entry in constant time
            if hmac.compare_digest(digest, candidate):
                return digest
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in OPEN_PATHS or (scope.get("method") == "OPTIONS" and _is_preflight(scope)):
            await self.app(scope, receive, send)
            return
        if path == METRICS_PATH:
            if self.metrics_access == "open" or (self.metrics_access == "api_key" and not self.keys):
                await self.app(scope, receive, send)
                return
            allowed = {self.metrics_key} if self.metrics_access == "metrics_key" and self.metrics_key else self.keys
            key, header = presented_key(scope)
            if key is None or self._match(key, allowed) is None:
                await self._refuse(scope, receive, send, key, header)
                return
            await self.app(scope, receive, send)  # scrapes are not rate limited
            return
        if not self.keys:
            await self.app(scope, receive, send)
            return
        key, header = presented_key(scope)
        digest = None if key is None else self._match(key, self.keys)
        if digest is None:
            await self._refuse(scope, receive, send, key, header)
            return
        kid = key_id(digest.hex())
        state = scope.setdefault("state", {})
        state["owner"] = kid
        state["api_key_id"] = kid
        if self.limiter is not None:
            decision = await anyio.to_thread.run_sync(self.limiter.take, kid)
            if not decision.allowed:
                metrics.RATE_LIMITED.labels(kid).inc()
                resp = error_json(
                    429, "rate_limited",
                    f"API key {kid} is over its rate limit of {self.limiter.rate:g} requests/s (bursts of "
                    f"{self.limiter.burst}); retry in {decision.retry_after} s",
                    None, {"Retry-After": str(decision.retry_after)})
                await resp(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, key: str | None, header: str) -> None:
        reason = "missing" if key is None else "invalid"
        metrics.AUTH_REFUSED.labels(reason).inc()
        if key is None:
            message = "an API key is required: send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        else:
            message = f"the API key sent in {header} is not valid"
        resp = error_json(401, "unauthorized", message, header, {"WWW-Authenticate": 'Bearer realm="faceapi"'})
        await resp(scope, receive, send)


def _is_preflight(scope: Scope) -> bool:
    names = {k for k, _ in scope.get("headers") or []}
    return b"origin" in names and b"access-control-request-method" in names


def access_middleware_options(settings: Settings) -> dict:
    """AccessMiddleware's arguments from the settings (keys read once, at app creation)."""
    keys = load_keys(list(settings.api_keys), settings.api_keys_file)
    limiter = None
    if keys and settings.rate_limit > 0:
        limiter = RateLimiter(Path(settings.data_dir) / "ratelimit.sqlite3", settings.rate_limit,
                              settings.rate_limit_burst)
    if keys:
        log.info("API keys required", extra={"keys": len(keys), "rate_limit": settings.rate_limit or None})
    return {"keys": keys, "metrics_access": settings.metrics_access, "metrics_key": settings.metrics_key,
            "limiter": limiter}
