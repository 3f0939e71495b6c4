"""The chart's alerts (helm/daemonpool-operator/files/alerts.yaml) under `promtool test rules`, promtool built from
the Prometheus Go module (hack/local-cluster tools promtool): each alert fires on the series that should fire it,
with its labels and words, and stays quiet on the ones that should not."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(900)  # the first run on a machine builds promtool (about 5 minutes)
RULES = ROOT / "helm" / "daemonpool-operator" / "files" / "alerts.yaml"
TESTS = pathlib.Path(__file__).with_name("alerts-test.yaml")


def _promtool() -> str:
    sys.path.insert(0, str(ROOT / "hack"))
    from localcluster import tools  # noqa: PLC0415 - hack/ is not a package of the project

    return tools.ensure("promtool")


def test_rules_are_valid_and_every_alert_is_tested_both_ways():
    r = subprocess.run([_promtool(), "check", "rules", RULES], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    alerts = {rule["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for rule in g["rules"]}
    fired, quiet = set(), set()
    for case in yaml.safe_load(TESTS.read_text())["tests"]:
        for t in case.get("alert_rule_test", []):
            (fired if t["exp_alerts"] else quiet).add(t["alertname"])
    assert fired == alerts, f"alerts no test fires: {sorted(alerts - fired)}"
    assert {"DaemonPoolDegraded", "DaemonPoolOperatorNoLeader", "DaemonPoolOperatorTwoLeaders"} <= quiet


def test_promtool_test_rules_passes():
    r = subprocess.run([_promtool(), "test", "rules", TESTS], capture_output=True, text=True, cwd=TESTS.parent)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
