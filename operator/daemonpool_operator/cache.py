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
from collections import OrderedDict

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

    def __init__(self, obj, kept=None):
        meta = obj.get("metadata") or {}
        self.uid, self.rv = meta.get("uid"), meta.get("resourceVersion")
        self.data = _pack(obj) if kept is None else json.dumps(kept, separators=(",", ":")).encode()

    def load(self) -> dict:
        return json.loads(self.data)


def _int_rv(rv) -> int | None:
    try:
        return int(rv)
    except (TypeError, ValueError):
        return None  # resourceVersions are opaque by contract


def _newer(cur: _Kept | None, new: dict) -> bool:
    """Whether ``new`` may replace ``cur``: a write's answer can arrive before an older watch event."""
    if cur is None or cur.uid != new["metadata"].get("uid"):
        return True
    new_rv, cur_rv = _int_rv(new["metadata"].get("resourceVersion")), _int_rv(cur.rv)
    return new_rv is None or cur_rv is None or new_rv >= cur_rv  # when in doubt, the latest seen wins


# Uids known gone, remembered so a late answer cannot bring their object back: a write's answer (or an
# event still queued) that arrives after the DELETED event, or after a listing that no longer had it.
# Bounded: uids are never reused, and a late answer comes within seconds, not after this many deletions.
GONE_REMEMBERED = 20000
FOREVER = float("inf")


class _Gone:
    """uid -> resourceVersion at which it was known gone (FOREVER once deleted): older news is refused."""

    def __init__(self, size: int = GONE_REMEMBERED):
        self._size = size
        self._at: OrderedDict = OrderedDict()

    def add(self, uid, rv=FOREVER) -> None:
        if uid is None:
            return
        self._at[uid] = rv
        self._at.move_to_end(uid)
        while len(self._at) > self._size:
            self._at.popitem(last=False)

    def refuses(self, body: dict) -> bool:
        meta = body.get("metadata") or {}
        at = self._at.get(meta.get("uid"))
        if at is None:
            return False
        rv = _int_rv(meta.get("resourceVersion"))
        return at == FOREVER or rv is None or rv <= at

    def __len__(self) -> int:
        return len(self._at)


# Characters of a container's termination message kept per pod: one line of the runtime's, not a log tail.
MESSAGE_KEPT = 300


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
        if last.get("message"):  # the runtime's words: why the kubelet restarted it, or that it recycled
            out["lastState"]["terminated"]["message"] = str(last["message"])[:MESSAGE_KEPT]
    return out


def summarize_pod(pod: dict) -> dict:
    """The pod as status.py sees it: name, deletion, scheduling, container states. Nothing else."""
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    out: dict = {"metadata": {"name": meta.get("name")}, "status": {}}
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    if template_hash:  # which ReplicaSet: old or new during a rollout (the autoscaler's idle-first rollouts)
        out["metadata"]["labels"] = {"pod-template-hash": template_hash}
        out["metadata"]["creationTimestamp"] = meta.get("creationTimestamp") or ""
    if meta.get("deletionTimestamp"):
        out["metadata"]["deletionTimestamp"] = meta["deletionTimestamp"]
    cost = (meta.get("annotations") or {}).get(DELETION_COST)
    if cost is not None:
        out["metadata"]["annotations"] = {DELETION_COST: cost}
    for key in ("podIP", "phase"):
        if st.get(key):
            out["status"][key] = st[key]
    ready = [c for c in st.get("conditions") or [] if c.get("type") == "Ready"]
    if ready:  # what the ReplicaSet ranks by on a scale-in (not-ready pods go first): the autoscaler's drain
        out["status"]["ready"] = ready[0].get("status") == "True"
    sched = [c for c in st.get("conditions") or [] if c.get("type") == "PodScheduled" and c.get("status") == "False"]
    if sched:
        out["status"]["conditions"] = [{k: c.get(k) for k in ("type", "status", "reason", "message")} for c in sched]
    for key in ("initContainerStatuses", "containerStatuses"):
        if st.get(key):
            out["status"][key] = [_container_summary(cs) for cs in st[key]]
    return out


