"""python -m mailer worker | enqueue | migrate | stats | jobs"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mailer", description="The daemonpool example mailer.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("worker", help="drain the outbox (one per DaemonPool peer)")
    sub.add_parser(
        "jobs", help="run timed jobs from a PostgreSQL table (bench/autoscale.py's workload; mailer/jobs.py)"
    )
    sub.add_parser("migrate", help="create or upgrade the outbox tables (workers do this on start too)")
    st = sub.add_parser("stats", help="messages per state")
    st.add_argument("--json", action="store_true")
    en = sub.add_parser("enqueue", help="record a message to send (what the web app does)")
    en.add_argument("--to", required=True)
    en.add_argument("--subject", required=True)
    en.add_argument("--body", default="")
    en.add_argument("--count", type=int, default=1, help="enqueue N copies (demos and load tests)")
    a = p.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("MAILER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )

    if a.cmd == "jobs":
        from worker_runtime import Daemon, DaemonError  # noqa: PLC0415

        from . import jobs  # noqa: PLC0415

        try:
            return jobs.run(Daemon.from_env(name=os.environ.get("DAEMONPOOL_NAME") or "jobs"))
        except (DaemonError, ValueError) as exc:
            print(f"mailer jobs: {exc}", file=sys.stderr)
            return 2

    from .config import Config, ConfigError, parse_dsn  # noqa: PLC0415 - after logging is configured

    try:
        if a.cmd == "worker":
            cfg = Config.from_env()
        else:
            dsn = parse_dsn(os.environ.get("MAILER_DSN"))
    except ConfigError as exc:
        print(f"mailer: {exc}", file=sys.stderr)
        return 2
    if a.cmd == "worker":
        from worker_runtime import Daemon, DaemonError  # noqa: PLC0415 - only the worker needs it

        from .worker import Mailer  # noqa: PLC0415 - imports psycopg; enqueue/migrate do not need it all

        try:
            daemon = Daemon.from_env(name=os.environ.get("DAEMONPOOL_NAME") or "mailer")
        except (DaemonError, ValueError) as exc:
            print(f"mailer: {exc}", file=sys.stderr)
            return 2
        return Mailer(cfg, daemon).run()

    import psycopg  # noqa: PLC0415 - slow import, only here

    from . import outbox  # noqa: PLC0415

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        outbox.migrate(conn)
        if a.cmd == "enqueue":
            if a.count == 1:
                print(outbox.enqueue(conn, a.to, a.subject, a.body))
            else:
                print(outbox.enqueue_many(conn, [(a.to, a.subject, a.body)] * a.count))
        elif a.cmd == "stats":
            s = outbox.stats(conn)
            print(json.dumps(s) if a.json else "  ".join(f"{k} {v}" for k, v in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
