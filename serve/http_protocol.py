"""uvicorn's httptools protocol with the limits a server facing the open internet needs.

uvicorn (0.54) and httptools have none of these for HTTP/1.1: httptools (llhttp) accepts request
heads of any size, and builds them by repeated concatenation (cost growing faster than the size,
memory held until the head ends - issue 22 measured it); uvicorn's only timer is
``timeout_keep_alive``, armed *after* a response, so a connection that sends nothing, or half a
head, or a declared body that never comes, is held as long as the client likes; and its
``limit_concurrency`` answers 503 to every request once the worker holds that many connections -
``/health`` included, which is what a flood of idle sockets must not achieve. h11 (uvicorn's other
protocol) does have a head limit (``h11_max_incomplete_event_size``) but answers 400 rather than
431, has no deadlines either, and is pure Python: the hot path would be slower for every request.
So this subclass adds, per connection, on top of httptools:

- **431** once a request's head (request line + headers) passes ``max_header_bytes``, counted as
  the bytes arrive, before httptools buffers more;
- **408** and the connection closed when the head has not arrived ``header_timeout_s`` after the
  connection opened (or after the request's first byte, on a kept-alive connection), or the body
  ``body_timeout_s`` after the head (the application sees a client disconnect and stops reading);
- a cap, ``max_connections`` per worker: at the cap, a new connection closes the oldest one that is
  not in the middle of a request (waiting for its head, or idle between requests), so slow or idle
  clients make way for the next one - ``/health`` keeps answering - and the worker never runs out
  of file descriptors. Only when every connection is mid-request is the new one turned away.

The limits are the service's settings (``AUTOOPS_MAX_HEADER_BYTES`` etc., serve/settings.py), read
once per worker process: uvicorn builds its protocol from the import string ``python -m serve`` gives
it (``http="serve.http_protocol:GuardedHttpToolsProtocol"``), in each worker.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from serve.settings import Settings

# Set in a request's ASGI scope when its body missed the deadline: the application's disconnect
# handler logs it and counts a 408 (the client was sent the 408 by then).
BODY_TIMED_OUT = "autoops.body_timed_out"

# The key of the service's metrics in the lifespan state (serve/app.py), which uvicorn hands to
# every protocol instance as ``app_state``.
METRICS_STATE = "autoops.metrics"

log = logging.getLogger("serve.http")


class HeadTooLarge(Exception):
    """Raised from a parser callback once a request head is known to be over the limit."""


class Phase(enum.Enum):
    IDLE = "waiting for a request"
    HEAD = "reading the head"
    BODY = "reading the body"
    HANDLING = "handling the request"
    CLOSING = "refused: discarding what still arrives"


# How long a refused connection is drained before it is closed (see _answer_and_close).
LINGER_S = 1.0


@functools.cache
def _limits() -> Settings:
    return Settings.from_env()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _limits()
        self.max_head = settings.max_header_bytes
        self.header_timeout = settings.header_timeout_s
        self.body_timeout = settings.body_timeout_s
        self.max_connections = settings.max_connections
        self.phase = Phase.IDLE
        # Bytes received since the current head began (counted before httptools sees them).
        self.head_bytes = 0
        # The deadline armed now, and for which phase (HEAD or BODY).
        self.deadline: asyncio.TimerHandle | None = None
        self.deadline_phase: Phase | None = None
        # Since when this connection has been waiting for a request's head (None: mid-request):
        # the connection cap closes the longest-waiting one first.
        self.waiting_since: float | None = time.monotonic()

    # --- the connection cap ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections and not self._make_room():
            log.info("connection refused: %d connections open, all mid-request", len(self.connections))
            self._count("turned_away")
            self.transport = transport  # connection_lost closes it
            transport.abort()
            return
        super().connection_made(transport)
        # From the connection's start: one that never sends a byte is closed too.
        self._arm(Phase.HEAD)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request; False if none waits."""
        waiting = [c for c in self.connections if getattr(c, "waiting_since", None) is not None]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.waiting_since)  # type: ignore[attr-defined]
        oldest.transport.close()
        self.connections.discard(oldest)  # counted out now, not when the loop gets to it
        self._count("made_room")
        return True

    def _count(self, reason: str) -> None:
        metrics = self.app_state.get(METRICS_STATE)
        if metrics is not None:
            metrics.refused.labels(reason).inc()

    def eof_received(self) -> bool | None:
        if self.phase is Phase.CLOSING:
            self.transport.close()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.waiting_since = None
        super().connection_lost(exc)

    # --- bytes in: the head's size, and which deadline applies ---------------------------------------------

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, plus the head limit; the parser callbacks below move the phase.
        if self.phase is Phase.CLOSING:
            return
        self._unset_keepalive_if_required()
        if self.phase is Phase.IDLE or self.phase is Phase.HEAD:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._count("head_too_large")
                self._answer_and_close(431, f"request head over {self.max_head} bytes")
            else:
                self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # no WebSockets here
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        # Timers only when a request spans several reads: one that arrives whole (the usual case)
        # never arms one.
        if self.phase is Phase.HEAD:
            if self.head_bytes > self.max_head:  # every byte so far belongs to the head
                self._count("head_too_large")
                self._answer_and_close(431, f"request head over {self.max_head} bytes")
            elif self.deadline_phase is not Phase.HEAD:
                self._arm(Phase.HEAD)
        elif self.phase is Phase.BODY:
            if self.deadline_phase is not Phase.BODY:
                self._arm(Phase.BODY)
        elif self.deadline is not None and self.phase is Phase.HANDLING:
            self._disarm()

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase = Phase.HEAD

    def on_headers_complete(self) -> None:
        if self.head_bytes > self.max_head and self._exact_head_bytes() > self.max_head:
            raise HeadTooLarge
        self.phase = Phase.BODY
        self.head_bytes = 0
        self.waiting_since = None
        super().on_headers_complete()

    def _exact_head_bytes(self) -> int:
        # Only when the read that completed the head took the count over the limit: that read
        # may also hold the start of the body.
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def on_message_complete(self) -> None:
        self.phase = Phase.HANDLING
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.phase is Phase.HANDLING and not self.pipeline:
            self.phase = Phase.IDLE
            self.waiting_since = time.monotonic()

    # --- deadlines ---------------------------------------------------------------------------------------

    def _arm(self, phase: Phase) -> None:
        self._disarm()
        if phase is Phase.HEAD:
            self.deadline = self.loop.call_later(self.header_timeout, self._head_timed_out)
        else:
            self.deadline = self.loop.call_later(self.body_timeout, self._body_timed_out)
        self.deadline_phase = phase

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
            self.deadline_phase = None

    def _head_timed_out(self) -> None:
        self.deadline = self.deadline_phase = None
        if self.phase in (Phase.IDLE, Phase.HEAD) and not self.transport.is_closing():
            # A connection that never sent a byte (a browser's preconnect, a port scan) is routine:
            # logged at debug level only.
            silent = self.phase is Phase.IDLE
            self._count("nothing_sent" if silent else "head_timeout")
            self._answer_and_close(
                408, f"request head not received within {self.header_timeout:g} s", quiet=silent
            )
            if silent:
                log.debug("closed a connection that sent nothing in %g s", self.header_timeout)

    def _body_timed_out(self) -> None:
        self.deadline = self.deadline_phase = None
        cycle = self.cycle
        if self.phase is not Phase.BODY or cycle is None or self.transport.is_closing():
            return
        if not cycle.response_started:
            # The application logs this one (it sees the disconnect below, and the flag).
            self.scope[BODY_TIMED_OUT] = True  # type: ignore[literal-required]
            self._answer_and_close(
                408, f"request body not received within {self.body_timeout:g} s", quiet=True
            )
        else:  # answered already (a 413, say): only the rest of the body was awaited
            self.transport.close()
        # The application, if it is still reading, gets a disconnect and stops.
        cycle.disconnected = True
        cycle.message_event.set()

    def _answer_and_close(self, status: int, message: str, *, quiet: bool = False) -> None:
        """Send ``status`` and close - after a short drain: closing a socket with unread bytes makes
        the kernel reset the connection, which can destroy the answer before the client reads it
        (a client still sending its 5 MB header would see a reset, not the 431)."""
        body = message.encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.phase = Phase.CLOSING
        self._disarm()
        self.waiting_since = None
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()
        if not quiet:
            client = f"{self.client[0]}:{self.client[1]} " if self.client else ""
            log.info("%s%d: %s", client, status, message)
