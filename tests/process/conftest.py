import pytest

from proc import HERE, Worker


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
