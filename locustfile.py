"""Load test of the image endpoints: ``locust -f locustfile.py --host http://127.0.0.1:8000``.

Each simulated user uploads real photos as multipart forms, the way ``curl -F`` does, to three routes with task
weights 3 : 2 : 1:

========================  ======  =====================================================================
route (locust name)       weight  request
========================  ======  =====================================================================
``/faceswap``             3       ``source_image`` = a portrait, ``target_image`` = a group photo
``/analyze``              2       ``image`` = the group photo
``/enhance``              1       ``image`` = the group photo, ``format=jpeg``
========================  ======  =====================================================================

Every user walks the weights as a fixed cycle (a smooth weighted round robin: swap, analyze, swap, enhance, analyze,
swap), each user from its own starting point, instead of drawing tasks at random: the mix is then exact in every
run, not only on average, so short runs at 1, 2, 4 or 8 users compare like with like and every route is reached
within a user's first six requests.

A 503 ``busy`` answer (every inference slot and queue place of a worker taken, with ``Retry-After``) is the
server's documented way of shedding load, not an error: it is counted as a success under its own name,
``/faceswap [503 busy]`` etc., so its rate and latency show apart from the real answers. Anything else that is
not the documented answer (other statuses, a wrong content type, no face found, a dropped connection) is a failure.

Files: insightface's ``Tom_Hanks_54745.png`` (source portrait) and ``t1.jpg`` (1280×886, six faces), the photos
the tests use; point ``LOAD_SOURCE`` / ``LOAD_TARGET`` at your own files instead. ``LOAD_WAIT`` = seconds a user
pauses between requests (default 0: the next request as soon as the last answer arrives, a closed loop that
measures capacity); ``LOAD_API_KEY`` is sent as ``X-API-Key`` when the server asks for keys.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
from locust import HttpUser, TaskSet, constant, events, task
from locust.clients import ResponseContextManager


@events.init.add_listener
def _fresh_clock(**_: object) -> None:
    """gevent's loop clock is read once when the loop is made and only moves when the loop runs, so it is as old as
    Locust's start-up (imports, this file: 1-3 s on a busy machine) when ``--run-time`` is armed from it, and the run
    stopped that much early. Bring it up to date first."""
    gevent.get_hub().loop.update_now()


def _insightface_image(name: str) -> Path:
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        raise RuntimeError(f"insightface is not installed: set LOAD_SOURCE / LOAD_TARGET to your own photos ({name})")
    return Path(spec.origin).parent / "data" / "images" / name


def _upload(env: str, default: str) -> tuple[str, bytes, str]:
    path = Path(os.environ.get(env) or _insightface_image(default))
    mime = {".png": "image/png", ".webp": "image/webp"}.get(path.suffix.lower(), "image/jpeg")
    return path.name, path.read_bytes(), mime


SOURCE = _upload("LOAD_SOURCE", "Tom_Hanks_54745.png")
TARGET = _upload("LOAD_TARGET", "t1.jpg")
BUSY = "[503 busy]"


def check(resp: ResponseContextManager, route: str, content_type: str) -> None:
    """Mark one answer: the expected 200, a documented 503 busy (renamed so it is counted apart), or a failure."""
    if resp.status_code == 503:
        try:
            code = resp.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if code == "busy" and resp.headers.get("Retry-After"):
            resp.request_meta["name"] = f"{route} {BUSY}"
            resp.success()
        else:
            resp.failure(f"503 {code or 'without the error JSON'}: {resp.text[:200]}")
    elif resp.status_code != 200:
        resp.failure(f"{resp.status_code}: {resp.text[:200]}")
    elif not resp.headers.get("content-type", "").startswith(content_type):
        resp.failure(f"content-type {resp.headers.get('content-type')!r}, expected {content_type}")
    elif not resp.headers.get("X-Face-Backend"):
        resp.failure("no X-Face-Backend header")
    else:
        resp.success()


def weighted_cycle(tasks: list[Callable], start: int) -> Iterator[Callable]:
    """``tasks`` as locust expands its weights (each task repeated weight times) in smooth weighted round-robin
    order, forever, from position ``start`` of the cycle."""
    weights = Counter(tasks)
    total = sum(weights.values())
    current = dict.fromkeys(weights, 0)
    order = []
    for _ in range(total):
        for t in current:
            current[t] += weights[t]
        pick = max(current, key=current.__getitem__)  # the first of equals, in declaration order
        current[pick] -= total
        order.append(pick)
    return itertools.islice(itertools.cycle(order), start % total, None)


_users = itertools.count()


class StudioMix(TaskSet):
    """The three routes with their weights, run as a fixed weighted cycle (see the module docstring)."""

    def __init__(self, parent: HttpUser) -> None:
        super().__init__(parent)
        self._order = weighted_cycle(self.tasks, next(_users))

    def get_next_task(self) -> Callable:
        return next(self._order)

    @task(3)
    def faceswap(self) -> None:
        files = {"source_image": SOURCE, "target_image": TARGET}
        with self.client.post("/faceswap", files=files, name="/faceswap", catch_response=True) as resp:
            check(resp, "/faceswap", "image/png")
            if resp.status_code == 200 and resp.headers.get("X-Faces-Swapped") != "1":
                resp.failure(f"X-Faces-Swapped {resp.headers.get('X-Faces-Swapped')!r}, expected 1")

    @task(2)
    def analyze(self) -> None:
        with self.client.post("/analyze", files={"image": TARGET}, name="/analyze", catch_response=True) as resp:
            check(resp, "/analyze", "application/json")
            if resp.status_code == 200 and not resp.json().get("faces"):
                resp.failure("no face found in the target photo")

    @task(1)
    def enhance(self) -> None:
        with self.client.post("/enhance", files={"image": TARGET}, data={"format": "jpeg"}, name="/enhance",
                              catch_response=True) as resp:
            check(resp, "/enhance", "image/jpeg")


class StudioUser(HttpUser):
    tasks = [StudioMix]
    wait_time = constant(float(os.environ.get("LOAD_WAIT", "0")))

    def on_start(self) -> None:
        if key := os.environ.get("LOAD_API_KEY"):
            self.client.headers["X-API-Key"] = key
