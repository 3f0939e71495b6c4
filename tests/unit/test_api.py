"""The DaemonPool API: model, generated CRD, builders, status. Pure, fast."""

import ast
import copy
import pathlib

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemonpool_operator import crd, desired, model, status
from daemonpool_operator.model import InvalidPool, parse_pool

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOW = "2026-01-01T00:00:00Z"


def pool(spec=None, name="mail", **meta):
    base = {"template": {"spec": {"containers": [{"name": "worker", "image": "img:1"}]}}}
    return {
        "apiVersion": model.API_VERSION, "kind": model.KIND,
        "metadata": {"name": name, "namespace": "ns", "uid": "uid-1", "generation": 1, **meta},
        "spec": base if spec is None else spec,
    }


# -- schema source of truth ---------------------------------------------------

def test_generated_crd_equals_the_committed_file():
    assert (ROOT / "crds" / crd.FILENAME).read_text() == crd.render(), "run: python -m daemonpool_operator.crd"


def test_chart_crd_is_a_byte_copy():
    chart = ROOT / "helm" / "daemonpool-operator" / "crds" / crd.FILENAME
    if not chart.parent.parent.exists():
        pytest.skip("the Helm chart does not exist yet")
    assert chart.read_bytes() == (ROOT / "crds" / crd.FILENAME).read_bytes()


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_crd_schema_is_structural_and_described():
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "$defs" not in node and "title" not in node, path
    spec = schema["properties"]["spec"]
    for name, prop in spec["properties"].items():
        assert prop.get("description"), f"spec.{name} needs a description"
    assert spec["properties"]["peers"]["default"] == 1
    assert spec["properties"]["timeoutSeconds"]["default"] == 30
    v = crd.build_crd()["spec"]["versions"][0]
    assert v["subresources"]["scale"] == {"specReplicasPath": ".spec.peers", "statusReplicasPath": ".status.peers",
                                          "labelSelectorPath": ".status.selector"}
    assert [c["name"] for c in v["additionalPrinterColumns"]] == ["Peers", "Ready", "Timeout", "Status", "Age"]
    assert all("_py" not in r for r in spec["x-kubernetes-validations"])


def _examples():
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == model.KIND:
                yield path.relative_to(ROOT), doc


@pytest.mark.parametrize("path,doc", list(_examples()), ids=lambda x: str(x) if isinstance(x, pathlib.Path) else "")
def test_every_example_loads_and_dumps_back_unchanged(path, doc):
    meta, spec = parse_pool(doc)
    dumped = spec.dump()
    again = model.parse_spec(dumped).dump()
    assert again == dumped
    # Everything the user wrote survives (defaults may be added, nothing dropped or changed).
    def subset(a, b):
        if isinstance(a, dict):
            return all(k in b and subset(v, b[k]) for k, v in a.items())
        if isinstance(a, list):
            return len(a) == len(b) and all(subset(x, y) for x, y in zip(a, b))
        return a == b
    assert subset(doc["spec"], dumped), path


def test_examples_exist():
    assert any(True for _ in _examples())


# -- the builder --------------------------------------------------------------

def test_deployment_names_selector_labels_owner():
    p = pool()
    d = desired.build_deployment(p)
    assert d["metadata"]["name"] == "mail" and d["metadata"]["namespace"] == "ns"
    assert d["spec"]["selector"] == {"matchLabels": {"daemonpool.dev/pool": "mail"}}
    assert d["spec"]["template"]["metadata"]["labels"]["daemonpool.dev/pool"] == "mail"
    assert d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "daemonpool-operator"
    (ref,) = d["metadata"]["ownerReferences"]
    assert ref == {"apiVersion": "daemonpool.dev/v1alpha1", "kind": "DaemonPool", "name": "mail", "uid": "uid-1",
                   "controller": True, "blockOwnerDeletion": True}
    assert d["spec"]["replicas"] == 1


def test_selector_never_depends_on_the_spec():
    a = desired.build_deployment(pool())
    spec = pool()["spec"]
    spec.update(peers=7, timeoutSeconds=99, template={"metadata": {"labels": {"team": "x"}},
                                                      "spec": {"containers": [{"name": "other", "image": "i"}]}})
    b = desired.build_deployment(pool(spec))
    assert a["spec"]["selector"] == b["spec"]["selector"]


