"""One process answering ``/state`` for many fake workers, as the runtime does: at once, or as a long poll
(``?wait=S&since=V``: after S seconds, or at the next change when workers change every ``churn`` seconds).
Used by bench/signal_cost.py and bench/autoscale.py; not a worker, not a test."""

from __future__ import annotations

import asyncio
import time

from worker_runtime.httpserver import BoundedServer, response


class FakeWorkers:
    """``respond`` for a BoundedServer; ``asks`` counts requests. ``churn``: seconds between state changes of
    every worker (0: never); the version is the number of changes so far."""

    def __init__(self, churn: float = 0.0) -> None:
        self.churn, self.asks, self.t0 = churn, 0, time.monotonic()

    def version(self) -> int:
        return 1 + (int((time.monotonic() - self.t0) / self.churn) if self.churn else 0)

    def body(self, method: str) -> bytes:
        v = self.version()
        state = "busy" if self.churn and v % 2 else "idle"
        text = (
            f'{{"state": "{state}", "seconds_in_state": 100.0, "inflight": {int(state == "busy")}, "capacity": 1,'
            f' "items_done": {v}, "version": {v}}}\n'
        )
        return response(200, text.encode(), "application/json", method == "HEAD")

    def __call__(self, method: str, target: str):
        self.asks += 1
        _, _, query = target.partition("?")
        args = dict(p.partition("=")[::2] for p in query.split("&") if p)
        if "wait" not in args or str(self.version()) != args.get("since"):
            return self.body(method)
        wait = float(args["wait"])
        if self.churn:
            elapsed = time.monotonic() - self.t0
            wait = min(wait, self.churn - elapsed % self.churn + 0.001)

        async def later() -> bytes:
            await asyncio.sleep(wait)
            return self.body(method)

        return later()


def serve(port: int, churn: float = 0.0, host: str = "0.0.0.0") -> tuple[BoundedServer, FakeWorkers]:
    fake = FakeWorkers(churn)
    server = BoundedServer(fake, port, host, name="fake-workers")
    server.cap = 100000  # one process stands for every worker: one kept connection each, as with real workers
    return server, fake
