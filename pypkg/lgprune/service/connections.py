"""What one client may hold of `lgprune serve`: uvicorn's HTTP/1.1 protocol (h11) with

* a deadline for a request's header (from the moment the connection opens, or the last
  answer on it ends) and one for its body (from the end of its header): a client that
  sends part of either is closed when it passes, whether or not it has the token, which
  is only checked once the header is complete;
* a cap on open connections, below the process's file limit: past it a new connection is
  answered 503 and closed at once (so asyncio never meets "Too many open files"), with one
  log line, at most once a minute, instead of one per connection;
* uvicorn's own `400 Invalid HTTP request received.` (a malformed request line, a bad
  `Content-Length`, two `Host` headers) in the service's error shape, with its headers,
  and its log line about it at most once a minute (`InvalidRequestsLogged`).

uvicorn takes it as `uvicorn.Config(app, http=bounded(Bounds(...)))`.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from lgprune.service.guard import answer

LOG_EVERY = 60.0  # seconds between two lines about the cap
log = logging.getLogger("lgprune")


@dataclass
class Bounds:
    """The limits, and what the cap refused (shared by every connection of one server)."""

    max_connections: int
    header_timeout: float  # seconds
    body_timeout: float  # seconds
    refused: int = 0  # connections refused at the cap, since the server started
    logged: float | None = None  # time.monotonic() of the last line about the cap

    def refuse(self, open_connections: int) -> None:
        """Count a connection refused at the cap; log a line unless one went out lately."""
        self.refused += 1
        now = time.monotonic()
        if self.logged is None or now - self.logged >= LOG_EVERY:
            log.warning(
                "lgprune: %d connections are open, the most --max-connections allows: new ones are "
                "answered 503 and closed until some end (%d refused so far)",
                open_connections - 1,
                self.refused,
            )
            self.logged = now


class InvalidRequestsLogged(logging.Filter):
    """For uvicorn's own logger: its "Invalid HTTP request received." (one per malformed
    request, which anyone who connects can send by the thousand) at most once a minute."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Invalid HTTP request received.":
            return True
        now = time.monotonic()
        if self.logged is not None and now - self.logged < LOG_EVERY:
            return False
        self.logged = now
        return True


def raw_answer(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 answer in the service's error shape, for a connection with no
    request parsed yet."""
    headers, body = answer(status, message)
    head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode()]
    head += [name + b": " + value for name, value in headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the bounds above (`bounded` makes the class for a server)."""

    bounds: ClassVar[Bounds]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline: asyncio.TimerHandle | None = None
        self.waiting_for: str | None = None  # "header", "body", or None: nothing is being read

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.bounds.max_connections:
            self.bounds.refuse(len(self.connections))
            transport.write(raw_answer(503, "too many connections are open: try again later"))
            transport.close()
            return
        self.watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.arm(None)
        super().connection_lost(exc)

    def watch(self) -> None:
        """Arm the deadline of what the client is sending now (h11's view of its side)."""
        state = self.conn.their_state
        self.arm("header" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None)

    def arm(self, waiting_for: str | None) -> None:
        if waiting_for == self.waiting_for:
            return  # a deadline runs from the start of a header or body, not from its last byte
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        self.waiting_for = waiting_for
        if waiting_for is not None and not self.transport.is_closing():
            seconds = self.bounds.header_timeout if waiting_for == "header" else self.bounds.body_timeout
            self.deadline = self.loop.call_later(seconds, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot parse, in the service's error shape."""
        headers, body = answer(400, msg.rstrip("."))
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


def bounded(bounds: Bounds) -> type[BoundedH11Protocol]:
    """The protocol class for one server's `bounds` (uvicorn makes one instance per connection)."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"bounds": bounds})
