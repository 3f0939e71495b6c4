"""Items in flight across threads and asyncio tasks, waits that a stop ends at once, recycling, stop reasons,
on_stop callbacks, and start() all or nothing (worker_runtime/_items.py, _waits.py, _signals.py, daemon.py).
Real signals to this process and real files; time is injected where the test moves it."""

import asyncio
import logging
import os
import signal
import socket
import threading
import time

import pytest

from worker_runtime import Daemon, DaemonError


def make(tmp_path, **kw):
    kw.setdefault("signal_map", {})
    return Daemon("c", timeout=10, run_dir=str(tmp_path), **kw)


def state_file(tmp_path):
    return (tmp_path / "c.0.state").read_text()


def test_a_worker_stays_busy_while_another_thread_still_has_an_item(tmp_path):
    d = make(tmp_path, capacity=2)
    assert d.start()
    first_in, second_done, release = threading.Event(), threading.Event(), threading.Event()

    def long_item():
        with d.busy():
            first_in.set()
            release.wait(10)

    t = threading.Thread(target=long_item)
    t.start()
    first_in.wait(5)
    with d.busy():
        assert d.state_view()["inflight"] == 2
    second_done.set()
    # Before: the second item's end wrote "idle" while the first thread was still busy.
    assert state_file(tmp_path) == "busy\n"
    v = d.state_view()
    assert (v["state"], v["inflight"], v["capacity"], v["items_done"]) == ("busy", 1, 2, 1)
    release.set()
    t.join(5)
    assert state_file(tmp_path) == "idle\n"
    assert (d.state_view()["inflight"], d.items_done) == (0, 2)
    d.stop()


def test_many_threads_in_and_out_leave_the_count_at_zero(tmp_path):
    d = make(tmp_path, capacity=8)
    assert d.start()

    def work():
        for _ in range(200):
            with d.busy():
                pass

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert (d.inflight, d.items_done, state_file(tmp_path)) == (0, 1600, "idle\n")
    d.stop()


def test_asyncio_tasks_count_as_items_and_a_signal_wakes_the_awaiters_at_once(tmp_path):
    d = Daemon("c", timeout=10, run_dir=str(tmp_path))  # the default map: SIGTERM stops
    assert d.start()
    seen = {}

    async def main():
        queue: asyncio.Queue = asyncio.Queue()

        async def item(n):
            async with d.busy():
                await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(item(n)) for n in range(3)]
        await asyncio.sleep(0.05)
        seen["inflight"] = d.state_view()["inflight"]
        await asyncio.gather(*tasks)
        seen["after"] = d.state_view()["state"]
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)
        t0 = time.monotonic()
        get = asyncio.ensure_future(queue.get())  # nothing ever arrives: only the stop can end the wait
        done, _ = await asyncio.wait(
            [get, asyncio.ensure_future(d.stopped())], timeout=30, return_when="FIRST_COMPLETED"
        )
        seen["woke_after"] = time.monotonic() - t0
        get.cancel()
        seen["asleep"] = await d.asleep(30)

    asyncio.run(main())
    assert seen["inflight"] == 3 and seen["after"] == "idle"
    assert seen["woke_after"] < 1.0, "woken by the signal, not by a timeout"
    assert seen["asleep"] is False and d.stop_reason == "SIGTERM"
    d.stop()


def test_sleep_beats_while_it_waits_and_a_signal_ends_it_at_once(tmp_path):
    d = Daemon("c", timeout=1, run_dir=str(tmp_path))
    assert d.start()
    before = os.stat(tmp_path / "c.0.heartbeat").st_mtime_ns
    assert d.sleep(0.35) is True
    assert os.stat(tmp_path / "c.0.heartbeat").st_mtime_ns > before, "a wait longer than a beat interval beats"
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    t0 = time.monotonic()
    assert d.sleep(30) is False
    assert time.monotonic() - t0 < 1.0
    d.stop()


def test_the_loop_iterator_starts_beats_and_stops(tmp_path):
    d = make(tmp_path)
    turns = 0
    for _ in d.loop():
        turns += 1
        if turns == 3:
            d.request_stop()
    assert turns == 3 and os.listdir(tmp_path) == [] and d.stop_reason == "SIGTERM"


def test_on_stop_callbacks_run_last_first_and_one_failing_does_not_skip_the_others(tmp_path, caplog):
    d = make(tmp_path)
    ran = []
    d.on_stop(lambda: ran.append("db"))
    d.on_stop(lambda: 1 / 0)
    d.on_stop(lambda: ran.append("queue"))
    assert d.start()
    with caplog.at_level(logging.INFO, logger="worker_runtime"):
        d.stop()
        d.stop()
    assert ran == ["queue", "db"], "once, in reverse order, past the failing one"
    assert "on_stop callback" in caplog.text and "ZeroDivisionError" in caplog.text


