"""The runtime's errors, argument checks, settings from the environment (the operator sets them), the run directory."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

from . import _files
from .contract import ENV_CAPACITY, ENV_HOST, ENV_MAX_ITEMS, ENV_MAX_RSS_MIB, ENV_NAME, ENV_TIMEOUT

#: What a signal does: "stop" (the kill flag), "ignore", "default" (the OS default), or a callable
#: ``fn(signum)`` that replaces the stop behaviour for that signal (``worker-runtime run`` forwards
#: signals this way); a callable that wants the stop too calls ``daemon.request_stop(signum)``.
SignalAction = Union[Literal["stop", "ignore", "default"], Callable[[int], object]]


class DaemonError(Exception):
    """The runtime cannot do what was asked; the message names the path and the fix."""


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def kwargs_from_env(overrides: dict[str, Any]) -> dict[str, Any]:
    """Daemon(...) arguments from DAEMONPOOL_* variables; ``overrides`` win. Bad values name the variable."""
    env = os.environ
    name = overrides.pop("name", None) or env.get(ENV_NAME)
    if not name:
        raise DaemonError(f"{ENV_NAME} is not set: set it to the worker's name (e.g. mailer)")
    kwargs: dict[str, Any] = {"name": name}
    for key, var, conv in (
        ("timeout", ENV_TIMEOUT, float),
        ("max_peers", _files.ENV_MAX_PEERS, int),
        ("capacity", ENV_CAPACITY, int),
        ("max_items", ENV_MAX_ITEMS, int),
        ("max_rss_mib", ENV_MAX_RSS_MIB, float),
    ):
        raw = env.get(var)
        if raw:
            try:
                value = conv(raw)
                if conv is float:
                    _files.positive_seconds(value, var)
                else:
                    _positive_int(value, var)
                kwargs[key] = value
            except ValueError:
                raise ValueError(
                    f"{var}={raw!r} is not a valid {'finite number > 0' if conv is float else 'whole number > 0'}"
                ) from None
    if env.get(ENV_HOST):
        kwargs["host"] = env[ENV_HOST]
    kwargs.update(overrides)
    return kwargs


def prepare_run_dir(run_dir: str) -> None:
    """Step 1 of start(): the run directory exists and is writable, or a DaemonError naming the fix."""
    fix = f"set {_files.ENV_RUN_DIR} to a writable folder (in a pod: an emptyDir volume)"
    try:
        if _files.is_fallback(run_dir):
            fix = (
                f"remove {run_dir} if it is not yours, or set XDG_RUNTIME_DIR or "
                f"{_files.ENV_RUN_DIR} to a folder only you can write"
            )
            _files.ensure_private_dir(run_dir)
        else:
            os.makedirs(run_dir, mode=0o755, exist_ok=True)
        probe = os.path.join(run_dir, f".write-test.{os.getpid()}")
        _files.atomic_write(probe, b"ok\n")
        os.unlink(probe)
    except OSError as exc:
        raise DaemonError(f"run directory {run_dir!r} is not usable: {_files.why(exc)}; {fix}") from exc


def recycle_limits(max_items: int | None, max_rss_mib: float | None, jitter: float) -> tuple[int | None, float | None]:
    """The items and MiB after which a worker recycles; ``max_items`` gets up to ``jitter`` more at random
    (gunicorn's max_requests_jitter: workers started together do not all recycle at the same item)."""
    if max_items is not None:
        _positive_int(max_items, "max_items")
    if max_rss_mib is not None:
        _files.positive_seconds(max_rss_mib, "max_rss_mib")  # a finite number > 0
    if isinstance(jitter, bool) or not (isinstance(jitter, (int, float)) and 0 <= jitter <= 1):
        raise ValueError(f"recycle_jitter must be a fraction between 0 and 1, got {jitter!r}")
    items = None if max_items is None else max_items + random.randint(0, int(max_items * jitter))
    return items, None if max_rss_mib is None else float(max_rss_mib)


def signal_actions(
    defaults: Mapping[int, SignalAction], given: Mapping[int, SignalAction] | None
) -> dict[int, SignalAction]:
    """The class's signal map with the instance's on top; a word that is not an action is a ValueError naming it."""
    out = dict(defaults)
    out.update(given or {})
    for signum, action in out.items():
        if action not in ("stop", "ignore", "default") and not callable(action):
            raise ValueError(
                f"signal_map[{signal.Signals(signum).name}] must be 'stop', 'ignore', 'default' "
                f"or a callable, got {action!r}"
            )
    return out
