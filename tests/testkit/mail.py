"""What the cluster tests of the mailer share: its pool, and what became of every message in the outbox."""

from __future__ import annotations

import sys

from testkit.cluster import ROOT, daemonpool

sys.path.insert(0, str(ROOT / "examples" / "mailer"))
from mailer import outbox  # noqa: E402,F401  (re-exported for the tests)


def mailer_pool(name: str, ns: str, image: str, dsn: str, smtp: str, peers: int, rate: str = "20/s", **spec) -> dict:
    """A DaemonPool of mailers draining the outbox at ``dsn`` through the SMTP server at ``smtp`` (host:port),
    ``rate`` mails a second for the whole pool (MAILER_RATE), five claimed at a time. Its workers heartbeat
    every second or so: a 6 s timeout and 20 s to finish on SIGTERM keep the tests short."""
    container = {
        "name": "mailer",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": [
            {"name": "MAILER_DSN", "value": dsn},
            {"name": "MAILER_SMTP", "value": smtp},
            {"name": "MAILER_RATE", "value": rate},
            {"name": "MAILER_BATCH", "value": "5"},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "128Mi"}},
    }
    spec = {"peers": peers, "timeoutSeconds": 6, "gracePeriodSeconds": 20, **spec}
    return daemonpool(name, ns, {**spec, "template": {"spec": {"containers": [container]}}})


def fate(db, smtp) -> dict:
    """Every message of the outbox against what the SMTP server received (its Message-IDs name the row):
    lost (not dead, never received), sent twice, dead."""
    rows = db.execute("SELECT id, state FROM mailer_outbox").fetchall()
    ids = smtp.ids()
    received = {int(mid.split("-")[1].split("@")[0]) for mid in ids}
    return {
        "messages": len(rows),
        "lost": sorted(r[0] for r in rows if r[1] != "dead" and r[0] not in received),
        "duplicates": len(ids) - len(set(ids)),
        "dead": sorted(r[0] for r in rows if r[1] == "dead"),
    }
