"""ASGI middleware of the service: the request body limit and the security headers."""

from __future__ import annotations

import json

from fastapi import Request

# The web page loads only its own files; media are shown from blob: URLs made by its script.
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
            "connect-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class BodyTooLarge(Exception):
    """A request body grew past the limit while it streamed in."""


def too_large(max_bytes: int) -> str:
    return (f"the request is larger than the limit of {max_bytes / 2**20:.0f} MiB — upload "
            "smaller files (shorter or downscaled video)")


class BodyLimit:
    """ASGI middleware: refuse a request body above ``max_bytes`` — from its Content-Length
    before reading anything, or while it streams in (chunked uploads)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    return await _send_json(send, 413 if declared > 0 else 400, too_large(
                        self.max_bytes) if declared > 0 else "the Content-Length header is not "
                        "a number — send a well-formed request")
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        return await self.app(scope, limited_receive, send)


async def _send_json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def security_headers(request: Request, call_next):
    """No sniffing, no referrer; the web page and its files get a strict CSP and no framing."""
    response = await call_next(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    path = request.url.path
    if path in ("/", "/docs", "/redoc") or path.startswith("/static/"):
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["X-Frame-Options"] = "DENY"
    return response
