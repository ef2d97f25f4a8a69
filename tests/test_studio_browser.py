"""The studio page at / in a real browser (headless Chromium through Playwright, every host but this one blocked):
a face swap driven through the page (synchronous and as a job followed by its events), analyze drawing its boxes,
and an API error shown readably. Plus the page's serving rules (content types, reachable without an API key)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from testkit.server import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # requirements-dev.txt installs it
    sync_playwright = None  # type: ignore[assignment]

needs_browser = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="needs Chromium (apt-get install chromium; CI installs it) and playwright (requirements-dev.txt)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
LOCAL = ("127.0.0.1", "localhost")

# In the page: how many pixels of the result differ from the original picture, and by how much on average.
DIFF_JS = """() => {
  const read = (img) => {
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext("2d"); g.drawImage(img, 0, 0);
    return g.getImageData(0, 0, c.width, c.height).data;
  };
  const a = read(document.querySelector("#before-img")), b = read(document.querySelector("#result-img"));
  let changed = 0, sum = 0;
  for (let i = 0; i < a.length; i += 4) {
    const d = Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2]);
    sum += d; if (d > 30) changed++;
  }
  return {changed: changed / (a.length / 4), mean: sum / (a.length / 4) / 3};
}"""


def test_page_and_assets_are_served_without_a_key_with_their_content_types() -> None:
    client = TestClient(create_app(Settings(api_keys=["studio-test-key"])))  # no lifespan: no models loaded
    for path, media in (("/", "text/html"), ("/studio/studio.js", "text/javascript"),
                        ("/studio/studio.css", "text/css")):
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith(media), path
    page = client.get("/").text
    assert "/studio/studio.js" in page and "/studio/studio.css" in page and "http" not in page.replace(
        'href="/docs"', "")  # nothing loaded from elsewhere
    key = {"X-API-Key": "studio-test-key"}
    for other in ("/studio/studio.html", "/studio/%2e%2e/security.py", "/studio/"):  # only the listed assets
        assert client.get(other, headers=key).status_code == 404, other
        assert client.get(other).status_code == 401, other  # and nothing else is open
    assert client.post("/analyze").status_code == 401  # the API itself still needs the key


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert sync_playwright is not None and CHROMIUM is not None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Studio:
    """One page of the studio with every request outside this machine refused and recorded."""

    def __init__(self, browser: Browser, server: Server) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.context.route("**/*", self._route)
        self.page: Page = self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.on("request", lambda req: self.requests.append((req.method, req.url, req.headers)))
        resp = self.page.goto(server.url + "/")
        assert resp is not None and resp.ok and resp.headers["content-type"].startswith("text/html")
        self.page.wait_for_selector("#server-status.ok")

    def _route(self, route) -> None:  # noqa: ANN001
        if urlsplit(route.request.url).hostname in LOCAL:
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def studio(browser: Browser, builtin_server: Server) -> Iterator[Studio]:
    s = Studio(browser, builtin_server)
    yield s
    s.close()
    assert s.outside == [], f"the page asked other hosts: {s.outside}"


def _swap(studio: Studio, source: Path, target: Path) -> dict:
    page = studio.page
    page.click("#job-swap")
    page.set_input_files("#file-source_image", str(source))
    page.set_input_files("#file-target_image", str(target))
    page.click("#run")
    page.wait_for_selector("#result-img", state="visible", timeout=60_000)
    page.wait_for_function("document.querySelector('#result-img').naturalWidth > 0")
    return page.evaluate("() => ({w: document.querySelector('#result-img').naturalWidth,"
                         " h: document.querySelector('#result-img').naturalHeight,"
                         " meta: document.querySelector('#result-meta').innerText,"
                         " download: document.querySelector('#download').getAttribute('download')})")


@needs_browser
def test_a_swap_through_the_page(studio: Studio, hanks_path: Path, t1_path: Path, t1_bgr: np.ndarray,
                                 tmp_path: Path) -> None:
    got = _swap(studio, hanks_path, t1_path)
    assert (got["h"], got["w"]) == t1_bgr.shape[:2]  # the result has the target's size
    assert "backend builtin" in got["meta"] and "faces swapped 1" in got["meta"]
    assert got["download"].startswith("swap-result.")
    diff = studio.page.evaluate(DIFF_JS)
    assert 0.002 < diff["changed"] < 0.2, diff  # a face changed, not the whole picture
    assert studio.page.is_visible("#error") is False
    post = [r for r in studio.requests if r[0] == "POST"]
    assert [urlsplit(u).path for _, u, _ in post] == ["/faceswap"] and "prefer" not in post[0][2]
    shot = tmp_path / "studio-swap.png"
    studio.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    assert studio.errors == []


@needs_browser
def test_a_swap_as_a_job_follows_its_events_to_the_result(studio: Studio, hanks_path: Path, t1_path: Path,
                                                          t1_bgr: np.ndarray) -> None:
    studio.page.check("#as-job")
    got = _swap(studio, hanks_path, t1_path)
    assert (got["h"], got["w"]) == t1_bgr.shape[:2]
    submit = next(h for m, u, h in studio.requests if m == "POST")
    assert submit.get("prefer") == "respond-async"
    job_paths = [urlsplit(u).path for _, u, _ in studio.requests if urlsplit(u).path.startswith("/jobs/")]
    assert any(p.endswith("/events") for p in job_paths) and any(p.endswith("/result") for p in job_paths)
    assert studio.page.get_attribute("#progress-bar", "data-fraction") == "1.000"
    assert studio.page.evaluate(DIFF_JS)["changed"] > 0.002
    assert studio.errors == []


@needs_browser
def test_analyze_draws_boxes_and_landmarks(studio: Studio, t1_path: Path, tmp_path: Path) -> None:
    page = studio.page
    page.click("#job-analyze")
    page.set_input_files("#file-image", str(t1_path))
    page.click("#run")
    page.wait_for_selector("#overlay[data-faces]", state="visible", timeout=60_000)
    faces = int(page.get_attribute("#overlay", "data-faces") or 0)
    assert faces >= 4  # t1.jpg shows six people
    assert page.locator("#faces-table tr").count() == faces + 1
    # The first box's left edge, half-way down, is drawn in the box colour over the photo.
    edge = page.evaluate("""() => {
      const body = JSON.parse(document.querySelector('#analysis-json').textContent);
      const [x1, y1, , y2] = body.faces[0].bbox;
      const g = document.querySelector('#overlay').getContext('2d');
      return Array.from(g.getImageData(Math.round(x1), Math.round((y1 + y2) / 2), 1, 1).data);
    }""")
    assert abs(edge[0] - 0x22) < 40 and edge[1] > 170 and edge[2] > 200, edge
    page.screenshot(path=str(tmp_path / "studio-analyze.png"), full_page=True)
    assert studio.errors == []


@needs_browser
def test_an_api_error_is_shown_readably(studio: Studio, tmp_path: Path) -> None:
    page = studio.page
    page.click("#job-analyze")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    page.set_input_files("#file-image", str(bad))
    page.click("#run")
    page.wait_for_selector("#error", state="visible", timeout=30_000)
    assert page.inner_text("#error-title") == "415 · unsupported_media_type"
    assert "field: image" in page.inner_text("#error-field")
    assert page.is_visible("#result") is False
    assert page.get_attribute("[data-field='image']", "class").split().count("bad") == 1
