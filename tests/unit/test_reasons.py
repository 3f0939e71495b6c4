"""Log fields of the lines about one pool (operator/daemonpool_operator/reasons.py), through a real JSON formatter."""

import io
import json
import logging

from pythonjsonlogger.json import JsonFormatter

from daemonpool_operator import reasons


def _json_lines(emit) -> list:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter("%(message)s"))
    handler.addFilter(reasons.PoolFields())
    log = logging.getLogger("daemonpool.test-fields")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        emit(log)
    finally:
        log.removeHandler(handler)
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_lines_about_a_pool_carry_namespace_and_pool_fields():
    """Before: JSON logs carried the message only; a log pipeline could not select one pool's lines."""
    (line,) = _json_lines(lambda log: log.info("pool %s/%s: created Deployment %s", "shop", "mail", "mail"))
    assert line["message"] == "pool shop/mail: created Deployment mail"
    assert (line["namespace"], line["pool"]) == ("shop", "mail") and "reason" not in line


def test_a_line_with_its_own_fields_keeps_them_and_other_lines_get_none():
    lines = _json_lines(
        lambda log: (
            log.warning(
                "pool %s/%s is degraded: %s: %s",
                "a",
                "b",
                "OOMKilled",
                "m",
                extra=reasons.fields("a", "b", "OOMKilled"),
            ),
            log.info("leader election: %s", "started"),
        )
    )
    assert (lines[0]["namespace"], lines[0]["pool"], lines[0]["reason"]) == ("a", "b", "OOMKilled")
    assert "pool" not in lines[1] and "namespace" not in lines[1]
