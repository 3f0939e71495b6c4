"""spec -> Deployment: the builder, plans against what exists, property tests."""

import copy
import pathlib

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemonpool_operator import desired, model
from daemonpool_operator.model import InvalidPool

from cases import pool

ROOT = pathlib.Path(__file__).resolve().parents[2]


# -- the builder --------------------------------------------------------------


def test_deployment_names_selector_labels_owner():
    p = pool()
    d = desired.build_deployment(p)
    assert d["metadata"]["name"] == "mail" and d["metadata"]["namespace"] == "ns"
    assert d["spec"]["selector"] == {"matchLabels": {"daemonpool.dev/pool": "mail"}}
    assert d["spec"]["template"]["metadata"]["labels"]["daemonpool.dev/pool"] == "mail"
    assert d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "daemonpool-operator"
    (ref,) = d["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "name": "mail",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert d["spec"]["replicas"] == 1


def test_selector_never_depends_on_the_spec():
    a = desired.build_deployment(pool())
    spec = pool()["spec"]
    spec.update(
        peers=7,
        timeoutSeconds=99,
        template={"metadata": {"labels": {"team": "x"}}, "spec": {"containers": [{"name": "other", "image": "i"}]}},
    )
    b = desired.build_deployment(pool(spec))
    assert a["spec"]["selector"] == b["spec"]["selector"]


@pytest.mark.parametrize("how", ["http", "exec"])
def test_worker_gets_env_run_dir_and_probes(how):
    """Every probe field pinned to literals worked out from the desired.py docstring (T=20, P=4: limit 16)."""
    spec = pool()["spec"]
    spec.update(timeoutSeconds=20, probePeriodSeconds=4, gracePeriodSeconds=45, probes=how)
    d = desired.build_deployment(pool(spec))
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {
        "DAEMONPOOL_NAME": "mail",
        "DAEMONPOOL_TIMEOUT_SECONDS": "20",
        "DAEMONPOOL_MAX_PEERS": "1",
        "DAEMONPOOL_RUN_DIR": "/run/daemonpool",
        **({"DAEMONPOOL_PORT": "9309"} if how == "http" else {}),
    }
    assert {"name": "daemonpool-run", "mountPath": "/run/daemonpool"} in c["volumeMounts"]
    assert {"name": "daemonpool-run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod["volumes"]

    def action(kind, path):
        if how == "http":
            return {"httpGet": {"path": f"{path}?timeout=16", "port": "daemonpool"}}
        return {"exec": {"command": ["worker-runtime-probe", kind, "--timeout", "16"]}}

    assert c["livenessProbe"] == {
        **action("liveness", "/livez"),
        "periodSeconds": 4,
        "failureThreshold": 2,
        "successThreshold": 1,
        "timeoutSeconds": 4,
        "terminationGracePeriodSeconds": 2,
    }
    assert c["readinessProbe"] == {
        **action("readiness", "/readyz"),
        "periodSeconds": 2,
        "failureThreshold": 1,
        "successThreshold": 1,
        "timeoutSeconds": 2,
    }
    assert c["startupProbe"] == {
        **action("startup", "/startupz"),
        "periodSeconds": 1,
        "failureThreshold": 60,
        "successThreshold": 1,
        "timeoutSeconds": 1,
    }
    if how == "http":
        assert c["ports"] == [{"name": "daemonpool", "containerPort": 9309, "protocol": "TCP"}]
    else:
        assert "ports" not in c
    # The bound the docstring promises: kill no earlier than T, and within T + P (+2 s grace).
    limit, p, f = 16, 4, 2
    assert limit + (f - 1) * p >= 20 and limit + f * p <= 20 + 4
    assert pod["terminationGracePeriodSeconds"] == 45


@pytest.mark.parametrize(
    "timeout,period,expect_period,expect_probe_timeout",
    [
        (30, None, 7, 5),  # P = T/4 = 7; probe timeout capped at 5
        (4, None, 1, 1),  # P = max(1, 1)
        (200, None, 10, 5),  # P capped at 10
        (12, 3, 3, 3),  # probe timeout = min(P, 5)
    ],
)
def test_default_probe_period_and_probe_timeout(timeout, period, expect_period, expect_probe_timeout):
    spec = pool()["spec"]
    spec.update(timeoutSeconds=timeout, **({"probePeriodSeconds": period} if period else {}))
    (c,) = desired.build_deployment(pool(spec))["spec"]["template"]["spec"]["containers"]
    live, ready = c["livenessProbe"], c["readinessProbe"]
    assert (live["periodSeconds"], live["timeoutSeconds"]) == (expect_period, expect_probe_timeout)
    assert (ready["periodSeconds"], ready["timeoutSeconds"]) == (min(expect_period, 2), min(expect_probe_timeout, 2))
    assert live["httpGet"]["path"] == f"/livez?timeout={timeout - expect_period}"


def test_a_users_port_of_the_same_name_is_replaced_others_kept():
    spec = pool()["spec"]
    spec["port"] = 12000
    spec["template"]["spec"]["containers"][0]["ports"] = [
        {"name": "daemonpool", "containerPort": 1},
        {"name": "web", "containerPort": 8080},
    ]
    (c,) = desired.build_deployment(pool(spec))["spec"]["template"]["spec"]["containers"]
    assert c["ports"] == [
        {"name": "web", "containerPort": 8080},
        {"name": "daemonpool", "containerPort": 12000, "protocol": "TCP"},
    ]


def test_worker_container_by_name_and_user_env_kept():
    spec = pool()["spec"]
    spec["workerContainer"] = "worker"
    spec["template"]["spec"]["containers"] = [
        {"name": "sidecar", "image": "s"},
        {
            "name": "worker",
            "image": "w",
            "env": [{"name": "A", "value": "1"}, {"name": "DAEMONPOOL_NAME", "value": "x"}],
        },
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
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    spec = pool()["spec"]
    spec["template"]["spec"]["securityContext"] = {"runAsNonRoot": False, "runAsUser": 0}
    spec["template"]["spec"]["containers"][0]["securityContext"] = {"capabilities": {"add": ["NET_ADMIN"]}}
    pod = desired.build_deployment(pool(spec))["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is False and pod["securityContext"]["runAsUser"] == 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"]}


def test_template_fields_users_know_are_kept():
    spec = pool()["spec"]
    extra = {
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "k", "operator": "Exists"}],
        "serviceAccountName": "mailer",
        "volumes": [{"name": "cfg", "configMap": {"name": "c"}}],
    }
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


