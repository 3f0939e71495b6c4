import pytest

HARD_TIMEOUT = 30  # unit tests are fast; a hang is a bug, not a slow machine


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/unit/" not in str(item.fspath):
            continue
        # Warnings are errors in this tier.
        item.add_marker(pytest.mark.filterwarnings("error"))
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(HARD_TIMEOUT))


class Clock:
    """An injected clock (wall and monotonic alike): tests move it by hand."""

    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock()
