"""Running the service: the app under uvicorn, bound to 127.0.0.1 unless told otherwise.

Slow and idle clients: uvicorn waits for a request's headers and body as long as a client
keeps its connection open, and refuses everyone (503) once ``limit_concurrency`` connections
are open. :func:`guarded_protocol` adds read deadlines to uvicorn's h11 protocol: a request's
headers must be complete within ``header_timeout`` seconds of the connection opening (or of
the previous response), and its body may pause no longer than ``body_timeout`` seconds
(while the app is not reading, the pause does not count); otherwise the connection is closed.
At the connection limit, a new connection closes the oldest one still waiting for request
headers, so idle connections can never lock the others out.
"""

from __future__ import annotations

import asyncio
import json
import logging

from kinemate.service.config import ServiceConfig

log = logging.getLogger("kinemate.service")

HEADER_TIMEOUT = 10.0  # seconds for a request's headers, from connect or the previous response
BODY_TIMEOUT = 30.0  # longest pause while a request body streams in
KEEP_ALIVE = 5.0  # an idle keep-alive connection is closed after this (uvicorn's own timer)
MAX_CONNECTIONS = 200


def guarded_protocol(header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT,
                     max_connections: int = MAX_CONNECTIONS) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with read deadlines and eviction of idle connections at the
    connection limit (see the module docstring); pass it as ``uvicorn.run(http=...)``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _phase: str | None = None  # "headers" (waiting for them), "body" (reading it) or None
        _phase_since = 0.0
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._update_deadline()
            if len(self.connections) >= max_connections:
                self._evict_oldest_idle()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._update_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._update_deadline()

        def connection_lost(self, exc) -> None:
            self._cancel_deadline()
            self._phase = None
            super().connection_lost(exc)

        # -- deadlines -----------------------------------------------------------------
        def _update_deadline(self) -> None:
            if self.transport.is_closing():
                return self._cancel_deadline()
            state = self.conn.their_state
            waiting_headers = state is h11.IDLE and (self.cycle is None
                                                     or self.cycle.response_complete)
            phase = "headers" if waiting_headers else "body" if state is h11.SEND_BODY else None
            if phase == "headers" and self._phase != "headers":  # from now on, not per byte
                self._arm(header_timeout)
            elif phase == "body":  # a pause: re-armed on every chunk
                self._arm(body_timeout)
            elif phase is None:
                self._cancel_deadline()
            if phase != self._phase:
                self._phase, self._phase_since = phase, self.loop.time()

        def _arm(self, seconds: float) -> None:
            self._cancel_deadline()
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _cancel_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self._phase is None:
                return
            if self._phase == "body" and self.flow.read_paused:  # the app is not reading
                return self._arm(body_timeout)
            what = (f"no complete request headers within {header_timeout:g} s"
                    if self._phase == "headers" else f"no request body data for {body_timeout:g} s")
            self._close(f"closed the connection from {self._peer()}: {what}")

        def _evict_oldest_idle(self) -> None:
            idle = [c for c in self.connections if c is not self
                    and getattr(c, "_phase", None) == "headers" and not c.transport.is_closing()]
            if idle:
                victim = min(idle, key=lambda c: c._phase_since)
                victim._close(f"closed the connection from {victim._peer()}: the server is at "
                              f"its limit of {max_connections} connections and it had sent no "
                              "request")

        def _close(self, message: str) -> None:
            log.info(message)
            self._cancel_deadline()
            self._phase = None
            self.connections.discard(self)
            self.transport.close()

        def _peer(self) -> str:
            return "%s:%d" % self.client if self.client else "a client"

        def send_400_response(self, msg: str) -> None:
            """A request that is not HTTP/1.1 (bad request line, header or chunk) gets a JSON
            error like every other error (uvicorn answers such requests in plain text)."""
            body = json.dumps({"detail": "the request is not valid HTTP/1.1 (its request line, "
                               "a header or the chunked body is malformed) — send a "
                               "well-formed request"}).encode()
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return GuardedH11Protocol


def serve(config: ServiceConfig, *, host: str = "127.0.0.1", port: int = 8000,
          runner=None, log_level: str = "info", header_timeout: float = HEADER_TIMEOUT,
          body_timeout: float = BODY_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> None:
    """Serve until interrupted. One process, one worker thread running jobs on the device.

    ``header_timeout``, ``body_timeout`` and ``max_connections``: see the module docstring."""
    import uvicorn

    from kinemate.service.app import create_app

    app = create_app(config, runner=runner)
    service_log = logging.getLogger("kinemate.service")
    service_log.setLevel(log_level.upper())
    if not service_log.handlers:  # job events with timestamps, next to uvicorn's lines
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        service_log.addHandler(handler)
        service_log.propagate = False
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=10, limit_concurrency=max_connections,
                timeout_keep_alive=KEEP_ALIVE, h11_max_incomplete_event_size=64 * 1024,
                http=guarded_protocol(header_timeout, body_timeout, max_connections))
