"""The operator's one door to the workers themselves: their ``GET /state`` answers, asked in parallel.

Used only before a scale-in (idle-first). Short timeouts: a worker that does not answer at once is
"unknown" and the scale-in goes on. Imports neither kopf nor kubernetes.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import urllib.request

# Seconds to wait for one worker's answer: it answers in well under a millisecond when it can.
STATE_TIMEOUT = 1.0
# Workers asked at once.
PARALLEL = 16


def _state(ip: str, port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/state", timeout=STATE_TIMEOUT) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def states(pods: list, port: int) -> dict:
    """{pod name: state dict or None} for pods that have an IP."""
    targets = {p["metadata"]["name"]: p["status"].get("podIP") for p in pods if (p.get("status") or {}).get("podIP")}
    if not targets:
        return {}
    with cf.ThreadPoolExecutor(min(PARALLEL, len(targets))) as ex:
        futures = {name: ex.submit(_state, ip, port) for name, ip in targets.items()}
        return {name: f.result() for name, f in futures.items()}
