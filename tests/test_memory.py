"""Memory is given back after large work (app/memory.py): malloc_trim on a fragmented heap, and a live worker's RSS
after several large pictures."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest

from app import memory
from testkit.server import REPO, Server

pytestmark = pytest.mark.skipif(not memory.available(), reason="malloc_trim needs glibc")

# A heap as image work leaves it: 300 MB in 96 KiB blocks (under glibc's mmap threshold, so from the heap), 9 of
# 10 freed. The survivors pin the heap's top, so free() alone cannot shrink it; malloc_trim(0) returns the holes.
FRAGMENT = textwrap.dedent("""
    import json, sys
    from app import memory
    t = memory.Trimmer(int(sys.argv[1]))  # settles at the RSS before the work
    blocks = [bytearray(96 * 1024) for _ in range(3200)]
    for b in blocks:
        b[::4096] = b"x" * len(b[::4096])  # touch every page
    keep = blocks[::10]
    del blocks
    before = memory.rss_bytes()
    ran = t.after_work()
    print(json.dumps({"ran": ran, "before": before, "after": memory.rss_bytes(), "kept": len(keep)}))
""")


def fragment(threshold_mb: int) -> dict:
    done = subprocess.run([sys.executable, "-c", FRAGMENT, str(threshold_mb)], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def test_trim_gives_a_fragmented_heap_back() -> None:
    out = fragment(64)
    assert out["ran"]
    freed_mb = (out["before"] - out["after"]) / 2**20
    assert freed_mb > 200, out  # ~270 MB of the 300 MB were freed but still resident before the trim


def test_no_trim_under_the_threshold() -> None:
    out = fragment(2000)  # the heap grew ~300 MB: under 2 GB nothing is done, and the freed pages stay resident
    assert not out["ran"]
    assert abs(out["before"] - out["after"]) < 20 * 2**20, out


def test_trim_off() -> None:
    assert not memory.Trimmer(0).due()


# ---- a live worker -------------------------------------------------------------------------------------------------
def large_jpeg(t1_bgr, megapixels: float) -> bytes:  # noqa: ANN001
    h, w = t1_bgr.shape[:2]
    s = (megapixels * 1e6 / (w * h)) ** 0.5
    ok, buf = cv2.imencode(".jpg", cv2.resize(t1_bgr, (int(w * s), int(h * s))), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("memory")
    server = Server({"FACEAPI_WEIGHTS_DIR": str(d / "weights"), "FACEAPI_DATA_DIR": str(d / "data"),
                     "FACEAPI_TEMP_DIR": str(d / "data" / "tmp"), "FACEAPI_STORAGE_URL": str(d / "bucket"),
                     "FACEAPI_ENABLED_JOBS": "analyze,faceswap,enhance", "FACEAPI_AUDIT_LOG": ""},
                    workers=1, log_path=d / "server.log").start()
    yield server
    server.stop()


def test_worker_rss_settles_after_large_pictures(one_worker: Server, t1_bgr) -> None:  # noqa: ANN001
    big = large_jpeg(t1_bgr, 16)
    with httpx.Client(base_url=one_worker.url, timeout=300) as c:
        pid = int(c.get("/readyz").json()["pid"])
        warm = c.post("/enhance", files={"image": ("s.jpg", large_jpeg(t1_bgr, 1))}, data={"faces": "[]"})
        assert warm.status_code == 200
        time.sleep(0.5)
        start = rss_mb(pid)
        up2, plain = {"faces": "[]", "upscale": "2", "format": "jpeg"}, {"faces": "[]", "format": "jpeg"}
        for data in (up2, plain, up2):
            r = c.post("/enhance", files={"image": ("big.jpg", big)}, data=data)
            assert r.status_code == 200, r.text
    time.sleep(1.0)  # the trim runs in a thread after the answer
    grown = rss_mb(pid) - start
    # glibc as it comes (FACEAPI_MALLOC_TRIM_MB=0) keeps +247 MB here; with the trim (and two arenas) +5 MB
    assert grown < 130, f"worker RSS {start:.0f} → {start + grown:.0f} MB after three 16 MP requests"


# A job's working set (200 MB in 96 KiB blocks) is in when its trimmer starts; then it is freed, all but every tenth
# block, and trimmed. keep_level keeps the job's level where the working set put it, so the next step's re-allocation
# of the same working set is not taken for growth (and trimmed again, re-faulting every page).
KEEP_LEVEL = textwrap.dedent("""
    import json, sys
    from app import memory
    blocks = [bytearray(96 * 1024) for _ in range(2100)]
    for b in blocks:
        b[::4096] = b"x" * len(b[::4096])
    t = memory.Trimmer(16, keep_level=sys.argv[1] == "1")
    start = t.settled
    keep = blocks[::10]
    del blocks
    ran = t.after_work()  # nothing grew: no trim
    grown = [bytearray(96 * 1024) for _ in range(3600)]  # 330 MB: past the level, trimmed
    for b in grown:
        b[::4096] = b"x" * len(b[::4096])
    del grown
    ran2 = t.after_work()
    print(json.dumps({"ran": ran, "ran2": ran2, "start": start, "settled": t.settled, "kept": len(keep)}))
""")


@pytest.mark.parametrize("keep", [True, False])
def test_keep_level_holds_the_working_set_level(keep: bool) -> None:
    import json

    done = subprocess.run([sys.executable, "-c", KEEP_LEVEL, "1" if keep else "0"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert not out["ran"] and out["ran2"], out
    if keep:
        assert out["settled"] == out["start"], out
    else:
        assert out["settled"] < out["start"] - 100 * 2**20, out  # the trim took the freed working set back too
