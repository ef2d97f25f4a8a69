"""/swap_url: one source against many targets stored in a bucket; results written back beside them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import anyio
import anyio.to_thread

from app import audit
from app.errors import ApiError, TooLargeError
from app.inference import InferencePool
from app.services.common import Timings
from app.services.faceswap import Sources, SwapContext, check_enhancement, load_sources, swap_target
from app.storage import Bucket, StorageNotFound, StorageTooLarge, StorageUnavailable, UnsafePath, safe_name

log = logging.getLogger("app.swap_url")


@dataclass
class SwapUrlOutcome:
    backend: str
    urls: list[str]
    failed: list[dict[str, str]] = field(default_factory=list)


def _unavailable(exc: StorageUnavailable) -> ApiError:
    return ApiError(503, "storage_unavailable", exc.message)


def check_names(face_filename: str, model_filenames: list[str]) -> None:
    """Every name is validated before any work: one that would escape the bucket fails the whole request (400)."""
    try:
        safe_name(face_filename, "face_filename")
        for i, name in enumerate(model_filenames):
            safe_name(name, f"model_filenames[{i}]")
    except UnsafePath as exc:
        raise ApiError(400, "unsafe_path", f"{exc.field}: {exc.reason}", exc.field) from None


async def swap_url(pool: InferencePool, bucket: Bucket, ctx: SwapContext, face_filename: str,
                   model_filenames: list[str], max_bytes: int, concurrency: int) -> SwapUrlOutcome:
    check_names(face_filename, model_filenames)
    check_enhancement(ctx)
    try:
        source = await anyio.to_thread.run_sync(lambda: bucket.read(face_filename, max_bytes, "face_filename"))
    except StorageNotFound:
        raise ApiError(404, "not_found", f"face_filename {face_filename!r} is not in the bucket", "face_filename") \
            from None
    except StorageTooLarge as exc:
        raise TooLargeError("face_filename", f"face_filename is {exc.size} bytes, over {exc.limit}") from None
    except StorageUnavailable as exc:
        raise _unavailable(exc) from None
    except UnsafePath as exc:  # e.g. a symlink inside the bucket pointing out of it
        raise ApiError(400, "unsafe_path", f"face_filename: {exc.reason}", "face_filename") from None
    audit.add_input(face_filename, source)
    backend = ctx.backend
    try:
        sources: Sources = await pool.run(load_sources, ctx, backend, [source], Timings())
    except ApiError as exc:  # no face / not an image: the whole request fails
        raise ApiError(400 if exc.status in (415, 422) else exc.status, exc.code, exc.message, exc.field) from None

    ext = "jpg" if (ctx.format == "jpeg") else ctx.format
    results: list[str | None] = [None] * len(model_filenames)
    errors: list[str | None] = [None] * len(model_filenames)
    limiter = anyio.Semaphore(concurrency)

    async def one(i: int, name: str) -> None:
        field_name = f"model_filenames[{i}]"
        async with limiter:
            try:
                data = await anyio.to_thread.run_sync(lambda: bucket.read(name, max_bytes, field_name))
                audit.add_input(name, data)
                target_ctx = replace(ctx, target_field=field_name)
                # The request was admitted once (its source analysis); its targets wait for a slot, never "busy".
                result = await pool.run(swap_target, target_ctx, sources, data, admit=False)
                written = await anyio.to_thread.run_sync(
                    lambda: bucket.write_result(name, result.content, ext, field_name)
                )
                results[i] = bucket.url_for(written)
                audit.add_output(written, result.content, result.media_type)
            except StorageNotFound:
                errors[i] = f"{field_name} {name!r} is not in the bucket"
            except StorageTooLarge as exc:
                errors[i] = f"{field_name} is {exc.size} bytes, over the limit of {exc.limit}"
            except ApiError as exc:
                errors[i] = exc.message
            except StorageUnavailable as exc:
                errors[i] = f"storage unavailable: {exc.message}"
            except UnsafePath as exc:
                errors[i] = f"{field_name}: {exc.reason}"
            except Exception:  # noqa: BLE001 - one broken target must not sink the others (or their results)
                log.exception("swap_url target failed", extra={"target": name})
                errors[i] = f"{field_name}: internal error while processing this file (logged)"

    async with anyio.create_task_group() as tg:
        for i, name in enumerate(model_filenames):
            tg.start_soon(one, i, name)
    return SwapUrlOutcome(
        backend=sources.backend,
        urls=[u for u in results if u is not None],
        failed=[{"filename": n, "error": e} for n, e in zip(model_filenames, errors, strict=True) if e is not None],
    )
