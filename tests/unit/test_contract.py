"""The operator's contract with users: every pool runs or says why (issue 10). Pure, fast."""

import pathlib
import re

import pytest

from daemonpool_operator import desired, model, reasons, status

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOW = "2026-01-01T00:00:00Z"


def pool(containers=None, pod=None, name="mail"):
    spec = {"containers": containers or [{"name": "worker", "image": "img:1"}], **(pod or {})}
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {"name": name, "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": {"template": {"spec": spec}},
    }


def built(p):
    return desired.build_deployment(p)["spec"]["template"]["spec"]


# -- the troubleshooting page's table and the reasons module ------------------------------------------------


def test_readme_troubleshooting_table_lists_every_reason_and_only_those():
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    block = text[text.index("<!-- reasons:begin") : text.index("<!-- reasons:end -->")]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", block, re.M))
    assert set(rows) == set(reasons.CATALOG), "regenerate the table in docs/troubleshooting.md from reasons.CATALOG"
    for name, (where, _) in reasons.CATALOG.items():
        assert rows[name].strip() == where, name


def test_every_reason_the_code_uses_is_in_the_catalog():
    for module in ("status.py", "handlers.py"):
        src = (ROOT / "operator" / "daemonpool_operator" / module).read_text()
        used = set(re.findall(r"\bR\.([A-Z_]+)\b", src)) - {"CATALOG", "SPEC_CAUSED"}
        for const in used:
            if const.endswith("_message") or not hasattr(reasons, const) or callable(getattr(reasons, const)):
                continue
            assert getattr(reasons, const) in reasons.CATALOG, const


# -- manifests people really write --------------------------------------------------------------


def test_quantities_written_as_numbers_become_strings_and_compare_by_value():
    """Before: cpu: 0.05 and memory: 33554432 reached the client as numbers and no Deployment was made."""
    p = pool(
        [
            {
                "name": "worker",
                "image": "img:1",
                "resources": {
                    "requests": {"cpu": 0.05, "memory": 33554432},
                    "limits": {"cpu": 1, "memory": 1073741824},
                },
            }
        ],
        {"volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": 1048576}}]},
    )
    spec = built(p)
    res = spec["containers"][0]["resources"]
    assert res == {"requests": {"cpu": "0.05", "memory": "33554432"}, "limits": {"cpu": "1", "memory": "1073741824"}}
    assert spec["volumes"][0]["emptyDir"]["sizeLimit"] == "1048576"
    want = desired.build_deployment(p)
    have = desired.build_deployment(p)
    have["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "50m", "memory": "32Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }  # as the server writes them
    assert desired.differences({"spec": want["spec"]}, {"spec": have["spec"]}) == []


@pytest.mark.parametrize(
    "sc", [{"privileged": True}, {"capabilities": {"add": ["SYS_ADMIN"]}}, {"capabilities": {"add": ["CAP_SYS_ADMIN"]}}]
)
def test_no_allow_privilege_escalation_false_next_to_privileged(sc):
    """Before: the builder added allowPrivilegeEscalation: false, which the API server refuses with these."""
    spec = built(pool([{"name": "worker", "image": "img:1", "securityContext": sc}]))
    got = spec["containers"][0]["securityContext"]
    assert "allowPrivilegeEscalation" not in got and all(got[k] == v for k, v in sc.items())


