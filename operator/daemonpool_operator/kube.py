"""The one module that talks to the Kubernetes API.

`get_*` read and return plain camelCase dicts (as kubectl shows them) or None;
`create_*`, `replace_*`, `patch_*`, `post_*` write. Nothing else in the
package imports the kubernetes client. API errors worth retrying become
``kopf.TemporaryError`` here, so handlers stay thin.
"""

from __future__ import annotations

import datetime
import json
import threading

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from . import model

_lock = threading.Lock()
_api: client.ApiClient | None = None
RETRYABLE = {409, 429, 500, 502, 503, 504}
# Seconds before kopf retries a write the API refused for a passing reason.
RETRY_DELAY = 2
FIELD_MANAGER = "daemonpool-operator"


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


class NamespaceTerminating(Exception):
    """The namespace is being deleted: nothing may be created there, and the pool goes with it."""


def _retryable(exc: ApiException, what: str):
    if exc.status == 403 and "being terminated" in (exc.body or ""):
        raise NamespaceTerminating(what) from exc
    if exc.status in RETRYABLE:
        raise kopf.TemporaryError(f"{what}: API answered {exc.status} {exc.reason}; retrying", delay=RETRY_DELAY) from exc
    raise exc


# -- Deployments -------------------------------------------------------------------

def get_deployment(namespace: str, name: str) -> dict | None:
    try:
        return _raw(client.AppsV1Api(api()).read_namespaced_deployment(name, namespace, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:
            return None
        _retryable(exc, f"reading Deployment {namespace}/{name}")


def create_deployment(namespace: str, body: dict) -> dict | None:
    """Create; None when one of that name appeared meanwhile (the caller reads it again)."""
    try:
        return _raw(client.AppsV1Api(api()).create_namespaced_deployment(
            namespace, body, field_manager=FIELD_MANAGER, _preload_content=False))
    except ApiException as exc:
        if exc.status == 409:
            return None
        _retryable(exc, f"creating Deployment {namespace}/{body['metadata']['name']}")


def patch_deployment(namespace: str, name: str, patch: dict) -> dict:
    """A JSON merge patch (see desired.update_patch)."""
    try:
        return _raw(client.AppsV1Api(api()).patch_namespaced_deployment(
            name, namespace, patch, field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json",
            _preload_content=False))
    except ApiException as exc:
        _retryable(exc, f"updating Deployment {namespace}/{name}")


# -- Pods and pools ------------------------------------------------------------------

def list_pods(namespace: str, selector: str) -> list:
    try:
        return _raw(client.CoreV1Api(api()).list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False))["items"]
    except ApiException as exc:
        _retryable(exc, f"listing pods in {namespace}")


def get_pool(namespace: str, name: str) -> dict | None:
    try:
        return _raw(client.CustomObjectsApi(api()).get_namespaced_custom_object(
            model.GROUP, model.VERSION, namespace, model.PLURAL, name, _preload_content=False))
    except ApiException as exc:
        if exc.status == 404:
            return None
        _retryable(exc, f"reading DaemonPool {namespace}/{name}")


def patch_pool_status(namespace: str, name: str, status: dict) -> None:
    """Replace the status fields we own (merge patch on the status subresource)."""
    try:
        client.CustomObjectsApi(api()).patch_namespaced_custom_object_status(
            model.GROUP, model.VERSION, namespace, model.PLURAL, name, {"status": status},
            field_manager=FIELD_MANAGER, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return  # the pool is gone: nothing to report on
        _retryable(exc, f"updating the status of DaemonPool {namespace}/{name}")


# -- Events --------------------------------------------------------------------------

def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def post_event(pool: dict, type_: str, reason: str, message: str) -> None:
    """A core/v1 Event on the pool; failures to post are logged by kopf's caller, never fatal."""
    meta = pool["metadata"]
    ts = now()
    body = {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": model.API_VERSION, "kind": model.KIND, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "type": type_, "reason": reason, "message": message[:1024],
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
    }
    try:
        client.CoreV1Api(api()).create_namespaced_event(meta["namespace"], body, _preload_content=False)
    except ApiException as exc:
        _retryable(exc, f"posting an Event on DaemonPool {meta['namespace']}/{meta['name']}")
