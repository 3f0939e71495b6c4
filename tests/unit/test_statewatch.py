"""Long polls of every worker's /state (operator/daemonpool_operator/statewatch.py) against the real runtime's
server on 127.0.0.1 and against workers that do not long-poll or do not answer: one answer per change, the
state between answers aged, and every wait bounded."""

import socket
import threading
import time

import pytest

from daemonpool_operator import statewatch
from worker_runtime import Daemon


@pytest.fixture
def daemon(tmp_path):
    d = Daemon("w", timeout=10, run_dir=str(tmp_path), port=0, host="127.0.0.1", signal_map={})
    assert d.start()
    yield d
    d.stop()


def until(fn, seconds=3.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if (v := fn()) is not None and v is not False:
            return v
        time.sleep(0.02)
    raise AssertionError("never")


def test_one_connection_and_one_answer_per_change(daemon):
    watch = statewatch.StateWatch()
    targets = {"k": ("127.0.0.1", daemon._http.port)}
    first = watch.current(targets)["k"]
    assert first["state"] == "idle" and "version" in first
    time.sleep(0.3)
    again = watch.current(targets)["k"]
    assert watch.answers == 1 and watch.connects == 1, "nothing changed: nothing asked, nothing read"
    assert again["seconds_in_state"] >= first["seconds_in_state"] + 0.25, "the state between answers is aged"
    with daemon.busy():
        busy = until(lambda: (s := watch.current(targets)["k"]) and s["state"] == "busy" and s)
        assert busy["inflight"] == 1
    until(lambda: watch.current(targets)["k"]["state"] == "idle")
    assert watch.connects == 1
    assert 3 <= watch.answers <= 6, watch.answers  # the first, busy, idle (and a readiness or two)
    watch.close()


def test_a_wait_with_no_change_ends_after_wait_seconds_and_is_asked_again(daemon):
    watch = statewatch.StateWatch(wait=0.3)
    targets = {"k": ("127.0.0.1", daemon._http.port)}
    watch.current(targets)
    for _ in range(10):  # answers are read by the passes: one every 0.1 s for a second
        time.sleep(0.1)
        watch.current(targets)
    assert 3 <= watch.answers <= 5 and watch.connects == 1, (watch.answers, watch.connects)
    watch.close()


class Plain:
    """A worker from before long polls: answers every ask at once, without a version, and closes."""

    def __init__(self, body=b'{"state": "busy", "seconds_in_state": 1.0, "inflight": 1, "capacity": 1}', answer=True):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.body, self.answer, self.held = body, answer, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.recv(4096)
            if not self.answer:
                self.held.append(conn)  # silent
                continue
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(self.body) + self.body
            )
            conn.close()

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


def test_a_worker_that_does_not_long_poll_is_asked_each_pass():
    plain = Plain()
    watch = statewatch.StateWatch()
    for _ in range(3):
        assert watch.current({"k": ("127.0.0.1", plain.port)})["k"]["state"] == "busy"
    assert watch.connects == 3 and watch.answers == 3
    watch.close()
    plain.close()


def test_a_silent_worker_is_unknown_within_the_timeout_each_pass():
    silent = Plain(answer=False)
    watch = statewatch.StateWatch(timeout=0.3)
    for _ in range(2):
        t0 = time.monotonic()
        assert watch.current({"k": ("127.0.0.1", silent.port)}) == {"k": None}
        assert time.monotonic() - t0 < 0.6
    watch.close()
    silent.close()


def test_a_worker_gone_is_unknown_then_asked_again_and_one_no_longer_listed_is_forgotten(daemon, tmp_path):
    watch = statewatch.StateWatch()
    port = daemon._http.port
    assert watch.current({"k": ("127.0.0.1", port)})["k"]["state"] == "idle"
    daemon.stop()
    until(lambda: watch.current({"k": ("127.0.0.1", port)})["k"] is None)
    watch.current({})
    assert watch._conns == {}
    watch.close()
