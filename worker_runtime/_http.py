"""The runtime answers over HTTP: the probes' verdicts, the worker's state, and metrics. Standard library only.

Started by ``Daemon.start()`` when DAEMONPOOL_PORT is set (the operator sets it), on a thread of its own
running its own asyncio loop: the worker's main loop never waits on it, and a hung main thread still
fails ``/livez`` because the verdicts come from the same heartbeat and state files as the sh probe.

    GET|HEAD /livez /readyz /startupz [?timeout=S]   200 "ok", or 503 and one line why (the probes' words)
    GET|HEAD /state                                  JSON: pool, slot, pid, state, items in flight, capacity, ...
    GET|HEAD /metrics                                Prometheus text

Hostile clients cannot starve the kubelet's probes: one thread serves every connection (no thread per
connection), a request's head must arrive whole within ``HEAD_DEADLINE`` seconds and fit in
``MAX_HEAD`` bytes, at most ``MAX_CONNECTIONS`` are open at once (the oldest idle one is dropped for a new
one, far below the descriptor limit so a flood never fails a heartbeat), and a reset connection is not
an error worth a line in the worker's log. One request per connection (``Connection: close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any

from . import _files, probe
from .contract import ENV_PORT

if TYPE_CHECKING:
    from .daemon import Daemon

KINDS = {"/livez": "liveness", "/readyz": "readiness", "/startupz": "startup"}
# A probe's whole request arrives in one packet; a second is generous, and bounds a slowloris.
HEAD_DEADLINE = 1.0
MAX_HEAD = 8192
# Open connections at most: probes, a scrape and the operator's asks need a handful. A quarter of the
# descriptor limit at most, so the worker's own files and sockets never run short because of us.
MAX_CONNECTIONS = 256
# ?timeout= may tighten or loosen the limit within reason: nan and inf would pass a hung worker.
MAX_TIMEOUT = 86400.0


def _connection_cap() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // 4))


def _response(code: int, body: bytes, ctype: str, head_only: bool) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
    lines = [
        f"HTTP/1.1 {code} {reason.get(code, '')}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Server: worker-runtime",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)


TEXT = "text/plain; charset=utf-8"


def answer(d: Daemon, method: str, target: str, termination: TerminationNote | None = None) -> bytes:
    """The whole response to one request (pure but for the files it reads)."""
    head_only = method == "HEAD"
    if method not in ("GET", "HEAD"):
        return _response(405, b"only GET and HEAD\n", TEXT, head_only)
    path, _, query = target.partition("?")
    if path in KINDS:
        limit = d.timeout
        for part in query.split("&"):
            key, _, value = part.partition("=")
            if key == "timeout":
                try:
                    limit = float(value)
                except ValueError:
                    limit = -1.0
                if not 0 < limit <= MAX_TIMEOUT:  # nan fails both comparisons
                    return _response(
                        400,
                        f"timeout={value[:40]!r} must be a number of seconds in (0, {MAX_TIMEOUT:g}]\n".encode(),
                        TEXT,
                        head_only,
                    )
        ok, reason = probe.check(KINDS[path], d.run_dir, d.name, limit)
        if termination is not None and KINDS[path] == "liveness":
            termination.verdict(ok, reason)
        return _response(200 if ok else 503, (reason + "\n").encode(), TEXT, head_only)
    if path == "/state":
        return _response(200, (json.dumps(d.state_view()) + "\n").encode(), "application/json", head_only)
    if path == "/metrics":
        return _response(200, metrics(d).encode(), "text/plain; version=0.0.4; charset=utf-8", head_only)
    return _response(404, b"not found: /livez /readyz /startupz /state /metrics\n", TEXT, head_only)


class TerminationNote:
    """The first failing liveness verdict of a streak goes where ``kubectl`` shows it: stderr (``kubectl logs
    --previous``) and the termination message file (``lastState.terminated.message`` in ``kubectl describe``).
    With HTTP probes the kubelet records only the status code, so without this nobody learns why."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.failing = False

    def verdict(self, ok: bool, reason: str) -> None:
        if ok:
            self.failing = False
            return
        if self.failing:
            return
        self.failing = True
        line = f"worker_runtime: liveness failing: {reason}\n"
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(line)
            sys.stderr.flush()
        if self.path:
            _files.write_message(self.path, line[len("worker_runtime: ") :])


