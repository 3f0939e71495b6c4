"""Every autoscaled worker's ``/state``, kept current by long polls: one kept-alive connection per worker and
one answer per change, instead of one ask per worker per second. Imports neither kopf nor kubernetes.

Each worker is asked ``GET /state?wait=W&since=V``: the runtime answers at once when its state version is no
longer ``V`` (an item began or ended, a drain, readiness, the backlog) and otherwise after ``W`` seconds. So a
pass costs what changed, and a change is seen at the next pass (at most a second old), as before. A worker's
state between answers is its last answer, its ``seconds_in_state`` aged by the time since.

The same distrust as ``workers.py`` (whose checks it uses): answers bounded in size, a pass bounded in time
(``timeout``: a worker that has not answered the ask of this pass by then is unknown for the pass, and its
late answer is used when it comes), any ask bounded by ``W + timeout`` (a worker that holds one longer is not
answering: unknown, asked again on a new connection), no redirects. A worker that does not
long-poll (a runtime from before, or anything that answers without a ``version``) is asked once a pass, as
``workers.Asker`` does. One thread uses one ``StateWatch``.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections.abc import Callable

from . import workers

# Seconds a worker holds a long poll when nothing changes: each answer also shows the connection is alive.
WAIT_SECONDS = 10.0


class _Conn:
    __slots__ = ("ip", "port", "sock", "buf", "out", "sent_at", "first", "state", "got_at", "version", "busy")

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self.sock: socket.socket | None = None
        self.buf = b""
        self.out = b""
        self.sent_at = 0.0
        self.first = True  # the pending ask wants an answer within this pass (not a long poll)
        self.state: dict | None = None  # the last good answer, checked
        self.got_at = 0.0
        self.version: int | None = None
        self.busy = False  # an ask is in flight on this connection


class StateWatch:
    """``current({key: (ip, port)})`` -> ``{key: checked state or None}``; see the module's docstring."""

    def __init__(
        self,
        timeout: float = workers.STATE_TIMEOUT,
        wait: float = WAIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout, self.wait, self.clock = timeout, wait, clock
        self._conns: dict = {}
        self._sel = selectors.DefaultSelector()
        self.connects = 0  # new connections made (tests and the bench look)
        self.answers = 0  # answers read

    def close(self) -> None:
        for key in list(self._conns):
            self._drop(key)
        self._sel.close()

    def current(self, targets: dict) -> dict:
        for k, events in self._sel.select(0):  # the answers that came since the last pass, before judging
            self._step(k.data, events)
        now = self.clock()
        for key in [k for k in self._conns if k not in targets]:
            self._drop(key)
        for key, (ip, port) in targets.items():
            c = self._conns.get(key)
            if c is not None and (c.ip, c.port) != (ip, port):
                self._drop(key)
                c = None
            if c is None:
                c = self._conns[key] = _Conn(ip, port)
            if c.busy and now - c.sent_at > self.wait + self.timeout:
                self._fail(c)  # no answer for that long: not answering, asked anew on a new connection
            if not c.busy:
                self._ask(c, long_poll=False)  # new, broken last time, or a worker that does not long-poll
        deadline = now + self.timeout
        while True:  # this pass waits (timeout at most) for the answers it asked for now; a late one is used later
            waiting = any(c.busy and c.first and c.sent_at >= now for c in self._conns.values())
            left = deadline - self.clock()
            for k, events in self._sel.select(max(0.0, min(0.05, left)) if waiting else 0):
                self._step(k.data, events)
            if not waiting or left <= 0:
                break
        out: dict = {}
        now = self.clock()
        for key in targets:
            c = self._conns[key]
            if c.state is None or (c.busy and c.first):  # no good answer yet, or none this pass when one was due
                out[key] = None
                continue
            s = dict(c.state)
            s["seconds_in_state"] = s["seconds_in_state"] + (now - c.got_at)
            out[key] = s
        return out

    # -- one connection ----------------------------------------------------------------------
    def _ask(self, c: _Conn, long_poll: bool) -> None:
        if c.sock is None:
            try:
                c.sock = socket.socket(socket.AF_INET6 if ":" in c.ip else socket.AF_INET, socket.SOCK_STREAM)
            except OSError:
                return
            c.sock.setblocking(False)
            err = c.sock.connect_ex((c.ip, c.port))
            if err not in (0, errno.EINPROGRESS):
                c.sock.close()
                c.sock = None
                c.state = None
                return
            self.connects += 1
            self._sel.register(c.sock, selectors.EVENT_WRITE, c)
        else:
            self._sel.modify(c.sock, selectors.EVENT_WRITE, c)
        query = f"?wait={self.wait:g}&since={c.version}" if long_poll and c.version is not None else ""
        c.out = f"GET /state{query} HTTP/1.1\r\nHost: {c.ip}\r\nConnection: keep-alive\r\n\r\n".encode()
        c.buf, c.busy, c.first, c.sent_at = b"", True, not long_poll, self.clock()

    def _step(self, c: _Conn, events: int) -> None:
        assert c.sock is not None
        what, c.out, c.buf = workers.exchange(c.sock, events, c.out, c.buf)
        if what == workers.SENT:
            self._sel.modify(c.sock, selectors.EVENT_READ, c)
        elif what == workers.ANSWER:
            self._answered(c, keep=workers._keeps(c.buf))
        elif what == workers.ANSWER_CLOSED:
            self._answered(c, keep=False)
        elif what in (workers.FAILED, workers.NOTHING):
            self._fail(c)

    def _answered(self, c: _Conn, keep: bool) -> None:
        self.answers += 1
        state = workers.parse(c.buf)
        c.busy = False
        if state is None:
            self._fail(c)
            return
        c.state, c.got_at = state, self.clock()
        c.version = state.get("version")
        if keep and c.version is not None:
            self._ask(c, long_poll=True)  # wait on this connection for the next change
        else:
            self._close(c)  # a worker that does not long-poll: asked again next pass

    def _fail(self, c: _Conn) -> None:
        c.state, c.version = None, None
        self._close(c)

    def _close(self, c: _Conn) -> None:
        if c.sock is not None:
            try:
                self._sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
            c.sock = None
        c.busy, c.buf, c.out = False, b"", b""

    def _drop(self, key) -> None:
        c = self._conns.pop(key, None)
        if c is not None:
            self._close(c)
