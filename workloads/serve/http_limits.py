"""Limits on a request's head (request line and headers) for the model server's HTTP/1.1:
size, header count and the time to send it; an over-limit request is answered 431 (Request
Header Fields Too Large) or 408 (Request Timeout) and its connection closed.

uvicorn parses HTTP with httptools (llhttp) when it is installed, as it is here, and neither
offers these limits: httptools buffers a header of any size before its `on_header` callback
(uvicorn's maintainers: "httptools does have a mechanism similar to max-incomplete-event-size,
but we can't change the value", encode/uvicorn#157; MagicStack/httptools#87), and uvicorn's
only timeout, `timeout_keep_alive`, runs between requests and is cancelled by every byte
received, so a client trickling a head holds its connection for ever (the slowloris attack).
h11's `max_incomplete_event_size` bounds the head's size, but h11 parses in Python (slower) and
has no timeout either. So `limited_protocol` subclasses uvicorn's httptools protocol: it counts
the bytes of an unfinished head as they arrive (before httptools buffers more than a read's
worth past the limit), checks each header's size and the count as httptools reports them, and
arms a timer for each head.
"""

from __future__ import annotations

import asyncio
import http
import json
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: After an error answer, how long the connection still reads (and drops) what the client
#: sends before closing: closing a socket with unread data resets it, and a reset can reach the
#: client before it has read the answer (nginx's "lingering close" does the same).
LINGER_S = 2.0
_TOO_LARGE = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


@dataclass(frozen=True)
class HttpLimits:
    """The limits on a request's head; defaults as common servers choose them."""

    #: One header line, name and value (gunicorn's limit_request_field_size is 8190; nginx's
    #: large_client_header_buffers reads lines of up to 8 KiB).
    max_header_line_bytes: int = 8 * 1024
    #: The request line and every header together: room for several large tokens or cookies,
    #: still bounded (h11's default is 16 KiB, nginx's 4 x 8 KiB).
    max_header_bytes: int = 64 * 1024
    #: Header lines in one request (gunicorn's limit_request_fields).
    max_headers: int = 100
    #: Seconds from a request's first byte (or a new connection) to the end of its headers:
    #: far more than any client on a cluster network needs, and it frees a slowloris
    #: connection within seconds (nginx's client_header_timeout is 60 s; Go servers are
    #: often given 2 to 10 s as ReadHeaderTimeout).
    header_timeout_s: float = 10.0


class _LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `limits` on each request's head."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # True from a connection's start, and again once a request's body is complete, until
        # the next request's headers are complete.
        self._reading_head = True
        # Bytes received since the head began, and the headers' bytes as parsed.
        self._head_bytes = self._header_bytes = 0
        self._header_count = 0
        self._header_timer: TimerHandle | None = None
        # Set once an error was answered: whatever follows is dropped.
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.parser is None:  # None: the connection was lost.
            return
        if self._reading_head:
            self._arm_header_timer()
            self._head_bytes += len(data)
        # uvicorn's own data_received, except that a limit's check in a parser callback
        # answers with its own status (uvicorn answers any parser error 400, with a warning).
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self._refused:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        # Checked after parsing, on a head still unfinished: a read that ends the head and
        # carries the body too is not counted whole (`on_header` counts that head), and
        # httptools never holds more than the limit and one read of an unfinished head.
        if self._reading_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(_TOO_LARGE, self._too_large(f"exceed {self.limits.max_header_bytes}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        limits = self.limits
        if self._header_count > limits.max_headers:
            self._refuse_in_parser(
                f"the request has more than {limits.max_headers} headers; fix: send fewer"
            )
        if len(name) + len(value) > limits.max_header_line_bytes:
            self._refuse_in_parser(
                f"header {name[:64].decode('latin-1')!r} exceeds "
                f"{limits.max_header_line_bytes} bytes; fix: send smaller headers"
            )
        if self._header_bytes > limits.max_header_bytes:
            self._refuse_in_parser(self._too_large(f"exceed {limits.max_header_bytes}"))
        super().on_header(name, value)

    @staticmethod
    def _too_large(how: str) -> str:
        return f"the request's headers {how} bytes; fix: send fewer or smaller headers"

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = self._header_bytes = self._header_count = 0
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading_head = True
        super().on_message_complete()

    def _refuse_in_parser(self, reason: str) -> None:
        """Answer 431 and stop the parser (its callback's error ends `feed_data`)."""
        self._refuse(_TOO_LARGE, reason)
        raise _RefusedError(reason)

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout_s, self._on_header_timeout
            )

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._reading_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's head is late while an answer is still being written:
            # finish that answer, then close (as uvicorn's shutdown does).
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self._refuse(
            http.HTTPStatus.REQUEST_TIMEOUT,
            f"the request's headers took more than {self.limits.header_timeout_s:g} s; "
            "fix: send the request at once",
        )

    def _refuse(self, status: http.HTTPStatus, reason: str) -> None:
        """Answer `status` with the API's JSON error, then close after a linger."""
        self._refused = True
        self._disarm_header_timer()
        body = json.dumps({"error": reason}).encode()
        head = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


class _RefusedError(Exception):
    """Raised in a parser callback to stop parsing a refused request."""


def limited_protocol(limits: HttpLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol class with these limits (for `uvicorn.Config(http=...)`)."""
    return type("LimitedHttpToolsProtocol", (_LimitedHttpToolsProtocol,), {"limits": limits})
