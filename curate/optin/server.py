"""How the intake app is served: uvicorn with deadlines a slow client cannot stretch.

uvicorn closes an idle keep-alive connection, but has no deadline for a request that is
still arriving: a client sending one header byte every few seconds, or a body that never
ends, holds its connection (and, past the headers, a worker thread) as long as it likes.
``DeadlineProtocol`` (uvicorn's h11 protocol) gives each request's line and headers
``header_timeout_s`` from the connection's start or the end of the previous answer, and
its body ``body_timeout_s`` from the end of its headers, measured in total, not per read,
then closes the connection. ``limit_concurrency`` makes uvicorn answer 503 beyond
``max_connections`` connections and requests at once.

Behind a reverse proxy (see SECURITY.md) the proxy terminates TLS and buffers requests;
these deadlines still bound what reaches the app.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from curate.optin.options import IntakeLimits

KEEP_ALIVE_S = 5


class ServerConfig(uvicorn.Config):
    """uvicorn's config plus the request deadlines its protocol reads."""

    def __init__(self, app: Any, intake: IntakeLimits, **kwargs: Any):
        super().__init__(app, http=DeadlineProtocol, limit_concurrency=intake.max_connections,
                         timeout_keep_alive=KEEP_ALIVE_S, proxy_headers=False, server_header=False,
                         **kwargs)
        self.header_timeout_s = intake.header_timeout_s
        self.body_timeout_s = intake.body_timeout_s


class DeadlineProtocol(H11Protocol):
    """h11 with a total deadline on each request's headers, then on its body."""

    config: ServerConfig

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        super().connection_made(transport)
        self._arm("headers", self.config.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Set the deadline of whatever the client owes us now."""
        state = self.conn.their_state
        if state is h11.IDLE and self._phase != "headers" and self.conn.our_state is h11.IDLE:
            self._arm("headers", self.config.header_timeout_s)  # the next request on a kept-alive connection
        elif state is h11.SEND_BODY and self._phase != "body":
            self._arm("body", self.config.body_timeout_s)
        elif state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection from %s: its request %s took too long", self.client, self._phase)
            self.transport.close()


def config(app: Any, intake: IntakeLimits, host: str = "127.0.0.1", port: int = 8000, **kwargs: Any) -> ServerConfig:
    return ServerConfig(app, intake, host=host, port=port, **kwargs)
