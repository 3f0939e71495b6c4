"""The runtime's HTTP answers under hostile clients, HEAD, bounded ?timeout=, the termination note, and
sd_notify from a Daemon (worker_runtime/_http.py, _notify.py). Real sockets on 127.0.0.1 and a real
AF_UNIX datagram socket that follows sd_notify(3)."""

import json
import os
import socket
import time

import pytest

from worker_runtime import Daemon, _http, _notify, httpserver, probe

from testkit.clock import Clock
from testkit.proc import free_port


def raw(port, data, host="127.0.0.1", timeout=5.0):
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("DAEMONPOOL_TERMINATION_LOG", str(tmp_path / "termination-log"))
    (tmp_path / "termination-log").write_text("")
    d = Daemon("h", timeout=10, run_dir=str(tmp_path / "run"), port=free_port(), signal_map={})
    assert d.start()
    yield d
    d.stop()


def test_head_is_answered_without_a_body(served):
    out = raw(served.port, b"HEAD /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 3\r\n" in out and out.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "1e9", "x"])
def test_a_timeout_that_is_not_a_sane_number_is_refused(served, value):
    out = raw(served.port, f"GET /livez?timeout={value} HTTP/1.1\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 400 "), out


def test_the_listener_answers_on_ipv6_too_where_the_host_has_it(served):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this build of Python")
    try:
        out = raw(served.port, b"GET /livez HTTP/1.1\r\n\r\n", host="::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert out.startswith(b"HTTP/1.1 200 ")


def test_slow_and_idle_connections_do_not_delay_a_probe(served):
    hostile = []
    for _n in range(600):  # more than the connection cap: the oldest are dropped for new ones
        s = socket.create_connection(("127.0.0.1", served.port))
        s.sendall(b"GET /livez HTTP/1.1\r\n")  # never finishes its head
        hostile.append(s)
    worst = 0.0
    for _ in range(10):
        t0 = time.monotonic()
        out = raw(served.port, b"GET /livez HTTP/1.1\r\n\r\n", timeout=3)
        worst = max(worst, time.monotonic() - t0)
        assert out.startswith(b"HTTP/1.1 200 ")
    for s in hostile:
        s.close()
    assert worst < 1.0, f"a probe waited {worst:.2f}s behind hostile connections"
    assert len(served._http.conns) <= served._http.cap


def test_a_head_that_trickles_is_cut_at_the_deadline(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
        t0 = time.monotonic()
        got = b""
        try:
            for ch in b"GET /livez HTTP/1.1\r\n":
                s.sendall(bytes([ch]))
                time.sleep(0.1)
            got = s.recv(100)
        except OSError:
            pass
        assert got == b"" and time.monotonic() - t0 < 3.5


def test_a_reset_connection_writes_nothing_to_the_log(served, capfd):
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", served.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.sendall(b"GET /state HTTP/1.1\r\n\r\n")
        s.close()  # RST
    time.sleep(0.3)
    assert "Traceback" not in capfd.readouterr().err


def test_the_first_failing_liveness_verdict_goes_to_the_termination_log_once(tmp_path):
    note = _http.TerminationNote(str(tmp_path / "t"))
    (tmp_path / "t").write_text("")
    note.verdict(True, "ok")
    assert (tmp_path / "t").read_text() == ""
    note.verdict(False, "w slot 0 (pid 7): heartbeat is 31.0s old, limit 30s (worker hung?)")
    note.verdict(False, "w slot 0 (pid 7): heartbeat is 35.0s old, limit 30s (worker hung?)")
    assert (
        tmp_path / "t"
    ).read_text() == "liveness failing: w slot 0 (pid 7): heartbeat is 31.0s old, limit 30s (worker hung?)\n"
    note.verdict(True, "ok")
    note.verdict(False, "again")
    assert (tmp_path / "t").read_text() == "liveness failing: again\n", "a new streak writes again"
    _http.TerminationNote(str(tmp_path / "absent")).verdict(False, "x")
    assert not (tmp_path / "absent").exists(), "never created: only the kubelet's file is written"


def test_a_descriptor_shortage_is_not_called_a_disk_problem(tmp_path):
    import errno

    from worker_runtime import _files

    exc = OSError(errno.EMFILE, "Too many open files")
    assert "descriptor limit" in _files.why(exc)
    assert "ulimit -n" in _files.fix_for(exc, str(tmp_path)) and "free space" not in _files.fix_for(exc, str(tmp_path))


class NotifyServer:
    """The receiving end of sd_notify(3), as systemd runs it: an AF_UNIX datagram socket."""

    def __init__(self, path):
        self.sock = _notify.listen(str(path))
        self.sock.settimeout(2)

    def messages(self):
        out = []
        self.sock.setblocking(False)
        while True:
            try:
                out.append(_notify.parse(self.sock.recv(4096)))
            except BlockingIOError:
                self.sock.close()
                return out


def test_a_daemon_speaks_sd_notify_when_notify_socket_is_set(tmp_path, monkeypatch):
    server = NotifyServer(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    d = Daemon("n", timeout=10, run_dir=str(tmp_path / "run"), signal_map={})
    d.beat_interval = 0
    assert d.start()
    d.heartbeat()
    d.set_status("draining the outbox")
    d.request_stop()
    d.stop()
    got = server.messages()
    assert got[0]["WATCHDOG"] == "1", "the first beat"
    ready = next(m for m in got if "READY" in m)
    assert ready["READY"] == "1" and ready["MAINPID"] == str(os.getpid())
    assert sum("WATCHDOG" in m for m in got) >= 2
    assert {"STATUS": "draining the outbox"} in got
    assert any(m.get("STOPPING") == "1" for m in got)


def test_an_abstract_notify_socket_name_is_understood():
    assert _notify.address("@sd/notify") == b"\0sd/notify"
    assert _notify.address("/run/systemd/notify") == "/run/systemd/notify"
    assert _notify.parse(b"READY=1\nSTATUS=a=b\nnoise\n=x") == {"READY": "1", "STATUS": "a=b"}
    assert _notify.Notifier(None).send(READY=1) is False


def test_a_forked_child_holds_neither_the_listener_nor_accepted_connections(served):
    hold = socket.create_connection(("127.0.0.1", served.port))
    hold.sendall(b"GET /livez")  # accepted, head unfinished: the server keeps it open
    deadline = time.monotonic() + 5
    while not served._http.conns and time.monotonic() < deadline:
        time.sleep(0.01)
    (writer,) = list(served._http.conns)
    fd = writer.get_extra_info("socket").fileno()
    listen_fd = served._http.sock.fileno()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, os.readlink(f"/proc/self/fd/{fd}").encode() + b" ")
            try:
                os.fstat(listen_fd)
                os.write(w, b"listening")
            except OSError:
                os.write(w, b"closed")
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        said = f.read().decode()
    hold.close()
    assert said == "/dev/null closed", said


def test_the_operators_metrics_endpoint_holds_idle_connections_without_a_thread_each():
    """Before: prometheus-client's server started a thread per connection (1,242 idle: 1,244 threads)."""
    import threading

    from daemonpool_operator import metrics

    server = metrics.serve(0, lambda: [])
    try:
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
        time.sleep(0.2)
        out = raw(server.port, b"GET /metrics HTTP/1.1\r\n\r\n", timeout=3)
        assert out.startswith(b"HTTP/1.1 200 ") and b"daemonpool_reconciles_total" in out
        assert threading.active_count() - before <= 1
        assert raw(server.port, b"GET /other HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
        for s in idle:
            s.close()
    finally:
        server.stop()
        from prometheus_client import REGISTRY

        for c in list(REGISTRY._collector_to_names):
            if type(c).__name__ == "PoolConditions":
                REGISTRY.unregister(c)


def test_keep_alive_only_when_asked_and_the_idle_connection_is_closed_after_a_while(served, monkeypatch):

    monkeypatch.setattr(httpserver, "KEEPALIVE_IDLE", 0.5)
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as s:
        for _ in range(2):
            s.sendall(b"GET /state HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(65536)
            assert b"Connection: keep-alive" in head, head
        time.sleep(1.0)
        assert s.recv(1) == b"", "an idle kept connection is closed (FIN) after KEEPALIVE_IDLE"
    out = raw(served.port, b"GET /state HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"Connection: close" in out, "not asked for: closed after the answer (clients read to the end)"


def _state(port, query, timeout=5.0):
    import json

    out = raw(port, f"GET /state{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), timeout=timeout)
    head, _, body = out.partition(b"\r\n\r\n")
    return head.split(b" ")[1], (json.loads(body) if body.startswith(b"{") else body)


def test_a_state_long_poll_answers_at_once_on_another_version_and_on_a_change_else_after_wait(served):
    code, now = _state(served.port, "")
    assert code == b"200" and isinstance(now["version"], int)
    t0 = time.monotonic()
    code, again = _state(served.port, f"?wait=5&since={now['version'] - 1}")
    assert time.monotonic() - t0 < 0.5 and again["version"] == now["version"], "another version: at once"
    t0 = time.monotonic()
    code, same = _state(served.port, f"?wait=0.4&since={now['version']}")
    assert 0.35 <= time.monotonic() - t0 < 2 and same["version"] == now["version"], "no change: after wait"
    import threading

    def item():
        time.sleep(0.3)
        with served.busy():
            time.sleep(0.5)

    threading.Thread(target=item).start()
    t0 = time.monotonic()
    code, changed = _state(served.port, f"?wait=10&since={now['version']}")
    took = time.monotonic() - t0
    assert 0.25 <= took < 1.5 and changed["state"] == "busy" and changed["version"] > now["version"], took


def test_a_state_long_poll_ends_when_a_drain_runs_out_and_bad_waits_are_refused(served):
    assert served.drain(0.4)
    code, now = _state(served.port, "")
    assert now["draining"] is True
    t0 = time.monotonic()
    code, later = _state(served.port, f"?wait=10&since={now['version']}")
    assert time.monotonic() - t0 < 1.5 and later["draining"] is False, "the drain ran out: a change"
    for bad in ("?wait=0", "?wait=nan", "?wait=31", "?wait=1&since=x"):
        assert _state(served.port, bad)[0] == b"400", bad


# -- the answers word for word (_http.answer, drain_answer, metrics, port_from_env, serve) ---------------------
# Literal oracles worked from the module's docstring and the Prometheus text format; written against the
# mutants hack/mutation found surviving in what /metrics and /state say while busy and while stopping.


WALL = 2_000_000_000.0  # the injected wall clock: heartbeat ages are WALL - the file's mtime


def head(status, ctype, body):
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\nServer: worker-runtime\r\n\r\n"
    ).encode()


def split(resp):
    top, _, body = resp.partition(b"\r\n\r\n")
    return top + b"\r\n\r\n", body


@pytest.fixture
def lit(tmp_path):
    mono = Clock(500.0)
    d = Daemon("lit", timeout=10, run_dir=str(tmp_path / "run"), signal_map={}, clock=lambda: WALL, monotonic=mono)
    assert d.start() and d.slot == 0
    os.utime(d.heartbeat_file, (WALL - 7.5, WALL - 7.5))
    d.mono = mono
    yield d
    d.stop()


TEXT = "text/plain; charset=utf-8"
PROM = "text/plain; version=0.0.4; charset=utf-8"
JSON = "application/json"


@pytest.mark.parametrize(
    "method, target, status, body",
    [
        ("POST", "/state", "405 Method Not Allowed", b"only GET and HEAD\n"),
        ("PUT", "/livez", "405 Method Not Allowed", b"only GET and HEAD\n"),
        ("GET", "/nope", "404 Not Found", b"not found: /livez /readyz /startupz /state /metrics\n"),
        ("GET", "/METRICS", "404 Not Found", b"not found: /livez /readyz /startupz /state /metrics\n"),
        (
            "GET",
            "/livez?timeout=nan",
            "400 Bad Request",
            b"timeout='nan' must be a number of seconds in (0, 86400]\n",
        ),
        (
            "GET",
            "/livez?x=1&timeout=86400.5",
            "400 Bad Request",
            b"timeout='86400.5' must be a number of seconds in (0, 86400]\n",
        ),
        (
            "GET",
            "/readyz?timeout=" + "9" * 50,
            "400 Bad Request",
            b"timeout='" + b"9" * 40 + b"' must be a number of seconds in (0, 86400]\n",
        ),
        ("GET", "/livez?timeout=0", "400 Bad Request", b"timeout='0' must be a number of seconds in (0, 86400]\n"),
        ("GET", "/livez?timeout=x=y", "400 Bad Request", b"timeout='x=y' must be a number of seconds in (0, 86400]\n"),
        ("GET", "/livez?x=1&timeout=86400", "200 OK", b"ok\n"),
        ("GET", "/livez?timeout=0.5&y", "503 Service Unavailable", None),
        ("GET", "/startupz", "200 OK", b"ok\n"),
    ],
)
def test_answers_word_for_word(tmp_path, method, target, status, body):
    d = Daemon("w", timeout=10, run_dir=str(tmp_path / "run"), signal_map={})
    assert d.start()
    try:
        if body is None:  # a beat older than the asked 0.5 s: the probe's own words, whatever they are
            os.utime(d.heartbeat_file, (time.time() - 5, time.time() - 5))
            body = (probe.check("liveness", d.run_dir, "w", 0.5)[1] + "\n").encode()
            assert body != b"ok\n"
        resp = _http.answer(d, method, target)
        assert resp == head(status, TEXT, body) + body
        head_only = _http.answer(d, "HEAD", target) if method == "GET" else None
        if head_only is not None:
            assert head_only == head(status, TEXT, body), "HEAD: the same head, no body"
    finally:
        d.stop()


def metrics_text(slot, hb, busy, inflight, capacity, done, busy_s, ready, draining, stopping):
    rows = [
        ("daemonpool_heartbeat_age_seconds", "gauge", "Seconds since the worker's last heartbeat.", hb),
        ("daemonpool_busy", "gauge", "1 while the worker has an item in flight.", busy),
        ("daemonpool_inflight", "gauge", "Items in flight now.", inflight),
        ("daemonpool_capacity", "gauge", "Items the worker runs at once.", capacity),
        ("daemonpool_items_total", "counter", "Items finished since start.", done),
        ("daemonpool_busy_seconds_total", "counter", "Seconds spent busy since start.", busy_s),
        ("daemonpool_ready", "gauge", "1 while the worker says it is ready.", ready),
        ("daemonpool_draining", "gauge", "1 while the operator drains the worker.", draining),
        ("daemonpool_stop_requested", "gauge", "1 once a stop was asked for.", stopping),
    ]
    lines = []
    for name, kind, help_, value in rows:  # daemonpool_worker_*: the workers' own prefix (0.2)
        new = name.replace("daemonpool_", "daemonpool_worker_", 1)
        lines += [f"# HELP {new} {help_}", f"# TYPE {new} {kind}", f'{new}{{pool="lit",slot="{slot}"}} {value}']
    for name, kind, _, value in rows:  # the 0.1 names, still there for one release
        new = name.replace("daemonpool_", "daemonpool_worker_", 1)
        lines += [f"# HELP {name} Deprecated: {new}; removed in 0.3.", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{pool="lit",slot="{slot}"}} {value}']
    return "\n".join(lines) + "\n"


def test_metrics_and_state_word_for_word_while_busy(lit):
    with lit.busy():
        lit.mono.t += 2.5
        resp = _http.answer(lit, "GET", "/metrics")
        want = metrics_text(0, 7.5, 1, 1, 1, 0, 2.5, 1, 0, 0).encode()
        assert resp == head("200 OK", PROM, want) + want
        assert _http.answer(lit, "HEAD", "/metrics") == head("200 OK", PROM, want)
        top, body = split(_http.answer(lit, "GET", "/state"))
        view = json.loads(body)
        assert top == head("200 OK", JSON, body) and body.endswith(b"}\n")
        assert _http.answer(lit, "HEAD", "/state") == top
    assert view == {
        "pool": "lit",
        "slot": 0,
        "pid": os.getpid(),
        "state": "busy",
        "seconds_in_state": 2.5,
        "heartbeat_age": 7.5,
        "ready": True,
        "busy_seconds_total": 2.5,
        "inflight": 1,
        "capacity": 1,
        "items_done": 0,
        "stop_reason": None,
        "draining": False,
        "retiring": False,
        "backlog": None,
        "version": view["version"],
    }


def test_metrics_while_stopping_with_no_heartbeat_file(lit):
    with lit.busy():
        lit.mono.t += 1.25
    lit.request_stop(reason="test")
    os.unlink(lit.heartbeat_file)
    want = metrics_text(0, "nan", 0, 0, 1, 1, 1.25, 0, 0, 1)
    assert _http.metrics(lit) == want
    assert json.loads(split(_http.answer(lit, "GET", "/state"))[1])["state"] == "stopping"


def test_state_waits_refuse_bad_values_word_for_word():
    assert _http._state_wait("wait=30&since=-1") == (30.0, -1)
    assert _http._state_wait("since=12&wait=0.25") == (0.25, 12)
    assert _http._state_wait("x&since=" + "9" * 20 + "&wait=1") == (1.0, int("9" * 20))
    assert _http._state_wait("since=7") == (0.0, 7)
    assert _http._state_wait("") == (0.0, -1)
    for query, words in [
        ("wait=30.01", "wait='30.01' must be a number of seconds in (0, 30]"),
        ("wait=0", "wait='0' must be a number of seconds in (0, 30]"),
        ("wait=x=1", "wait='x=1' must be a number of seconds in (0, 30]"),
        ("wait=" + "1" * 50, "wait='" + "1" * 40 + "' must be a number of seconds in (0, 30]"),
        ("wait=1&since=1x", "since='1x' must be the version a /state answer gave"),
        ("wait=1&since=--1", "since='--1' must be the version a /state answer gave"),
        ("wait=1&since=" + "9" * 21, "since='" + "9" * 21 + "' must be the version a /state answer gave"),
        ("wait=1&since=-" + "9" * 20, "since='-" + "9" * 20 + "' must be the version a /state answer gave"),
        ("wait=1&since=" + "8" * 45, "since='" + "8" * 40 + "' must be the version a /state answer gave"),
        ("wait=1&since=a=b", "since='a=b' must be the version a /state answer gave"),
    ]:
        with pytest.raises(ValueError) as e:
            _http._state_wait(query)
        assert str(e.value) == words, query


def test_a_bad_wait_is_a_400_and_a_state_without_a_server_answers_at_once(lit):
    server = object()
    body = b"wait='0' must be a number of seconds in (0, 30]\n"
    assert _http.answer(lit, "GET", "/state?wait=0", server=server) == head("400 Bad Request", TEXT, body) + body
    assert _http.answer(lit, "HEAD", "/state?wait=0", server=server) == head("400 Bad Request", TEXT, body)
    top, _ = split(_http.answer(lit, "GET", "/state?wait=0"))  # no server to wait on: /state at once
    assert top.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")


def test_a_state_wait_answers_when_the_version_moves_or_at_its_deadline(lit):
    import asyncio

    class Server:
        def __init__(self):
            self.waits = []

        async def changed(self, left, unchanged):
            self.waits.append(round(left, 2))
            assert unchanged() is True
            lit.report_backlog(5)  # a change while waiting

    s = Server()
    v = lit.state_version
    resp = asyncio.run(_http.answer(lit, "GET", f"/state?wait=5&since={v}", server=s))
    top, body = split(resp)
    assert top == head("200 OK", JSON, body) and json.loads(body)["backlog"] == 5
    assert len(s.waits) == 1 and 4.5 < s.waits[0] <= 5
    head_resp = asyncio.run(_http.answer(lit, "HEAD", f"/state?wait=5&since={lit.state_version - 1}", server=s))
    assert head_resp.endswith(b"\r\n\r\n") and b"Content-Type: application/json" in head_resp
    assert len(s.waits) == 1, "a version that already moved answers without waiting"


def test_a_state_wait_on_a_drain_wakes_when_the_drain_runs_out(lit):
    import asyncio

    lit_token = "t"
    assert _http.drain_answer(lit, "POST", "/drain?seconds=0.5", {"authorization": "Bearer t"}, lit_token)[:15] == (
        b"HTTP/1.1 200 OK"
    )

    class Server:
        waits = []

        async def changed(self, left, unchanged):
            self.waits.append(round(left, 3))
            lit.mono.t += 0.6  # the drain runs out meanwhile

    resp = asyncio.run(_http.answer(lit, "GET", f"/state?wait=20&since={lit.state_version}", server=Server()))
    assert Server.waits == [0.5], "the wait is cut to what is left of the drain"
    assert json.loads(split(resp)[1])["draining"] is False


def test_drain_answers_word_for_word(lit):
    ok = {"authorization": "Bearer s3cret"}
    body = b"draining is off: DAEMONPOOL_DRAIN_TOKEN is not set\n"
    assert _http.drain_answer(lit, "POST", "/drain", ok, None) == head("404 Not Found", TEXT, body) + body
    body = b"only the operator may drain this worker (Authorization: Bearer <pool token>)\n"
    for headers in ({}, {"authorization": "Bearer other"}, {"authorization": "bearer s3cret"}):
        assert _http.drain_answer(lit, "POST", "/drain", headers, "s3cret") == head("403 Forbidden", TEXT, body) + body
    body = b"POST /drain?seconds=S or DELETE /drain\n"
    assert _http.drain_answer(lit, "PUT", "/drain", ok, "s3cret") == head("405 Method Not Allowed", TEXT, body) + body
    top, body = split(_http.drain_answer(lit, "POST", "/drain", ok, "s3cret"))
    assert top == head("200 OK", JSON, body) and json.loads(body)["draining"] is True
    assert lit.drain_left() == 60.0, "the default drain is 60 s"
    assert lit.retiring is False
    top, body = split(_http.drain_answer(lit, "DELETE", "/drain", ok, "s3cret"))
    assert top == head("200 OK", JSON, body) and json.loads(body)["draining"] is False
    assert _http.answer(lit, "DELETE", "/drain?x", headers=ok, token="s3cret") == _http.drain_answer(
        lit, "DELETE", "/drain", ok, "s3cret"
    )
    for seconds in ("x", "nan", "0", "600.5", "-3"):
        body = f"seconds={seconds!r} must be a number of seconds in (0, 600]\n".encode()
        resp = _http.drain_answer(lit, "POST", f"/drain?finish=1&seconds={seconds}", ok, "s3cret")
        assert resp == head("400 Bad Request", TEXT, body) + body
    assert not lit.draining and not lit.retiring, "a refused drain changes nothing"
    assert split(_http.drain_answer(lit, "POST", "/drain?seconds=600", ok, "s3cret"))[0].startswith(b"HTTP/1.1 200 ")
    assert lit.drain_left() == 600.0
    _http.drain_answer(lit, "DELETE", "/drain", ok, "s3cret")
    for flag, retiring in (("1", True), ("true", True), ("0", False), ("TRUE", False)):
        with lit.busy():
            top, body = split(_http.drain_answer(lit, "POST", f"/drain?finish={flag}&seconds=3", ok, "s3cret"))
            assert top == head("200 OK" if retiring else "409 Conflict", JSON, body)
            assert json.loads(body)["retiring"] is retiring
            assert lit.retiring is retiring and (lit.drain_left() == 3.0) is retiring
        _http.drain_answer(lit, "DELETE", "/drain", ok, "s3cret")


def test_an_undrain_says_the_operator_asked(lit, caplog):
    import logging

    ok = {"authorization": "Bearer k"}
    _http.drain_answer(lit, "POST", "/drain?seconds=9", ok, "k")
    with caplog.at_level(logging.DEBUG):
        _http.drain_answer(lit, "DELETE", "/drain", ok, "k")
    assert [r.getMessage() for r in caplog.records] == [
        "lit slot 0: drain ended (the operator asked); taking items again"
    ]


def test_the_termination_note_is_written_once_per_failing_streak(tmp_path, capsys):
    path = tmp_path / "termination-log"
    path.write_text("")  # the kubelet makes it; the note never creates it
    note = _http.TerminationNote(str(path))
    assert note.failing is False
    note.verdict(True, "ok")
    assert path.read_text() == "" and capsys.readouterr().err == ""
    note.verdict(False, "w slot 0 (pid 1): stale")
    note.verdict(False, "w slot 0 (pid 1): staler")
    assert path.read_text() == "liveness failing: w slot 0 (pid 1): stale\n"
    assert capsys.readouterr().err == "worker_runtime: liveness failing: w slot 0 (pid 1): stale\n"
    note.verdict(True, "ok")
    assert note.failing is False
    note.verdict(False, "again")
    assert path.read_text() == "liveness failing: again\n"
    _http.TerminationNote(None).verdict(False, "no file")  # only stderr
    assert capsys.readouterr().err.endswith("worker_runtime: liveness failing: no file\n")


def test_only_liveness_verdicts_reach_the_note(tmp_path):
    d = Daemon("n", timeout=10, run_dir=str(tmp_path / "run"), signal_map={})
    assert d.start()
    try:
        d.set_ready(False)
        (tmp_path / "log").write_text("")
        note = _http.TerminationNote(str(tmp_path / "log"))
        resp = _http.answer(d, "GET", "/readyz", note)
        assert resp.startswith(b"HTTP/1.1 503 ") and not note.failing
        assert _http.answer(d, "GET", "/livez", note).startswith(b"HTTP/1.1 200 ") and not note.failing
        os.utime(d.heartbeat_file, (time.time() - 60, time.time() - 60))
        reason = probe.check("liveness", d.run_dir, "n", 10)[1]
        assert (
            _http.answer(d, "GET", "/livez", note)
            == head("503 Service Unavailable", TEXT, reason + "\n") + (reason + "\n").encode()
        )
        assert note.failing and (tmp_path / "log").read_text() == f"liveness failing: {reason}\n"
    finally:
        d.stop()


@pytest.mark.parametrize("raw, port", [(None, None), ("", None), ("1", 1), ("65535", 65535), ("8080", 8080)])
def test_the_port_from_the_environment(monkeypatch, raw, port):
    if raw is None:
        monkeypatch.delenv("DAEMONPOOL_PORT", raising=False)
    else:
        monkeypatch.setenv("DAEMONPOOL_PORT", raw)
    assert _http.port_from_env() == port


@pytest.mark.parametrize("raw", ["0", "65536", "-1", "x", "80 "])
def test_a_bad_port_in_the_environment_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv("DAEMONPOOL_PORT", raw)
    with pytest.raises(ValueError) as e:
        _http.port_from_env()
    assert str(e.value) == f"DAEMONPOOL_PORT={raw!r} is not a port number (1-65535)"


def test_serve_takes_the_daemons_port_first_and_names_a_port_it_cannot_have(tmp_path, monkeypatch):
    monkeypatch.setenv("DAEMONPOOL_PORT", "x")  # never read: the daemon's own port comes first
    monkeypatch.setenv("DAEMONPOOL_DRAIN_TOKEN", "tok")
    monkeypatch.setenv("DAEMONPOOL_TERMINATION_LOG", str(tmp_path / "tl"))
    (tmp_path / "tl").write_text("")
    d = Daemon("s", timeout=10, run_dir=str(tmp_path / "run"), signal_map={}, port=free_port(), host="127.0.0.1")
    server = _http.serve(d)
    try:
        assert server.daemon is d and server.drain_token == "tok" and server.note.path == str(tmp_path / "tl")
        with pytest.raises(OSError) as e:
            _http.serve(d)  # the same port again
        assert e.value.filename == d.port and e.value.errno is not None and e.value.strerror
    finally:
        server.stop()
    monkeypatch.delenv("DAEMONPOOL_PORT")
    assert _http.serve(Daemon("s", run_dir=str(tmp_path / "run2"), signal_map={})) is None


def test_the_state_server_answers_with_its_note_and_token(tmp_path):
    d = Daemon("ss", timeout=10, run_dir=str(tmp_path / "run"), signal_map={})
    assert d.start()
    (tmp_path / "tl").write_text("")
    server = _http.StateServer(d, free_port(), "127.0.0.1", str(tmp_path / "tl"), "tk")
    try:
        assert server.daemon is d and server.note.path == str(tmp_path / "tl") and server.drain_token == "tk"
        out = raw(server.port, b"POST /drain?seconds=2 HTTP/1.1\r\nAuthorization: Bearer tk\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200 OK\r\n") and d.drain_left() is not None
        os.utime(d.heartbeat_file, (time.time() - 60, time.time() - 60))
        assert raw(server.port, b"GET /livez HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 503 ")
        assert (tmp_path / "tl").read_text().startswith("liveness failing: ss slot 0")
    finally:
        server.stop()
        d.stop()


def test_a_drain_query_is_split_at_its_first_question_mark_and_each_part_at_its_first_equals(lit):
    ok = {"authorization": "Bearer k"}
    for target, words in (
        ("/drain?seconds=1=2", "seconds='1=2' must be a number of seconds in (0, 600]\n"),
        ("/drain?seconds=3?x", "seconds='3?x' must be a number of seconds in (0, 600]\n"),
    ):
        assert split(_http.drain_answer(lit, "POST", target, ok, "k"))[1] == words.encode()
    assert not lit.draining


def test_metrics_while_draining(lit):
    assert _http.drain_answer(lit, "POST", "/drain?seconds=5", {"authorization": "Bearer k"}, "k").startswith(
        b"HTTP/1.1 200 "
    )
    assert _http.metrics(lit) == metrics_text(0, 7.5, 0, 0, 1, 0, 0.0, 0, 1, 0)


def test_a_termination_note_survives_a_stderr_that_fails(tmp_path, monkeypatch):
    class Broken:
        def __init__(self, exc):
            self.exc = exc

        def write(self, _):
            raise self.exc

        def flush(self):
            raise self.exc

    for exc in (OSError("EPIPE"), ValueError("closed")):
        path = tmp_path / f"{type(exc).__name__}.log"
        path.write_text("")
        monkeypatch.setattr(_http.sys, "stderr", Broken(exc))
        _http.TerminationNote(str(path)).verdict(False, "why")
        assert path.read_text() == "liveness failing: why\n", "the file is written all the same"


def test_serve_takes_the_port_from_the_environment_when_the_daemon_has_none(tmp_path, monkeypatch):
    port = free_port()
    monkeypatch.setenv("DAEMONPOOL_PORT", str(port))
    d = Daemon("e", timeout=10, run_dir=str(tmp_path / "run"), signal_map={}, host="127.0.0.1")
    server = _http.serve(d)
    try:
        assert server.port == port and server.sock.getsockname()[0] == "127.0.0.1", "the daemon's host is kept"
    finally:
        server.stop()
