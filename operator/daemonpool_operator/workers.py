"""The operator's one door to the worker pods: their ``GET /state`` answers, asked in parallel, trusted in nothing.

A worker pod is anybody's code. So each answer is bounded in size (``MAX_ANSWER`` bytes), in time (a
whole-request deadline, not a per-read timeout that a trickle of one byte a second would renew), never
redirected (a 3xx is not a 200), and checked against the shape the runtime sends; anything
else is "unknown" (None) and the scale-in goes on without it. One call never takes longer than
``STATE_TIMEOUT`` seconds however many pods misbehave. Imports neither kopf nor kubernetes.
"""

from __future__ import annotations

import errno
import json
import math
import resource
import selectors
import socket
import time
import urllib.parse

# Seconds one worker has for its whole answer: it answers in well under a millisecond when it can.
STATE_TIMEOUT = 1.0
# Bytes an answer may have: the runtime's is about 300.
MAX_ANSWER = 4096
# Connections open at once: a few hundred descriptors at most, however big the pool.
PARALLEL = 256
# The words a worker's state may be (worker_runtime.contract.STATES; "unknown": `run` with a silent child).
STATES = ("idle", "busy", "stopping", "unknown")


class Asker:
    """Asks workers over connections kept open between passes (HTTP/1.1 keep-alive): the autoscaler asks
    every worker once a second, and a new TCP connection each time was most of what that cost. One thread
    uses one ``Asker``. ``keep``: idle connections kept at most (0: one connection per ask).

    A kept connection the worker closed meanwhile (its idle timeout, a restart) is noticed on use, and the ask
    is made again on a new connection within the same deadline. Connections idle longer than ``IDLE_SECONDS``
    are closed (the runtime closes its own after ``httpserver.KEEPALIVE_IDLE``)."""

    IDLE_SECONDS = 4.0

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep_cap() if keep is None else keep
        self._idle: dict = {}  # (ip, port) -> (socket, when last used)
        self.connects = 0  # new connections made: what keep-alive saves (tests and the bench look)

    def close(self) -> None:
        for sock, _ in self._idle.values():
            sock.close()
        self._idle.clear()

    def ask_all(
        self,
        targets: dict,
        port: int,
        timeout: float = STATE_TIMEOUT,
        method: str = "GET",
        path: str = "/state",
        token: str = "",
    ) -> dict:
        """{name: raw answer bytes or None} for {name: ip}, every one within ``timeout`` seconds in all.

        One thread and non-blocking sockets (``PARALLEL`` asks at once): a slow or silent worker costs its
        own answer, never another's, and the whole call ends at the deadline."""
        now = time.monotonic()
        deadline = now + timeout
        out: dict = dict.fromkeys(targets)
        todo = [(name, ip, True) for name, ip in targets.items()]
        sel = selectors.DefaultSelector()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        conn = "Connection: keep-alive\r\n" if self.keep else "Connection: close\r\n"
        try:
            while (todo or sel.get_map()) and time.monotonic() < deadline:
                while todo and len(sel.get_map()) < PARALLEL:
                    name, ip, may_reuse = todo.pop()
                    sock, reused = self._socket(ip, port, may_reuse)
                    if sock is None:
                        continue
                    request = f"{method} {path} HTTP/1.1\r\nHost: {ip}\r\n{auth}Content-Length: 0\r\n{conn}\r\n"
                    sel.register(sock, selectors.EVENT_WRITE, [name, ip, request.encode(), b"", reused])
                for key, events in sel.select(max(0.0, min(0.05, deadline - time.monotonic()))):
                    sock, entry = key.fileobj, key.data
                    done, answer = self._step(sock, entry, events, sel)
                    if not done:
                        continue
                    sel.unregister(sock)
                    assert isinstance(sock, socket.socket)
                    if answer is _AGAIN:  # a kept connection the worker had closed: once more, on a new one
                        sock.close()
                        todo.append((entry[0], entry[1], False))
                        continue
                    out[entry[0]] = answer
                    if answer is not None and self.keep and _keeps(answer) and len(self._idle) < self.keep:
                        self._idle[(entry[1], port)] = (sock, time.monotonic())
                    else:
                        sock.close()
        finally:
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr] # our sockets, registered above
            sel.close()
            self._prune()
        return out

    def _socket(self, ip: str, port: int, may_reuse: bool):
        if may_reuse and (kept := self._idle.pop((ip, port), None)):
            return kept[0], True
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return None, False
        sock.setblocking(False)
        err = sock.connect_ex((ip, port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            return None, False
        self.connects += 1
        return sock, False

    @staticmethod
    def _step(sock, entry, events, sel):
        """(done, answer) after one readiness event; answer None (failed) or _AGAIN (a stale kept connection)."""
        what, entry[2], entry[3] = exchange(sock, events, entry[2], entry[3])
        if what == SENT:
            sel.modify(sock, selectors.EVENT_READ, entry)
        if what in (SENDING, SENT, MORE):
            return False, None
        if what == NOTHING:  # a kept connection the worker closed meanwhile: once more on a new one
            return True, (_AGAIN if entry[4] else None)
        return True, (entry[3] if what in (ANSWER, ANSWER_CLOSED) else None)

    def _prune(self) -> None:
        now = time.monotonic()
        for k, (sock, used) in list(self._idle.items()):
            if now - used > self.IDLE_SECONDS:
                sock.close()
                del self._idle[k]

    # The asks the autoscaler makes, over this Asker's connections.
    @staticmethod
    def parse(raw: bytes) -> dict | None:
        return parse(raw)

    def drain(self, pods, port, token, seconds, timeout=STATE_TIMEOUT, finish=False) -> dict:
        return drain(pods, port, token, seconds, timeout, finish, self)

    def undrain(self, pods, port, token, timeout=STATE_TIMEOUT) -> dict:
        return undrain(pods, port, token, timeout, self)

    def count(self, url: str, timeout: float = STATE_TIMEOUT) -> int | None:
        return count(url, timeout)


_AGAIN = object()

# What one readiness event did to an exchange (a request sent, then its answer read): see exchange().
SENDING, SENT, MORE, ANSWER, ANSWER_CLOSED, FAILED, NOTHING = (
    "sending",
    "sent",
    "more",
    "answer",
    "answer-closed",
    "failed",
    "nothing",
)


def exchange(sock: socket.socket, events: int, out: bytes, buf: bytes) -> tuple[str, bytes, bytes]:
    """One readiness event of one request and its answer on a non-blocking socket, for ``Asker`` and
    ``statewatch.StateWatch`` alike: writable, the rest of ``out`` is sent (SENT once all of it is, the caller
    then waits to read); readable, an answer is read into ``buf``. Returns (what, out, buf), what one of
    SENDING, SENT, MORE (no whole answer yet), ANSWER (whole, the connection open), ANSWER_CLOSED (whole, then
    closed), FAILED (an error, too big, closed part-way) or NOTHING (an error or a close before any byte: on a
    kept connection, the worker closed it meanwhile)."""
    try:
        if events & selectors.EVENT_WRITE:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                raise ConnectionError
            out = out[sock.send(out) :]
            return (SENDING if out else SENT), out, buf
        chunk = sock.recv(MAX_ANSWER + 1024)
    except (OSError, ValueError):
        return (FAILED if buf else NOTHING), out, buf
    if not chunk:  # closed by the worker: the whole answer if it said Connection: close
        if not buf:
            return NOTHING, out, buf
        return (ANSWER_CLOSED if _complete(buf, closed=True) else FAILED), out, buf
    buf += chunk
    if len(buf) > MAX_ANSWER + 1024:
        return FAILED, out, buf
    return (ANSWER if _complete(buf, closed=False) else MORE), out, buf


def keep_cap() -> int:
    """Idle connections an Asker keeps: a quarter of the descriptor limit, at most 4096."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 4096 if soft == resource.RLIM_INFINITY else max(0, min(4096, soft // 4))


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            v = value.strip()
            return int(v) if v.isdigit() and len(v) < 9 else -1
    return None


def _complete(raw: bytes, closed: bool) -> bool:
    """Whether ``raw`` is a whole answer: its head and Content-Length bytes of body (or, without a length,
    everything up to the worker closing the connection)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    n = _content_length(head)
    if n is None:
        return closed
    return n >= 0 and len(body) >= n


def _keeps(raw: bytes) -> bool:
    """Whether the worker keeps the connection open after this answer (it says Connection: keep-alive)."""
    head = raw.partition(b"\r\n\r\n")[0].lower()
    return head.startswith(b"http/1.1") and b"\r\nconnection: keep-alive" in head


def ask_all(
    targets: dict, port: int, timeout: float = STATE_TIMEOUT, method: str = "GET", path: str = "/state", token: str = ""
) -> dict:
    """``Asker.ask_all`` on connections of its own, closed after one ask each."""
    return Asker(keep=0).ask_all(targets, port, timeout, method, path, token)


def ask(ip: str, port: int, timeout: float = STATE_TIMEOUT) -> dict | None:
    """One worker's checked ``/state``, or None."""
    raw = ask_all({"w": ip}, port, timeout)["w"]
    return None if raw is None else parse(raw)


def parse(raw: bytes, codes: tuple = (b"200",)) -> dict | None:
    """The checked ``/state`` of a raw HTTP answer, or None. 200 only (a 3xx is not followed)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.") or head[9:12] not in codes:
        return None
    if len(body) > MAX_ANSWER:
        return None
    try:
        data = json.loads(body, parse_constant=_refuse)  # NaN and Infinity are not numbers a runtime sends
    except (ValueError, RecursionError):
        return None
    return valid_state(data)


def _refuse(name: str) -> None:
    raise ValueError(name)


def valid_state(data: object) -> dict | None:
    """The fields scale-in and the autoscaler use, checked; None when any is wrong."""
    if not isinstance(data, dict):
        return None
    state, seconds = data.get("state"), data.get("seconds_in_state", 0.0)
    if state not in STATES:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return None
    out: dict = {"state": state, "seconds_in_state": float(seconds)}
    for key, least in (("inflight", 0), ("capacity", 1), ("items_done", 0)):
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value < 2**31:
            return None
        out[key] = value
    backlog = data.get("backlog")
    if backlog is not None:
        if isinstance(backlog, bool) or not isinstance(backlog, int) or not 0 <= backlog < 2**53:
            return None
        out["backlog"] = backlog
    version = data.get("version")  # the runtime's state version: what a long poll waits on (statewatch.py)
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**63:
            return None
        out["version"] = version
    for key in ("draining", "retiring"):
        if data.get(key) is not None:
            if not isinstance(data[key], bool):
                return None
            out[key] = data[key]
    return out


def states(pods: list, port: int, timeout: float = STATE_TIMEOUT) -> dict:
    """{pod name: checked state or None} for pods that have an IP, all within ``timeout`` seconds."""
    targets = {p["metadata"]["name"]: p["status"].get("podIP") for p in pods if (p.get("status") or {}).get("podIP")}
    if not targets:
        return {}
    return {name: (None if raw is None else parse(raw)) for name, raw in ask_all(targets, port, timeout).items()}


def drain(
    pods: dict,
    port: int,
    token: str,
    seconds: float,
    timeout: float = STATE_TIMEOUT,
    finish: bool = False,
    asker: Asker | None = None,
) -> dict:
    """Ask workers to drain (``POST /drain``): {pod name: checked state when drained, else None (busy,
    refused, no answer)}. ``pods``: {name: ip}. ``finish``: a rollout's, accepted while busy (rollout.py)."""
    path = f"/drain?seconds={seconds:g}" + ("&finish=1" if finish else "")
    raw = (asker or Asker(keep=0)).ask_all(pods, port, timeout, "POST", path, token)
    return {name: (None if r is None else parse(r)) for name, r in raw.items()}


def undrain(pods: dict, port: int, token: str, timeout: float = STATE_TIMEOUT, asker: Asker | None = None) -> dict:
    """End the drain of workers the scale-in did not remove (``DELETE /drain``): {name: answered}."""
    raw = (asker or Asker(keep=0)).ask_all(pods, port, timeout, "DELETE", "/drain", token)
    return {name: r is not None and parse(r) is not None for name, r in raw.items()}


def targets(pods: list) -> dict:
    """{pod name: IP} of the pods that have one."""
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in pods if (p.get("status") or {}).get("podIP")}


def count(url: str, timeout: float = STATE_TIMEOUT) -> int | None:
    """The one whole number an ``http://host[:port]/path`` answers (a backlog source), or None: no answer in
    ``timeout`` seconds, not a 200, not one number >= 0. Same bounds as a worker's answer."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return None
    try:
        port = parts.port or 80
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        return None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    raw = ask_all({"u": infos[0][4][0]}, port, timeout, "GET", path)["u"]
    if raw is None:
        return None
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.") or head[9:12] != b"200" or len(body) > 64:
        return None
    text = body.strip()
    return int(text) if text.isdigit() and len(text) < 16 else None
