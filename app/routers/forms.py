"""Job options as multipart form fields (or query parameters, as the seed clients send them), derived from the one
pydantic model that declares them."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Form, Request
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from app.errors import ApiError, validation_error

M = TypeVar("M", bound=BaseModel)


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


def _form_param(name: str, info: FieldInfo) -> inspect.Parameter:
    """One ``Form`` parameter mirroring a model field: its type, default, description and bounds, so /docs shows
    the option as the model declares it."""
    bounds = {attr: getattr(m, attr) for m in info.metadata
              for attr in ("ge", "gt", "le", "lt", "min_length", "max_length") if getattr(m, attr, None) is not None}
    form = Form(description=info.description, **bounds)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info.default,
                             annotation=Annotated[info.annotation, form])


def options_form(model: type[M], file_fields: tuple[str, ...], query: bool = True,
                 extra_fields: tuple[str, ...] = ()) -> Callable[..., Awaitable[M]]:
    """A dependency that reads ``model``'s fields from form fields (and, with ``query``, from query parameters, as
    the seed clients send them) and validates them with the model itself. The Form parameters, and so the /docs
    entries, are derived from the model: an option is declared once, on the model. Any field the endpoint does not
    know (not an option, not one of ``file_fields`` or ``extra_fields``) is refused with 422 naming it, so a typo
    never silently falls back to a default."""
    names = tuple(model.model_fields)
    allowed = set(file_fields) | set(names) | set(extra_fields)

    async def dependency(request: Request, **values: Any) -> M:
        await reject_unknown_fields(request, allowed, query=query)
        form = await request.form()  # parsed once per request by Starlette; only fields actually sent count
        given = {k: v for k, v in values.items() if k in form}
        if query:
            for key in names:
                if key not in given and key in request.query_params:
                    given[key] = request.query_params[key]
        try:
            return model.model_validate(given)
        except ValidationError as exc:
            raise validation_error(exc) from None

    params = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    params += [_form_param(name, info) for name, info in model.model_fields.items()]
    dependency.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return dependency
