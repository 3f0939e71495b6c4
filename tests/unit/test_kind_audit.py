"""testkit/kind.py: the tests' kind config is kind-config.yaml plus the local cluster's audit log."""

import sys

import yaml

from testkit import kind
from testkit.cluster import ROOT

sys.path.insert(0, str(ROOT / "hack"))
from localcluster import cluster  # noqa: E402

POLICY = ROOT / "hack" / "localcluster" / "templates" / "audit-policy.yaml"


def _flags(args: list) -> dict:
    args = [str(a) for a in args]
    return {a[2:]: args[i + 1] for i, a in enumerate(args) if a.startswith("--audit-")}


def test_the_copy_keeps_kind_config_and_adds_the_audit_log_to_the_control_plane_only(tmp_path):
    source = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    config, log = kind.audited_config(ROOT / "kind-config.yaml", POLICY, tmp_path)
    got = yaml.safe_load(config.read_text())
    assert log == tmp_path / "audit" / "audit.log" and log.parent.is_dir()
    assert [n["role"] for n in got["nodes"]] == [n["role"] for n in source["nodes"]]
    assert [n["image"] for n in got["nodes"]] == [n["image"] for n in source["nodes"]]
    plane, *workers = got["nodes"]
    assert all("extraMounts" not in w for w in workers)
    mounts = {m["containerPath"]: m for m in plane["extraMounts"]}
    assert mounts[kind.POLICY_IN_NODE]["hostPath"] == str(POLICY.resolve())
    assert mounts[kind.POLICY_IN_NODE]["readOnly"] is True
    assert mounts[kind.LOG_DIR_IN_NODE]["hostPath"] == str(log.parent.resolve())
    # kind-config.yaml's own patches are all still there, the audit one after them.
    assert got["kubeadmConfigPatches"][: len(source["kubeadmConfigPatches"])] == source["kubeadmConfigPatches"]
    patch = yaml.safe_load(got["kubeadmConfigPatches"][-1])
    assert (patch["kind"], patch["apiVersion"]) == ("ClusterConfiguration", "kubeadm.k8s.io/v1beta4")
    # The API server's volumes are the node paths the extraMounts fill.
    volumes = {v["mountPath"]: v["hostPath"] for v in patch["apiServer"]["extraVolumes"]}
    assert volumes == {kind.POLICY_IN_NODE: kind.POLICY_IN_NODE, kind.LOG_DIR_IN_NODE: kind.LOG_DIR_IN_NODE}


def test_the_audit_flags_are_the_local_clusters_with_the_nodes_paths():
    """The tests read both logs the same way (testkit/cluster.py): same format, same rotation, same policy."""
    args = {a["name"]: a["value"] for a in kind.audit_patch()["apiServer"]["extraArgs"]}
    local = _flags(cluster._apiserver())
    assert {k: v for k, v in args.items() if k.startswith("audit-")} == dict(
        local, **{"audit-policy-file": kind.POLICY_IN_NODE, "audit-log-path": f"{kind.LOG_DIR_IN_NODE}/audit.log"}
    )
    # kind's own API server flag, which the merge patch's list replaces, is kept.
    assert args["runtime-config"] == ""


def test_a_config_without_exactly_one_control_plane_is_refused(tmp_path):
    src = tmp_path / "two.yaml"
    src.write_text(yaml.safe_dump({"kind": "Cluster", "nodes": [{"role": "control-plane"}] * 2}))
    try:
        kind.audited_config(src, POLICY, tmp_path / "out")
    except ValueError as exc:
        assert "found 2" in str(exc)
    else:
        raise AssertionError("two control planes were accepted")
