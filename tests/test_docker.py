"""The Docker images, checked without a Docker engine (there is none on the build machines).

Both Dockerfiles are parsed and replayed: hadolint lints them; their pip lines run in a fresh venv (``--dry-run``, so
the pins must resolve together, and every module the copied code imports must come from them); their entry command
serves from a copy of exactly what they COPY (through ``.dockerignore``), made read-only, with their ENV and the
compose file's production environment (API keys from a secret file), the container paths ``/data``,
``/weights`` and ``/run/secrets`` mapped to temporary folders. After a real ``/faceswap`` and ``/swap_url`` (default
bucket) nothing may have been written outside ``/data`` and ``/weights``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from hashlib import sha256
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from app.config import Settings
from testkit.server import REPO, free_port

DOCKERFILES = ("Dockerfile", "Dockerfile.cpu")
VOLUMES = ("/data", "/weights")  # the only places the server may write
SECRETS = "/run/secrets"
HADOLINT = Path(sys.executable).parent / "hadolint"


# ---- reading a Dockerfile ------------------------------------------------------------------------------------------


@dataclass
class Image:
    path: Path
    base: str = ""
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    copies: list[tuple[list[str], str]] = field(default_factory=list)  # (sources in the context, absolute dest)
    pip_lines: list[list[str]] = field(default_factory=list)  # arguments after `pip install`, per command
    user: str = ""
    volumes: list[str] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped, as Docker reads them."""
    logical = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not logical):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.strip().partition(" ")
        yield word.upper(), rest.strip()
        logical = ""


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), value)


def parse_dockerfile(path: Path) -> Image:
    image = Image(path)
    for word, rest in _instructions(path.read_text()):
        if word == "FROM":
            image.base = rest
        elif word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                image.env[key] = _expand(value, image.env)
        elif word == "WORKDIR":
            image.workdir = str(Path(image.workdir) / _expand(rest, image.env))
        elif word == "COPY":
            *sources, dest = [t for t in shlex.split(rest) if not t.startswith("--")]
            dest_path = Path(image.workdir) / dest
            image.copies.append((sources, str(dest_path) + ("/" if dest.endswith("/") else "")))
        elif word == "RUN":
            for command in rest.split("&&"):
                args = shlex.split(command)
                if args[:2] == ["pip", "install"]:
                    image.pip_lines.append(args[2:])
                elif args[:4] in (["python", "-m", "pip", "install"], ["python3.11", "-m", "pip", "install"]):
                    image.pip_lines.append(args[4:])
        elif word == "USER":
            image.user = rest
        elif word == "VOLUME":
            image.volumes = json.loads(rest)
        elif word == "EXPOSE":
            image.expose = rest.split()
        elif word == "HEALTHCHECK":
            image.healthcheck = json.loads(rest[rest.index("CMD") + 3:])
        elif word == "CMD":
            image.cmd = json.loads(rest)
    return image


@pytest.fixture(scope="module")
def images() -> dict[str, Image]:
    return {name: parse_dockerfile(REPO / name) for name in DOCKERFILES}


# ---- the build context: .dockerignore and COPY ------------------------------------------------------------------


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rx = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        rules.append((keep, re.compile(rx.replace(r"\?", "[^/]") + "$")))
    return rules


def _ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for keep, rx in rules:
        if any(rx.match(p) for p in prefixes):
            ignored = not keep
    return ignored


def replay_copies(image: Image, root: Path) -> None:
    """Copy what the COPY instructions take from the build context into ``root`` (the image's ``/``)."""
    rules = _ignore_rules()
    for sources, dest in image.copies:
        for src in sources:
            top = REPO / src
            files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
            files = [f for f in files if not _ignored(str(f.relative_to(REPO)), rules)]
            assert files, f"COPY {src}: nothing in the build context (missing, or excluded by .dockerignore)"
            for f in files:
                if dest.endswith("/"):  # COPY a b ./  — files land in the folder, a folder's contents too
                    target = root / dest.lstrip("/") / f.relative_to(top if top.is_dir() else top.parent)
                else:
                    target = root / dest.lstrip("/") / (f.relative_to(top) if top.is_dir() else "")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def _set_writable(folder: Path, writable: bool) -> None:
    for p in [folder, *folder.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode | 0o200 if writable else mode & ~0o222)


