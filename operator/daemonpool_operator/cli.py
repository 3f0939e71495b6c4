"""`daemonpool-operator`: run the kopf operator with our settings.

Every setting is a flag and an environment variable, with a default and its reason:

  --namespace NS / DAEMONPOOL_NAMESPACES=a,b   watch these namespaces (repeatable); default: all
                                               namespaces, the common install of an operator
  --log-format text|json / DAEMONPOOL_LOG_FORMAT   default text: humans read it; json for log pipelines
  --log-level debug|info|warning / DAEMONPOOL_LOG_LEVEL   default info: one line per change made
  --liveness URL / DAEMONPOOL_LIVENESS          kopf's health endpoint for the pod's liveness probe;
                                               default http://0.0.0.0:8080/healthz
  --dev / DAEMONPOOL_DEV=1                      from a laptop against any cluster: your kubeconfig,
                                               no health endpoint unless asked, verbose logs
  --leader-elect on|off|auto / DAEMONPOOL_LEADER_ELECT   default auto: on in a pod (several replicas,
                                               one leader over a Lease in POD_NAMESPACE), off with --dev
  --metrics-port P / DAEMONPOOL_METRICS_PORT    Prometheus /metrics; default 8081 in a pod, none with --dev

The controller's own settings (config.py: each with its default and reason) are flags too:
--resync-seconds, --reconcile-threads, --stuck-seconds, --status-batch-seconds, --blind-seconds,
--slow-reconcile-seconds (and DAEMONPOOL_RESYNC_SECONDS, ... as before). `--help` lists them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
# Next to the health port: a metrics Service and a ServiceMonitor point here.
DEFAULT_METRICS_PORT = 8081
# The Lease the replicas elect a leader over, in the operator's own namespace (POD_NAMESPACE).
LEASE_NAME = "daemonpool-operator"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - only for --version

    try:
        return version("daemonpool")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _tunables(config_class) -> list:
    """The controller's settings that have a flag of their own here (the others: --namespace, --metrics-port)."""
    return [
        f
        for f in dataclasses.fields(config_class)
        if f.metadata.get("env") and f.name not in ("namespaces", "metrics_port")
    ]


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="daemonpool-operator", description="Reconcile DaemonPools into Deployments.")
    p.add_argument("--version", action="version", version=f"daemonpool-operator {_version()}")
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        default=[n for n in env.get("DAEMONPOOL_NAMESPACES", "").split(",") if n],
        help="watch this namespace (repeatable; default: all namespaces)",
    )
    p.add_argument("--log-format", choices=["text", "json"], default=env.get("DAEMONPOOL_LOG_FORMAT", "text"))
    p.add_argument("--log-level", choices=["debug", "info", "warning"], default=env.get("DAEMONPOOL_LOG_LEVEL", "info"))
    p.add_argument(
        "--liveness",
        default=env.get("DAEMONPOOL_LIVENESS"),
        help=f"health endpoint URL (default {DEFAULT_LIVENESS}; none in --dev mode)",
    )
    p.add_argument(
        "--dev",
        action="store_true",
        default=env.get("DAEMONPOOL_DEV") == "1",
        help="run from a laptop against the cluster in your kubeconfig",
    )
    p.add_argument(
        "--leader-elect",
        choices=["on", "off", "auto"],
        default=env.get("DAEMONPOOL_LEADER_ELECT", "auto"),
        help="elect a leader over a Lease so several replicas can run (default auto: on in a pod, off with --dev)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(env.get("DAEMONPOOL_METRICS_PORT") or 0) or None,
        help=f"serve Prometheus /metrics on this port (default {DEFAULT_METRICS_PORT} in a pod; none with --dev)",
    )
    from .config import Config  # noqa: PLC0415 - no I/O, no kopf: cheap

    for f in _tunables(Config):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            type=int if f.name == "reconcile_threads" else float,
            default=None,
            help=f"{f.metadata['why']} (default {f.default:g}; {f.metadata['env']})",
        )
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.log_format not in ("text", "json"):
        print(f"daemonpool-operator: --log-format must be text or json, got {args.log_format!r}", file=sys.stderr)
        return 2
    import kopf  # noqa: PLC0415 - --help and usage errors answer without loading kopf

    from . import handlers, kopfhooks, reasons, settings  # noqa: PLC0415 - kopf is loaded only to run
    from .config import Config  # noqa: PLC0415
    from .controller import Controller  # noqa: PLC0415

    debug = args.log_level == "debug" or args.dev
    kopf.configure(
        debug=debug,
        verbose=debug,  # kopf's "verbose" is DEBUG: object bodies, env values included
        quiet=args.log_level == "warning",
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
    )
    # info: our own lines only, one per change made or new problem. kopf's own INFO
    # ("Handler ... succeeded" on every event) and everything below are for debugging.
    logging.getLogger("daemonpool").setLevel(
        logging.DEBUG if debug else logging.WARNING if args.log_level == "warning" else logging.INFO
    )
    # namespace and pool as fields of every line about a pool: on the handlers, where children's records pass too.
    for handler in logging.getLogger().handlers:
        handler.addFilter(reasons.PoolFields())
    if not debug:
        logging.getLogger("kopf").setLevel(logging.WARNING)
    for noisy in ("kubernetes", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    election = None
    if args.leader_elect == "on" or (args.leader_elect == "auto" and not args.dev):
        import socket  # noqa: PLC0415
        import uuid  # noqa: PLC0415

        election = {
            "namespace": os.environ.get("POD_NAMESPACE") or "default",
            "name": LEASE_NAME,
            # Unique per process: a restarted container is a new candidate, never mistaken for the old leader.
            "identity": f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}",
        }
    try:
        config = Config.from_env(
            namespaces=tuple(args.namespaces),
            metrics_port=args.metrics_port
            if args.metrics_port is not None
            else (None if args.dev else DEFAULT_METRICS_PORT),
            leader_election=election,
            **{f.name: getattr(args, f.name) for f in _tunables(Config)},
        )
    except ValueError as exc:
        print(f"daemonpool-operator: {exc}", file=sys.stderr)
        return 2
    liveness = args.liveness if args.liveness is not None else (None if args.dev else DEFAULT_LIVENESS)
    handlers.register(Controller(config, restart_watches=kopfhooks.restart_watches))
    settings.register()
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespaces,
            namespaces=args.namespaces,
            liveness_endpoint=liveness or None,
            standalone=True,
        )
    )
    return 0
