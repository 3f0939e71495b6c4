"""The operator's drain and the worker's backlog (worker_runtime/_drain.py and the /drain answer in _http.py):
a drain is accepted only while no item is in flight, fails readiness, parks the classic loop until it ends
(time, undrain, stop), ends when an item starts anyway, and only the token's holder may ask for it.
Real files and a real HTTP server on 127.0.0.1; time is injected where the test moves it."""

import http.client
import json
import os
import threading
import time

import pytest

from worker_runtime import Daemon

from testkit.clock import Clock


def make(tmp_path, **kw):
    kw.setdefault("signal_map", {})
    return Daemon("c", timeout=10, run_dir=str(tmp_path), **kw)


def ready_file(tmp_path):
    return os.path.exists(tmp_path / "c.0.ready")


def test_a_drain_is_refused_while_an_item_is_in_flight_and_taken_when_idle(tmp_path):
    d = make(tmp_path)
    assert d.start()
    with d.busy():
        assert d.drain(30) is False
        assert not d.draining and ready_file(tmp_path)
    assert d.drain(30) is True
    assert d.draining
    assert not ready_file(tmp_path), "a drained worker fails readiness: the ReplicaSet deletes it first"
    view = d.state_view()
    assert (view["draining"], view["ready"], view["state"]) == (True, False, "idle")
    d.undrain()
    assert not d.draining and ready_file(tmp_path)
    d.stop()


def test_a_drain_ends_by_itself_when_its_time_runs_out(tmp_path):
    clock = Clock()
    d = make(tmp_path, monotonic=clock)
    assert d.start()
    assert d.drain(5)
    clock.t += 4.9
    assert d.draining
    clock.t += 0.2
    assert not d.draining
    assert ready_file(tmp_path), "a crashed operator never strands a worker drained"
    d.stop()


def test_an_item_that_starts_while_drained_ends_the_drain(tmp_path):
    d = make(tmp_path)
    assert d.start()
    assert d.drain(30)
    with d.busy():
        assert not d.draining
        assert d.state_view()["state"] == "busy"
    d.stop()


def test_a_finishing_drain_is_taken_while_busy_stays_ready_until_the_last_item_ends(tmp_path):
    """A rollout's old worker: readiness fails only once nothing is in flight (a not-ready busy pod is the first
    the ReplicaSet removes), an item that starts anyway keeps it drained and ready again while it runs."""
    d = make(tmp_path)
    assert d.start()
    first, second = d.busy(), d.busy()
    first.__enter__()
    second.__enter__()
    assert d.drain(30, finish=True) is True
    assert d.draining and d.retiring
    assert ready_file(tmp_path), "busy and retiring: still ready"
    view = d.state_view()
    assert (view["draining"], view["retiring"], view["ready"], view["inflight"]) == (True, True, True, 2)
    first.__exit__(None, None, None)
    assert ready_file(tmp_path), "one item still in flight"
    second.__exit__(None, None, None)
    assert not ready_file(tmp_path), "the last item ended: not ready, so the ReplicaSet removes it first"
    assert d.state_view()["ready"] is False
    with d.busy():
        assert d.draining and d.retiring, "an item that starts anyway does not end a finishing drain"
        assert ready_file(tmp_path)
    assert not ready_file(tmp_path)
    d.undrain()
    assert not d.retiring and ready_file(tmp_path)
    d.stop()


def test_heartbeat_inside_an_item_of_a_retiring_worker_does_not_park(tmp_path):
    """An item that beats (heartbeat() in its own loop) goes on while the worker retires: parking there would
    hold the item, and the rollout waiting for it, until the drain ran out (seen on the cluster)."""
    d = make(tmp_path)
    assert d.start()
    with d.busy():
        assert d.drain(30, finish=True)
        t0 = time.monotonic()
        assert d.heartbeat() is True
        assert time.monotonic() - t0 < 0.5
    d.stop()


def test_a_finishing_drain_ends_by_itself_too(tmp_path):
    clock = Clock()
    d = make(tmp_path, monotonic=clock)
    assert d.start()
    with d.busy():
        assert d.drain(5, finish=True)
        clock.t += 5.1
        assert not d.draining and not d.retiring
    assert ready_file(tmp_path)
    d.stop()


