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
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    p = argparse.ArgumentParser(prog="daemonpool-operator", description="Reconcile DaemonPools into Deployments.")
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
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.log_format not in ("text", "json"):
        print(f"daemonpool-operator: --log-format must be text or json, got {args.log_format!r}", file=sys.stderr)
        return 2
    import kopf  # noqa: PLC0415 - --help and usage errors answer without loading kopf

    from . import handlers, settings  # noqa: PLC0415 - registering handlers is the point of this import

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
    if not debug:
        logging.getLogger("kopf").setLevel(logging.WARNING)
    for noisy in ("kubernetes", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handlers.NAMESPACES = list(args.namespaces)
    liveness = args.liveness if args.liveness is not None else (None if args.dev else DEFAULT_LIVENESS)
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
