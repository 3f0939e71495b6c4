"""The runtime answers over HTTP: the probes' verdicts, the worker's state, and metrics. Standard library only.

Started by ``Daemon.start()`` when DAEMONPOOL_PORT is set (the operator sets it), on a thread of its own
running its own asyncio loop: the worker's main loop never waits on it, and a hung main thread still
fails ``/livez`` because the verdicts come from the same heartbeat and state files as the sh probe.

    GET|HEAD /livez /readyz /startupz [?timeout=S]   200 "ok", or 503 and one line why (the probes' words)
    GET|HEAD /state                                  JSON: pool, slot, pid, state, items in flight, capacity, ...
    GET /state?wait=S&since=V                        the same once its version is no longer V (or after S s):
                                                     the operator's long poll, one answer per change
    GET|HEAD /metrics                                Prometheus text
    POST /drain?seconds=S, DELETE /drain             the operator's drain (see _drain.py); needs the pool's
                                                     token (Authorization: Bearer ...): 200 drained (or undrained),
                                                     409 busy, 403 no or wrong token, 404 draining off

Hostile clients cannot starve the kubelet's probes: the server is ``httpserver.BoundedServer`` (one thread,
bounded connections, head deadlines; see there).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import os
import sys
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from . import _files, probe
from ._drain import MAX_DRAIN_SECONDS
from .contract import ENV_DRAIN_TOKEN, ENV_PORT
from .httpserver import TEXT, BoundedServer, response

if TYPE_CHECKING:
    from .daemon import Daemon

KINDS = {"/livez": "liveness", "/readyz": "readiness", "/startupz": "startup"}
# ?timeout= may tighten or loosen the limit within reason: nan and inf would pass a hung worker.
MAX_TIMEOUT = 86400.0
# The longest a /state?wait= answer waits for a change: the operator asks with less, and a dead connection
# shows within this.
MAX_STATE_WAIT = 30.0


def answer(
    d: Daemon,
    method: str,
    target: str,
    termination: TerminationNote | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = None,
    server: BoundedServer | None = None,
) -> bytes | Awaitable[bytes]:
    """The whole response to one request (pure but for the files it reads); ``/state?wait=`` answers with a
    coroutine that the server awaits (``server`` is whose loop it waits on)."""
    head_only = method == "HEAD"
    if target.partition("?")[0] == "/drain":
        return drain_answer(d, method, target, headers or {}, token)
    if method not in ("GET", "HEAD"):
        return response(405, b"only GET and HEAD\n", TEXT, head_only)
    path, _, query = target.partition("?")
    if path in KINDS:
        limit = d.timeout
        for part in query.split("&"):
            key, _, value = part.partition("=")
            if key == "timeout":
                try:
                    limit = _seconds(value, key, MAX_TIMEOUT)
                except ValueError as exc:
                    return response(400, f"{exc}\n".encode(), TEXT, head_only)
        ok, reason = probe.check(KINDS[path], d.run_dir, d.name, limit)
        if termination is not None and KINDS[path] == "liveness":
            termination.verdict(ok, reason)
        return response(200 if ok else 503, (reason + "\n").encode(), TEXT, head_only)
    if path == "/state":
        if server is not None and "wait=" in query:
            try:
                wait, since = _state_wait(query)
            except ValueError as exc:
                return response(400, f"{exc}\n".encode(), TEXT, head_only)
            return _state_when_changed(d, server, wait, since, head_only)
        return response(200, (json.dumps(d.state_view()) + "\n").encode(), "application/json", head_only)
    if path == "/metrics":
        return response(200, metrics(d).encode(), "text/plain; version=0.0.4; charset=utf-8", head_only)
    return response(404, b"not found: /livez /readyz /startupz /state /metrics\n", TEXT, head_only)


def _seconds(value: str, name: str, most: float) -> float:
    """``name=value`` of a query as seconds in (0, most], else a ValueError in the words the client reads."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= most:  # nan fails both comparisons (and inf the second)
        raise ValueError(f"{name}={value[:40]!r} must be a number of seconds in (0, {most:g}]")
    return seconds


def _state_wait(query: str) -> tuple[float, int]:
    """``wait=S&since=V`` of ``/state``: seconds in (0, MAX_STATE_WAIT], a version (-1 or absent: any)."""
    wait, since = 0.0, -1
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "wait":
            wait = _seconds(value, key, MAX_STATE_WAIT)
        elif key == "since":
            if not value.removeprefix("-").isdigit() or len(value) > 20:
                raise ValueError(f"since={value[:40]!r} must be the version a /state answer gave")
            since = int(value)
    return wait, since