def test_worker_gets_env_run_dir_and_probes():
    spec = pool()["spec"]
    spec.update(timeoutSeconds=20, probePeriodSeconds=4, gracePeriodSeconds=45)
    d = desired.build_deployment(pool(spec))
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"DAEMONPOOL_NAME": "mail", "DAEMONPOOL_TIMEOUT_SECONDS": "20", "DAEMONPOOL_MAX_PEERS": "1",
                   "DAEMONPOOL_RUN_DIR": "/run/daemonpool"}
    assert {"name": "daemonpool-run", "mountPath": "/run/daemonpool"} in c["volumeMounts"]
    assert {"name": "daemonpool-run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod["volumes"]
    live = c["livenessProbe"]
    assert live["exec"]["command"] == ["worker-runtime-probe", "liveness", "--timeout", "16"]
    assert (live["periodSeconds"], live["failureThreshold"], live["terminationGracePeriodSeconds"]) == (4, 2, 2)
    # The bound the issue promises: kill no earlier than T, and within T + P (+2 s grace).
    limit, p, f = 16, live["periodSeconds"], live["failureThreshold"]
    assert limit + (f - 1) * p >= 20 and limit + f * p <= 20 + 4
    assert c["readinessProbe"]["exec"]["command"][1] == "readiness"
    assert c["startupProbe"]["failureThreshold"] == 60 and c["startupProbe"]["periodSeconds"] == 1
    assert pod["terminationGracePeriodSeconds"] == 45


def test_worker_container_by_name_and_user_env_kept():
    spec = pool()["spec"]
    spec["workerContainer"] = "worker"
    spec["template"]["spec"]["containers"] = [
        {"name": "sidecar", "image": "s"},
        {"name": "worker", "image": "w", "env": [{"name": "A", "value": "1"}, {"name": "DAEMONPOOL_NAME", "value": "x"}]},
    ]
    d = desired.build_deployment(pool(spec))
    side, work = d["spec"]["template"]["spec"]["containers"]
    assert "livenessProbe" not in side and "env" not in side
    env = [(e["name"], e["value"]) for e in work["env"]]
    assert env[0] == ("A", "1") and ("DAEMONPOOL_NAME", "mail") in env and ("DAEMONPOOL_NAME", "x") not in env


def test_restricted_defaults_where_silent_user_wins_where_speaking():
    d = desired.build_deployment(pool())
    pod = d["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    spec = pool()["spec"]
    spec["template"]["spec"]["securityContext"] = {"runAsNonRoot": False, "runAsUser": 0}
    spec["template"]["spec"]["containers"][0]["securityContext"] = {"capabilities": {"add": ["NET_ADMIN"]}}
    pod = desired.build_deployment(pool(spec))["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is False and pod["securityContext"]["runAsUser"] == 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"]}


def test_template_fields_users_know_are_kept():
    spec = pool()["spec"]
    extra = {"nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "k", "operator": "Exists"}],
             "serviceAccountName": "mailer", "volumes": [{"name": "cfg", "configMap": {"name": "c"}}]}
    spec["template"]["spec"].update(copy.deepcopy(extra))
    spec["template"]["spec"]["containers"][0].update(command=["python", "-m", "w"], resources={"limits": {"cpu": "1"}})
    spec["template"]["metadata"] = {"labels": {"team": "mail"}, "annotations": {"a": "b"}}
    d = desired.build_deployment(pool(spec))
    t = d["spec"]["template"]
    for k in ("nodeSelector", "tolerations", "serviceAccountName"):
        assert t["spec"][k] == extra[k]
    assert extra["volumes"][0] in t["spec"]["volumes"]
    assert t["spec"]["containers"][0]["command"] == ["python", "-m", "w"]
    assert t["metadata"]["labels"]["team"] == "mail" and t["metadata"]["annotations"] == {"a": "b"}


def test_strategy():
    d = desired.build_deployment(pool())
    assert d["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    spec = pool()["spec"]
    spec["strategy"] = {"type": "Recreate"}
    assert desired.build_deployment(pool(spec))["spec"]["strategy"] == {"type": "Recreate"}


def test_builder_is_deterministic_and_does_not_mutate_input():
    p = pool()
    before = copy.deepcopy(p)
    assert desired.build_deployment(p) == desired.build_deployment(p)
    assert p == before


# -- status ---------------------------------------------------------------------

def _dep(p, replicas=3, ready=3, updated=3, gen=1, seen=1):
    d = desired.build_deployment(p)
    d["metadata"]["generation"] = gen
    d["status"] = {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated, "observedGeneration": seen}
    return d


def _conds(s):
    return {c.type: (c.status, c.reason) for c in s.conditions}


def _p3():
    spec = pool()["spec"]
    spec["peers"] = 3
    return pool(spec)


def _pod(name, restarts=0, ready=True, waiting=None, last=None):
    cs = {"name": "worker", "restartCount": restarts, "ready": ready, "state": {"running": {}}}
    if waiting:
        cs["state"] = {"waiting": {"reason": waiting}}
    if last:
        cs["lastState"] = {"terminated": last}
    return {"metadata": {"name": name}, "status": {"containerStatuses": [cs]}}


def build(p, dep, pods=(), **kw):
    _, spec = parse_pool(p)
    return status.build_status(p, dep, list(pods), now=NOW, spec=spec, **kw)


def test_status_all_ready():
    p = _p3()
    s = build(p, _dep(p))
    assert (s.peers, s.ready_peers, s.updated_peers) == (3, 3, 3)
    assert s.selector == "daemonpool.dev/pool=mail" and s.observed_generation == 1 and s.deployment == "mail"
    assert _conds(s) == {"Ready": ("True", "AllPeersReady"), "Progressing": ("False", "Stable"),
                         "Degraded": ("False", "AsExpected")}


@pytest.mark.parametrize("dep_kw,reason", [
    (dict(replicas=1, ready=1, updated=1), "ScalingUp"),
    (dict(replicas=5, ready=5, updated=5), "ScalingDown"),
    (dict(replicas=3, ready=3, updated=1), "RollingOut"),
    (dict(replicas=3, ready=1, updated=3), "WorkersNotReady"),
    (dict(gen=2, seen=1), "RollingOut"),
])
def test_status_progressing_reasons(dep_kw, reason):
    p = _p3()
    s = build(p, _dep(p, **dep_kw))
    assert _conds(s)["Ready"] == ("False", reason) and _conds(s)["Progressing"] == ("True", reason)


def test_status_workers_restarting_and_events():
    p = _p3()
    pods = [_pod("a"), _pod("b", restarts=2, ready=False, last={"reason": "Error", "exitCode": 137})]
    s = build(p, _dep(p, ready=2), pods)
    assert s.restarts == 2
    deg = next(c for c in s.conditions if c.type == "Degraded")
    assert (deg.status, deg.reason) == ("True", "WorkersRestarting")
    assert "b: 2 restart(s), last Error, exit code 137" in deg.message
    _, spec = parse_pool(p)
    ((reason, msg),) = status.restart_events(p, pods, spec)
    assert reason == "WorkerRestarted" and "2 worker restart(s)" in msg
    p["status"] = s.dump()
    assert status.restart_events(p, pods, spec) == [], "a repeated pass reports nothing new"
    recovered = build(p, _dep(p), [_pod("a"), _pod("b", restarts=2)])
    assert _conds(recovered)["Degraded"] == ("False", "AsExpected")


def test_status_crashloop_is_degraded():
    p = _p3()
    s = build(p, _dep(p, ready=2), [_pod("c", restarts=5, ready=False, waiting="CrashLoopBackOff")])
    assert _conds(s)["Degraded"] == ("True", "WorkersRestarting")


def test_status_conflict_missing_invalid():
    p = _p3()
    foreign = _dep(p)
    foreign["metadata"]["ownerReferences"] = []
    s = build(p, foreign)
    assert _conds(s) == {k: (v, "DeploymentConflict") for k, v in
                         (("Ready", "False"), ("Progressing", "False"), ("Degraded", "True"))}
    assert "not controlled by this pool" in s.conditions[0].message
    assert _conds(build(p, None))["Ready"] == ("False", "DeploymentMissing")
    s = status.build_status(p, None, [], now=NOW, spec=None, invalid="spec.peers: must be >= 0")
    assert _conds(s)["Degraded"] == ("True", "InvalidSpec") and "spec.peers" in s.conditions[2].message


def test_status_keeps_transition_time_when_unchanged():
    p = _p3()
    first = build(p, _dep(p))
    p["status"] = first.dump()
    later = status.build_status(p, _dep(p), [], now="2026-02-02T00:00:00Z", spec=parse_pool(p)[1])
    assert later.dump() == first.dump(), "an unchanged world gives an identical status (no write)"
    changed = status.build_status(p, _dep(p, ready=1), [], now="2026-02-02T00:00:00Z", spec=parse_pool(p)[1])
    ready = next(c for c in changed.conditions if c.type == "Ready")
    assert ready.last_transition_time == "2026-02-02T00:00:00Z"


# -- invalid pools ---------------------------------------------------------------

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


DELETE = object()
C = "template__spec__containers"

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
    ("strategy-recreate-with-rolling", _spec(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}), "ok",
     "strategy.rollingUpdate"),
    ("strategy-both-zero", _spec(strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}), "ok", "cannot both be 0"),
    ("label-value-number", _spec(template__metadata={"labels": {"team": 7}}), "ok", "labels"),
    ("reserved-label", _spec(template__metadata={"labels": {"daemonpool.dev/pool": "x"}}), "ok", "daemonpool.dev/pool"),
    ("name-too-long", _spec(), "a" * 48, "at most 47 characters"),
    ("timeout-huge", _spec(timeoutSeconds=10**7), "ok", "timeoutSeconds"),
]


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_pools_name_the_field_and_the_fix(case):
    _id, spec, name, needle = case
    obj = {"metadata": {"name": name}, "spec": spec}
    with pytest.raises(InvalidPool) as err:
        parse_pool(obj)
    assert needle in str(err.value), str(err.value)