def test_restricted_defaults_stay_where_nothing_contradicts_them():
    spec = built(pool())
    assert spec["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("where", ["pod", "container"])
def test_no_run_as_non_root_next_to_run_as_user_zero(where):
    """runAsNonRoot: true with runAsUser: 0 passes the API server and then the kubelet refuses the pod."""
    if where == "pod":
        spec = built(pool(pod={"securityContext": {"runAsUser": 0}}))
    else:
        spec = built(pool([{"name": "worker", "image": "img:1", "securityContext": {"runAsUser": 0}}]))
    assert "runAsNonRoot" not in spec["securityContext"]
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize(
    "container,field",
    [
        ({"name": "worker"}, "image"),
        ({"name": "worker", "image": ""}, "image"),
        ({"name": "worker", "image": "has space"}, "image"),
        ({"name": "worker", "image": "i", "env": [{"name": "A=B", "value": "1"}]}, "env.0.name"),
        ({"name": "worker", "image": "i", "env": [{"name": "", "value": "1"}]}, "env.0.name"),
        ({"name": "worker", "image": "i", "env": [{"name": "PORT", "value": 8080}]}, "env.0.value"),
    ],
)
def test_the_model_refuses_what_the_api_server_would(container, field):
    with pytest.raises(model.InvalidPool, match=re.escape(f"spec.template.spec.containers.0.{field}")):
        model.parse_pool(pool([container]))


# -- status: every way a pod cannot start ----------------------------------------------------------


def _dep(p, conditions=()):
    d = desired.build_deployment(p)
    d["metadata"]["generation"] = 1
    d["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 0,
        "conditions": list(conditions),
    }
    return d


def _pod(name, *, waiting=None, last=None, restarts=0, scheduled=None):
    cs = {
        "name": "worker",
        "image": "img:1",
        "restartCount": restarts,
        "ready": False,
        "state": {"waiting": waiting} if waiting else {"running": {}},
    }
    if last:
        cs["lastState"] = {"terminated": last}
    st = {"containerStatuses": [cs]} if scheduled is None else {"conditions": [scheduled]}
    return {"metadata": {"name": name}, "status": st}


@pytest.mark.parametrize(
    "pods,reason,needle",
    [
        ([_pod("a", waiting={"reason": "ErrImageNeverPull"})], "ImagePullFailed", "imagePullPolicy is Never"),
        ([_pod("a", waiting={"reason": "ImagePullBackOff"})], "ImagePullFailed", "cannot be pulled"),
        (
            [_pod("a", waiting={"reason": "CreateContainerConfigError", "message": 'secret "s" not found'})],
            "ContainerConfigError",
            'secret "s" not found',
        ),
        (
            [
                _pod(
                    "a",
                    scheduled={
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 Insufficient cpu.",
                    },
                )
            ],
            "Unschedulable",
            "1 Insufficient cpu",
        ),
        (
            [
                _pod(
                    "a",
                    waiting={"reason": "CrashLoopBackOff"},
                    last={"reason": "OOMKilled", "exitCode": 137},
                    restarts=3,
                )
            ],
            "OOMKilled",
            "OOMKilled (3 restart(s))",
        ),
    ],
)
def test_pods_that_cannot_start_say_why(pods, reason, needle):
    p = pool()
    spec = model.parse_spec(p["spec"])
    s = status.build_status(
        p, _dep(p), pods + [_pod("b", waiting={"reason": "ContainerCreating"})], now=NOW, spec=spec
    ).dump()
    deg = {c["type"]: c for c in s["conditions"]}["Degraded"]
    assert (deg["status"], deg["reason"]) == ("True", reason) and needle in deg["message"], deg
    assert deg["message"].startswith("1 worker pod(s)") and "first a:" in deg["message"]


@pytest.mark.parametrize(
    "cond,reason,needle",
    [
        (
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": 'pods "x" is forbidden: exceeded quota: one, requested: pods=1',
            },
            "PodsRefused",
            "exceeded quota",
        ),
        (
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "x" has timed out progressing.',
            },
            "RolloutStuck",
            "timed out progressing",
        ),
    ],
)
def test_the_deployments_own_conditions_say_why(cond, reason, needle):
    p = pool()
    s = status.build_status(p, _dep(p, [cond]), [], now=NOW, spec=model.parse_spec(p["spec"])).dump()
    deg = {c["type"]: c for c in s["conditions"]}["Degraded"]
    assert (deg["status"], deg["reason"]) == ("True", reason) and needle in deg["message"], deg


def test_a_healthy_pool_is_not_degraded():
    p = pool()
    d = _dep(p)
    d["status"]["readyReplicas"] = 1
    pod = _pod("a")
    pod["status"]["containerStatuses"][0]["ready"] = True
    s = status.build_status(p, d, [pod], now=NOW, spec=model.parse_spec(p["spec"])).dump()
    conds = {c["type"]: c for c in s["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Degraded"]["reason"] == "AsExpected"


def test_worker_pods_get_no_service_account_token_unless_they_ask():
    """kube-score/checkov: a worker that names no ServiceAccount never uses the API; its token is only a risk."""
    assert built(pool())["automountServiceAccountToken"] is False
    assert "automountServiceAccountToken" not in built(pool(pod={"serviceAccountName": "mailer"}))
    assert built(pool(pod={"automountServiceAccountToken": True}))["automountServiceAccountToken"] is True


@pytest.mark.parametrize("example", ["examples/pool.yaml", "examples/mailer/pool.yaml"])
def test_examples_run_with_a_read_only_root_filesystem(example):
    import yaml

    obj = yaml.safe_load((ROOT / example).read_text())
    for c in obj["spec"]["template"]["spec"]["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]


@pytest.mark.parametrize("example", ["examples/pool.yaml", "examples/mailer/pool.yaml", "examples/autoscale.yaml"])
def test_every_example_pool_is_one_the_model_accepts(example):
    import yaml

    from daemonpool_operator import model

    pools = [d for d in yaml.safe_load_all((ROOT / example).read_text()) if d and d.get("kind") == "DaemonPool"]
    assert pools
    for obj in pools:
        obj["metadata"].setdefault("namespace", "default")
        model.parse_pool(obj)
        for c in obj["spec"]["template"]["spec"]["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]


def test_the_mailer_pools_backlog_query_is_the_outbox_own():
    import sys

    import yaml

    sys.path.insert(0, str(ROOT / "examples" / "mailer"))
    from mailer import outbox

    pool = yaml.safe_load((ROOT / "examples" / "mailer" / "pool.yaml").read_text())
    assert pool["spec"]["autoscale"]["backlog"]["query"] == outbox.BACKLOG_SQL
