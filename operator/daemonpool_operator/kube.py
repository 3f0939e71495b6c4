"""The one module that talks to the Kubernetes API.

`get_*` read and return plain camelCase dicts (as kubectl shows them) or None;
`create_*`, `replace_*`, `patch_*`, `post_*` write. Nothing else in the
package imports the kubernetes client. API errors become our own: ``Transient``
(worth retrying after ``delay``), ``Rejected`` (refused: not sent again until it
changes), ``NamespaceTerminating``. Imports no kopf: the controller decides what each means.
"""

from __future__ import annotations

import base64
import datetime
import json
import threading

import pydantic
import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from . import metrics, model
from .apierrors import MAX_RETRY_AFTER as MAX_RETRY_AFTER
from .apierrors import RETRY_DELAY, NamespaceTerminating, Rejected, Transient, retry_after

_lock = threading.Lock()
_api: client.ApiClient | None = None
RETRYABLE = {409, 429, 500, 502, 503, 504}
# The API server refuses the object itself: retrying the same body cannot help.
REFUSED = {400, 403, 422}
MERGE = "application/merge-patch+json"  # the content type of a JSON merge patch
FIELD_MANAGER = "daemonpool-operator"
# (connect, read) seconds for every call: a hung connection must not hold a pool's lock
# forever. 30 s read is well above a loaded API server's answer and below the resync period.
REQUEST_TIMEOUT = (5, 30)
# Lease requests give up sooner: a renew stuck on a dead connection must fail, and be retried on a new one,
# well within the renew deadline (leader.py: 7 s) instead of costing the leadership.
LEASE_REQUEST_TIMEOUT = (2, 2.5)
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


def api() -> client.ApiClient:
    global _api
    with _lock:
        if _api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            _api = client.ApiClient()
        return _api


def _raw(resp) -> dict:
    return json.loads(resp.data)


def _server_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or exc.reason or str(exc.status)
    except ValueError:
        return (exc.body or exc.reason or str(exc.status))[:1000]


def _retryable(exc: ApiException, what: str):
    if exc.status == 403 and "being terminated" in (exc.body or ""):
        raise NamespaceTerminating(what) from exc
    if exc.status in RETRYABLE:
        delay = retry_after(exc.headers)
        raise Transient(f"{what}: API answered {exc.status} {exc.reason}; retrying in {delay:g}s", delay) from exc
    if exc.status in REFUSED:
        raise Rejected(exc.status, _server_message(exc)) from exc
    raise exc


WRITES = {"create", "patch", "update", "delete"}
VERBS = WRITES | {"get", "list"}


class Fence:
    """Whether this replica may write: the one fence every write passes (``_call``). Open until the leader
    elector guards it with its own check (``guard(elector.fresh)``): then only a leader with a fresh lease
    writes. ``FENCE`` is the process's; nothing rebinds it."""

    def __init__(self) -> None:
        self._check = lambda: True

    def guard(self, check) -> None:
        self._check = check

    def allows(self) -> bool:
        return bool(self._check())


FENCE = Fence()


class NotLeader(Exception):
    """A write was attempted by a replica that is not (or no longer surely) the leader."""


# Fenced writes that passed the fence and have not been answered: a leader that hands its Lease over
# waits for them first (drain_writes), so none lands after another replica took over.
_in_flight = {"writes": 0}
_in_flight_cv = threading.Condition()


def drain_writes(timeout: float) -> bool:
    """Wait until no fenced write is in flight (the fence must already say no); False on timeout."""
    with _in_flight_cv:
        return _in_flight_cv.wait_for(lambda: _in_flight["writes"] == 0, timeout)


def _call(verb: str, what: str, fn, *args, absent: tuple = (), fenced: bool = True, timeout=REQUEST_TIMEOUT, **kwargs):
    """Call the API and return the parsed JSON body; None when the answer's status is in ``absent``. ``verb``
    (get, list, create, patch, update, delete) is said at each call site: writes (fenced) go only while
    this replica is the leader, and the metrics count by it."""
    if verb not in VERBS:
        raise ValueError(f"unknown verb {verb!r}: one of {sorted(VERBS)}")
    if not (fenced and verb in WRITES):
        return _send(what, verb, fn, args, absent, timeout, kwargs)
    with _in_flight_cv:  # the fence and the count together: drain_writes sees every write that passed
        if not FENCE.allows():
            raise NotLeader(f"{what}: not the leader (or the lease may have expired); not writing")
        _in_flight["writes"] += 1
    try:
        return _send(what, verb, fn, args, absent, timeout, kwargs)
    finally:
        with _in_flight_cv:
            _in_flight["writes"] -= 1
            _in_flight_cv.notify_all()