def test_heartbeat_parks_the_classic_loop_while_drained_and_a_stop_ends_the_park_at_once(tmp_path):
    d = make(tmp_path)
    assert d.start()
    assert d.drain(30)
    result = {}

    def loop_turn():
        t0 = time.monotonic()
        result["beat"] = d.heartbeat()
        result["took"] = time.monotonic() - t0

    t = threading.Thread(target=loop_turn)
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), "heartbeat() returned while drained: the loop would take an item"
    d.request_stop(reason="test")
    t.join(2)
    assert not t.is_alive()
    assert result["beat"] is False
    d.stop()


def test_heartbeat_returns_soon_after_an_undrain(tmp_path):
    d = make(tmp_path)
    assert d.start()
    assert d.drain(30)
    threading.Timer(0.3, d.undrain).start()
    t0 = time.monotonic()
    assert d.heartbeat() is True
    assert 0.25 < time.monotonic() - t0 < 1.5
    d.stop()


def test_a_drain_of_nonsense_seconds_is_refused(tmp_path):
    d = make(tmp_path)
    assert d.start()
    for bad in (0, -1, float("nan"), float("inf"), 601):
        with pytest.raises(ValueError, match="drain seconds"):
            d.drain(bad)
    d.stop()


def test_the_backlog_a_worker_reports_is_in_its_state(tmp_path):
    d = make(tmp_path)
    assert d.start()
    assert d.state_view()["backlog"] is None
    d.report_backlog(42)
    assert d.state_view()["backlog"] == 42
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="report_backlog"):
            d.report_backlog(bad)
    d.stop()


def call(port, method, path, token=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("DAEMONPOOL_DRAIN_TOKEN", "pool-secret")
    d = make(tmp_path, port=0, host="127.0.0.1")
    assert d.start()
    yield d, d._http.port
    d.stop()


def test_only_the_holder_of_the_token_may_drain(served):
    d, port = served
    assert call(port, "POST", "/drain?seconds=5")[0] == 403
    assert call(port, "POST", "/drain?seconds=5", "wrong")[0] == 403
    assert call(port, "DELETE", "/drain", "wrong")[0] == 403
    assert not d.draining
    status, body = call(port, "POST", "/drain?seconds=5", "pool-secret")
    assert status == 200 and json.loads(body)["draining"] is True
    assert call(port, "GET", "/readyz")[0] == 503
    status, body = call(port, "DELETE", "/drain", "pool-secret")
    assert status == 200 and json.loads(body)["draining"] is False
    assert call(port, "GET", "/readyz")[0] == 200


def test_a_busy_worker_answers_a_drain_with_409_and_its_state(served):
    d, port = served
    with d.busy():
        status, body = call(port, "POST", "/drain?seconds=5", "pool-secret")
    assert status == 409
    assert json.loads(body)["inflight"] == 1
    assert not d.draining


def test_a_finishing_drain_is_answered_200_while_busy(served):
    d, port = served
    with d.busy():
        status, body = call(port, "POST", "/drain?seconds=5&finish=1", "pool-secret")
        assert status == 200 and json.loads(body)["retiring"] is True
        assert call(port, "GET", "/readyz")[0] == 200
    assert call(port, "GET", "/readyz")[0] == 503


def test_bad_drain_requests_are_refused_with_the_reason(served):
    _, port = served
    assert call(port, "POST", "/drain?seconds=abc", "pool-secret")[0] == 400
    assert call(port, "GET", "/drain", "pool-secret")[0] == 405


def test_without_a_token_draining_is_off(tmp_path, monkeypatch):
    monkeypatch.delenv("DAEMONPOOL_DRAIN_TOKEN", raising=False)
    d = make(tmp_path, port=0, host="127.0.0.1")
    assert d.start()
    status, body = call(d._http.port, "POST", "/drain?seconds=5", "anything")
    assert status == 404 and b"DAEMONPOOL_DRAIN_TOKEN" in body
    d.stop()
