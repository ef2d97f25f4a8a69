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


async def reject_unknown_fields(request: Request, allowed: set[str]) -> None:
    """422 naming the first form field or query parameter the endpoint does not know, so a typo never silently
    falls back to a default."""
    form = await request.form()
    for key in (*form.keys(), *request.query_params.keys()):
        if key not in allowed:
            raise ApiError(422, "unknown_field", f"unknown field {key!r}; known: {', '.join(sorted(allowed))}", key)


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
            err = exc.errors()[0]
            name = ".".join(str(p) for p in err["loc"]) or None
            raise ApiError(422, "invalid_field", f"{name}: {err['msg']}", name) from None

    return dependency