def metrics(d: Daemon) -> str:
    s = d.state_view()
    labels = f'pool="{d.name}",slot="{s["slot"]}"'
    rows = [
        (
            "daemonpool_heartbeat_age_seconds",
            "gauge",
            "Seconds since the worker's last heartbeat.",
            s["heartbeat_age"] if s["heartbeat_age"] is not None else float("nan"),
        ),
        ("daemonpool_busy", "gauge", "1 while the worker has an item in flight.", 1 if s["inflight"] else 0),
        ("daemonpool_inflight", "gauge", "Items in flight now.", s["inflight"]),
        ("daemonpool_capacity", "gauge", "Items the worker runs at once.", s["capacity"]),
        ("daemonpool_items_total", "counter", "Items finished since start.", s["items_done"]),
        ("daemonpool_busy_seconds_total", "counter", "Seconds spent busy since start.", s["busy_seconds_total"]),
        ("daemonpool_ready", "gauge", "1 while the worker says it is ready.", 1 if s["ready"] else 0),
        ("daemonpool_stop_requested", "gauge", "1 once a stop was asked for.", 1 if s["state"] == "stopping" else 0),
    ]
    out = []
    for name, kind, help_, value in rows:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name}{{{labels}}} {value}"]
    return "\n".join(out) + "\n"


def _listen(host: str | None, port: int) -> socket.socket:
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
                return _listen("0.0.0.0", port)
            raise
        sock.listen(512)
        sock.setblocking(False)
        sock.set_inheritable(False)
    except BaseException:
        sock.close()
        raise
    return sock


class StateServer:
    """The server of one Daemon, on its own thread and asyncio loop; ``stop()`` closes the port."""

    def __init__(self, daemon: Daemon, port: int, host: str | None = None, termination_log: str | None = None) -> None:
        self.daemon = daemon
        self.sock = _listen(host, port)
        self.port = self.sock.getsockname()[1]
        self.cap = _connection_cap()
        self.note = TerminationNote(termination_log)
        self.conns: dict[asyncio.StreamWriter, None] = {}  # insertion order: the oldest first
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="worker-runtime-http", daemon=True)
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
        self.loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.conns) >= self.cap:
            oldest = next(iter(self.conns))
            oldest.transport.abort()  # the oldest connection has waited longest: a probe is new
            self.conns.pop(oldest, None)
        self.conns[writer] = None
        try:
            head = await _within(reader.readuntil(b"\r\n\r\n"), HEAD_DEADLINE)
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                writer.write(_response(400, b"bad request line\n", TEXT, False))
            else:
                writer.write(answer(self.daemon, parts[0], parts[1], self.note))
            await _within(writer.drain(), HEAD_DEADLINE)
            writer.close()  # FIN after the answer: an abort (RST) could make the client drop it unread
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):  # noqa: E501
            writer.transport.abort()  # a slow, cut or oversized request gets nothing: it was not a probe
        finally:
            self.conns.pop(writer, None)

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


async def _within(aw: Any, seconds: float) -> Any:
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


def port_from_env() -> int | None:
    raw = os.environ.get(ENV_PORT)
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{ENV_PORT}={raw!r} is not a port number (1-65535)")
    return int(raw)


def serve(d: Daemon) -> StateServer | None:
    """Start answering for ``d`` on its port (``d.port``, else $DAEMONPOOL_PORT); None when no port is set.
    A bad $DAEMONPOOL_PORT is a ValueError; a port that cannot be had, an OSError whose filename is the port."""
    port = d.port if d.port is not None else port_from_env()
    if port is None:
        return None
    try:
        return StateServer(d, port, d.host, _files.termination_log())
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, port) from None


def state_view(d: Any) -> dict[str, Any]:
    """Kept for callers of 0.1: the Daemon's own ``state_view()``."""
    return d.state_view()  # type: ignore[no-any-return]