def test_there_are_at_least_thirty_invalid_pools():
    assert len(INVALID) >= 30


def test_cel_rules_have_python_twins_or_model_checks():
    # Every CEL rule's message is produced by the model for the matching case above.
    messages = " ".join(r["message"] for r in model.CEL_RULES)
    for case in ("unknown-worker-container", "timeout-too-short-for-probes", "reserved-label", "strategy-recreate-with-rolling"):
        _id, spec, name, _ = next(c for c in INVALID if c[0] == case)
        with pytest.raises(InvalidPool) as err:
            parse_pool({"metadata": {"name": name}, "spec": spec})
        assert str(err.value) in messages, case


# -- property-based ---------------------------------------------------------------

names = st.from_regex(r"\A[a-z][a-z0-9-]{0,8}[a-z0-9]\Z")
containers = st.lists(st.fixed_dictionaries({"name": names, "image": st.text("abc:/.1", min_size=1, max_size=10)}),
                      min_size=1, max_size=4, unique_by=lambda c: c["name"])
valid_specs = st.builds(
    lambda peers, timeout, grace, cs, recreate: {
        "peers": peers, "timeoutSeconds": timeout, "gracePeriodSeconds": grace,
        "strategy": {"type": "Recreate"} if recreate else {"type": "RollingUpdate"},
        "template": {"spec": {"containers": cs}}},
    st.integers(0, 100), st.integers(3, 3600), st.integers(1, 600), containers, st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_specs)
