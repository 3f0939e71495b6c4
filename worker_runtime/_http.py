"""The runtime answers over HTTP: the probes' verdicts, the worker's state, and metrics. Standard library only.

Started by ``Daemon.start()`` when DAEMONPOOL_PORT is set (the operator sets it), on a daemon thread:
the worker's main loop never waits on it, and a hung main thread still fails ``/livez`` because the
verdicts come from the same heartbeat and state files as the sh probe.

    GET /livez /readyz /startupz [?timeout=S]   200 "ok", or 503 and one line why (the probes' words)
    GET /state                                  JSON: pool, slot, pid, state, seconds in it, beat age, ready
    GET /metrics                                Prometheus text
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading

from . import probe
from .contract import ENV_PORT

KINDS = {"/livez": "liveness", "/readyz": "readiness", "/startupz": "startup"}


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True  # never keep the worker alive for a slow client
    allow_reuse_address = True  # a restarted worker takes its port back at once
    request_queue_size = 128  # bursts of probes and scrapes queue instead of being refused (5 by default)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "worker-runtime"
    sys_version = ""

    def log_message(self, *args) -> None:  # the worker's log is its own
        pass

    def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        d = self.server.worker
        path, _, query = self.path.partition("?")
        if path in KINDS:
            limit = d.timeout
            for part in query.split("&"):
                key, _, value = part.partition("=")
                if key == "timeout":
                    try:
                        limit = float(value)
                    except ValueError:
                        return self._send(400, f"timeout={value!r} is not a number of seconds\n".encode())
            ok, reason = probe.check(KINDS[path], d.run_dir, d.name, limit)
            return self._send(200 if ok else 503, (reason + "\n").encode())
        if path == "/state":
            return self._send(200, (json.dumps(d.state_view()) + "\n").encode(), "application/json")
        if path == "/metrics":
            return self._send(200, metrics(d).encode(), "text/plain; version=0.0.4; charset=utf-8")
        return self._send(404, b"not found: /livez /readyz /startupz /state /metrics\n")


def metrics(d) -> str:
    s = d.state_view()
    labels = f'pool="{d.name}",slot="{s["slot"]}"'
    rows = [
        (
            "daemonpool_heartbeat_age_seconds",
            "gauge",
            "Seconds since the worker's last heartbeat.",
            s["heartbeat_age"] if s["heartbeat_age"] is not None else float("nan"),
        ),
        ("daemonpool_busy", "gauge", "1 while the worker is busy with an item.", 1 if s["state"] == "busy" else 0),
        ("daemonpool_busy_seconds_total", "counter", "Seconds spent busy since start.", s["busy_seconds_total"]),
        ("daemonpool_ready", "gauge", "1 while the worker says it is ready.", 1 if s["ready"] else 0),
        ("daemonpool_stop_requested", "gauge", "1 once a stop signal arrived.", 1 if s["state"] == "stopping" else 0),
    ]
    out = []
    for name, kind, help_, value in rows:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name}{{{labels}}} {value}"]
    return "\n".join(out) + "\n"


class StateServer:
    """The server of one Daemon; ``stop()`` closes the port."""

    def __init__(self, daemon, port: int, host: str = ""):
        self.server = _Server((host, port), _Handler)
        self.server.worker = daemon
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.5}, name="worker-runtime-http", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def port_from_env() -> int | None:
    raw = os.environ.get(ENV_PORT)
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{ENV_PORT}={raw!r} is not a port number (1-65535)")
    return int(raw)


def serve(d, error):
    """Start answering for Daemon ``d`` on its port (``d.port``, else $DAEMONPOOL_PORT); None when no port is set.
    Raises ``error`` (DaemonError) naming the port and the fix when it cannot."""
    try:
        port = d.port if d.port is not None else port_from_env()
    except ValueError as exc:
        raise error(f"{exc}; set it to a free port, or unset it to answer through files only") from None
    if port is None:
        return None
    try:
        return StateServer(d, port)
    except OSError as exc:
        raise error(
            f"cannot answer on port {port}: {exc.strerror}; pick a free port ({ENV_PORT}, or spec.port in the pool)"
        ) from None


def state_view(d) -> dict:
    now = d._monotonic()
    hb = None
    if d.slot is not None:
        try:
            hb = round(d._clock() - os.stat(d._path("heartbeat")).st_mtime, 3)
        except OSError:
            hb = None
    state = "stopping" if d.stop_signal is not None else d._state
    busy = d._busy_total + (now - d._state_since if d._state == "busy" else 0.0)
    return {
        "pool": d.name,
        "slot": d.slot,
        "pid": os.getpid(),
        "state": state,
        "seconds_in_state": round(now - d._state_since, 3),
        "heartbeat_age": hb,
        "ready": bool(d._ready and d.running),
        "busy_seconds_total": round(busy, 3),
    }
