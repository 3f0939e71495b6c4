"""Skips that cannot hide a broken CI install."""

import os


def unavailable(reason: str):
    """The one way a test says it cannot run here: a skip on a developer's machine, a failure in CI.

    CI (CI=true) installs everything the suite needs, so a missing piece there is a
    broken install step, not a reason to pass quietly.
    """
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{what} needs root")