def test_valid_specs_build_a_deployment_that_round_trips(spec):
    p = pool(spec)
    d = desired.build_deployment(p)
    parsed = model.parse_spec(p["spec"])
    assert model.parse_spec(parsed.dump()).dump() == parsed.dump()
    assert d["spec"]["replicas"] == spec["peers"]
    worker = d["spec"]["template"]["spec"]["containers"][0]
    live = worker["livenessProbe"]
    limit = int(live["exec"]["command"][-1])
    assert limit >= 1 and limit + live["periodSeconds"] * (live["failureThreshold"] - 1) >= spec["timeoutSeconds"]
    assert limit + live["periodSeconds"] * live["failureThreshold"] <= spec["timeoutSeconds"] + live["periodSeconds"]
    assert yaml.safe_load(yaml.safe_dump(d)) == d


junk = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["peers", "timeoutSeconds", "template", "strategy", "workerContainer",
                                        "probePeriodSeconds", "gracePeriodSeconds", "x"]), junk, max_size=6))
def test_invalid_specs_never_crash_the_builder(spec):
    p = pool(spec)
    try:
        d = desired.build_deployment(p)
    except InvalidPool as exc:
        assert str(exc)
    else:
        assert d["kind"] == "Deployment"


# -- import boundaries ---------------------------------------------------------------

