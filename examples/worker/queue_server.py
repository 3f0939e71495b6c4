"""A tiny work queue over HTTP, for the autoscaling example and tests: items are durations in seconds.

  POST /put?items=1.5,3,cpu:20  queue items; answers the backlog. An item is SECONDS (the worker sleeps) or
                                cpu:SECONDS (it computes: what an HPA on CPU sees)
  POST /take?worker=NAME        200 "ID ITEM" (header X-Backlog: items still queued), or 204 when empty
  POST /done?id=ID&worker=NAME&stopped_busy=0|1
                                an item finished; stopped_busy=1: a stop (SIGTERM) reached the worker mid-item
  GET  /backlog                 the number of items queued (a backlog source: spec.autoscale.backlog.url)
  GET  /stats                   JSON: queued, in flight (and by whom), done, items done twice, stops while busy,
                                per item times

Standard library only; one process, state in memory (a test's queue, not a durable one). QUEUE_SERVER_PORT (8080; not QUEUE_PORT, which Kubernetes sets for a Service named queue).
"""

import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
QUEUED: list = []  # (id, seconds, put_at, kind)
TAKEN: dict = {}  # id -> (worker, seconds, put_at, taken_at)
DONE: dict = {}  # id -> record
TWICE: list = []
STOPPED_BUSY: list = []
NEXT = [0]


def _item(text: str) -> tuple:
    """'2.5' -> (2.5, ''); 'cpu:2.5' -> (2.5, 'cpu')."""
    kind, _, seconds = text.strip().rpartition(":")
    if kind not in ("", "cpu"):
        raise ValueError(f"item {text!r}: the kind before ':' must be cpu (or none, to sleep)")
    try:
        value = float(seconds)
    except ValueError:
        raise ValueError(f"item {text!r}: seconds must be a number, e.g. 2.5 or cpu:2.5") from None
    if not 0 <= value < 86400:
        raise ValueError(f"item {text!r}: seconds must be from 0 to 86400")
    return value, kind


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # one line per request would drown the pod's log
        pass

    def _send(self, code, body=b"", headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path, _, _ = self.path.partition("?")
        with LOCK:
            if path == "/backlog":
                return self._send(200, f"{len(QUEUED)}\n".encode())
            if path == "/stats":
                stats = {
                    "queued": len(QUEUED),
                    "inflight": len(TAKEN),
                    "inflight_by": sorted(w for w, _, _, _ in TAKEN.values()),
                    "inflight_items": sorted([w, sec] for w, sec, _, _ in TAKEN.values()),
                    "done": len(DONE),
                    "done_twice": TWICE,
                    "stopped_busy": STOPPED_BUSY,
                    "items": list(DONE.values()),
                }
                return self._send(200, json.dumps(stats).encode(), {"Content-Type": "application/json"})
        self._send(404, b"GET /backlog or /stats\n")

    def do_POST(self):
        path, _, query = self.path.partition("?")
        q = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
        now = time.time()
        with LOCK:
            if path == "/put":
                try:
                    items = [_item(x) for x in q.get("items", "").split(",") if x.strip()]
                except ValueError as exc:
                    return self._send(400, f"{exc}\n".encode())
                for seconds, kind in items:
                    NEXT[0] += 1
                    QUEUED.append((NEXT[0], seconds, now, kind))
                return self._send(200, f"{len(QUEUED)}\n".encode())
            if path == "/take":
                if not QUEUED:
                    return self._send(204, headers={"X-Backlog": 0})
                item_id, seconds, put_at, kind = QUEUED.pop(0)
                TAKEN[item_id] = (q.get("worker", "?"), seconds, put_at, now)
                item = f"{kind}:{seconds:g}" if kind else f"{seconds:g}"
                return self._send(200, f"{item_id} {item}\n".encode(), {"X-Backlog": len(QUEUED)})
            if path == "/done":
                item_id = int(q.get("id", "0"))
                worker, seconds, put_at, taken_at = TAKEN.pop(item_id, (q.get("worker"), 0.0, now, now))
                record = {
                    "id": item_id,
                    "worker": worker,
                    "seconds": seconds,
                    "put": put_at,
                    "taken": taken_at,
                    "done": now,
                }
                if item_id in DONE:
                    TWICE.append(item_id)
                DONE[item_id] = record
                if q.get("stopped_busy") == "1":
                    STOPPED_BUSY.append({"id": item_id, "worker": worker})
                return self._send(200, b"ok\n")
        self._send(404, b"POST /put /take /done\n")


def main():
    port = int(os.environ.get("QUEUE_SERVER_PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"queue server on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
