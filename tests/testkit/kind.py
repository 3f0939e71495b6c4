"""The tests' kind cluster: kind-config.yaml plus an API audit log, so that what the tests learn from the local
cluster's audit log (who wrote what, and when: no write outside the leader's term, no writes when idle) is seen
on kind too.

kind-config.yaml stays what a user runs (`kind create cluster --config kind-config.yaml`, from any directory):
the audit policy and the log need host paths, so they are added to a copy the tests make.
"""

from __future__ import annotations

import pathlib

import yaml

# Paths inside the control-plane node (its container): the API server's static pod mounts them from there.
POLICY_IN_NODE = "/etc/daemonpool/audit-policy.yaml"
LOG_DIR_IN_NODE = "/var/log/daemonpool-audit"


def audit_patch() -> dict:
    """kubeadm's ClusterConfiguration (v1beta4, the one kind writes for Kubernetes 1.31 and later), merged by kind
    into its own: the local cluster's audit flags (hack/localcluster/cluster.py) and the two mounts.

    kind merges patches as JSON merge patches, so this extraArgs list replaces kind's one, whose only entry is
    an empty runtime-config (the default); it is kept here all the same, so nothing kind sets is lost."""
    args = {
        "runtime-config": "",
        "audit-policy-file": POLICY_IN_NODE,
        "audit-log-path": f"{LOG_DIR_IN_NODE}/audit.log",
        "audit-log-format": "json",
        "audit-log-maxsize": "200",  # MB, then one rotation: the tests read line numbers of one file
        "audit-log-maxbackup": "2",
    }
    return {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "apiServer": {
            "extraArgs": [{"name": k, "value": v} for k, v in args.items()],
            "extraVolumes": [
                {
                    "name": "daemonpool-audit-policy",
                    "hostPath": POLICY_IN_NODE,
                    "mountPath": POLICY_IN_NODE,
                    "readOnly": True,
                    "pathType": "File",
                },
                {
                    "name": "daemonpool-audit-log",
                    "hostPath": LOG_DIR_IN_NODE,
                    "mountPath": LOG_DIR_IN_NODE,
                    "pathType": "DirectoryOrCreate",
                },
            ],
        },
    }


def audited_config(
    source: pathlib.Path, policy: pathlib.Path, out_dir: pathlib.Path
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``out_dir``/kind-config.yaml: ``source`` with the audit log on its control plane, the policy read from
    ``policy`` and the log written to ``out_dir``/audit on this machine. Returns (config, log file)."""
    cfg = yaml.safe_load(source.read_text())
    planes = [n for n in cfg["nodes"] if n.get("role") == "control-plane"]
    if len(planes) != 1:
        raise ValueError(f"{source}: the audit log is added to one control plane; found {len(planes)}")
    log_dir = out_dir / "audit"
    log_dir.mkdir(parents=True, exist_ok=True)
    planes[0].setdefault("extraMounts", []).extend(
        [
            {"hostPath": str(policy.resolve()), "containerPath": POLICY_IN_NODE, "readOnly": True},
            {"hostPath": str(log_dir.resolve()), "containerPath": LOG_DIR_IN_NODE},
        ]
    )
    cfg.setdefault("kubeadmConfigPatches", []).append(yaml.safe_dump(audit_patch(), sort_keys=False))
    out = out_dir / "kind-config.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out, log_dir / "audit.log"