@pytest.mark.parametrize("module", ["model.py", "desired.py", "status.py", "crd.py"])
def test_builders_import_no_io(module):
    tree = ast.parse((ROOT / "operator" / "daemonpool_operator" / module).read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    assert not mods & {"kopf", "kubernetes", "requests", "urllib3", "aiohttp", "socket", "subprocess"}, mods


# -- plan: what to do about an existing Deployment --------------------------------------

def _as_server_returns(d):
    """What the API server adds: defaults, normalized quantities, status."""
    out = copy.deepcopy(d)
    out["metadata"].update(uid="dep-uid", resourceVersion="7", generation=1)
    tmpl = out["spec"]["template"]["spec"]
    tmpl.update(restartPolicy="Always", dnsPolicy="ClusterFirst", schedulerName="default-scheduler")
    for c in tmpl["containers"]:
        c.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
        c["livenessProbe"].setdefault("initialDelaySeconds", 0)
    out["spec"].update(revisionHistoryLimit=10, progressDeadlineSeconds=600)
    out["status"] = {"replicas": 1}
    return out


def test_plan_nothing_to_do_for_a_defaulted_copy():
    spec = pool()["spec"]
    spec["template"]["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "0.5", "memory": "1Gi"}}
    p = pool(spec)
    want = desired.build_deployment(p)
    have = _as_server_returns(want)
    have["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "500m"  # normalized
    assert desired.plan(p, want, have) == desired.Noop()


def test_plan_create_update_conflict_adopt():
    p = pool()
    want = desired.build_deployment(p)
    assert desired.plan(p, want, None) == desired.Create(want)
    drifted = _as_server_returns(want)
    drifted["spec"]["replicas"] = 5
    drifted["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "value": "1"})
    action = desired.plan(p, want, drifted)
    patch, paths = action.patch, action.paths
    assert isinstance(action, desired.Update) and "spec.replicas" in paths and any("env" in x for x in paths)
    assert patch["spec"] == want["spec"] and "resourceVersion" not in patch["metadata"]
    foreign = _as_server_returns(want)
    foreign["metadata"]["ownerReferences"] = [{**want["metadata"]["ownerReferences"][0], "uid": "other"}]
    assert desired.plan(p, want, foreign) == desired.Conflict("controlled by another owner (uid other)")
    unlabelled = _as_server_returns(want)
    unlabelled["metadata"]["ownerReferences"] = []
    unlabelled["metadata"]["labels"] = {"app": "x"}
    assert desired.plan(p, want, unlabelled) == desired.Conflict("not created by this pool (no owner reference)")
    orphan = _as_server_returns(want)
    orphan["metadata"]["ownerReferences"] = []
    action = desired.plan(p, want, orphan)
    patch, paths = action.patch, action.paths
    assert isinstance(action, desired.Update) and paths == ["metadata.ownerReferences"]
    assert patch["metadata"]["ownerReferences"] == want["metadata"]["ownerReferences"]


def test_recreate_patch_clears_rolling_update():
    spec = pool()["spec"]
    spec["strategy"] = {"type": "Recreate"}
    p = pool(spec)
    want = desired.build_deployment(p)
    have = _as_server_returns(desired.build_deployment(pool()))
    action = desired.plan(p, want, have)
    assert isinstance(action, desired.Update) and action.patch["spec"]["strategy"] == {"type": "Recreate", "rollingUpdate": None}
