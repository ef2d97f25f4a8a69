"""API keys, per-key rate limits, CORS and job ownership over HTTP on a real ``python -m app serve`` with two workers;
the /metrics access modes and the key helper in process."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.__main__ import main as cli
from app.config import Settings
from app.main import create_app
from app.security import hash_key
from testkit.server import Server, wait_for_job

KEY_A, KEY_B, KEY_C, METRICS_KEY = "key-a-0123456789", "key-b-0123456789", "key-c-0123456789", "scrape-me"
ORIGIN, OTHER_ORIGIN = "https://studio.example", "https://evil.example"
BURST = 40


def kid(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Key A plain in FACEAPI_API_KEYS; keys B and C hashed in a keys file; /metrics behind its own key."""
    d = tmp_path_factory.mktemp("auth")
    (d / "bucket").mkdir()
    keys_file = d / "keys.txt"
    keys_file.write_text(f"# holder: B\n{hash_key(KEY_B)}  bob\n\n{hash_key(KEY_C)}  # carol\n")
    s = Server({
        "FACEAPI_WEIGHTS_DIR": str(d / "weights"), "FACEAPI_STORAGE_URL": str(d / "bucket"),
        "FACEAPI_DATA_DIR": str(d / "data"), "FACEAPI_TEMP_DIR": str(d / "tmp"),
        "FACEAPI_API_KEYS": KEY_A, "FACEAPI_API_KEYS_FILE": str(keys_file),
        "FACEAPI_RATE_LIMIT": "0.2", "FACEAPI_RATE_LIMIT_BURST": str(BURST),
        "FACEAPI_CORS_ORIGINS": ORIGIN,
        "FACEAPI_METRICS_ACCESS": "metrics_key", "FACEAPI_METRICS_KEY": hash_key(METRICS_KEY),
    }, workers=2, log_path=d / "server.log")
    s.data = d / "data"  # type: ignore[attr-defined]
    s.start()
    try:
        yield s
    finally:
        s.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_accepted_in_both_headers_and_refused_with_401_json(server: Server) -> None:
    assert httpx.get(server.url + "/jobs", headers=bearer(KEY_A)).status_code == 200
    assert httpx.get(server.url + "/jobs", headers={"X-API-Key": KEY_B}).status_code == 200  # hashed in the file
    r = httpx.get(server.url + "/jobs")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    err = r.json()["error"]
    assert err["code"] == "unauthorized" and "Authorization: Bearer" in err["message"] and "X-API-Key" in err["message"]
    r = httpx.get(server.url + "/jobs", headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and r.json()["error"]["field"] == "X-API-Key"
    r = httpx.get(server.url + "/jobs", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and r.json()["error"]["field"] == "Authorization"
    assert r.headers["x-request-id"]  # still logged and traceable
    # the keys file holds hashes: its hash is not itself a key
    assert httpx.get(server.url + "/jobs", headers=bearer(hash_key(KEY_B))).status_code == 401
    # probes stay open
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert httpx.get(server.url + "/readyz").status_code == 200
    assert httpx.post(server.url + "/faceswap").status_code == 401  # refused before the body is read


def test_metrics_has_its_own_key(server: Server) -> None:
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/metrics", headers=bearer(KEY_A)).status_code == 401  # an API key is not enough
    r = httpx.get(server.url + "/metrics", headers=bearer(METRICS_KEY))
    assert r.status_code == 200 and "faceapi_auth_refused_total" in r.text


def test_rate_limit_answers_429_with_retry_after(server: Server) -> None:
    codes = []
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY_C}) as c:
        for _ in range(BURST + 1):
            r = c.get("/jobs")
            codes.append(r.status_code)
            if r.status_code == 429:
                break
    assert codes[:-1] == [200] * (len(codes) - 1) and codes[-1] == 429, codes
    assert len(codes) >= BURST - 2  # the bucket is shared by both workers: a burst, not a burst per worker
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "rate_limited"
    assert httpx.get(server.url + "/jobs", headers=bearer(KEY_A)).status_code == 200  # other keys are unaffected
    r = httpx.get(server.url + "/metrics", headers=bearer(METRICS_KEY))
    assert f'faceapi_rate_limited_total{{key="{kid(KEY_C)}"}} 1.0' in r.text


