"""The operator asking workers for /state trusts none of them (operator/daemonpool_operator/workers.py):
hostile answers on 127.0.0.1 from real sockets are None, the good one is read, and the whole call ends at
its deadline however many misbehave. Before: a JSON list raised in the reconcile, an endless body took the
operator to 875 MiB, a redirect was followed, a trickle made a 1 s timeout last 12 s."""

import json
import socket
import threading
import time

import pytest

from daemonpool_operator import workers

GOOD = {"pool": "p", "slot": 0, "state": "busy", "seconds_in_state": 3.5, "inflight": 2, "capacity": 4}


def _answer(body: bytes, status=b"200 OK", extra=b"") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


class Hostile:
    """One listening socket per behaviour; each accepted connection is served by a thread until closed."""

    def __init__(self, behaviour):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            conn.recv(4096)
            self.behaviour(conn, self.stop)
        except OSError:
            pass
        finally:
            if self.behaviour is not silent:
                conn.close()

    def close(self):
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            c.close()


def sends(data):
    return lambda conn, stop: conn.sendall(data)


def endless(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    chunk = b"x" * 65536
    while not stop.is_set():
        conn.sendall(chunk)


def trickle(conn, stop):
    for ch in _answer(json.dumps(GOOD).encode()):
        if stop.is_set():
            return
        conn.sendall(bytes([ch]))
        time.sleep(0.2)


def silent(conn, stop):
    stop.wait(30)


CASES = {
    "good": sends(_answer(json.dumps(GOOD).encode())),
    "list": sends(_answer(b"[1, 2]")),
    "string": sends(_answer(b'"busy"')),
    "text seconds": sends(_answer(json.dumps({"state": "idle", "seconds_in_state": "long"}).encode())),
    "nan seconds": sends(_answer(b'{"state": "idle", "seconds_in_state": NaN}')),
    "unknown word": sends(_answer(b'{"state": "asleep", "seconds_in_state": 1}')),
    "nested": sends(_answer(b"[" * 100000 + b"]" * 100000)),
    "redirect": sends(_answer(b"", b"302 Found", b"Location: http://127.0.0.1:1/api/v1/admin?delete=everything\r\n")),
    "bad capacity": sends(_answer(b'{"state": "idle", "seconds_in_state": 1, "capacity": 0}')),
    "endless": endless,
    "trickle": trickle,
    "silent": silent,
}


@pytest.fixture
def servers():
    made = {name: Hostile(b) for name, b in CASES.items()}
    yield made
    for s in made.values():
        s.close()


def test_only_the_good_answer_is_read_and_the_call_ends_at_its_deadline(servers):
    t0 = time.monotonic()
    got = {name: workers.ask("127.0.0.1", s.port, timeout=1.0) for name, s in servers.items()}
    assert got.pop("good") == {"state": "busy", "seconds_in_state": 3.5, "inflight": 2, "capacity": 4}
    assert got == dict.fromkeys(got), got
    assert time.monotonic() - t0 < len(servers) * 1.0 + 2, "each ask ends at its own deadline"


def test_many_silent_workers_cost_one_deadline_not_one_each(servers):
    targets = {f"w{i}": "127.0.0.1" for i in range(160)}
    t0 = time.monotonic()
    raw = workers.ask_all(targets, servers["silent"].port, timeout=1.0)
    took = time.monotonic() - t0
    assert raw == dict.fromkeys(targets) and took < 1.6, f"{took:.2f}s for 160 silent workers"


def test_states_reads_pods_with_an_ip_only(servers):
    pods = [
        {"metadata": {"name": "a"}, "status": {"podIP": "127.0.0.1"}},
        {"metadata": {"name": "b"}, "status": {}},
    ]
    assert workers.states(pods, servers["good"].port) == {
        "a": {"state": "busy", "seconds_in_state": 3.5, "inflight": 2, "capacity": 4}
    }
    assert workers.states(pods, servers["redirect"].port) == {"a": None}


@pytest.mark.parametrize(
    "data, ok",
    [
        ({"state": "idle", "seconds_in_state": 0}, True),
        ({"state": "unknown"}, True),
        ({"state": "busy", "seconds_in_state": -1}, False),
        ({"state": "busy", "seconds_in_state": True}, False),
        ({"state": "busy", "inflight": -1}, False),
        ({"state": "busy", "inflight": 2**31}, False),
        ({"state": "busy", "items_done": 1.5}, False),
        ({"state": None}, False),
        ({"state": "busy", "retiring": "yes"}, False),
        ({"state": "idle", "draining": 1}, False),
    ],
)
def test_the_shape_is_checked_field_by_field(data, ok):
    assert (workers.valid_state(data) is not None) is ok


def test_draining_and_retiring_are_passed_on():
    data = {"state": "busy", "inflight": 1, "draining": True, "retiring": True}
    assert workers.valid_state(data) == {
        "state": "busy",
        "seconds_in_state": 0.0,
        "inflight": 1,
        "draining": True,
        "retiring": True,
    }


def test_an_asker_keeps_its_connections_to_the_runtime_open_between_passes(tmp_path, monkeypatch):
    """Keep-alive with the real runtime's server: three passes over one connection, and a connection the
    worker closed meanwhile (its idle timeout) is replaced within the same ask."""
    from worker_runtime import Daemon, httpserver

    monkeypatch.setattr(httpserver, "KEEPALIVE_IDLE", 0.5)
    d = Daemon("k", timeout=10, run_dir=str(tmp_path), port=0, host="127.0.0.1", signal_map={})
    assert d.start()
    try:
        asker = workers.Asker()
        for _ in range(3):
            got = asker.ask_all({"w": "127.0.0.1"}, d._http.port)
            assert workers.parse(got["w"])["state"] == "idle"
        assert asker.connects == 1, "one connection for three asks"
        time.sleep(1.0)  # the worker closed the idle connection
        got = asker.ask_all({"w": "127.0.0.1"}, d._http.port)
        assert workers.parse(got["w"])["state"] == "idle", "a stale kept connection is asked again on a new one"
        assert asker.connects == 2
        one_shot = workers.Asker(keep=0)
        one_shot.ask_all({"w": "127.0.0.1"}, d._http.port)
        one_shot.ask_all({"w": "127.0.0.1"}, d._http.port)
        assert one_shot.connects == 2 and one_shot._idle == {}
        asker.close()
    finally:
        d.stop()


def test_an_asker_keeps_nothing_a_worker_does_not_offer_and_stays_bounded_by_hostile_ones(servers):
    asker = workers.Asker()
    t0 = time.monotonic()
    got = {name: asker.ask_all({"w": "127.0.0.1"}, s.port, timeout=1.0)["w"] for name, s in servers.items()}
    assert workers.parse(got["good"])["inflight"] == 2
    assert got["endless"] is None and got["trickle"] is None and got["silent"] is None
    assert asker._idle == {}, "an answer without Connection: keep-alive is not kept"
    assert time.monotonic() - t0 < len(servers) * 1.0 + 2


def _exchange_until_done(sock, request=b"GET /state HTTP/1.1\r\n\r\n"):
    """Drive workers.exchange over a real socket as the Asker and the StateWatch do: write, then read."""
    out, buf, seen = request, b"", []
    while True:
        events = workers.selectors.EVENT_WRITE if out else workers.selectors.EVENT_READ
        what, out, buf = workers.exchange(sock, events, out, buf)
        seen.append(what)
        if what not in (workers.SENDING, workers.SENT, workers.MORE):
            return what, buf, seen


@pytest.mark.parametrize(
    "reply, close, want",
    [
        (b"", True, workers.NOTHING),  # closed before a byte: a kept connection the worker had closed
        (_answer(json.dumps(GOOD).encode()), False, workers.ANSWER),
        (_answer(b"{}", extra=b"Connection: close\r\n")[:-1], True, workers.FAILED),  # closed part-way
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (workers.MAX_ANSWER + 2048), True, workers.FAILED),  # too big
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{}",
            True,
            workers.ANSWER_CLOSED,
        ),  # no length: the close ends it
    ],
)
def test_one_exchange_sends_the_request_then_reads_one_answer(reply, close, want):
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        theirs.sendall(reply)
        if close:
            theirs.shutdown(socket.SHUT_WR)
        what, buf, seen = _exchange_until_done(ours)
        assert what == want, seen
        assert seen[0] == workers.SENT  # the request went in one send
        assert theirs.recv(100) == b"GET /state HTTP/1.1\r\n\r\n"
        if want in (workers.ANSWER, workers.ANSWER_CLOSED):
            assert buf == reply
    finally:
        ours.close()
        theirs.close()
