"""The runtime's HTTP answers under hostile clients, HEAD, bounded ?timeout=, the termination note, and
sd_notify from a Daemon (worker_runtime/_http.py, _notify.py). Real sockets on 127.0.0.1 and a real
AF_UNIX datagram socket that follows sd_notify(3)."""

import os
import socket
import time

import pytest

from worker_runtime import Daemon, _http, _notify


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    from worker_runtime import httpserver

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
