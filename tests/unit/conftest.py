import faulthandler
import os
import sys
import threading
import time

import pytest

from testkit.clock import Clock

HARD_TIMEOUT = 30  # unit tests are fast; a hang is a bug, not a slow machine
# pytest-timeout's SIGALRM raises inside the test, which a loop that swallows BaseException, a wait in C
# or a test spinning in another thread survives: a hand-made mutant that stopped a leader from stepping
# down once ran a unit test for 8 minutes up to 20 GB. So a backstop thread watches each unit test too,
# and ends the whole run (every thread's stack on stderr, exit code 3) when the test outlives its timeout
# by BACKSTOP_GRACE_SECONDS or the process grows past BACKSTOP_RSS_BYTES.
BACKSTOP_GRACE_SECONDS = 15  # SIGALRM's failure and the teardown get this long first
BACKSTOP_RSS_BYTES = 4 << 30  # the whole unit tier runs in well under 1 GiB
BACKSTOP_EXIT = 3


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/unit/" not in str(item.fspath):
            continue
        # Warnings are errors in this tier.
        item.add_marker(pytest.mark.filterwarnings("error"))
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(HARD_TIMEOUT))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Backstop:
    """One watcher thread for the run; each unit test arms it with its deadline and disarms it after."""

    def __init__(self, config):
        self._config = config
        self._lock = threading.Lock()
        self._armed = None  # (test id, deadline on the monotonic clock)
        threading.Thread(target=self._watch, name="unit-test-backstop", daemon=True).start()

    def arm(self, nodeid, seconds):
        with self._lock:
            self._armed = (nodeid, time.monotonic() + seconds)

    def disarm(self):
        with self._lock:
            self._armed = None

    def _watch(self):
        while True:
            time.sleep(0.25)
            with self._lock:
                armed = self._armed
            if armed is None:
                continue
            nodeid, deadline = armed
            why = None
            if time.monotonic() > deadline:
                why = "outlived its timeout and the timeout's failure did not stop it"
            elif _rss() > BACKSTOP_RSS_BYTES:
                why = f"grew the process past {BACKSTOP_RSS_BYTES >> 30} GiB"
            if why:
                # pytest holds fd 1 and 2 in its capture files, which os._exit would take along unread.
                capture = self._config.pluginmanager.getplugin("capturemanager")
                if capture is not None:
                    capture.suspend_global_capture(in_=True)
                sys.stderr.write(f"\n[unit backstop] {nodeid} {why}: ending the run; every thread's stack:\n")
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                sys.stderr.flush()
                os._exit(BACKSTOP_EXIT)


_BACKSTOP = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _BACKSTOP
    marker = item.get_closest_marker("timeout")
    seconds = (marker.args[0] if marker.args else marker.kwargs.get("timeout")) if marker else None
    if "tests/unit/" not in str(item.fspath) or not seconds:
        yield
        return
    if _BACKSTOP is None:
        _BACKSTOP = Backstop(item.config)
    _BACKSTOP.arm(item.nodeid, float(seconds) + BACKSTOP_GRACE_SECONDS)
    try:
        yield
    finally:
        _BACKSTOP.disarm()


@pytest.fixture
def clock():
    return Clock()