def test_cors_preflight_for_the_configured_origin_only(server: Server) -> None:
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,prefer"}
    r = httpx.options(server.url + "/faceswap", headers={"Origin": ORIGIN, **pre})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = httpx.options(server.url + "/faceswap", headers={"Origin": OTHER_ORIGIN, **pre})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    # real answers carry the header for the configured origin, errors too (so a page can read a 401)
    r = httpx.get(server.url + "/jobs", headers={"Origin": ORIGIN})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN
    r = httpx.get(server.url + "/jobs", headers={"Origin": ORIGIN, **bearer(KEY_A)})
    assert "location" in r.headers["access-control-expose-headers"].lower()
    r = httpx.get(server.url + "/healthz", headers={"Origin": OTHER_ORIGIN})
    assert "access-control-allow-origin" not in r.headers


def test_a_job_belongs_to_the_key_that_created_it(server: Server, t1_path: Path, hanks_path: Path) -> None:
    files = [("source_image", ("hanks.png", hanks_path.read_bytes())),
             ("target_image", ("t1.jpg", t1_path.read_bytes()))]
    r = httpx.post(server.url + "/faceswap", files=files, headers={"Prefer": "respond-async", **bearer(KEY_A)},
                   timeout=60)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    with sqlite3.connect(server.data / "jobs.sqlite3") as db:  # type: ignore[attr-defined]
        (owner,) = db.execute("SELECT owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert owner == kid(KEY_A)  # the key's id, never the key

    b = httpx.Client(base_url=server.url, headers={"X-API-Key": KEY_B}, timeout=30)
    a = httpx.Client(base_url=server.url, headers=bearer(KEY_A), timeout=30)
    with a, b:
        for method, path in (("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/result"),
                             ("GET", f"/jobs/{job_id}/events"), ("POST", f"/jobs/{job_id}/cancel"),
                             ("DELETE", f"/jobs/{job_id}")):
            r = b.request(method, path)
            assert r.status_code == 404, (method, path, r.status_code)  # 404, not 403: ids do not leak
            assert r.json()["error"]["code"] == "not_found"
        assert job_id not in [j["id"] for j in b.get("/jobs").json()["jobs"]]
        # B's cancel and delete did nothing: A's job runs to the end
        job = wait_for_job(a, f"/jobs/{job_id}")
        assert job["state"] == "succeeded", job
        assert job_id in [j["id"] for j in a.get("/jobs").json()["jobs"]]
        r = a.get(f"/jobs/{job_id}/result")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert b.get(f"/jobs/{job_id}/result").status_code == 404
        assert a.delete(f"/jobs/{job_id}").status_code == 204
        assert a.get(f"/jobs/{job_id}").status_code == 404
    log = Path(server.log_path).read_text()  # type: ignore[arg-type]
    assert f'"key": "{kid(KEY_A)}"' in log  # access lines name the key's id…
    assert KEY_A not in log and KEY_B not in log  # …never the key


# ---- in process: /metrics access modes, settings, the key helper ---------------------------------------------------


def _client(tmp_path: Path, **settings: object) -> TestClient:
    s = Settings(weights_dir=tmp_path / "w", data_dir=tmp_path / "data", temp_dir=tmp_path / "tmp",
                 storage_url=str(tmp_path / "bucket"), **settings)  # type: ignore[arg-type]
    return TestClient(create_app(s))  # no lifespan: only the middleware and /metrics are exercised


def test_metrics_access_modes(tmp_path: Path) -> None:
    assert _client(tmp_path).get("/metrics").status_code == 200  # no keys: open
    keyed = _client(tmp_path, api_keys=[KEY_A])
    assert keyed.get("/metrics").status_code == 401
    assert keyed.get("/metrics", headers={"X-API-Key": KEY_A}).status_code == 200
    assert _client(tmp_path, api_keys=[KEY_A], metrics_access="open").get("/metrics").status_code == 200
    only = _client(tmp_path, metrics_access="metrics_key", metrics_key=METRICS_KEY)
    assert only.get("/metrics").status_code == 401
    assert only.get("/metrics", headers=bearer(METRICS_KEY)).status_code == 200
    with pytest.raises(ValueError, match="FACEAPI_METRICS_KEY"):
        Settings(metrics_access="metrics_key")


def test_keys_hash_helper(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["keys", "hash", KEY_A]) == 0
    line = capsys.readouterr().out.strip()
    assert line.split()[0] == "sha256:" + hashlib.sha256(KEY_A.encode()).hexdigest() == hash_key(KEY_A)
    assert kid(KEY_A) in line
    assert cli(["keys", "new"]) == 0
    out = capsys.readouterr()
    key = out.err.strip().rsplit(" ", 1)[-1]
    assert out.out.split()[0] == hash_key(key)
