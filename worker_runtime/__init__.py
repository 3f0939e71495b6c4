"""worker_runtime: classic Unix daemon semantics for pool workers, standard library only.

    from worker_runtime import Daemon

    d = Daemon("mailer", timeout=30, max_peers=1)
    running = d.start()
    while running:
        do_work()
        running = d.heartbeat()
    d.stop()

Names are loaded on first use so that ``worker-runtime probe`` stays fast.
"""

__all__ = ["Daemon", "DaemonError"]
__version__ = "0.1.0"


def __getattr__(name):
    if name in __all__:
        from . import daemon  # noqa: PLC0415 - loaded on first use: the probe path stays fast

        return getattr(daemon, name)
    raise AttributeError(f"module 'worker_runtime' has no attribute {name!r}")