# ---- 1. lint ----------------------------------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    """`make test` installs hadolint (requirements-dev.txt) and lints both files with .hadolint.yaml."""
    if not HADOLINT.exists():
        pytest.skip("hadolint is not installed (pip install -r requirements-dev.txt)")
    r = subprocess.run([str(HADOLINT), "--no-color", *DOCKERFILES], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- 2. the two images agree, and the server can write only to the volumes ---------------------------------------


def test_images_share_layout_user_volumes_and_command(images: dict[str, Image]) -> None:
    gpu, cpu = images["Dockerfile"], images["Dockerfile.cpu"]
    assert cpu.base.startswith("python:3.11-slim") and gpu.base.startswith("nvidia/cuda:")
    for attr in ("copies", "workdir", "user", "volumes", "expose", "healthcheck", "cmd"):
        assert getattr(gpu, attr) == getattr(cpu, attr), attr
    differ = {k for k in gpu.env.keys() | cpu.env.keys() if gpu.env.get(k) != cpu.env.get(k)}
    assert differ <= {"DEBIAN_FRONTEND", "FACEAPI_EXECUTION_PROVIDER"}, differ
    assert cpu.env["FACEAPI_EXECUTION_PROVIDER"] == "cpu"

    for image in images.values():
        uid = image.user.split(":")[0]
        assert uid.isdigit() and int(uid) >= 1000, f"{image.path.name}: USER {image.user!r}: not a non-root uid"
        assert sorted(image.volumes) == sorted(VOLUMES)
        assert image.cmd == ["python", "-m", "app", "serve"] and image.workdir == "/app"
        assert image.expose == [image.env["FACEAPI_PORT"]]
        # every path the server writes lies in a volume: weights, job data (temp files follow it), the default
        # /swap_url bucket and HOME (library caches)
        for key in ("HOME", "FACEAPI_WEIGHTS_DIR", "FACEAPI_DATA_DIR", "FACEAPI_STORAGE_URL"):
            assert any(image.env[key] == v or image.env[key].startswith(v + "/") for v in VOLUMES), key
        assert "FACEAPI_TEMP_DIR" not in image.env  # follows FACEAPI_DATA_DIR
        assert image.env["PYTHONDONTWRITEBYTECODE"] == "1"  # /app is read-only: no __pycache__ attempts
        unknown = {k for k in image.env if k.startswith("FACEAPI_")} - {f"FACEAPI_{n.upper()}" for n in
                                                                          Settings.model_fields}
        assert not unknown, f"{image.path.name}: not settings: {unknown}"

    # The CPU image installs torch from PyTorch's CPU index first; requirements.txt's pin must be that version, so
    # the later `pip install -r requirements.txt` keeps it instead of fetching PyPI's CUDA build.
    pinned = re.search(r"^torch==(\S+)", (REPO / "requirements.txt").read_text(), re.M)
    assert pinned is not None
    torch_lines = [a for a in cpu.pip_lines if any(t.startswith("torch==") for t in a)]
    assert len(torch_lines) == 1 and f"torch=={pinned.group(1)}" in torch_lines[0]
    assert "--index-url" in torch_lines[0] and "--no-deps" in torch_lines[0]


def test_settings_temp_dir_follows_data_dir(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path / "d").temp_dir == tmp_path / "d" / "tmp"
    assert Settings(data_dir=tmp_path / "d", temp_dir=tmp_path / "t").temp_dir == tmp_path / "t"
    assert Settings().temp_dir == Path("data/tmp")  # the local default is unchanged


# ---- 3. the pip lines resolve in a fresh venv and bring every module the code imports ----------------------------


def _imports(root: Path) -> dict[str, str]:
    """Top-level module -> a file that imports it, over every .py file under ``root`` (lazy imports too)."""
    found: dict[str, str] = {}
    for py in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(py.read_text(), str(py))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], str(py.relative_to(root)))
    return found


