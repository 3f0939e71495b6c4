"""KEDA's ScaledObject as the peer comparisons write it (tests/cluster/test_peer_autoscalers.py and
bench/_peers.py): one body, so the test and the bench measure the same thing."""

from __future__ import annotations


def scaled_object(
    ns: str,
    name: str,
    target: dict,
    query: str,
    per_worker: int,
    auth: str,
    max_replicas: int,
    polling_seconds: int | None = None,
    cooldown_seconds: int | None = None,
    scale_down_window: int | None = None,
) -> dict:
    """A ScaledObject scaling ``target`` (a scaleTargetRef) from 0 to ``max_replicas`` on PostgreSQL's answer to
    ``query``, ``per_worker`` rows a replica, with the TriggerAuthentication ``auth``. The timings left None
    are KEDA's defaults (30 s polling, a 300 s cooldown, the HPA's 300 s scale-down window)."""
    spec: dict = {
        "scaleTargetRef": target,
        "minReplicaCount": 0,
        "maxReplicaCount": max_replicas,
        "triggers": [
            {
                "type": "postgresql",
                "metadata": {"query": query, "targetQueryValue": str(per_worker), "activationTargetQueryValue": "0"},
                "authenticationRef": {"name": auth},
            }
        ],
    }
    if polling_seconds is not None:
        spec["pollingInterval"] = polling_seconds
    if cooldown_seconds is not None:
        spec["cooldownPeriod"] = cooldown_seconds
    if scale_down_window is not None:
        behavior = {"scaleDown": {"stabilizationWindowSeconds": scale_down_window}}
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
