"""A TCP proxy on loopback that breaks connections on demand, for database fault tests.

    proxy = TcpProxy(("127.0.0.1", pg_port))   # listening on proxy.port, not forwarding yet
    proxy.start()                              # forward new connections
    proxy.cut()                                # break every open connection now
    proxy.fail_commit("before")                # the next COMMIT never reaches the server
    proxy.fail_commit("after")                 # the next COMMIT runs, its answer is lost
    proxy.freeze_in_transaction(2)             # a client host dies inside a transaction
    proxy.close()

Until ``start`` (and after ``stop``) the proxy accepts and closes at once, as a server
that is down answers. Commits are recognised in the client's stream by their query text,
``COMMIT`` (simple or extended protocol, as psycopg sends it in or out of a pipeline).
"""

from __future__ import annotations

import contextlib
import socket
import threading

_COMMIT = b"COMMIT\x00"
_IDLE_IN_TRANSACTION = b"Z\x00\x00\x00\x05T"
"""ReadyForQuery with status T: the server answered and waits inside a transaction."""


class TcpProxy:
    """Forwards connections to ``upstream`` while started; breaks them when told to."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._forwarding = False
        self._commit_fault: str | None = None
        self.commits_broken = 0
        self.frozen = 0
        """Connections frozen by ``freeze_in_transaction``."""
        self._freeze_armed = 0
        self._freeze_next: set[socket.socket] = set()
        self._frozen: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def start(self) -> None:
        """Forward connections from now on (the database is "up")."""
        self._forwarding = True

    def stop(self) -> None:
        """Refuse new connections and break the open ones (the database is "down")."""
        with self._lock:
            self._forwarding = False
        self.cut()

    def cut(self) -> None:
        """Break every open connection at once."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)

    def fail_commit(self, when: str) -> None:
        """Break the connection of the next COMMIT: ``before`` it reaches the server, or
        ``after`` (the server commits; the client never hears so)."""
        if when not in ("before", "after"):
            raise ValueError(when)
        self._commit_fault = when

    def freeze_in_transaction(self, answers: int = 1) -> None:
        """Freeze the connection whose transaction next goes idle ``answers`` times (the
        server answered and waits inside it), as a client host that died (or was cut off)
        there: the client's next message and everything after it in both directions is
        dropped, and neither end's connection is closed (no reset reaches the server)."""
        self._freeze_armed = answers

    def close(self) -> None:
        """Stop listening and break everything."""
        self._closed = True
        self.stop()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._forwarding:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                # ``stop`` may have cut the open pairs while this one connected: the
                # database is "down" now, so this pair must not outlive the cut.
                forwarding = self._forwarding
                if forwarding:
                    self._pairs.append((client, server))
            if not forwarding:
                _close(client, server)
                continue
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        client = source if from_client else sink
        try:
            while data := source.recv(65536):
                if client in self._frozen:
                    continue  # a dead host: what it sent, or was sent, never arrives
                if from_client and client in self._freeze_next:
                    self._frozen.add(client)
                    self.frozen += 1
                    continue
                if not from_client and self._freeze_armed and data.endswith(_IDLE_IN_TRANSACTION):
                    self._freeze_armed -= 1
                    if not self._freeze_armed:
                        self._freeze_next.add(client)
                fault = self._commit_fault if from_client and _COMMIT in data else None
                if fault is not None:
                    self._commit_fault = None
                    self.commits_broken += 1
                    if fault == "after":
                        # The server gets the COMMIT; the client is gone before its answer,
                        # which the other direction reads and drops before closing.
                        sink.sendall(data)
                        _close(source)
                    else:
                        _close(source, sink)
                    return
                sink.sendall(data)
        except OSError:
            pass
        _close(source, sink)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
