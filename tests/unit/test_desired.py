"""spec -> Deployment (operator/daemonpool_operator/desired.py): the builder, plans against what exists, property
tests; then the builder against literal expectations worked out from its documented rules, not from its own
output. Each literal test names the rule it holds; they were written against the mutants `hack/mutation` found
surviving (a one-line change no test noticed)."""

import copy
import pathlib

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemonpool_operator import desired, model
from daemonpool_operator.model import InvalidPool

from testkit.cases import pool

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


def build(**spec_changes) -> dict:
    spec = pool()["spec"]
    spec.update(spec_changes)
    return desired.build_deployment(pool(spec))


def pod_spec_of(template_spec: dict, **spec_changes) -> dict:
    return build(template={"spec": template_spec}, **spec_changes)["spec"]["template"]["spec"]


def test_the_deployment_is_an_apps_v1_deployment():
    d = build()
    assert (d["apiVersion"], d["kind"]) == ("apps/v1", "Deployment")


def test_labels_are_the_recommended_set_plus_the_selector_label():
    expected = {
        "app.kubernetes.io/name": "daemonpool-worker",
        "app.kubernetes.io/instance": "mail",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "daemonpool-operator",
        "daemonpool.dev/pool": "mail",
    }
    d = build()
    assert d["metadata"]["labels"] == expected
    assert d["spec"]["template"]["metadata"] == {"labels": expected}, "no annotations key when none are given"
    assert desired.selector_string("mail") == "daemonpool.dev/pool=mail"


