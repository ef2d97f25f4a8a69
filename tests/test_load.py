"""locustfile.py, headless, against a live built-in server: every route answers, and a 503 ``busy`` is counted as its
own outcome rather than a failure (bench/load.py runs the same file at higher loads)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.load import BUSY, ROUTES, hist_pct, run_locust
from testkit.server import Server


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker with one inference slot and no queue: a second request at the same time is answered 503 busy."""
    d = tmp_path_factory.mktemp("load")
    server = Server({"FACEAPI_WEIGHTS_DIR": str(d / "weights"), "FACEAPI_DATA_DIR": str(d / "data"),
                     "FACEAPI_TEMP_DIR": str(d / "data" / "tmp"), "FACEAPI_INFERENCE_THREADS": "1",
                     "FACEAPI_MAX_QUEUE": "0"}, workers=1, log_path=d / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, t1_bgr: np.ndarray, hanks_path: Path,
           monkeypatch_module: pytest.MonkeyPatch) -> None:
    """The locustfile's own photos, with a 300² one-face crop of t1.jpg as the target so a request takes
    ~0.1-0.3 s: LOAD_SOURCE / LOAD_TARGET, as a user would point it at their own files."""
    d = tmp_path_factory.mktemp("photos")
    target = d / "ross.jpg"
    cv2.imwrite(str(target), t1_bgr[212:512, 364:664])
    monkeypatch_module.setenv("LOAD_SOURCE", str(hanks_path))
    monkeypatch_module.setenv("LOAD_TARGET", str(target))


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _by_name(run: dict) -> dict[str, dict]:
    return {e["name"]: e for e in run["entries"]}


@pytest.mark.usefixtures("photos")
def test_one_user_gets_a_real_answer_from_every_route(one_slot_server: Server, tmp_path: Path) -> None:
    run = run_locust(one_slot_server.url, users=1, seconds=4, out=tmp_path / "one")
    stats = _by_name(run)
    assert run["failures"] == 0, stats
    assert set(stats) == set(ROUTES), stats  # one user never finds the slot taken: no 503 at all
    assert all(stats[r]["num_requests"] >= 1 for r in ROUTES), stats
    # the weighted cycle: 3 swaps for each 2 analyses and 1 enhancement, give or take the unfinished cycle
    n = {r: stats[r]["num_requests"] for r in ROUTES}
    assert n["/faceswap"] >= n["/analyze"] >= n["/enhance"] >= n["/faceswap"] // 3 - 1, n


@pytest.mark.usefixtures("photos")
def test_busy_503_is_its_own_quick_outcome_not_a_failure(one_slot_server: Server, tmp_path: Path) -> None:
    run = run_locust(one_slot_server.url, users=2, seconds=3, out=tmp_path / "two", wait=0.05)
    stats = _by_name(run)
    assert run["failures"] == 0, stats
    busy = {name: e for name, e in stats.items() if name.endswith(BUSY)}
    assert busy, f"two users on one slot with no queue never got a 503: {stats}"
    assert set(stats) <= set(ROUTES) | {f"{r} {BUSY}" for r in ROUTES}, stats
    assert any(stats.get(r, {}).get("num_requests") for r in ROUTES), stats  # and the slot did real work
    hist: dict[str, int] = {}
    for e in busy.values():
        for ms, k in e["response_times"].items():
            hist[ms] = hist.get(ms, 0) + k
    p50 = hist_pct(hist, 50)
    assert p50 is not None and p50 < 1000, hist  # refused at once, not after waiting for the slot
