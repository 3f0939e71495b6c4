"""What the operator knows of the world, fed by its watches: pools, their Deployments, a summary of their pods.

A reconcile reads from here and makes no GET or LIST. Pods are kept as small summaries (the
fields status.py reads), not whole bodies, so memory grows with pools and pods, not with their
size. Everything is kept as compact JSON bytes, decoded on each read: a few kilobytes per Deployment
instead of tens as Python objects (about a fifth of the memory at 1,000 pools and 20,000 pods), and a
read is a fresh copy for free. Pure: imports neither kopf nor kubernetes; thread-safe.
"""

from __future__ import annotations

import json
import threading

from . import model

Key = tuple  # (namespace, pool name)
# KEP-2255: the ReplicaSet controller removes the pods with the lowest cost first.
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _pack(obj) -> bytes:
    """Compact JSON without what nothing here reads and what costs the most memory."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return json.dumps({**obj, "metadata": meta}, separators=(",", ":")).encode()


class _Kept:
    """One object as kept: its identity and version (to order writes and watch events) and its JSON."""

    __slots__ = ("uid", "rv", "data")

    def __init__(self, obj):
        meta = obj.get("metadata") or {}
        self.uid, self.rv, self.data = meta.get("uid"), meta.get("resourceVersion"), _pack(obj)

    def load(self) -> dict:
        return json.loads(self.data)


def _newer(cur: _Kept | None, new: dict) -> bool:
    """Whether ``new`` may replace ``cur``: a write's answer can arrive before an older watch event."""
    if cur is None or cur.uid != new["metadata"].get("uid"):
        return True
    try:
        return int(new["metadata"]["resourceVersion"]) >= int(cur.rv)
    except (KeyError, TypeError, ValueError):
        return True  # resourceVersions are opaque by contract: when in doubt, the latest seen wins


def _container_summary(cs: dict) -> dict:
    state = cs.get("state") or {}
    waiting = state.get("waiting")
    last = (cs.get("lastState") or {}).get("terminated")
    out = {
        "name": cs.get("name"),
        "image": cs.get("image"),
        "restartCount": cs.get("restartCount", 0),
        "ready": bool(cs.get("ready")),
        "state": {},
    }
    if waiting:
        out["state"]["waiting"] = {k: waiting[k] for k in ("reason", "message") if waiting.get(k)}
    elif "running" in state:
        out["state"]["running"] = {}
    if last:
        out["lastState"] = {"terminated": {k: last[k] for k in ("reason", "exitCode") if k in last}}
    return out


def summarize_pod(pod: dict) -> dict:
    """The pod as status.py sees it: name, deletion, scheduling, container states. Nothing else."""
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    out: dict = {"metadata": {"name": meta.get("name")}, "status": {}}
    if meta.get("deletionTimestamp"):
        out["metadata"]["deletionTimestamp"] = meta["deletionTimestamp"]
    cost = (meta.get("annotations") or {}).get(DELETION_COST)
    if cost is not None:
        out["metadata"]["annotations"] = {DELETION_COST: cost}
    for key in ("podIP", "phase"):
        if st.get(key):
            out["status"][key] = st[key]
    sched = [c for c in st.get("conditions") or [] if c.get("type") == "PodScheduled" and c.get("status") == "False"]
    if sched:
        out["status"]["conditions"] = [{k: c.get(k) for k in ("type", "status", "reason", "message")} for c in sched]
    for key in ("initContainerStatuses", "containerStatuses"):
        if st.get(key):
            out["status"][key] = [_container_summary(cs) for cs in st[key]]
    return out


class World:
    def __init__(self):
        self._lock = threading.Lock()
        self._pools: dict = {}
        self._deployments: dict = {}
        self._pods: dict = {}  # key -> {pod name: summary}

    # -- fed by the watches --------------------------------------------------------------
    def set_pool(self, body: dict) -> Key:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self._lock:
            if _newer(self._pools.get(key), body):
                self._pools[key] = _Kept(body)
        return key

    def drop_pool(self, key: Key) -> None:
        with self._lock:
            self._pools.pop(key, None)

    def set_deployment(self, body: dict) -> Key | None:
        key = _owner_key(body)
        if key is not None:
            with self._lock:
                if _newer(self._deployments.get(key), body):
                    self._deployments[key] = _Kept(body)
        return key

    def drop_deployment(self, body: dict) -> Key | None:
        key = _owner_key(body)
        if key is not None:
            with self._lock:
                cur = self._deployments.get(key)
                if cur is not None and cur.uid == body["metadata"].get("uid"):
                    del self._deployments[key]
        return key

    def set_pod(self, body: dict) -> Key | None:
        key = _owner_key(body)
        if key is not None:
            with self._lock:
                summary = json.dumps(summarize_pod(body), separators=(",", ":")).encode()
                self._pods.setdefault(key, {})[body["metadata"]["name"]] = summary
        return key

    def drop_pod(self, body: dict) -> Key | None:
        key = _owner_key(body)
        if key is not None:
            with self._lock:
                pods = self._pods.get(key, {})
                pods.pop(body["metadata"]["name"], None)
                if not pods:
                    self._pods.pop(key, None)
        return key

    # -- read by reconciles --------------------------------------------------------------
    def pool(self, key: Key) -> dict | None:
        with self._lock:
            p = self._pools.get(key)
        return p.load() if p is not None else None

    def deployment(self, key: Key) -> dict | None:
        with self._lock:
            d = self._deployments.get(key)
        return d.load() if d is not None else None

    def pods(self, key: Key) -> list:
        with self._lock:
            packed = list(self._pods.get(key, {}).values())
        return [json.loads(b) for b in packed]

    def pool_versions(self) -> dict:
        """{(namespace, name): resourceVersion} of every pool: what the watch delivered, for the census."""
        with self._lock:
            return {k: p.rv for k, p in self._pools.items()}

    def pool_keys(self) -> list:
        with self._lock:
            return list(self._pools)

    def sizes(self) -> dict:
        with self._lock:
            return {
                "pools": len(self._pools),
                "deployments": len(self._deployments),
                "pods": sum(len(p) for p in self._pods.values()),
            }


def _owner_key(body: dict) -> Key | None:
    """The pool an object belongs to, by the pool label the operator sets (selected server-side)."""
    meta = body.get("metadata") or {}
    pool = (meta.get("labels") or {}).get(model.POOL_LABEL)
    return (meta.get("namespace"), pool) if pool else None
