"""Command line: ``python -m app serve`` and ``python -m app weights list|download|verify``.

Settings come from the environment (``FACEAPI_*``, see app/config.py); ``FACEAPI_WEIGHTS_DIR`` is where weights
are looked for and downloaded to, ``FACEAPI_ENABLED_JOBS`` decides what ``weights download`` fetches by default.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.config import JOBS, get_settings

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    s = get_settings()
    host = args.host or s.host
    port = args.port or s.port
    workers = args.workers or s.workers
    from app.observability import setup_logging

    setup_logging(s.log_level)
    _fresh_metrics_dir(s.data_dir)
    # ONNX Runtime's telemetry writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ when it is imported; the server
    # writes nothing outside its configured directories. Set before any worker imports onnxruntime (they inherit it).
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    # The guarded h11 protocol adds header/body read timeouts and the per-worker connection cap (app/connections.py).
    # loop="asyncio": the same event loop whether or not uvloop is installed (ray[serve] brings it in).
    uvicorn.run("app.main:app", host=host, port=port, workers=workers, log_config=None, loop="asyncio",
                http="app.connections:GuardedH11Protocol", timeout_keep_alive=s.keep_alive_timeout)
    return EXIT_OK


def _fresh_metrics_dir(data_dir: Path) -> None:
    """Prometheus multiprocess mode: every worker writes its samples under PROMETHEUS_MULTIPROC_DIR (default
    FACEAPI_DATA_DIR/metrics), emptied here, before uvicorn starts the workers (they inherit the variable). Set
    before anything imports prometheus_client (with one worker the app runs in this process)."""
    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or Path(data_dir) / "metrics").resolve()
    path.mkdir(parents=True, exist_ok=True)
    for f in path.glob("*.db"):
        f.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def _cmd_keys_hash(args: argparse.Namespace) -> int:
    from app.security import hash_key, key_id

    key = args.key if args.key is not None else sys.stdin.readline().strip()
    if not key:
        print("error: no key given (argument or first line of stdin)", file=sys.stderr)
        return EXIT_USAGE
    hashed = hash_key(key)
    print(f"{hashed}  # id {key_id(hashed.removeprefix('sha256:'))}")
    return EXIT_OK


def _cmd_keys_new(args: argparse.Namespace) -> int:
    import secrets

    from app.security import hash_key, key_id

    key = "fk_" + secrets.token_urlsafe(32)
    hashed = hash_key(key)
    print(f"key (give it to the client; it is not stored): {key}", file=sys.stderr)
    print(f"{hashed}  # id {key_id(hashed.removeprefix('sha256:'))}")
    return EXIT_OK


def _weights_context(args: argparse.Namespace):
    from app.weights.manifest import load_manifest

    s = get_settings()
    weights_dir = Path(args.dir) if args.dir else Path(s.weights_dir)
    manifest = load_manifest(Path(args.manifest) if args.manifest else None)
    return manifest, weights_dir, list(s.enabled_jobs)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    lines = [line.rstrip() for line in lines]
    return "\n".join(lines)


def _cmd_weights_list(args: argparse.Namespace) -> int:
    manifest, weights_dir, enabled = _weights_context(args)
    rows = []
    for e in manifest:
        if e.required and set(e.required_for) & set(enabled):
            need = "required"
        else:
            need = "optional" if set(e.jobs) & set(enabled) else "-"
        rows.append(
            [
                e.name,
                e.display_size(),
                ",".join(e.jobs),
                need,
                "present" if e.is_present(weights_dir) else "missing",
                e.license,
            ]
        )
    print(_table(rows, ["name", "size", "jobs", "needed", "status", "licence"]))
    print(f"\nweights dir: {weights_dir.resolve()}  (FACEAPI_WEIGHTS_DIR)")
    print(f"enabled jobs: {', '.join(enabled) or '-'}  (FACEAPI_ENABLED_JOBS)")
    missing = manifest.missing(weights_dir, enabled)
    if missing:
        from app.weights.manifest import download_command

        print(f"missing required weights: {', '.join(e.name for e in missing)}")
        print(f"fetch them with: {download_command(missing)}")
    return EXIT_OK


def _resolve(manifest, names: list[str], include_optional: bool):
    try:
        return manifest.resolve(names, include_optional=include_optional)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return None


def _cmd_weights_download(args: argparse.Namespace) -> int:
    from app.weights.download import download
    from app.weights.manifest import WeightsError

    manifest, weights_dir, enabled = _weights_context(args)
    if args.names:
        entries = _resolve(manifest, args.names, args.all)
        if entries is None:
            return EXIT_USAGE
    else:
        entries = manifest.for_jobs(enabled) if args.all else manifest.required_for(enabled)
    if not entries:
        print("nothing to download")
        return EXIT_OK
    failed: list[str] = []
    for e in entries:
        print(f"{e.name}: {e.description} [{e.license}]", file=sys.stderr)
        try:
            download(e, weights_dir, progress=not args.no_progress)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed.append(e.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAIL
    print(f"done: {', '.join(e.name for e in entries)} in {weights_dir}")
    return EXIT_OK


def _cmd_weights_verify(args: argparse.Namespace) -> int:
    from app.weights.download import Status, verify

    manifest, weights_dir, enabled = _weights_context(args)
    if args.names:
        entries = _resolve(manifest, args.names, include_optional=True)
        if entries is None:
            return EXIT_USAGE
        must_exist = {e.name for e in entries}
    else:
        entries = list(manifest)
        must_exist = {e.name for e in manifest.required_for(enabled)}
    bad = missing = 0
    for e in entries:
        result = verify(e, weights_dir)
        print(str(result))
        if result.status is Status.MISSING:
            missing += e.name in must_exist
        elif not result.ok:
            bad += 1
    print(f"\n{len(entries)} checked, {bad} failed, {missing} required missing (in {weights_dir})")
    if bad or (args.strict and missing):
        return EXIT_FAIL
    return EXIT_OK


def _cmd_audit_find(args: argparse.Namespace) -> int:
    import json

    from app.audit import find, log_files

    digest = args.sha256.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        print("error: SHA256 is 64 hex digits (e.g. from `sha256sum FILE`)", file=sys.stderr)
        return EXIT_USAGE
    path = Path(args.log) if args.log else get_settings().audit_log_path()
    if path is None:
        print("error: the audit log is off (FACEAPI_AUDIT_LOG is empty); name one with --log", file=sys.stderr)
        return EXIT_USAGE
    files = log_files(path)
    as_output = as_input = 0
    for _f, entry, role in find(path, digest):
        print(json.dumps(entry, separators=(",", ":")))
        as_output += role == "output"
        as_input += role == "input"
    where = f"{path} and {len(files) - 1} rotated file(s)" if files else f"{path} (no such file)"
    if as_output:
        print(f"found: made by this server ({as_output} line(s) with it as an output; {where})", file=sys.stderr)
        return EXIT_OK
    if as_input:
        print(f"not made by this server: it only appears as an input ({as_input} line(s); {where})", file=sys.stderr)
    else:
        print(f"not found in {where}", file=sys.stderr)
    return EXIT_FAIL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="Face studio server and weights tool.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (uvicorn, settings from FACEAPI_*)")
    serve.add_argument("--host", help="override FACEAPI_HOST")
    serve.add_argument("--port", type=int, help="override FACEAPI_PORT")
    serve.add_argument("--workers", type=int, help="override FACEAPI_WORKERS")
    serve.set_defaults(func=_cmd_serve)

    weights = sub.add_parser("weights", help="list, download and verify model weights")
    weights.add_argument("--dir", help="weights directory (default: FACEAPI_WEIGHTS_DIR)")
    weights.add_argument("--manifest", help="manifest file (default: weights/manifest.toml of this repository)")
    wsub = weights.add_subparsers(dest="weights_command", required=True)

    wl = wsub.add_parser("list", help="every file of the manifest and whether it is present")
    wl.set_defaults(func=_cmd_weights_list)

    wd = wsub.add_parser(
        "download",
        help="download weights (resumable, checksum-verified)",
        description="NAMES are weight names or job names (" + ", ".join(JOBS) + "). A job stands for its required "
        "files (all of its files with --all). Without NAMES: the required files of FACEAPI_ENABLED_JOBS.",
    )
    wd.add_argument("names", nargs="*", metavar="NAME", help="job or weight name")
    wd.add_argument("--all", action="store_true", help="include optional files of the jobs")
    wd.add_argument("--no-progress", action="store_true", help="no progress bar")
    wd.set_defaults(func=_cmd_weights_download)

    wv = wsub.add_parser(
        "verify",
        help="check sizes and sha256 of present files",
        description="Exit 1 when a present file fails its check. Missing files are reported; with --strict a "
        "missing required file (of the named entries, or of FACEAPI_ENABLED_JOBS) fails too.",
    )
    wv.add_argument("names", nargs="*", metavar="NAME", help="job or weight name (default: every entry)")
    wv.add_argument("--strict", action="store_true", help="missing required files fail too")
    wv.set_defaults(func=_cmd_weights_verify)

    keys = sub.add_parser("keys", help="API keys: hash a key for FACEAPI_API_KEYS(_FILE), or make a new one")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    kh = ksub.add_parser("hash", help="print sha256:<hex> of KEY (or of stdin's first line), the form a keys "
                         "file stores")
    kh.add_argument("key", nargs="?", help="the key (omit it to read stdin and keep it out of shell history)")
    kh.set_defaults(func=_cmd_keys_hash)
    kn = ksub.add_parser("new", help="make a random key: the key on stderr, its keys-file line on stdout")
    kn.set_defaults(func=_cmd_keys_new)

    audit = sub.add_parser("audit", help="search the audit log (FACEAPI_AUDIT_LOG)")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    af = asub.add_parser("find", help="did this server make this file? Prints the lines naming SHA256 (rotated "
                         "files included); exit 0 when it is an output, 1 when not (also when only an input)")
    af.add_argument("sha256", metavar="SHA256", help="the file's SHA-256 in hex (`sha256sum FILE`)")
    af.add_argument("--log", help="the audit log (default: FACEAPI_AUDIT_LOG, else FACEAPI_DATA_DIR/audit.log)")
    af.set_defaults(func=_cmd_audit_find)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted; partial downloads are kept and resume next time", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
