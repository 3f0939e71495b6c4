"""Shared test cases: one table of invalid pools both the model tests and the real API server use."""

from daemonpool_operator import model

NOW = "2026-01-01T00:00:00Z"


def pool(spec=None, name="mail", **meta):
    base = {"template": {"spec": {"containers": [{"name": "worker", "image": "img:1"}]}}}
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {"name": name, "namespace": "ns", "uid": "uid-1", "generation": 1, **meta},
        "spec": base if spec is None else spec,
    }


DELETE = object()
C = "template__spec__containers"


def _spec(**changes):
    s = {"template": {"spec": {"containers": [{"name": "worker", "image": "img:1"}]}}}
    for path, value in changes.items():
        node = s
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        if value is DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return s


# (id, spec, pool name, substring of the message; "api" marks what the API server itself rejects)
INVALID = [
    ("negative-peers", _spec(peers=-1), "ok", "peers"),
    ("peers-string", _spec(peers="three"), "ok", "peers"),
    ("peers-float", _spec(peers=1.5), "ok", "peers"),
    ("peers-huge", _spec(peers=10**6), "ok", "peers"),
    ("zero-timeout", _spec(timeoutSeconds=0), "ok", "timeoutSeconds"),
    ("negative-timeout", _spec(timeoutSeconds=-5), "ok", "timeoutSeconds"),
    ("timeout-string", _spec(timeoutSeconds="30s"), "ok", "timeoutSeconds"),
    ("timeout-too-short-for-probes", _spec(timeoutSeconds=2), "ok", "probePeriodSeconds + 2"),
    ("probe-period-zero", _spec(probePeriodSeconds=0), "ok", "probePeriodSeconds"),
    ("probe-period-vs-timeout", _spec(timeoutSeconds=30, probePeriodSeconds=29), "ok", "probePeriodSeconds + 2"),
    ("probe-period-equals-timeout", _spec(timeoutSeconds=10, probePeriodSeconds=10), "ok", "probePeriodSeconds + 2"),
    ("negative-grace", _spec(gracePeriodSeconds=-1), "ok", "gracePeriodSeconds"),
    ("zero-grace", _spec(gracePeriodSeconds=0), "ok", "gracePeriodSeconds"),
    ("zero-startup", _spec(startupTimeoutSeconds=0), "ok", "startupTimeoutSeconds"),
    ("no-template", _spec(template=DELETE), "ok", "template"),
    ("template-without-spec", _spec(template__spec=DELETE), "ok", "template.spec"),
    ("no-containers", _spec(**{C: []}), "ok", "containers"),
    ("containers-missing", _spec(**{C: DELETE}), "ok", "containers"),
    ("containers-not-a-list", _spec(**{C: {"name": "worker"}}), "ok", "containers"),
    ("container-without-name", _spec(**{C: [{"image": "x"}]}), "ok", "name"),
    ("container-bad-name", _spec(**{C: [{"name": "Worker_1", "image": "x"}]}), "ok", "name"),
    ("duplicate-container-names", _spec(**{C: [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]}), "ok", "a"),
    ("empty-image", _spec(**{C: [{"name": "a", "image": ""}]}), "ok", "image"),
    ("unknown-worker-container", _spec(workerContainer="nope"), "ok", "workerContainer"),
    ("empty-worker-container", _spec(workerContainer=""), "ok", "workerContainer"),
    ("unknown-field-typo", _spec(replicas=3), "ok", "replicas"),
    ("strategy-type", _spec(strategy={"type": "BlueGreen"}), "ok", "strategy.type"),
    ("strategy-surge-garbage", _spec(strategy={"rollingUpdate": {"maxSurge": "abc"}}), "ok", "maxSurge"),
    (
        "strategy-recreate-with-rolling",
        _spec(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}),
        "ok",
        "strategy.rollingUpdate",
    ),
    (
        "strategy-both-zero",
        _spec(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}),
        "ok",
        "cannot both be 0",
    ),
    ("label-value-number", _spec(template__metadata={"labels": {"team": 7}}), "ok", "labels"),
    ("reserved-label", _spec(template__metadata={"labels": {"daemonpool.dev/pool": "x"}}), "ok", "daemonpool.dev/pool"),
    ("name-too-long", _spec(), "a" * 48, "at most 47 characters"),
    ("timeout-huge", _spec(timeoutSeconds=10**7), "ok", "timeoutSeconds"),
]