def test_first_party_imports_are_copied(images: dict[str, Image], tmp_path: Path) -> None:
    """Every project package the copied code imports (Wav2Lip for lip sync, …) is in the image; nothing imports the
    test or benchmark helpers, which stay out of it."""
    root = tmp_path / "root"
    replay_copies(images["Dockerfile"], root)
    app_dir = root / "app"
    project = {p.name for p in REPO.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    project |= {p.stem for p in REPO.glob("*.py")}
    missing = {m: where for m, where in _imports(app_dir).items() if m in project and not (
        (app_dir / m / "__init__.py").exists() or (app_dir / f"{m}.py").exists())}
    assert not missing, f"imported by the image's code but not COPY'd: {missing}"
    assert {"app", "models", "Wav2Lip"} <= {p.name for p in app_dir.iterdir()}
    assert (app_dir / "weights" / "manifest.toml").is_file()  # app/weights/manifest.py reads it from here
    assert not list(app_dir.rglob("__pycache__")) and not list(app_dir.rglob("*.pyc"))  # .dockerignore


@cache
def _module_dists() -> dict[str, set[str]]:
    """Top-level module -> the distributions in this venv that ship it (from their file lists too: a wheel's
    top_level.txt may leave packages out; dlib-bin's names only _dlib_pybind11)."""
    from importlib.metadata import distributions, packages_distributions

    found: dict[str, set[str]] = {m: set(d) for m, d in packages_distributions().items()}
    for dist in distributions():
        name = dist.metadata["Name"]
        for top in {f.parts[0] for f in dist.files or []}:
            if not top.endswith((".dist-info", ".data", ".pth")) and not top.startswith("..") and top != "__pycache__":
                found.setdefault(top.split(".")[0], set()).add(name)
    return found


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_pip_lines_resolve_in_a_fresh_venv(images: dict[str, Image], tmp_path: Path) -> None:
    """Each image's `pip install` commands, in order, in a new Python 3.11 venv: the pip pin is installed for real
    (the other lines then run with the image's pip; the venv is made without pip and the pin put in from outside,
    which is quicker than `python -m venv`'s own bootstrap), the rest with --dry-run against the COPY'd requirement
    files. Lines both images share are resolved once. PyTorch's CPU index is not reachable from
    the build machines: there the CPU torch line resolves from the machine's local wheelhouse (pip's find-links
    configuration), which holds the same torch-2.13.0+cpu wheel."""
    app_root = tmp_path / "root"
    replay_copies(images["Dockerfile"], app_root)
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=120)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet"]
    env = {**os.environ, "PIP_RETRIES": "2", "PIP_DEFAULT_TIMEOUT": "20", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    resolved: dict[tuple[str, ...], set[str]] = {}
    for image in images.values():
        installed: set[str] = set()
        for args in image.pip_lines:
            key = tuple(args)
            if key not in resolved:
                if any(a.startswith("pip==") for a in args):  # the image's pip, put in by this pip (faster)
                    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", *args],
                                   cwd=app_root / "app", env=env, check=True, timeout=120)
                    resolved[key] = {"pip"}
                else:
                    report = tmp_path / f"report-{len(resolved)}.json"
                    r = subprocess.run([*pip, "--dry-run", "--report", str(report), *args], cwd=app_root / "app",
                                       env=env, capture_output=True, text=True, timeout=300)
                    assert r.returncode == 0, f"{image.path.name}: pip install {shlex.join(args)}\n{r.stderr[-3000:]}"
                    resolved[key] = {_norm(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]}
            installed |= resolved[key]
        assert "torch" in installed and "onnxruntime-gpu" in installed and "onnxruntime" not in installed

        # Every module the copied code imports is first-party (copied), the standard library, or installed by
        # these lines (a package that only the dev requirements bring would be missing in the image).
        dists = _module_dists()
        copied = {p.name for p in (app_root / "app").iterdir()} | {p.stem for p in (app_root / "app").glob("*.py")}
        missing = {}
        for module, where in _imports(app_root / "app").items():
            if module in copied or module in sys.stdlib_module_names or module == "__future__":
                continue
            if not {_norm(d) for d in dists.get(module, [])} & installed:
                missing[module] = where
        assert not missing, f"{image.path.name}: imported but neither COPY'd nor installed: {missing}"