# -- property-based ---------------------------------------------------------------

names = st.from_regex(r"\A[a-z][a-z0-9-]{0,8}[a-z0-9]\Z")
containers = st.lists(
    st.fixed_dictionaries({"name": names, "image": st.text("abc:/.1", min_size=1, max_size=10)}),
    min_size=1,
    max_size=4,
    unique_by=lambda c: c["name"],
)
valid_specs = st.builds(
    lambda peers, timeout, grace, cs, recreate: {
        "peers": peers,
        "timeoutSeconds": timeout,
        "gracePeriodSeconds": grace,
        "strategy": {"type": "Recreate"} if recreate else {"type": "RollingUpdate"},
        "template": {"spec": {"containers": cs}},
    },
    st.integers(0, 100),
    st.integers(3, 3600),
    st.integers(1, 600),
    containers,
    st.booleans(),
)


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
    limit = int(live["httpGet"]["path"].rsplit("=", 1)[1]) if "httpGet" in live else int(live["exec"]["command"][-1])
    assert limit >= 1 and limit + live["periodSeconds"] * (live["failureThreshold"] - 1) >= spec["timeoutSeconds"]
    assert limit + live["periodSeconds"] * live["failureThreshold"] <= spec["timeoutSeconds"] + live["periodSeconds"]
    assert yaml.safe_load(yaml.safe_dump(d)) == d


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "peers",
                "timeoutSeconds",
                "template",
                "strategy",
                "workerContainer",
                "probePeriodSeconds",
                "gracePeriodSeconds",
                "x",
            ]
        ),
        junk,
        max_size=6,
    )
)
def test_invalid_specs_never_crash_the_builder(spec):
    p = pool(spec)
    try:
        d = desired.build_deployment(p)
    except InvalidPool as exc:
        assert str(exc)
    else:
        assert d["kind"] == "Deployment"


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
    assert isinstance(action, desired.Update) and action.patch["spec"]["strategy"] == {
        "type": "Recreate",
        "rollingUpdate": None,
    }


def test_a_rollout_the_autoscaler_held_is_resumed_once_the_pool_no_longer_autoscales():
    p = pool()
    want = desired.build_deployment(p)
    held = _as_server_returns(want)
    held["spec"]["paused"] = True
    held["metadata"]["annotations"] = {"daemonpool.dev/rollout-held": "busy old workers"}
    action = desired.plan(p, want, held)
    assert isinstance(action, desired.Update) and action.paths == ["spec.paused"]
    assert action.patch["spec"]["paused"] is False
    assert action.patch["metadata"]["annotations"] == {"daemonpool.dev/rollout-held": None}
    assert action.patch["metadata"]["ownerReferences"] == want["metadata"]["ownerReferences"]
    # A pause nobody marked (kubectl rollout pause) is not the operator's to undo; an autoscaled pool's hold
    # is the autoscaler's.
    users = _as_server_returns(want)
    users["spec"]["paused"] = True
    assert desired.plan(p, want, users) == desired.Noop()
    autoscaled = desired.build_deployment(p, drain_token="tok")
    held_autoscaled = _as_server_returns(autoscaled)
    held_autoscaled["spec"]["paused"] = True
    held_autoscaled["metadata"]["annotations"] = {"daemonpool.dev/rollout-held": "busy old workers"}
    assert desired.plan(p, autoscaled, held_autoscaled) == desired.Noop()
