"""What the study page and the personalization page share: where they may listen, the study token, request
bodies read with a size limit, one-line JSON errors, and the headers every page is sent with."""

from __future__ import annotations

import hmac
import ipaddress
import json

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse

from rlphf_cli.errors import UserError

# the pages load nothing from elsewhere and run only their own inline script
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class BadRequest(Exception):
    """A request refused with a 4xx status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, port: int, token: str | None, key: str) -> None:
    """A page bound to anything but loopback needs a token: raters elsewhere get the link with it."""
    if not 0 < port < 65536:
        raise UserError(f"{key}.port must be 1 to 65535; got {port}")
    if not is_loopback(host) and not token:
        raise UserError(
            f"{key}.host={host} is not a loopback address: set {key}.token=<a long random string> "
            f"(raters then open http://{host}:{port}/?token=...), or keep {key}.host=127.0.0.1"
        )
    if token is not None and len(str(token)) < 8:
        raise UserError(f"{key}.token must be at least 8 characters")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)


def ok(body: dict) -> JSONResponse:
    return JSONResponse(body, headers=SECURITY_HEADERS)


def page(html: str) -> HTMLResponse:
    return HTMLResponse(html, headers=SECURITY_HEADERS)


def check_token(request: Request, token: str | None) -> None:
    if not token:
        return
    given = request.query_params.get("token") or request.headers.get("x-study-token") or ""
    if not hmac.compare_digest(given.encode(), str(token).encode()):
        raise BadRequest(403, "this page needs the study's token (?token=...)")


async def json_body(request: Request, limit: int) -> dict:
    """The request's JSON object, refusing a body over `limit` bytes before it is parsed."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadRequest(413, f"the request body is over {limit} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise BadRequest(413, f"the request body is over {limit} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "the request body must be a JSON object")
    return body


def serve_app(app, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_config=None, log_level="warning")