# ---- 4. the entry command serves from the read-only copy, writing only to the volumes -----------------------------


def _compose() -> dict:
    import yaml

    return yaml.safe_load((REPO / "compose.yaml").read_text())


def _host_path(value: str, root: Path) -> str:
    for c in (*VOLUMES, "/app", SECRETS):
        if value == c or value.startswith(c + "/"):
            return str(root / value.lstrip("/"))
    return value


def _container_env(image: Image, service: dict, root: Path, port: int) -> dict[str, str]:
    """The container's environment (image ENV, then the compose service's), container paths mapped under ``root``;
    the test's PATH (its venv stands for /opt/venv), one worker on a free loopback port; TMPDIR stands for the
    container's /tmp (which is outside the volumes)."""
    env = {k: _host_path(v, root) for k, v in {**image.env, **service["environment"]}.items()
           if k not in ("PATH", "VIRTUAL_ENV")}
    env.update(PATH=os.environ["PATH"], TMPDIR=str(root / "tmp"), FACEAPI_HOST="127.0.0.1",
               FACEAPI_PORT=str(port), FACEAPI_WORKERS="1")
    return env


def _python(argv: list[str]) -> list[str]:
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_entry_command_serves_from_read_only_copy(images: dict[str, Image], tmp_path: Path, t1_bgr: np.ndarray,
                                                  hanks_path: Path) -> None:
    image = images["Dockerfile.cpu"]  # the GPU image has the same COPYs, ENV paths, user and command (test above)
    service = _compose()["services"]["face-studio-cpu"]
    root = tmp_path / "root"
    replay_copies(image, root)
    for d in (*VOLUMES, SECRETS, "/tmp"):
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = _container_env(image, service, root, port)
    app_dir = root / image.workdir.lstrip("/")

    # the production example's key: `python -m app keys new` writes the hash line; the client keeps the key
    new = subprocess.run(_python(["python", "-m", "app", "keys", "new"]), cwd=app_dir, env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    key = new.stderr.strip().rsplit(": ", 1)[1]
    keys_file = Path(env["FACEAPI_API_KEYS_FILE"])
    assert keys_file.is_relative_to(root / SECRETS.lstrip("/"))
    keys_file.write_text(new.stdout)

    # the volume-backed bucket holds the /swap_url inputs, as an operator would put them there
    bucket = app_dir / env.get("FACEAPI_STORAGE_URL", Settings.model_fields["storage_url"].default)
    (bucket / "in").mkdir(parents=True)
    (bucket / "in" / "face.png").write_bytes(hanks_path.read_bytes())
    target = cv2.resize(t1_bgr[220:520, 640:940], (260, 260))  # one face of the group photo
    (bucket / "in" / "shot.png").write_bytes(_png(target))

    # the command imports the project from the copy (cwd), not from the checkout
    where = subprocess.run(_python(["python", "-c", "import app, models, Wav2Lip; print(app.__file__, models.__file__, "
                                    "Wav2Lip.__file__)"]), cwd=app_dir, env=env, capture_output=True, text=True,
                           timeout=60, check=True)
    assert all(Path(f).is_relative_to(app_dir) for f in where.stdout.split()), where.stdout

    _set_writable(app_dir, False)
    _set_writable(root / SECRETS.lstrip("/"), False)
    before = _snapshot(app_dir)
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(_python(image.cmd), cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    health = _python(image.healthcheck)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "not ready in 120 s\n" + log.read_text()[-3000:]
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200 and \
                        httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert subprocess.run(health, env=env, timeout=30).returncode == 0  # the HEALTHCHECK command

        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, timeout=120) as c:
            files = {"source_image": ("s.png", hanks_path.read_bytes()), "target_image": ("t.png", _png(target))}
            assert c.post("/faceswap", files=files).status_code == 401  # keys are on
            r = c.post("/faceswap", files=files, data={"backend": "builtin"}, headers=auth)
            assert r.status_code == 200, r.text
            assert r.headers["x-face-backend"] == "builtin" and r.headers["x-faces-swapped"] == "1"
            out_img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
            assert out_img.shape == target.shape and np.abs(out_img.astype(int) - target).mean() > 1

            r = c.post("/swap_url", json={"face_filename": "in/face.png", "model_filenames": ["in/shot.png"]},
                       headers=auth)
            assert r.status_code == 200, r.text
            result = Path(r.json()["urls"][0].removeprefix("file://"))
            assert result.is_relative_to(bucket / "results") and result.stat().st_size > 0
    finally:
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends to the container's command
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        _set_writable(app_dir, True)
        _set_writable(root / SECRETS.lstrip("/"), True)
    # uvicorn shuts down gracefully, then re-raises the signal
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert "Application shutdown complete" in log.read_text()
    assert subprocess.run(health, env=env, timeout=30, capture_output=True).returncode != 0  # unhealthy when down

    changed = sorted(set(_snapshot(app_dir).items()) ^ set(before.items()))
    assert not changed, f"the server wrote into the image's /app: {changed[:5]}"
    assert Path(env["HOME"]).is_relative_to(root / "data"), "HOME (library caches) is not in the data volume"
    assert list((root / "tmp").iterdir()) == [], "the server wrote to /tmp (outside the volumes)"
    outside = sorted({p.name for p in root.iterdir()} - {"app", "data", "weights", "run", "tmp"})
    assert outside == [], outside
    written = {str(p.relative_to(root / "data")) for p in (root / "data").iterdir()}
    assert {"jobs.sqlite3", "tmp", "metrics", "storage"} <= written, written  # job data, uploads, metrics, bucket


# ---- 5. compose.yaml ---------------------------------------------------------------------------------------------


def test_compose_file(images: dict[str, Image]) -> None:
    """The structure Compose reads (there is no Compose here to validate it): both services build their Dockerfile,
    mount the named weights and data volumes at the images' volume paths, carry the images' health check, and run
    with API keys from a secret file; the GPU one reserves an NVIDIA GPU, the CPU one sits in the `cpu` profile."""
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"face-studio", "face-studio-cpu"}
    assert set(compose["volumes"]) == {"face-weights", "face-data", "face-data-cpu"}
    settings = {f"FACEAPI_{n.upper()}" for n in Settings.model_fields}
    for name, dockerfile in (("face-studio", "Dockerfile"), ("face-studio-cpu", "Dockerfile.cpu")):
        s, image = services[name], images[dockerfile]
        assert s["build"] == {"context": ".", "dockerfile": dockerfile}
        mounts = dict(reversed(v.split(":", 1)) for v in s["volumes"])
        assert set(mounts) == set(image.volumes) and all(v in compose["volumes"] for v in mounts.values())
        assert s["ports"][0].endswith(":" + image.env["FACEAPI_PORT"])
        assert s["healthcheck"]["test"] == ["CMD", *image.healthcheck]
        assert set(s["environment"]) <= settings, set(s["environment"]) - settings
        keys_file = s["environment"]["FACEAPI_API_KEYS_FILE"]
        assert s["secrets"] == ["faceapi_api_keys"] and keys_file == f"{SECRETS}/faceapi_api_keys"
        assert all(isinstance(v, str) for v in s["environment"].values())  # Compose wants strings
    assert compose["secrets"]["faceapi_api_keys"]["file"] == "./deploy/api-keys"
    gpu = services["face-studio"]
    assert "profiles" not in gpu and services["face-studio-cpu"]["profiles"] == ["cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "deploy" not in services["face-studio-cpu"]
    assert len({s["ports"][0].split(":")[0] for s in services.values()}) == 2  # both can run side by side


def test_compose_file_validates_with_compose(tmp_path: Path) -> None:
    """Compose's own schema check (`config`), where a Compose is installed (the `docker compose` plugin, or Debian's
    `docker-compose`), with the secret file in place as `up` needs it."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        command = [docker, "compose"]
    elif shutil.which("docker-compose"):
        command = [str(shutil.which("docker-compose"))]
    else:
        pytest.skip("no Docker Compose installed")
    shutil.copy(REPO / "compose.yaml", tmp_path)
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "api-keys").write_text("sha256:" + sha256(b"key").hexdigest() + "\n")
    r = subprocess.run([*command, "-f", "compose.yaml", "config", "-q"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
