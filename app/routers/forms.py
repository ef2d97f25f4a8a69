"""Swap options as multipart form fields (or query parameters, as the seed clients send them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Form, Request
from pydantic import ValidationError

from app.errors import ApiError
from app.schemas import Backend, Direction, ImageFormat, Mode, SwapOptions

OPTION_FIELDS = tuple(SwapOptions.model_fields)


def _describe(name: str) -> str:
    return SwapOptions.model_fields[name].description or ""


async def reject_unknown_fields(request: Request, allowed: set[str], query: bool = True) -> None:
    """422 naming the first form field (or query parameter) the endpoint does not know, so a typo never silently
    falls back to a default. ``query=False``: the endpoint reads form fields only, so any query parameter is
    refused rather than ignored."""
    form = await request.form()
    for key in form.keys():
        if key not in allowed:
            raise ApiError(422, "unknown_field", f"unknown field {key!r}; known: {', '.join(sorted(allowed))}", key)
    for key in request.query_params.keys():
        if not query or key not in allowed:
            where = "a form field" if key in allowed else "an unknown field"
            raise ApiError(422, "unknown_field", f"query parameter {key!r} is {where}; send options as form fields",
                           key)


def validation_error(exc: ValidationError, prefix: str | None = None) -> ApiError:
    """The first error of a pydantic validation as a 422 naming its field (``prefix`` for nested documents)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if prefix is not None:
        return ApiError(422, "invalid_field", f"{prefix}[{where}]: {err['msg']}", prefix)
    return ApiError(422, "invalid_field", f"{where}: {err['msg']}", where or None)


def swap_options(file_fields: tuple[str, ...]) -> Callable[..., Awaitable[SwapOptions]]:
    """A dependency that reads the swap options from form fields, else from the query string; refuses any field
    the endpoint does not know (422 naming it) so a typo never silently falls back to a default."""
    allowed = set(file_fields) | set(OPTION_FIELDS)

    async def dependency(
        request: Request,
        mode: Annotated[Mode | None, Form(description=_describe("mode"))] = None,
        direction: Annotated[Direction | None, Form(description=_describe("direction"))] = None,
        face_refinement_steps: Annotated[
            int | None, Form(ge=1, le=5, description=_describe("face_refinement_steps"))
        ] = None,
        use_codeformer: Annotated[bool | None, Form(description=_describe("use_codeformer"))] = None,
        codeformer_fidelity: Annotated[
            float | None, Form(ge=0.0, le=1.0, description=_describe("codeformer_fidelity"))
        ] = None,
        background_enhance: Annotated[bool | None, Form(description=_describe("background_enhance"))] = None,
        face_upsample: Annotated[bool | None, Form(description=_describe("face_upsample"))] = None,
        upscale: Annotated[int | None, Form(ge=1, le=4, description=_describe("upscale"))] = None,
        backend: Annotated[Backend | None, Form(description=_describe("backend"))] = None,
        format: Annotated[ImageFormat | None, Form(description=_describe("format"))] = None,
    ) -> SwapOptions:
        await reject_unknown_fields(request, allowed)
        given = {k: v for k, v in locals().items() if k in OPTION_FIELDS and v is not None}
        for key in OPTION_FIELDS:
            if key not in given and key in request.query_params:
                given[key] = request.query_params[key]
        try:
            return SwapOptions.model_validate(given)
        except ValidationError as exc:
            raise validation_error(exc) from None

    return dependency
