"""uvicorn's Server, answering 503 to the connections still waiting in the accept backlog when it shuts down.

On SIGTERM uvicorn closes its listening sockets. Connections the kernel had already completed but the
server had not yet accepted are then reset: their clients see `Connection reset by peer` and cannot
tell whether their request was served. Here they are accepted first, answered 503 `shutting_down` with
`Retry-After` and closed, so a client retries elsewhere knowing nothing ran; a connection that arrives
after the listener closed is refused, which clients handle as cleanly.
"""

from __future__ import annotations

import logging
import os
import socket

import uvicorn

from .raw_refusal import SHUTTING_DOWN_REFUSAL

log = logging.getLogger("mobilenet_serve.draining_server")


class DrainingServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # The app's other listeners (gRPC) stop taking new calls now too, and drain beside HTTP.
        for hook in getattr(getattr(self.config.app, "state", None), "drain_hooks", ()):
            hook()
        answered = sum(answer_backlog(listener.fileno()) for server in self.servers for listener in server.sockets)
        if answered:
            log.info("answered %d connections waiting in the accept backlog with 503", answered)
        await super().shutdown(sockets)


def answer_backlog(listener_fd: int) -> int:
    """Accept what is waiting on a listening socket, answer each 503 and close it; how many there were."""
    listener = socket.socket(fileno=os.dup(listener_fd))
    listener.setblocking(False)
    answered = 0
    try:
        while True:
            try:
                connection, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return answered
            _refuse(connection)
            answered += 1
    finally:
        listener.close()


def _refuse(connection: socket.socket) -> None:
    try:
        connection.setblocking(False)
        connection.send(SHUTTING_DOWN_REFUSAL)
        # Half-close, then read what the client sent: closing with unread data would send a reset,
        # which can reach the client before the answer does.
        connection.shutdown(socket.SHUT_WR)
        connection.recv(65536)
    except OSError:
        pass
    finally:
        connection.close()