def test_heartbeat_and_busy_before_start_say_so(tmp_path):
    d = make(tmp_path)
    with pytest.raises(DaemonError, match=r"heartbeat\(\) before start\(\): call start\(\) first"):
        d.heartbeat()
    with pytest.raises(DaemonError, match=r"busy\(\) before start\(\)"):
        d.busy()
    d.set_ready(False)  # allowed: the readiness start() begins with
    assert d.start() and not (tmp_path / "c.0.ready").exists()
    d.stop()


def test_start_is_all_or_nothing_when_the_port_is_taken_and_can_be_called_again(tmp_path):
    taken = socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET)
    taken.bind(("::" if socket.has_ipv6 else "0.0.0.0", 0))
    taken.listen()
    port = taken.getsockname()[1]
    before = signal.getsignal(signal.SIGTERM)
    d = Daemon("c", timeout=10, run_dir=str(tmp_path), port=port)
    with pytest.raises(DaemonError, match=f"cannot answer on port {port}"):
        d.start()
    assert os.listdir(tmp_path) == [], "no slot, no files left behind"
    assert signal.getsignal(signal.SIGTERM) == before, "the handlers are put back"
    other = make(tmp_path)
    assert other.start() and other.slot == 0
    other.stop()
    taken.close()
    assert d.start(), "retryable once the port is free"
    assert d._http is not None
    d.stop()


def test_a_lost_pid_file_is_a_stop_reason_and_a_log_line(tmp_path, caplog):
    d = make(tmp_path)
    d.beat_interval = 0
    assert d.start()
    os.unlink(tmp_path / "c.0.pid")
    with caplog.at_level(logging.INFO, logger="worker_runtime"):
        assert not d.heartbeat()
    assert d.stop_reason.startswith("lost its PID file ") and d.stop_signal is None
    assert "lost its PID file" in caplog.text
    d.stop()


def test_a_signal_is_logged_once_the_handler_is_over(tmp_path, caplog):
    d = Daemon("c", timeout=10, run_dir=str(tmp_path))
    assert d.start()
    with caplog.at_level(logging.INFO, logger="worker_runtime"):
        os.kill(os.getpid(), signal.SIGTERM)
        assert not d.heartbeat()
        d.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert any("stop requested (SIGTERM); finishing" in line for line in lines)
    assert any("stopped (SIGTERM); 0 item(s) done" in line for line in lines)


def test_recycling_after_max_items_finishes_the_item_first(tmp_path):
    d = make(tmp_path, max_items=3, recycle_jitter=0)
    assert d.start()
    for _n in range(3):
        assert d.heartbeat()
        with d.busy():
            assert d.running, "never asked to stop in the middle of an item"
    assert not d.heartbeat()
    assert d.stop_reason == "recycled after 3 items (max_items 3)" and d.stop_signal is None
    assert state_file(tmp_path) == "stopping\n" and not (tmp_path / "c.0.ready").exists()
    d.stop()


def test_recycling_above_the_memory_mark(tmp_path):
    rss = [100 * 2**20]
    d = make(tmp_path, max_rss_mib=150, rss=lambda: rss[0])
    assert d.start()
    with d.busy():
        rss[0] = 200 * 2**20
        assert d.running, "checked when the item ends"
    assert d.stop_reason == "recycled at 200 MiB resident (max_rss_mib 150)"
    d.stop()


def test_recycle_jitter_adds_at_most_its_fraction():
    limits = {Daemon("c", run_dir="/tmp", max_items=100, recycle_jitter=0.1).max_items for _ in range(200)}
    assert limits <= set(range(100, 111)) and len(limits) > 1
    with pytest.raises(ValueError, match="recycle_jitter must be a fraction"):
        Daemon("c", run_dir="/tmp", recycle_jitter=2)
    with pytest.raises(ValueError, match="max_items must be > 0"):
        Daemon("c", run_dir="/tmp", max_items=0)


def test_a_signal_while_recycling_is_not_taken_for_the_second_ask(tmp_path):
    d = Daemon("c", timeout=10, run_dir=str(tmp_path), max_items=1, recycle_jitter=0)
    assert d.start()
    with d.busy():
        pass
    os.kill(os.getpid(), signal.SIGTERM)  # the first signal: no exit, only noted
    assert d.stop_signal == signal.SIGTERM and d.stop_reason.startswith("recycled")
    d.stop()


def test_from_env_reads_capacity_and_recycling(monkeypatch, tmp_path):
    monkeypatch.setenv("DAEMONPOOL_NAME", "c")
    monkeypatch.setenv("DAEMONPOOL_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("DAEMONPOOL_CAPACITY", "4")
    monkeypatch.setenv("DAEMONPOOL_MAX_ITEMS", "10")
    monkeypatch.setenv("DAEMONPOOL_MAX_RSS_MIB", "512")
    d = Daemon.from_env(recycle_jitter=0)
    assert (d.capacity, d.max_items, d.max_rss_mib) == (4, 10, 512.0)
    monkeypatch.setenv("DAEMONPOOL_CAPACITY", "0")
    with pytest.raises(ValueError, match="DAEMONPOOL_CAPACITY='0' is not a valid whole number > 0"):
        Daemon.from_env()
