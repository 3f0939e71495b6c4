import subprocess

import pytest

from testkit import services  # noqa: E402
from testkit.proc import HERE, Worker
from testkit.skips import unavailable  # noqa: E402


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.process)


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    return d


@pytest.fixture
def workers():
    started = []

    def spawn(*args, **kw):
        w = Worker(*args, **kw)
        started.append(w)
        return w

    yield spawn
    for w in started:
        w.kill()


@pytest.fixture(scope="module")
def pg():
    """A real PostgreSQL for one module (the mailer's outbox, the operator's postgres backlog source)."""
    try:
        p = services.Postgres().start()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        unavailable(f"PostgreSQL could not start: {exc}")
    yield p
    p.stop()