async def _state_when_changed(d: Daemon, server: BoundedServer, wait: float, since: int, head_only: bool) -> bytes:
    """``/state`` once its version is no longer ``since`` (at once if it is not), or after ``wait`` seconds.
    A drain that runs out by itself is a change nobody pokes for: the wait ends when it does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        _ = d.draining  # asking ends a drain that ran out, which changes the version
        if d.state_version != since or (left := deadline - loop.time()) <= 0:
            break
        drain_left = d.drain_left()
        if drain_left is not None:
            left = min(left, max(0.05, drain_left))
        await server.changed(left, lambda: d.state_version == since)
    return response(200, (json.dumps(d.state_view()) + "\n").encode(), "application/json", head_only)


def drain_answer(d: Daemon, method: str, target: str, headers: dict[str, str], token: str | None) -> bytes:
    """``POST /drain?seconds=S[&finish=1]`` or ``DELETE /drain``, for the holder of the pool's token only."""
    if not token:
        return response(404, f"draining is off: {ENV_DRAIN_TOKEN} is not set\n".encode(), TEXT, False)
    given = headers.get("authorization", "")
    if not hmac.compare_digest(given.encode("latin-1"), f"Bearer {token}".encode("latin-1")):
        return response(
            403, b"only the operator may drain this worker (Authorization: Bearer <pool token>)\n", TEXT, False
        )
    if method == "DELETE":
        d.undrain("the operator asked")
        return response(200, (json.dumps(d.state_view()) + "\n").encode(), "application/json", False)
    if method != "POST":
        return response(405, b"POST /drain?seconds=S or DELETE /drain\n", TEXT, False)
    seconds, finish = 60.0, False
    try:
        for part in target.partition("?")[2].split("&"):
            key, _, value = part.partition("=")
            if key == "seconds":
                seconds = _seconds(value, key, MAX_DRAIN_SECONDS)
            elif key == "finish":  # a rollout's old worker: accepted while busy (see _drain.py)
                finish = value in ("1", "true")
    except ValueError as exc:
        return response(400, f"{exc}\n".encode(), TEXT, False)
    drained = d.drain(seconds, finish=finish)
    body = (json.dumps(d.state_view()) + "\n").encode()
    return response(200 if drained else 409, body, "application/json", False)


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


# The workers' series have their own prefix: the operator's are daemonpool_*, and one name meant two things.
WORKER_PREFIX = "daemonpool_worker_"


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
        ("daemonpool_draining", "gauge", "1 while the operator drains the worker.", 1 if s["draining"] else 0),
        ("daemonpool_stop_requested", "gauge", "1 once a stop was asked for.", 1 if s["state"] == "stopping" else 0),
    ]
    out = []
    for name, kind, help_, value in rows:
        new = WORKER_PREFIX + name[len("daemonpool_") :]
        out += [f"# HELP {new} {help_}", f"# TYPE {new} {kind}", f"{new}{{{labels}}} {value}"]
    for name, kind, _, value in rows:  # the 0.1 names, kept for one release so dashboards can move
        out += [f"# HELP {name} Deprecated: {WORKER_PREFIX}{name[len('daemonpool_') :]}; removed in 0.3.",
                f"# TYPE {name} {kind}", f"{name}{{{labels}}} {value}"]  # fmt: skip
    return "\n".join(out) + "\n"


class StateServer(BoundedServer):
    """The server of one Daemon: its probes' verdicts, ``/state`` and ``/metrics``."""

    def __init__(
        self,
        daemon: Daemon,
        port: int,
        host: str | None = None,
        termination_log: str | None = None,
        drain_token: str | None = None,
    ) -> None:
        self.daemon = daemon
        self.note = TerminationNote(termination_log)
        self.drain_token = drain_token
        super().__init__(
            lambda method, target, headers: answer(daemon, method, target, self.note, headers, self.drain_token, self),
            port,
            host,
            headers=True,
        )


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
        return StateServer(d, port, d.host, _files.termination_log(), os.environ.get(ENV_DRAIN_TOKEN) or None)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, port) from None


def state_view(d: Any) -> dict[str, Any]:
    """Kept for callers of 0.1: the Daemon's own ``state_view()``."""
    return d.state_view()  # type: ignore[no-any-return]
