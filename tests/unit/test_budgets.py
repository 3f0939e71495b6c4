"""A pool's PodDisruptionBudget (budgets.py, desired.build_budget): made once, kept, removed, never another's."""

from __future__ import annotations

import copy

import pytest

from daemonpool_operator import budgets, desired, kube, model

from testkit.cases import pool as make_pool

KEY = ("ns", "mail")


class FakePolicy:
    """The API's budgets: a dict, and every call counted."""

    def __init__(self):
        self.objs: dict = {}
        self.calls: list = []
        self.refuse: int | None = None

    def budget(self, verb, ns, name, body=None):
        self.calls.append(verb)
        if self.refuse and verb in ("create", "patch"):
            raise kube.Rejected(self.refuse, "forbidden: poddisruptionbudgets")
        have = self.objs.get((ns, name))
        if verb == "get":
            return copy.deepcopy(have)
        if verb == "create":
            if have is not None:
                return None
            self.objs[(ns, name)] = copy.deepcopy(body)
            return copy.deepcopy(body)
        if verb == "patch":
            for part, value in body.items():
                have.setdefault(part, {}).update(copy.deepcopy(value))
            return copy.deepcopy(have)
        if verb == "delete":
            return self.objs.pop((ns, name), None)
        raise AssertionError(verb)


def pool(max_unavailable=1):
    p = make_pool()
    p["metadata"].update(namespace="ns", name="mail", uid="uid-mail")
    if max_unavailable is not None:
        p["spec"]["disruption"] = {"maxUnavailable": max_unavailable}
    else:
        p["spec"].pop("disruption", None)
    return p


def sync(b, p):
    return b.sync(KEY, p, model.parse_spec(p["spec"]))


@pytest.fixture
def api():
    return FakePolicy()


def test_a_pool_without_disruption_costs_no_call(api):
    b = budgets.Budgets(api)
    assert sync(b, pool(None)) == []
    assert api.calls == []


def test_spec_disruption_makes_one_budget_then_an_unchanged_pool_costs_nothing(api):
    b = budgets.Budgets(api)
    (event,) = sync(b, pool(1))
    assert event[:2] == ("Normal", "Created")
    made = api.objs[("ns", desired.deployment_name("mail"))]
    assert made["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": desired.selector_labels("mail")},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    assert made["metadata"]["ownerReferences"][0]["uid"] == "uid-mail"
    api.calls.clear()
    assert sync(b, pool(1)) == []
    assert api.calls == []


def test_a_changed_budget_is_patched_and_a_removed_one_deleted(api):
    b = budgets.Budgets(api)
    sync(b, pool(1))
    (event,) = sync(b, pool("25%"))
    assert event[1] == "Updated"
    assert api.objs[("ns", desired.deployment_name("mail"))]["spec"]["maxUnavailable"] == "25%"
    (event,) = sync(b, pool(None))
    assert "deleted" in event[2]
    assert api.objs == {}
    api.calls.clear()
    assert sync(b, pool(None)) == []
    assert api.calls == []


def test_at_start_a_listed_budget_of_a_pool_without_disruption_is_deleted(api):
    """The operator was down while spec.disruption was removed: the start's LIST tells."""
    b = budgets.Budgets(api)
    api.objs[("ns", desired.deployment_name("mail"))] = desired.build_budget(pool(1), model.parse_spec(pool(1)["spec"]))
    b.seed(list(api.objs.values()))
    sync(b, pool(None))
    assert api.objs == {}


def test_a_budget_edited_by_hand_is_put_back_after_a_resync(api):
    b = budgets.Budgets(api)
    sync(b, pool(2))
    api.objs[("ns", desired.deployment_name("mail"))]["spec"]["maxUnavailable"] = 5
    assert sync(b, pool(2)) == []  # not looked at between resyncs
    b.recheck()
    sync(b, pool(2))
    assert api.objs[("ns", desired.deployment_name("mail"))]["spec"]["maxUnavailable"] == 2


def test_a_budget_the_pool_does_not_control_is_left_alone_and_said_once(api):
    theirs = {"metadata": {"name": desired.deployment_name("mail"), "namespace": "ns"}, "spec": {"minAvailable": 9}}
    api.objs[("ns", desired.deployment_name("mail"))] = copy.deepcopy(theirs)
    b = budgets.Budgets(api)
    (event,) = sync(b, pool(1))
    assert event[:2] == ("Warning", "BudgetConflict")
    assert sync(b, pool(1)) == []
    sync(b, pool(None))  # nor deleted when the pool stops asking
    assert api.objs[("ns", desired.deployment_name("mail"))] == theirs
    assert "delete" not in api.calls and "patch" not in api.calls


def test_a_foreign_budget_is_looked_at_again_after_a_resync_but_said_once(api):
    theirs = {"metadata": {"name": desired.deployment_name("mail"), "namespace": "ns"}, "spec": {"minAvailable": 9}}
    api.objs[("ns", desired.deployment_name("mail"))] = copy.deepcopy(theirs)
    b = budgets.Budgets(api)
    assert [e[1] for e in sync(b, pool(1))] == ["BudgetConflict"]
    b.recheck()
    assert sync(b, pool(1)) == []
    # Once its owner deletes it, the next resync makes the pool's own.
    api.objs.clear()
    b.recheck()
    assert [e[1] for e in sync(b, pool(1))] == ["Created"]


def test_a_refused_budget_is_said_and_not_sent_again_until_it_changes(api):
    api.refuse = 403
    b = budgets.Budgets(api)
    (event,) = sync(b, pool(1))
    assert event[:2] == ("Warning", "BudgetRejected") and "403" in event[2]
    api.calls.clear()
    assert sync(b, pool(1)) == []
    assert api.calls == []
    sync(b, pool(2))
    assert "create" in api.calls


def test_forget_drops_what_is_known_of_a_deleted_pool(api):
    b = budgets.Budgets(api)
    sync(b, pool(1))
    b.forget(KEY)
    assert KEY not in b.known
