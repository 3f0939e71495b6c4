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


def ask_all(
    targets: dict, port: int, timeout: float = STATE_TIMEOUT, method: str = "GET", path: str = "/state", token: str = ""
) -> dict:
    """{name: raw answer bytes or None} for {name: ip}, every one within ``timeout`` seconds in all.

    One thread and non-blocking sockets (``PARALLEL`` open at once): a slow or silent worker costs its
    own answer, never another's, and the whole call ends at the deadline.
    """
    deadline = time.monotonic() + timeout
    out: dict = dict.fromkeys(targets)
    todo = list(targets.items())
    sel = selectors.DefaultSelector()
    open_: dict = {}  # socket -> [name, request left to send, answer so far]
    try:
        while (todo or open_) and time.monotonic() < deadline:
            while todo and len(open_) < PARALLEL:
                name, ip = todo.pop()
                try:
                    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
                except OSError:
                    continue
                sock.setblocking(False)
                err = sock.connect_ex((ip, port))
                if err not in (0, errno.EINPROGRESS):
                    sock.close()
                    continue
                auth = f"Authorization: Bearer {token}\r\n" if token else ""
                request = (
                    f"{method} {path} HTTP/1.1\r\nHost: {ip}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
                ).encode()
                open_[sock] = [name, request, b""]
                sel.register(sock, selectors.EVENT_WRITE)
            for key, events in sel.select(max(0.0, min(0.05, deadline - time.monotonic()))):
                sock = key.fileobj
                entry = open_[sock]
                try:
                    if events & selectors.EVENT_WRITE:
                        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            raise ConnectionError
                        sent = sock.send(entry[1])
                        entry[1] = entry[1][sent:]
                        if not entry[1]:
                            sel.modify(sock, selectors.EVENT_READ)
                        continue
                    chunk = sock.recv(MAX_ANSWER + 1024)
                    if chunk:
                        entry[2] += chunk
                        if len(entry[2]) <= MAX_ANSWER + 1024:
                            continue
                        raise ValueError("answer too large")
                    out[entry[0]] = entry[2]  # closed by the worker: the whole answer
                except (OSError, ValueError):
                    pass
                sel.unregister(sock)
                sock.close()
                del open_[sock]
    finally:
        for sock in open_:
            sock.close()
        sel.close()
    return out


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
    pods: dict, port: int, token: str, seconds: float, timeout: float = STATE_TIMEOUT, finish: bool = False
) -> dict:
    """Ask workers to drain (``POST /drain``): {pod name: checked state when drained, else None (busy,
    refused, no answer)}. ``pods``: {name: ip}. ``finish``: a rollout's, accepted while busy (rollout.py)."""
    raw = ask_all(pods, port, timeout, "POST", f"/drain?seconds={seconds:g}" + ("&finish=1" if finish else ""), token)
    return {name: (None if r is None else parse(r)) for name, r in raw.items()}


def undrain(pods: dict, port: int, token: str, timeout: float = STATE_TIMEOUT) -> dict:
    """End the drain of workers the scale-in did not remove (``DELETE /drain``): {name: answered}."""
    raw = ask_all(pods, port, timeout, "DELETE", "/drain", token)
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
