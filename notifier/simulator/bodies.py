"""The documented error bodies: service errors ({type,title,detail,errors}) and gateway errors."""

from __future__ import annotations

from typing import Any

BAD_INPUT_TITLE = "One or more input values in the request were bad"
AUTH_MORE_INFO = "https://aps.autodesk.com/en/docs/oauth/v2/developers_guide/error_handling/"


class ApiError(Exception):
    """An HTTP error answer: status, JSON body and extra headers."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def field_error(name: str, detail: str, title: str = "Invalid parameter") -> dict[str, str]:
    return {"field": name, "title": title, "detail": detail, "type": "BadInput"}


def service_error(type_: str, title: str, detail: str,
                  errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"type": type_, "title": title, "detail": detail, "errors": errors or []}


def bad_input(errors: list[dict[str, str]]) -> ApiError:
    names = ", ".join(dict.fromkeys(e["field"] for e in errors))
    return ApiError(400, service_error(
        "BadInput", BAD_INPUT_TITLE, f"The following parameters are invalid: {names}", errors))


def bad_field(name: str, detail: str) -> ApiError:
    return bad_input([field_error(name, detail)])


def not_found(name: str, value: str, what: str) -> ApiError:
    return ApiError(404, service_error(
        "NotFound", "The requested resource was not found", f"{what} '{value}' was not found",
        [field_error(name, f"No {what.lower()} with id '{value}'.", "Not found")]))


def unsupported_media_type(got: str) -> ApiError:
    return ApiError(415, service_error(
        "UnsupportedMediaType", "Unsupported media type",
        f"Content-Type must be application/json, not '{got or '(none)'}'",
        [field_error("Content-Type", "Expected application/json.", "Invalid header")]))


def forbidden(detail: str) -> ApiError:
    return ApiError(403, service_error("Forbidden", "Access denied", detail))


def injected_server_error() -> ApiError:
    return ApiError(500, service_error(
        "InternalServerError", "An unexpected error occurred",
        "The server encountered an internal error (simulator fail_rate)."))


def gateway(status: int, developer_message: str, error_code: str) -> ApiError:
    return ApiError(status, {
        "developerMessage": developer_message,
        "userMessage": "",
        "errorCode": error_code,
        "more info": AUTH_MORE_INFO,
    })


def rate_limited(retry_after: int) -> ApiError:
    return ApiError(429, {"developerMessage": "Quota limit exceeded."},
                    {"Retry-After": str(retry_after)})


def oauth_error(status: int, error: str, description: str) -> ApiError:
    return ApiError(status, {"error": error, "error_description": description})
