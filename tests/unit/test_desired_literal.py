"""The builder against literal expectations worked out from its documented rules, not from its own output.

Each test here names the rule it holds; they were written against the mutants `hack/mutation` found
surviving (a one-line change no test noticed).
"""

import copy

import pytest

from daemonpool_operator import desired

from cases import pool


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


@pytest.mark.parametrize(
    "number, text",
    [(1, "1"), (2.0, "2"), (0.5, "0.5"), (0.25, "0.25"), (1.125, "1.125"), (0.001, "0.001"), (10.0, "10")],
)
def test_quantity_string(number, text):
    assert desired._quantity_string(number) == text


@pytest.mark.parametrize("value", [True, "1Gi", None, [1]])
def test_quantity_string_leaves_what_is_not_a_number(value):
    assert desired._quantity_string(value) == value


@pytest.mark.parametrize(
    "text, value",
    [("500m", 0.5), ("1Gi", 2**30), ("1G", 1e9), ("2Ki", 2048), ("1.5", 1.5), ("0.1m", 0.0001), (3, 3)],
)
def test_quantity_values(text, value):
    assert desired._quantity(text) == pytest.approx(value)


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
