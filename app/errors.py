"""Errors the API reports, and the handlers that turn every failure into ``{"error": {...}}`` JSON."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("app.errors")


class ErrorDetail(BaseModel):
    code: str = Field(..., examples=["no_face"])
    message: str = Field(..., examples=["no face was found in source_image"])
    field: str | None = Field(None, examples=["source_image"], description="The request field at fault, when one is.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """An error with an HTTP status, a stable machine code and the request field it concerns."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


class NoFaceError(ApiError):
    def __init__(self, field: str, detail: str = "") -> None:
        super().__init__(422, "no_face", f"no face was found in {field}{detail}", field)


class UnsupportedMediaError(ApiError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(415, "unsupported_media_type", message, field)


class TooLargeError(ApiError):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(413, "too_large", message, field)


class InvalidMediaError(ApiError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(422, "invalid_media", message, field)


class ServiceUnavailableError(ApiError):
    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        super().__init__(503, code, message, None, headers)


def validation_error(exc: ValidationError, prefix: str | None = None) -> ApiError:
    """The first error of a pydantic validation as a 422 naming its field (``prefix`` for nested documents)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if prefix is not None:
        return ApiError(422, "invalid_field", f"{prefix}[{where}]: {err['msg']}", prefix)
    return ApiError(422, "invalid_field", f"{where}: {err['msg']}", where or None)


def error_json(
    status: int, code: str, message: str, field: str | None = None, headers: dict | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field_of(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form", "cookie")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_json(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        msg = first.get("msg", "invalid value")
        if first.get("type") == "json_invalid":  # the position in the text is no field: one error for any bad JSON
            return error_json(400, "invalid_body", "the request body is not valid JSON", None)
        if first.get("type") == "missing":
            return error_json(422, "missing_field", f"{field} is required", field)
        return error_json(422, "invalid_field", f"{field}: {msg}" if field else msg, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 400 here comes from the multipart parser (a form field over 1 MiB, over 1000 fields, a broken body)
        code = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error")
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == "There was an error parsing the body":  # FastAPI: bad UTF-8, nesting
            detail = "the request body is not valid JSON (invalid UTF-8 or nested too deep)"
        return error_json(exc.status_code, code, detail, None, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        rid = getattr(request.state, "request_id", None)
        return error_json(500, "internal_error", f"internal error (request id {rid})")


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses=`` entries for the given error statuses, all with the ErrorResponse body."""
    text = {
        400: "`invalid_body`: a body that cannot be parsed (broken multipart framing, a text field over 1 MiB, "
             "more than 1000 fields, malformed JSON or invalid UTF-8)",
        404: "Not found",
        413: "Upload too large (bytes) or image has too many pixels",
        415: "The file is not a supported image (bytes are sniffed, not the name)",
        422: "Invalid field, corrupt file or no face found; `field` names the culprit",
        429: "Too many requests",
        503: "Busy (Retry-After), still loading, or the backend's weights are not downloaded",
    }
    examples = {
        400: ("invalid_body", "the multipart body could not be parsed", None),
        404: ("not_found", "not found", None),
        413: ("too_large", "target_image is 8000×6000 = 48000000 pixels, over the limit of 40000000", "target_image"),
        415: ("unsupported_media_type", "source_image is not a supported image (JPEG, PNG, WebP, BMP, TIFF, GIF)",
              "source_image"),
        422: ("no_face", "no face was found in source_image", "source_image"),
        429: ("too_many_requests", "too many requests", None),
        503: ("busy", "all 2 inference slots are busy and 16 requests already wait", None),
    }
    out: dict[int | str, dict] = {}
    for status in statuses:
        code, message, field = examples.get(status, ("error", "error", None))
        out[status] = {
            "model": ErrorResponse,
            "description": text.get(status, "Error"),
            "content": {"application/json": {"example": {"error": {"code": code, "message": message,
                                                                   "field": field}}}},
        }
    return out
