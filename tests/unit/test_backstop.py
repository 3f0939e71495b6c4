"""The unit tier's backstop (tests/unit/conftest.py): a unit test that spins past its timeout, or grows without
bound, ends the run at its timeout instead of running on. Each case runs pytest in a subprocess on a scratch
copy of this tier's conftest (its grace and memory bound made small) and a test that swallows the timeout's
failure, as a loop catching BaseException does. Before the backstop, both ran until killed from outside."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

CONFTEST = pathlib.Path(__file__).with_name("conftest.py")

SPIN = """
import time
import pytest

@pytest.mark.timeout(1)
def test_spins():
    while True:
        try:
            time.sleep(0.05)
        except BaseException:  # pytest-timeout's failure swallowed, as a careless retry loop does
            pass
"""

GROW = """
import pytest

@pytest.mark.timeout(20)
def test_grows():
    kept = []
    while True:
        try:
            kept.append(bytearray(8 << 20))
        except BaseException:
            pass
"""


def run(tmp_path, body, rss_bytes):
    unit = tmp_path / "tests" / "unit"
    unit.mkdir(parents=True)
    text = CONFTEST.read_text()
    for old, new in (
        ("BACKSTOP_GRACE_SECONDS = 15", "BACKSTOP_GRACE_SECONDS = 1"),
        ("BACKSTOP_RSS_BYTES = 4 << 30", f"BACKSTOP_RSS_BYTES = {rss_bytes}"),
    ):
        assert old in text, f"the conftest no longer says {old!r}: keep this test's copy in step"
        text = text.replace(old, new)
    (unit / "conftest.py").write_text(text)
    (unit / "test_case.py").write_text(body)
    t0 = time.monotonic()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(CONFTEST.parents[1])},  # tests/: the conftest imports testkit
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the spinning test ran on for 60 s: nothing ended it")
    return r, time.monotonic() - t0


@pytest.mark.timeout(90)
def test_a_test_that_spins_past_its_timeout_ends_the_run(tmp_path):
    r, took = run(tmp_path, SPIN, 4 << 30)
    assert r.returncode == 3, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "[unit backstop] tests/unit/test_case.py::test_spins outlived its timeout" in r.stderr
    assert "test_spins" in r.stderr.split("[unit backstop]", 1)[1], "the stacks show where it spun"
    assert took < 30, took  # the 1 s timeout, 1 s of grace, the watcher's 0.25 s steps, and pytest's start


@pytest.mark.timeout(90)
def test_a_test_that_grows_without_bound_ends_the_run(tmp_path):
    r, took = run(tmp_path, GROW, 512 << 20)
    assert r.returncode == 3, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "[unit backstop] tests/unit/test_case.py::test_grows grew the process past" in r.stderr
    assert took < 30, took
