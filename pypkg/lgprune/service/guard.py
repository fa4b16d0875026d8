"""What every request to `lgprune serve` passes before any route sees it, as plain ASGI:

* `Host` must be one the service answers to (where it listens, or `--allowed-host`; a Host
  without a port matches an entry on port 80 or 443, the defaults of http and https), so a
  DNS-rebinding page cannot reach it under its own name; `Origin`, when a browser sends
  one, must be the service itself (or an allowed host), so another site cannot post to it;
* a request another site's page makes (`Sec-Fetch-Site: cross-site` or `same-site`, which
  browsers send; another port of the same host is the same site) is refused, so that no
  `<img>` or `<script>` tag makes the service read the store; only a top-level navigation
  to the page `/` passes, marked (CACHED_ONLY) to be served from what the service already
  holds;
* a request with a body must say `Content-Type: application/json` (415): a cross-site
  form or a `no-cors` fetch cannot send that type, so a browser holding the token (HTTP
  Basic) cannot be made to prune;
* a body is at most `max_body` bytes: a longer `Content-Length` is refused before any of
  it is read (413), and a body without one stops being read at the limit;
* every answer carries `X-Content-Type-Options: nosniff`, `Cache-Control: no-store`,
  `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` and, unless the route set its
  own, `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
BODY_METHODS_EXEMPT = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
DEFAULT_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
FOREIGN_SITES = frozenset({"cross-site", "same-site"})
CACHED_ONLY = "lgprune.cached_only"  # in scope["state"]: answer from what is held, read nothing


class BodyTooLarge(Exception):
    """The body went past the limit while it was read."""


def split_host(text: str) -> tuple[str, int | None] | None:
    """('name', port) of a Host header or an allowed-host entry; None when malformed."""
    text = text.strip().lower()
    try:
        parts = urlsplit("//" + text)
        port = parts.port
    except ValueError:
        return None
    name = parts.hostname
    if not name or parts.username is not None or parts.path or parts.query:
        return None
    return (f"[{name}]" if ":" in name else name), port


def route_path(scope: Scope) -> str:
    """The path within this app (a mounted app's scope path may still hold its mount point)."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


class Guard:
    """ASGI middleware: the checks above, then the app."""

    def __init__(
        self,
        app: App,
        *,
        allowed_hosts: Sequence[str] | None = None,
        any_ip: bool = False,
        max_body: int = 8192,
    ) -> None:
        self.app, self.max_body, self.any_ip = app, max_body, any_ip
        self.given = allowed_hosts is not None
        entries = list(allowed_hosts) if allowed_hosts is not None else list(LOOPBACK_NAMES)
        self.allowed: list[tuple[str, int | None]] = []
        for entry in entries:
            parsed = split_host(entry)
            if parsed is None:
                raise ValueError(f"allowed host {entry!r} is not a host name or host:port")
            self.allowed.append(parsed)

    def host_ok(self, host: tuple[str, int | None]) -> bool:
        if self.any_ip and is_ip(host[0]):
            return True  # an address cannot be rebound by DNS
        # a Host without a port is on the scheme's default one: 80, or 443 behind a TLS proxy
        ports = (None, host[1]) if host[1] is not None else (None, *DEFAULT_PORTS.values())
        return any(name == host[0] and port in ports for name, port in self.allowed)

    def origin_ok(self, origin: str, host: tuple[str, int | None], scheme: str) -> bool:
        parts = urlsplit(origin)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            return False
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            return False
        name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        if (name, port) == (host[0], host[1] or DEFAULT_PORTS.get(scheme, 80)):
            return True  # the service's own page
        return self.given and any(n == name and p in (None, port) for n, p in self.allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope["method"])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = split_host(headers.get("host", ""))
        if host is None or not self.host_ok(host):
            shown = headers.get("host", "")[:100]
            await refuse(
                send, 403, f"Host {shown!r} is not one this service answers to (--allowed-host)", method
            )
            return
        origin = headers.get("origin")
        if origin is not None and not self.origin_ok(origin, host, scope.get("scheme", "http")):
            await refuse(send, 403, f"requests from {origin[:100]!r} are refused: cross-origin", method)
            return
        if headers.get("sec-fetch-site", "").strip().lower() in FOREIGN_SITES:
            navigation = (
                scope["method"] in ("GET", "HEAD")
                and route_path(scope) in ("", "/")
                and headers.get("sec-fetch-mode", "").strip().lower() == "navigate"
                and headers.get("sec-fetch-dest", "document").strip().lower() == "document"
            )
            if not navigation:
                site = headers["sec-fetch-site"][:20]
                await refuse(send, 403, f"requests made by another site's page are refused ({site})", method)
                return
            scope.setdefault("state", {})[CACHED_ONLY] = True
        if scope["method"] == "POST":  # (the one method a route reads a body for; others get 405)
            kind = headers.get("content-type", "").partition(";")[0].strip().lower()
            if kind != "application/json":
                await refuse(
                    send, 415, "the body must be JSON, sent with Content-Type: application/json", method
                )
                return
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                await refuse(send, 413, f"the body is over {self.max_body} bytes", method)
                return
        await self.app(scope, self.limited(receive), self.secured(send))

    def limited(self, receive: Receive) -> Receive:
        read = 0

        async def receive_within_limit() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_body:
                    raise BodyTooLarge(f"the body is over {self.max_body} bytes")
            return message

        return receive_within_limit

    @staticmethod
    def secured(send: Send) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                if DEFAULT_CSP[0] not in names:
                    headers.append(DEFAULT_CSP)
                message["headers"] = headers
            await send(message)

        return send_with_headers


def answer(status: int, message: str, method: str | None = None) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The service's one error shape, `{"error": ...}`, with its headers: for the checks
    here and for the answers the connection itself gives (`lgprune.service.connections`).
    A request that could delete (any method but GET, HEAD and OPTIONS; None: not known)
    is told that nothing was deleted."""
    told = message if method in BODY_METHODS_EXEMPT else f"{message}; nothing was deleted"
    body = json.dumps({"error": told}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
        DEFAULT_CSP,
    ]
    return headers, body


async def refuse(send: Send, status: int, message: str, method: str) -> None:
    """An error answer sent before any app."""
    headers, body = answer(status, message, method)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
