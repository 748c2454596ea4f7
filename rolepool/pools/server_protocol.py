"""The HTTP/1.1 protocol `rolepool serve` runs under uvicorn: uvicorn's h11 protocol with a read
deadline, so a client cannot hold a connection open by sending nothing, or a request a byte at a
time (the red-team pass held 250 connections for 40 s).

uvicorn closes an idle keep-alive connection only after a response, and has no deadline for
reading a request at all. This protocol gives every request `read_timeout` seconds from the moment
the server is ready for it (the connection opened, or the previous response finished) until its
last body byte has arrived; a connection past the deadline is closed, answered with 408 when no
request of it is in progress. Time the server spends answering (generation) is not counted.

uvicorn takes the protocol class as `Config(http=...)`, its documented extension point; the class
reads its deadline from a class attribute because uvicorn builds protocols itself.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

READ_TIMEOUT = 30.0
"""Default seconds a client has to send a whole request."""


def protocol_with_read_timeout(read_timeout: float) -> type[H11Protocol]:
    """The protocol class for `uvicorn.Config(http=...)` with this read deadline."""
    return type("ReadDeadlineProtocol", (ReadDeadlineProtocol,), {"read_timeout": read_timeout})


class ReadDeadlineProtocol(H11Protocol):
    read_timeout: float = READ_TIMEOUT
    _read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._disarm()  # the whole request is in (or the connection is ending)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this keep-alive connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # a request whose body stalled: its handler sees the client as gone
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        elif self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            # nothing or part of the headers came: h11 cannot answer a request it has not
            # seen, so the minimal reply is written as bytes
            self.transport.write(_TIMEOUT_408)
        self.transport.close()


_BODY = b'{"error":{"message":"request not received in time","type":"timeout"}}'
_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
)