def test_template_labels_and_annotations_are_kept_and_ours_win():
    tmpl = {
        "metadata": {"labels": {"team": "a", "app.kubernetes.io/name": "mine"}, "annotations": {"note": "x"}},
        "spec": {"containers": [{"name": "worker", "image": "img:1"}]},
    }
    meta = build(template=tmpl)["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"note": "x"}
    assert meta["labels"]["team"] == "a"
    assert meta["labels"]["app.kubernetes.io/name"] == "daemonpool-worker"


def test_a_template_without_metadata_builds():
    meta = build(template={"spec": {"containers": [{"name": "worker", "image": "img:1"}]}})["spec"]["template"]
    assert meta["metadata"]["labels"]["daemonpool.dev/pool"] == "mail"


def test_numbers_become_quantity_strings_everywhere_kubernetes_wants_quantities():
    res = {"requests": {"cpu": 1, "memory": 1073741824}, "limits": {"cpu": 0.5}}
    ps = pod_spec_of(
        {
            "containers": [{"name": "worker", "image": "i", "resources": copy.deepcopy(res)}],
            "initContainers": [{"name": "init", "image": "i", "resources": copy.deepcopy(res)}],
            "ephemeralContainers": [{"name": "dbg", "image": "i", "resources": copy.deepcopy(res)}],
            "overhead": {"cpu": 0.25, "memory": 1024},
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": 1048576}}],
        }
    )
    want = {"requests": {"cpu": "1", "memory": "1073741824"}, "limits": {"cpu": "0.5"}}
    assert ps["containers"][0]["resources"] == want
    assert ps["initContainers"][0]["resources"] == want
    assert ps["ephemeralContainers"][0]["resources"] == want
    assert ps["overhead"] == {"cpu": "0.25", "memory": "1024"}
    assert ps["volumes"][0] == {"name": "scratch", "emptyDir": {"sizeLimit": "1048576"}}


def test_init_containers_get_the_restricted_defaults_too():
    ps = pod_spec_of(
        {
            "containers": [{"name": "worker", "image": "i"}],
            "initContainers": [{"name": "init", "image": "i"}],
        }
    )
    expected = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert ps["initContainers"][0]["securityContext"] == expected
    assert ps["containers"][0]["securityContext"] == expected
    assert ps["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("key", ["containers", "initContainers"])
def test_root_in_any_container_drops_run_as_non_root_unless_that_container_says_otherwise(key):
    root = {"name": "r", "image": "i", "securityContext": {"runAsUser": 0}}
    others = [{"name": "worker", "image": "i"}]
    tmpl = {"containers": others + [root]} if key == "containers" else {"containers": others, key: [root]}
    assert "runAsNonRoot" not in pod_spec_of(tmpl)["securityContext"]
    root["securityContext"]["runAsNonRoot"] = False  # the user spoke: their container wins, the pod default stays
    assert pod_spec_of(tmpl)["securityContext"]["runAsNonRoot"] is True


def test_user_security_settings_win_over_defaults_and_are_not_shared():
    user = {"capabilities": {"drop": ["NET_RAW"]}}
    ps = pod_spec_of({"containers": [{"name": "worker", "image": "i", "securityContext": user}]})
    sc = ps["containers"][0]["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["NET_RAW"]}}
    sc["capabilities"]["drop"].append("X")
    assert user["capabilities"]["drop"] == ["NET_RAW"], "the built object shares nothing with the template"
    again = pod_spec_of({"containers": [{"name": "worker", "image": "i"}]})
    assert again["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_defaults_are_copies():
    a = desired._defaults(None, desired.RESTRICTED_CONTAINER_SECURITY)
    a["capabilities"]["drop"].append("X")
    assert desired.RESTRICTED_CONTAINER_SECURITY["capabilities"]["drop"] == ["ALL"]
    user = {"capabilities": {"add": ["NET_ADMIN"]}}
    b = desired._defaults(user, {})
    b["capabilities"]["add"].append("Y")
    assert user["capabilities"]["add"] == ["NET_ADMIN"]


def test_the_run_volume_and_mount_are_ours_and_other_volumes_stay():
    ps = pod_spec_of(
        {
            "containers": [
                {
                    "name": "worker",
                    "image": "i",
                    "volumeMounts": [
                        {"name": "data", "mountPath": "/data"},
                        {"name": "daemonpool-run", "mountPath": "/elsewhere"},
                    ],
                }
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "daemonpool-run", "hostPath": {"path": "/"}}],
        }
    )
    assert ps["containers"][0]["volumeMounts"] == [
        {"name": "data", "mountPath": "/data"},
        {"name": "daemonpool-run", "mountPath": "/run/daemonpool"},
    ]
    assert ps["volumes"] == [
        {"name": "data", "emptyDir": {}},
        {"name": "daemonpool-run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
    ]


def test_the_worker_container_is_not_changed_in_the_template_given():
    container = {"name": "worker", "image": "i", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}
    spec = desired.model.parse_spec({"template": {"spec": {"containers": [container]}}})
    built = desired._worker(spec.template.dump()["spec"]["containers"][0], "mail", spec)
    assert built["volumeMounts"][0] == {"name": "data", "mountPath": "/d"}
    raw = spec.template.dump()["spec"]["containers"][0]
    desired._worker(raw, "mail", spec)
    assert raw["volumeMounts"] == [{"name": "data", "mountPath": "/d"}], "the builder copies before it adds"


def test_probe_defaults_to_exec():
    assert desired._probe("liveness", 8, 2, 2, 1) == {
        "exec": {"command": ["worker-runtime-probe", "liveness", "--timeout", "8"]},
        "periodSeconds": 2,
        "failureThreshold": 2,
        "successThreshold": 1,
        "timeoutSeconds": 1,
    }


def test_an_explicit_spec_is_used_as_given():
    p = pool()
    spec = desired.model.parse_spec({**p["spec"], "peers": 4})
    assert desired.build_deployment(p, spec)["spec"]["replicas"] == 4
    assert desired.build_deployment(p)["spec"]["replicas"] == 1


# -- differences: the rules in its docstring -----------------------------------------------------


@pytest.mark.parametrize(
    "want, have, paths",
    [
        ({}, None, []),  # an empty map matches an omitted one
        ({"a": 1}, None, ["."]),
        ({"a": {}}, {"a": None}, []),
        ({"a": {"b": 1}}, {"a": None}, ["a"]),
        ({"a": {}}, {"a": "x"}, ["a"]),
        ({"a": 1}, {"a": 1, "server": "default"}, []),  # keys only the server has are defaults
        ({"a": []}, {}, []),  # an empty list matches an omitted one
        ({"a": [1]}, {}, ["a"]),
        ({"a": [1, 2]}, {"a": [1]}, ["a"]),
        ({"a": [{"x": 1}, {"x": 2}]}, {"a": [{"x": 1}, {"x": 3}]}, ["a[1].x"]),
        ({"a": [[1], [2]]}, {"a": [[1], [3]]}, ["a[1][0]"]),
        ({"a": False}, {}, []),
        ({"a": 0}, {}, []),
        ({"a": ""}, {}, []),
        ({"a": None}, {}, []),
        ({"a": True}, {}, ["a"]),
        ({"a": 1}, {}, ["a"]),
        ({"a": "x"}, {}, ["a"]),
        ({"a": 0}, {"a": 1}, ["a"]),
        ({"a": ""}, {"a": "x"}, ["a"]),
        ({"cpu": "0.5"}, {"cpu": "500m"}, []),  # quantities by value
        ({"cpu": 1}, {"cpu": "1"}, ["cpu"]),  # only strings are quantities (numbers were made strings)
        ({"cpu": "1"}, {"cpu": "2"}, ["cpu"]),
        ({"a": {"b": {"c": 1}}}, {"a": {"b": {"c": 2}}}, ["a.b.c"]),
    ],
)
def test_differences(want, have, paths):
    assert desired.differences(want, have) == paths


def test_differences_of_a_scalar_at_the_top_names_the_top():
    assert desired.differences({"a": 1}, "x") == ["."]
    assert desired.differences({"a": 1}, "x", "spec") == ["spec"]


# -- plan: what is never touched, what is adopted, and other owners kept ---------------------------


def _have(**meta) -> dict:
    d = desired.build_deployment(pool())
    d["metadata"].update(meta)
    return d


def test_an_orphan_needs_both_the_pool_label_and_managed_by_to_be_adopted():
    p = pool()
    want = desired.build_deployment(p)
    for labels in (
        {"daemonpool.dev/pool": "mail"},
        {"app.kubernetes.io/managed-by": "daemonpool-operator"},
        {"daemonpool.dev/pool": "other", "app.kubernetes.io/managed-by": "daemonpool-operator"},
        {},
    ):
        have = _have(labels=labels, ownerReferences=[])
        assert isinstance(desired.plan(p, want, have), desired.Conflict), labels
    have = _have(ownerReferences=[])
    action = desired.plan(p, want, have)
    assert isinstance(action, desired.Update) and action.paths == ["metadata.ownerReferences"]


def test_other_owners_are_kept_in_the_update_patch():
    p = pool()
    want = desired.build_deployment(p)
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "u2"}
    have = _have(ownerReferences=[other, *want["metadata"]["ownerReferences"]])
    have["spec"]["replicas"] = 9
    action = desired.plan(p, want, have)
    assert isinstance(action, desired.Update) and action.paths == ["spec.replicas"]
    assert action.patch["metadata"]["ownerReferences"] == [other, *want["metadata"]["ownerReferences"]]
    assert action.patch["metadata"]["labels"] == want["metadata"]["labels"]


def test_a_non_controller_owner_is_not_a_conflict_and_not_ours():
    p = pool()
    want = desired.build_deployment(p)
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "keep", "uid": "u2", "controller": False}
    have = _have(ownerReferences=[other])
    action = desired.plan(p, want, have)
    assert isinstance(action, desired.Update)
    assert action.patch["metadata"]["ownerReferences"] == [other, *want["metadata"]["ownerReferences"]]


def test_the_update_patch_does_not_share_or_change_the_built_spec():
    want = desired.build_deployment(pool({**pool()["spec"], "strategy": {"type": "Recreate"}}))
    before = copy.deepcopy(want)
    patch = desired.update_patch(want, [])
    assert patch["spec"]["strategy"] == {"type": "Recreate", "rollingUpdate": None}
    assert want == before, "the built Deployment is not changed by making its patch"
    patch["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    assert want == before


def test_differences_names_every_list_item_that_differs():
    assert desired.differences({"a": [1, 2, 3]}, {"a": [9, 2, 8]}) == ["a[0]", "a[2]"]


def _env(d: dict) -> dict:
    return {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_recycle_limits_become_the_runtimes_variables_and_are_absent_otherwise():
    env = _env(build(recycle={"maxItems": 1000, "maxRssMiB": 512}))
    assert (env["DAEMONPOOL_MAX_ITEMS"], env["DAEMONPOOL_MAX_RSS_MIB"]) == ("1000", "512")
    assert "DAEMONPOOL_MAX_ITEMS" not in _env(build()) and "DAEMONPOOL_MAX_RSS_MIB" not in _env(build())
    only_memory = _env(build(recycle={"maxRssMiB": 300}))
    assert only_memory["DAEMONPOOL_MAX_RSS_MIB"] == "300" and "DAEMONPOOL_MAX_ITEMS" not in only_memory


def test_workers_spread_over_nodes_by_default_softly_and_per_replicaset():
    d = build()
    (spread,) = d["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["maxSkew"] == 1
    # Soft: a one-node cluster (or kwok's fake nodes) still runs every worker.
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    # Over this pool's workers only: the Deployment's own selector.
    assert spread["labelSelector"] == d["spec"]["selector"]
    assert spread["matchLabelKeys"] == ["pod-template-hash"]


def test_a_template_with_its_own_spread_keeps_it_and_gets_no_default():
    own = [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}]
    ps = pod_spec_of({"containers": [{"name": "worker", "image": "i"}], "topologySpreadConstraints": own})
    assert ps["topologySpreadConstraints"] == own
    # An empty list is the template's explicit "no spread".
    ps = pod_spec_of({"containers": [{"name": "worker", "image": "i"}], "topologySpreadConstraints": []})
    assert ps["topologySpreadConstraints"] == []