class World:
    """Pools, their Deployments and pod summaries, as the watches (and the operator's own writes) tell.

    A watch that is listed again (after its resourceVersion expired, or at start) sends no DELETED for
    what went while it was not watching: ``listed`` drops what a complete listing no longer has. A
    deleted object's uid is remembered (``_Gone``) so a late answer cannot bring it back. Either ghost
    would stay for good: a Deployment that is gone blocks its pool (Conflict) when the pool is created
    again under the same name; a pod that is gone is counted in status.
    """

    KINDS = ("daemonpools", "deployments", "pods")  # the resources (plurals) kept here

    def __init__(self):
        self._lock = threading.Lock()
        self._pools: dict = {}
        self._deployments: dict = {}
        self._pods: dict = {}  # key -> {pod name: _Kept of its summary}
        self._gone = _Gone()
        self._stamps: dict = {}  # key -> a number that changes whenever the pool, its Deployment or a pod may have
        self._seq = 0

    def _touch(self, key: Key) -> None:
        """Lock held: what is kept for ``key`` may have changed (a refused update only costs a reader a load).
        A key with nothing kept any more keeps no stamp either (pools come and go by the thousand)."""
        self._seq += 1
        if key in self._pools or key in self._deployments or key in self._pods:
            self._stamps[key] = self._seq
        else:
            self._stamps.pop(key, None)

    def stamp(self, key: Key) -> int:
        """A number that is the same as long as nothing kept for the pool changed: readers that look every second
        (the autoscaler) load and parse again only when it moves."""
        with self._lock:
            return self._stamps.get(key, 0)

    # -- fed by the watches --------------------------------------------------------------
    def _keep(self, holder: dict, k, body: dict, kept=None) -> None:
        """Keep ``body`` at ``holder[k]`` unless its uid is known gone or what is kept is newer (lock held)."""
        if not self._gone.refuses(body) and _newer(holder.get(k), body):
            holder[k] = _Kept(body, kept)

    def _drop(self, holder: dict, k, body: dict) -> None:
        """Forget ``holder[k]`` if it is ``body``'s object (not a newer one of the same name); lock held."""
        uid = body["metadata"].get("uid")
        self._gone.add(uid)
        cur = holder.get(k)
        if cur is not None and cur.uid == uid:
            del holder[k]

    def set_pool(self, body: dict) -> Key:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self._lock:
            self._keep(self._pools, key, body)
            self._touch(key)
        return key

    def drop_pool(self, body: dict) -> Key:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self._lock:
            self._drop(self._pools, key, body)
            self._touch(key)
        return key

    def set_deployment(self, body: dict) -> Key | None:
        key = _owner_key(body)
        if key is not None:
            with self._lock:
                self._keep(self._deployments, key, body)
                self._touch(key)
        return key

    def drop_deployment(self, body: dict) -> Key | None:
        key = _owner_key(body)
        if key is not None:
            with self._lock:
                self._drop(self._deployments, key, body)
                self._touch(key)
        return key

    def set_pod(self, body: dict) -> Key | None:
        key = _owner_key(body)
        if key is not None and not a_worker_of(body, key[1]):
            # The pool's labels, but not made by its ReplicaSets: never asked, counted, patched or reported.
            with self._lock:
                pods = self._pods.get(key, {})
                pods.pop(body["metadata"]["name"], None)
                if not pods:
                    self._pods.pop(key, None)
                self._touch(key)
            return key
        if key is not None:
            with self._lock:
                pods = self._pods.setdefault(key, {})
                self._keep(pods, body["metadata"]["name"], body, summarize_pod(body))
                if not pods:
                    del self._pods[key]
                self._touch(key)
        return key

    def drop_pod(self, body: dict) -> Key | None:
        key = _owner_key(body)
        if key is not None:
            with self._lock:
                pods = self._pods.get(key, {})
                self._drop(pods, body["metadata"]["name"], body)
                if not pods:
                    self._pods.pop(key, None)
                self._touch(key)
        return key

    def listed(self, kind: str, namespace: str | None, uids: set, resource_version) -> set:
        """A complete listing of ``kind`` (in ``namespace``, or everywhere) at ``resource_version`` had
        these uids: drop what it no longer has, unless newer than the listing (written since). Listings
        of other kinds (kopf's own: CRDs, namespaces) change nothing.

        Returns the keys of the pools whose cache changed: they need a reconcile.
        """
        if kind not in self.KINDS:
            return set()
        at = _int_rv(resource_version)
        changed: set = set()
        with self._lock:
            if kind == "pods":  # (the dict holding it, its name there, its pool) for every pod
                entries = [(pods, name, key) for key, pods in self._pods.items() for name in pods]
            else:
                store = self._pools if kind == "daemonpools" else self._deployments
                entries = [(store, key, key) for key in store]
            for holder, k, key in entries:
                kept = holder[k]
                if kept.uid in uids or (namespace is not None and key[0] != namespace):
                    continue
                rv = _int_rv(kept.rv)
                if at is None or rv is None or rv <= at:  # unknown order: drop it, the next event restores it
                    del holder[k]
                    self._gone.add(kept.uid, FOREVER if at is None else at)
                    changed.add(key)
            if kind == "pods":
                for key in changed:
                    if not self._pods[key]:
                        del self._pods[key]
            for key in changed:
                self._touch(key)
        return changed

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
            kept = list(self._pods.get(key, {}).values())
        return [k.load() for k in kept]

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
                "gone": len(self._gone),
            }


def a_worker_of(pod: dict, pool: str) -> bool:
    """A pod is a worker of ``pool`` when a ReplicaSet of the pool's Deployment (named like the pool, as
    desired.py builds it) controls it: ``<pool>-<pod-template-hash>``. Labels alone are anybody's to copy."""
    meta = pod.get("metadata") or {}
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    if not template_hash:
        return False
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "ReplicaSet" and ref.get("apiVersion") == "apps/v1":
            return ref.get("name") == f"{pool}-{template_hash}"
    return False


def _owner_key(body: dict) -> Key | None:
    """The pool an object belongs to, by the pool label the operator sets (selected server-side)."""
    meta = body.get("metadata") or {}
    pool = (meta.get("labels") or {}).get(model.POOL_LABEL)
    return (meta.get("namespace"), pool) if pool else None
