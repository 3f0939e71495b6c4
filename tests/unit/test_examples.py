"""The examples' small parsers: the queue server's items (examples/worker/queue_server.py) and the timed jobs'
table name (examples/mailer/mailer/jobs.py), whose answers the cluster tests and bench/autoscale.py rely on."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [os.path.join(ROOT, "examples", "worker"), os.path.join(ROOT, "examples", "mailer")]

import queue_server  # noqa: E402

from mailer import jobs  # noqa: E402


@pytest.mark.parametrize(("text", "item"), [("2.5", (2.5, "")), (" cpu:15 ", (15.0, "cpu")), ("0", (0.0, ""))])
def test_queue_items_are_seconds_or_cpu_seconds(text, item):
    assert queue_server._item(text) == item


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("io:2", "item 'io:2': the kind before ':' must be cpu (or none, to sleep)"),
        ("cpu:x", "item 'cpu:x': seconds must be a number, e.g. 2.5 or cpu:2.5"),
        ("-1", "item '-1': seconds must be from 0 to 86400"),
        ("86400", "item '86400': seconds must be from 0 to 86400"),
    ],
)
def test_bad_queue_items_are_refused_word_for_word(text, says):
    with pytest.raises(ValueError) as e:
        queue_server._item(text)
    assert str(e.value) == says


def test_a_jobs_table_is_a_plain_sql_name():
    assert jobs.table("jobs_keda_tuned") == "jobs_keda_tuned"
    for bad in ("Jobs", "jobs; DROP TABLE x", "1jobs", "", "j" * 42):
        with pytest.raises(ValueError, match="a lowercase SQL name"):
            jobs.table(bad)
    assert "lease_until IS NULL OR lease_until < now()" in jobs.backlog_sql("jobs_a")
