"""A small HTTP/1.1 server that hostile clients cannot starve, standard library only: the runtime's probes
and ``/state`` use it, and so does the operator's ``/metrics``.

One thread runs one asyncio loop for every connection (no thread per connection); a request's head must
arrive whole within ``HEAD_DEADLINE`` seconds and fit in ``MAX_HEAD`` bytes; at most ``MAX_CONNECTIONS``
are open at once (a quarter of the descriptor limit at most), the oldest dropped for a new one, so a
flood never starves a probe nor runs the process out of descriptors; a reset connection is not an error
worth a log line. A client that asks for keep-alive keeps its connection (the operator asks every second). It listens on IPv6 and IPv4 where the host has both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

# A probe's whole request arrives in one packet; a second is generous, and bounds a slowloris.
HEAD_DEADLINE = 1.0
MAX_HEAD = 8192
# Seconds a kept-alive connection may wait for its next request: the operator asks every second (and
# closes its own after 4 s); the kubelet's probes ask for Connection: close.
KEEPALIVE_IDLE = 5.0
# Open connections at most: probes, a scrape and the operator's asks need a handful. A quarter of the
# descriptor limit at most, so the worker's own files and sockets never run short because of us.
MAX_CONNECTIONS = 256


def connection_cap() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // 4))


def response(code: int, body: bytes, ctype: str, head_only: bool) -> bytes:
    reason = {
        200: "OK",
        400: "Bad Request",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        409: "Conflict",
        503: "Service Unavailable",
    }
    lines = [
        f"HTTP/1.1 {code} {reason.get(code, '')}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Server: worker-runtime",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)


TEXT = "text/plain; charset=utf-8"


def listen(host: str | None, port: int) -> socket.socket:
    """A listening socket on ``host`` (default: IPv6 and IPv4 on every address where the pod has IPv6, else IPv4)."""
    if host:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    elif socket.has_ipv6:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            addr = ("::", port)
        except OSError:  # no IPv6 in this network namespace
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            addr = ("0.0.0.0", port)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        addr = ("0.0.0.0", port)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restarted worker takes its port back at once
        try:
            sock.bind(addr)
        except OSError as exc:
            if sock.family == socket.AF_INET6 and not host and exc.errno != 98:  # EADDRNOTAVAIL: IPv6 is off
                sock.close()
                return listen("0.0.0.0", port)
            raise
        sock.listen(4096)  # a burst of thousands of connections queues (the kernel caps it at somaxconn)
        sock.setblocking(False)
        sock.set_inheritable(False)
    except BaseException:
        sock.close()
        raise
    return sock


def parse_headers(head: bytes) -> dict[str, str]:
    """{lower-case name: value} of a request head (the first of a repeated name wins)."""
    out: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out.setdefault(name.strip().lower(), value.strip())
    return out


class BoundedServer:
    """An HTTP/1.1 server for small answers, on its own thread and asyncio loop; ``stop()`` closes the port.

    ``respond(method, target)`` returns the whole response (``response()`` builds one); it runs on the
    server's thread and must be quick. An HTTP/1.1 request with ``Connection: keep-alive`` and no body keeps
    its connection for further requests (``KEEPALIVE_IDLE`` seconds between them at most); any other gets
    ``Connection: close`` (clients that read to the end of the stream, the kubelet's probes). With
    ``headers=True`` it is called as ``respond(method, target, headers)``, the header names lower case.
    """

    def __init__(
        self,
        respond: Callable[..., bytes | Awaitable[bytes]],
        port: int,
        host: str | None = None,
        name: str = "http",
        headers: bool = False,
    ) -> None:
        self.respond = respond
        self.headers = headers
        self.sock = listen(host, port)
        self.port = self.sock.getsockname()[1]
        self.cap = connection_cap()
        self.conns: dict[asyncio.StreamWriter, None] = {}  # insertion order: the oldest first
        self._waiters: list[asyncio.Future[None]] = []  # answers waiting for a change (``changed()``)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"worker-runtime-{name}", daemon=True)
        self.thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._client, sock=self.sock, limit=MAX_HEAD))
        self._ready.set()
        with contextlib.suppress(RuntimeError):
            self.loop.run_forever()
        # Stopped: end every connection's task before the loop goes, or each one complains as it is collected.
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in tasks:
            t.cancel()
        with contextlib.suppress(RuntimeError):
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            # The aborted connections close their sockets in callbacks of the next turns (kept-alive ones, and
            # long polls, are often still open when the server stops).
            self.loop.run_until_complete(asyncio.sleep(0.01))
        self.loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.conns) >= self.cap:
            oldest = next(iter(self.conns))
            oldest.transport.abort()  # the connection used longest ago goes: a probe is new
            self.conns.pop(oldest, None)
        self.conns[writer] = None
        try:
            head = await within(reader.readuntil(b"\r\n\r\n"), HEAD_DEADLINE)
            while True:
                self.conns.pop(writer, None)
                self.conns[writer] = None  # used now: the last to be dropped for a new one
                if not await self._answer(head, writer):
                    break
                try:  # kept alive: the next request's first byte may take a while, the rest may not
                    first = await within(reader.readexactly(1), KEEPALIVE_IDLE)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                    break  # idle long enough, or closed by the client: a FIN
                head = first + await within(reader.readuntil(b"\r\n\r\n"), HEAD_DEADLINE)
            writer.close()  # FIN after the answer: an abort (RST) could make the client drop it unread
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):  # noqa: E501
            writer.transport.abort()  # a slow, cut or oversized request gets nothing: it was not a probe
        except asyncio.CancelledError:  # the server stops (a kept or waiting connection): asyncio's own done
            writer.transport.abort()  # callback would log a cancelled connection as an error
        finally:
            self.conns.pop(writer, None)

    async def _answer(self, head: bytes, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; True to keep the connection for another (HTTP/1.1, no body, asked to keep it)."""
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        headers = parse_headers(head)
        keep = (  # asked for (the operator asks; a client reading to the end of the stream does not), no body
            len(parts) == 3
            and parts[2] == "HTTP/1.1"
            and headers.get("connection", "").lower() == "keep-alive"
            and headers.get("content-length", "0") == "0"
            and "transfer-encoding" not in headers
        )
        made: bytes | Awaitable[bytes]
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            made = response(400, b"bad request line\n", TEXT, False)
        elif self.headers:
            made = self.respond(parts[0], parts[1], headers)
        else:
            made = self.respond(parts[0], parts[1])
        # An answer that waits (``changed()``) is awaited here; whoever made it bounds its wait.
        out = made if isinstance(made, bytes) else await made
        if keep:
            out = out.replace(b"\r\nConnection: close\r\n", b"\r\nConnection: keep-alive\r\n", 1)
        writer.write(out)
        await within(writer.drain(), HEAD_DEADLINE)
        return keep

    def poke(self) -> None:
        """Something changed (from any thread): the answers waiting in ``changed()`` go now."""
        if self._waiters:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    async def changed(self, seconds: float, unchanged: Callable[[], bool]) -> None:
        """Wait (on the server's loop) while ``unchanged()``, until ``poke()`` or ``seconds`` pass. The waiter
        is listed before ``unchanged()`` is asked, so a change made meanwhile is seen either way (its poke
        finds the waiter, or ``unchanged()`` finds the change)."""
        f = self.loop.create_future()
        self._waiters.append(f)
        try:
            if unchanged():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(f), seconds)
        finally:
            if f in self._waiters:
                self._waiters.remove(f)
            if not f.done():
                f.cancel()

    def stop(self) -> None:
        def _close() -> None:
            self.server.close()
            for w in list(self.conns):
                w.transport.abort()
            self.loop.stop()

        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_close)
        self.thread.join(5)
        with contextlib.suppress(OSError):
            self.sock.close()

    def close_in_child(self) -> None:
        """After fork(): the listening socket and every accepted connection are the parent's; close our copies."""
        with contextlib.suppress(OSError):
            self.sock.close()
        # The connections' sockets belong to a loop that does not run here; their descriptors are pointed at
        # /dev/null (not closed: the orphaned objects close their numbers later, which must not be reused).
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for w in list(self.conns):
                sock = w.get_extra_info("socket")
                with contextlib.suppress(OSError, AttributeError, ValueError):
                    fd = sock.fileno()
                    if fd >= 0:
                        os.dup2(null, fd, inheritable=False)
        finally:
            os.close(null)


async def within(aw: Any, seconds: float) -> Any:
    """``await aw`` for at most ``seconds`` (TimeoutError after), in this task: no inner task whose
    exception nobody would retrieve when the connection is cut meanwhile."""
    task = asyncio.current_task()
    assert task is not None
    fired = []

    def fire() -> None:
        fired.append(True)
        task.cancel()

    handle = asyncio.get_running_loop().call_later(seconds, fire)
    try:
        return await aw
    except asyncio.CancelledError:
        if fired:
            raise asyncio.TimeoutError from None
        raise
    finally:
        handle.cancel()
