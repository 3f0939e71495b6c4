"""worker_runtime: classic Unix daemon semantics for pool workers, standard library only.

    from worker_runtime import Daemon

    d = Daemon("mailer", timeout=30, max_peers=1)
    running = d.start()
    while running:
        do_work()
        running = d.heartbeat()
    d.stop()

Names are loaded on first use so that ``worker-runtime probe`` stays fast; type checkers see them directly.
"""

__all__ = ["Daemon", "DaemonError", "SignalAction"]
__version__ = "0.2.0"

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the probe path
if TYPE_CHECKING:
    from .daemon import Daemon, DaemonError, SignalAction


def __getattr__(name: str) -> object:
    if name in __all__:
        from . import daemon  # noqa: PLC0415 - loaded on first use: the probe path stays fast

        return getattr(daemon, name)
    raise AttributeError(f"module 'worker_runtime' has no attribute {name!r}")