def _send(what, verb, fn, args, absent, timeout, kwargs):
    try:
        out = _raw(fn(*args, _preload_content=False, _request_timeout=timeout, **kwargs))
        metrics.API_REQUESTS.labels(verb, "200").inc()
        return out
    except ApiException as exc:
        metrics.API_REQUESTS.labels(verb, str(exc.status)).inc()
        if exc.status in absent:
            return None
        _retryable(exc, what)
    except pydantic.ValidationError as exc:
        # The client checks types before sending (e.g. a quantity that is not a string).
        raise Rejected(
            400, "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise Transient(f"{what}: {type(exc).__name__}: {exc}; retrying", RETRY_DELAY) from exc


def _apps():
    return client.AppsV1Api(api())


def _custom():
    return client.CustomObjectsApi(api())


# -- Deployments -------------------------------------------------------------------


def get_deployment(namespace: str, name: str) -> dict | None:
    what, fn = f"reading Deployment {namespace}/{name}", _apps().read_namespaced_deployment
    return _call("get", what, fn, name, namespace, absent=(404,))


def create_deployment(namespace: str, body: dict) -> dict | None:
    """Create; None when one of that name appeared meanwhile (the caller reads it again)."""
    what, fn = f"creating Deployment {namespace}/{body['metadata']['name']}", _apps().create_namespaced_deployment
    return _call("create", what, fn, namespace, body, field_manager=FIELD_MANAGER, absent=(409,))


def patch_deployment(namespace: str, name: str, patch: dict) -> dict:
    """A JSON merge patch (see desired.update_patch)."""
    what, fn = f"updating Deployment {namespace}/{name}", _apps().patch_namespaced_deployment
    return _call("patch", what, fn, name, namespace, patch, field_manager=FIELD_MANAGER, _content_type=MERGE)


def budget(verb: str, namespace: str, name: str, body: dict | None = None) -> dict | None:
    """get, create, patch (a merge patch) or delete a pool's PodDisruptionBudget (spec.disruption); None when
    it is absent (get, delete) or when one of that name appeared meanwhile (create)."""
    pol, what = client.PolicyV1Api(api()), f"{verb} PodDisruptionBudget {namespace}/{name}"
    if verb == "get":
        return _call("get", what, pol.read_namespaced_pod_disruption_budget, name, namespace, absent=(404,))
    if verb == "create":
        create = pol.create_namespaced_pod_disruption_budget
        return _call("create", what, create, namespace, body, field_manager=FIELD_MANAGER, absent=(409,))
    if verb == "patch":
        patch = pol.patch_namespaced_pod_disruption_budget
        return _call("patch", what, patch, name, namespace, body, field_manager=FIELD_MANAGER, _content_type=MERGE)
    return _call("delete", what, pol.delete_namespaced_pod_disruption_budget, name, namespace, absent=(404,))


# -- Pods and pools ------------------------------------------------------------------


def remove_finalizer(pool: dict) -> None:
    """Drop kopf's finalizer that earlier versions put on pools (a JSON patch that only applies if it is still there)."""
    meta = pool["metadata"]
    finalizers = meta.get("finalizers") or []
    if FINALIZER not in finalizers:
        return
    i = finalizers.index(FINALIZER)
    patch = [
        {"op": "test", "path": f"/metadata/finalizers/{i}", "value": FINALIZER},
        {"op": "remove", "path": f"/metadata/finalizers/{i}"},
    ]
    _call(
        "patch",
        f"removing the old finalizer of DaemonPool {meta['namespace']}/{meta['name']}",
        _custom().patch_namespaced_custom_object,
        model.GROUP,
        model.VERSION,
        meta["namespace"],
        model.PLURAL,
        meta["name"],
        patch,
        _content_type="application/json-patch+json",
        absent=(404, 422),
    )


def patch_pod_deletion_cost(namespace: str, name: str, cost: int) -> None:
    """Set controller.kubernetes.io/pod-deletion-cost on one worker pod (KEP-2255); a pod that is gone is fine."""
    what, fn = f"setting the deletion cost of pod {namespace}/{name}", client.CoreV1Api(api()).patch_namespaced_pod
    body = {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": str(cost)}}}
    _call("patch", what, fn, name, namespace, body, field_manager=FIELD_MANAGER, _content_type=MERGE, absent=(404,))


def list_labelled(kind: str, label: str, namespaces: list) -> list:
    """Deployments, pods or budgets that carry ``label``, in the watched namespaces (once, at start)."""
    fn = {
        "deployments": (_apps, "deployment"),
        "pods": (lambda: client.CoreV1Api(api()), "pod"),
        "poddisruptionbudgets": (lambda: client.PolicyV1Api(api()), "pod_disruption_budget"),
    }[kind]
    api_, singular = fn[0](), fn[1]
    if not namespaces:
        return _call(
            "list", f"listing {kind}", getattr(api_, f"list_{singular}_for_all_namespaces"), label_selector=label
        )["items"]
    out = []
    for ns in namespaces:
        fn_ = getattr(api_, f"list_namespaced_{singular}")
        out += _call("list", f"listing {kind} in {ns}", fn_, ns, label_selector=label)["items"]
    return out


def hpas_on_pools(namespaces: list) -> dict:
    """{(namespace, pool): [HPA names]} of the autoscaling/v2 HPAs that target a DaemonPool (KEDA makes keda-hpa-*).
    A 403 (a chart without the grant) is an empty answer: the check is advice, not needed to reconcile."""
    v2 = client.AutoscalingV2Api(api())
    calls: list = [((), v2.list_horizontal_pod_autoscaler_for_all_namespaces)] if not namespaces else []
    calls += [((ns,), v2.list_namespaced_horizontal_pod_autoscaler) for ns in namespaces]
    out: dict = {}
    for args, fn in calls:
        for h in (_call("list", "listing HorizontalPodAutoscalers", fn, *args, absent=(403, 404)) or {}).get(
            "items"
        ) or []:
            ref = (h.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == model.KIND and str(ref.get("apiVersion", "")).startswith(model.GROUP + "/"):
                out.setdefault((h["metadata"]["namespace"], ref.get("name")), []).append(h["metadata"]["name"])
    return out


def pool_census(namespaces: list) -> tuple:
    """(how many pools, the first one as (namespace, name, resourceVersion) or None): LISTs with limit=1,
    one per watched namespace (one in all), read from etcd (no resourceVersion: the latest)."""
    api_ = _custom()
    pages = (
        [
            _call(
                "list",
                "counting pools",
                api_.list_cluster_custom_object,
                model.GROUP,
                model.VERSION,
                model.PLURAL,
                limit=1,
            )
        ]
        if not namespaces
        else [
            _call(
                "list",
                f"counting pools in {ns}",
                api_.list_namespaced_custom_object,
                model.GROUP,
                model.VERSION,
                ns,
                model.PLURAL,
                limit=1,
            )
            for ns in namespaces
        ]
    )
    count, first = 0, None
    for page in pages:
        items = page.get("items") or []
        count += len(items) + int((page.get("metadata") or {}).get("remainingItemCount") or 0)
        if items and first is None:
            m = items[0]["metadata"]
            first = (m.get("namespace"), m["name"], m.get("resourceVersion"))
    return count, first


def patch_pool_status(namespace: str, name: str, status: dict) -> dict | None:
    """Replace the status fields we own (merge patch on the status subresource); the pool as written, or None
    when it is gone."""
    return _call(
        "patch",
        f"updating the status of DaemonPool {namespace}/{name}",
        _custom().patch_namespaced_custom_object_status,
        model.GROUP,
        model.VERSION,
        namespace,
        model.PLURAL,
        name,
        {"status": status},
        field_manager=FIELD_MANAGER,
        absent=(404,),
    )


# -- Events --------------------------------------------------------------------------


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def post_event(pool: dict, type_: str, reason: str, message: str) -> None:
    """A core/v1 Event on the pool; failures to post are logged by kopf's caller, never fatal."""
    meta = pool["metadata"]
    ts = now()
    body = {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": model.API_VERSION,
            "kind": model.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
    }
    _call(
        "create",
        f"posting an Event on DaemonPool {meta['namespace']}/{meta['name']}",
        client.CoreV1Api(api()).create_namespaced_event,
        meta["namespace"],
        body,
    )


# -- the leader's Lease (coordination.k8s.io/v1) ------------------------------------------


def _leases():
    return client.CoordinationV1Api(api())


def get_lease(namespace: str, name: str) -> dict | None:
    what, fn = f"reading Lease {namespace}/{name}", _leases().read_namespaced_lease
    return _call("get", what, fn, name, namespace, absent=(404,), timeout=LEASE_REQUEST_TIMEOUT)


def create_lease(namespace: str, body: dict) -> dict | None:
    """None when another replica created it first."""
    what, fn = f"creating Lease {namespace}/{body['metadata']['name']}", _leases().create_namespaced_lease
    return _call("create", what, fn, namespace, body, absent=(409,), fenced=False, timeout=LEASE_REQUEST_TIMEOUT)


def replace_lease(namespace: str, name: str, body: dict) -> dict | None:
    """Compare-and-swap on resourceVersion: None when another replica wrote it meanwhile."""
    what, fn = f"renewing Lease {namespace}/{name}", _leases().replace_namespaced_lease
    return _call("update", what, fn, name, namespace, body, absent=(409,), fenced=False, timeout=LEASE_REQUEST_TIMEOUT)


def secret_value(namespace: str, name: str, key: str) -> str:
    """One key of a Secret, decoded (a backlog source's DSN). Rejected(403 or 404) says why it cannot be had."""
    what = f"reading Secret {namespace}/{name}"
    got = _call("get", what, client.CoreV1Api(api()).read_namespaced_secret, name, namespace, absent=(403, 404))
    if got is None:
        raise Rejected(403, f"cannot read Secret {namespace}/{name}: missing, or the operator may not read it")
    if key not in (got.get("data") or {}):
        raise Rejected(404, f"Secret {namespace}/{name} has no key {key!r}")
    return base64.b64decode(got["data"][key]).decode()
