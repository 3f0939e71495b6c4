"""The kind path for machines with Docker: kind-config.yaml and pytest-kind-ng."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from testkit.cluster import ROOT

pytestmark = pytest.mark.timeout(900)


def docker_running() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def test_kind_config_describes_the_daemonpool_cluster():
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert cfg["name"] == "daemonpool"
    # One control plane and two workers: what needs several nodes (tests/cluster/test_multinode.py) has them.
    assert [n["role"] for n in cfg["nodes"]] == ["control-plane", "worker", "worker"]
    assert all(n["image"].startswith("kindest/node:v1.") for n in cfg["nodes"])
    # The README and kind-config.yaml tell the same load command for the images the tests use.
    for tag in ("daemonpool/operator:dev", "daemonpool/example-worker:dev"):
        assert tag in (ROOT / "kind-config.yaml").read_text()


@pytest.mark.skipif(
    not docker_running(),
    reason="the kind path needs a running Docker engine, and none runs on this "
    "machine (no Docker daemon in these VMs); the local cluster covers the same tests here",
)
def test_kind_cluster_from_kind_config_starts():
    from pytest_kind import KindCluster

    kind = KindCluster("daemonpool-smoke")
    try:
        kind.create(config_file=ROOT / "kind-config.yaml")
        assert "Ready" in kind.kubectl("get", "nodes")
    finally:
        kind.delete()
