"""A pool's PodDisruptionBudget (spec.disruption): made, kept and removed, never someone else's touched.

Budgets are not watched (one more watch per namespace for an optional field); instead the controller knows what
it last made and looks again when it does not know:
- at start, one LIST of the budgets carrying the pool label tells which pools have one;
- each pass: a pool that asks for a budget it is not known to have gets a GET, then a create or a patch only
  if the budget differs; a pool that no longer asks for one has its budget deleted, only if it has one;
- every resync forgets what it knows of the budgets, so a budget deleted or edited by hand is put back within a
  resync period (one GET per pool with spec.disruption).
A budget of the pool's name that the pool does not control is left alone and said so, once per change.
"""

from __future__ import annotations

import logging
from typing import Any

from . import desired, kube, model
from . import reasons as R
from .model import DaemonPoolSpec

log = logging.getLogger(__name__)
_UNKNOWN = object()  # not looked at since start (or the last resync)


class Budgets:
    def __init__(self, api: Any) -> None:
        self.api = api
        # (namespace, name) -> the fingerprint of the budget made for the pool, None when it has none, "?" when
        # one exists that the start's LIST found (its content unknown), "foreign" when not the pool's (said),
        # "foreign?" when that is to be looked at again (a resync) without saying it again.
        self.known: dict = {}

    def seed(self, listed: list) -> None:
        """The budgets that exist at start (kube.list_labelled of poddisruptionbudgets)."""
        for b in listed:
            meta = b["metadata"]
            pool = (meta.get("labels") or {}).get(model.POOL_LABEL)
            if pool:
                self.known[(meta["namespace"], pool)] = "?"

    def recheck(self) -> None:
        """Forget the budgets' content (a resync): ones that exist are looked at again on the next pass."""
        for key, value in self.known.items():
            if value is not None:
                self.known[key] = "foreign?" if value.startswith("foreign") else "?"

    def forget(self, key: tuple) -> None:
        self.known.pop(key, None)

    def sync(self, key: tuple, pool: dict, spec: DaemonPoolSpec) -> list:
        """Make the pool's budget what its spec says; returns events [(type, reason, message)]. A refusal is
        said once and not sent again until the budget wanted changes; a passing error (kube.Transient) is the
        reconcile's to retry."""
        try:
            return self._sync(key, pool, spec)
        except kube.Rejected as exc:
            want = desired.build_budget(pool, spec)
            self.known[key] = desired.fingerprint(want) if want else None
            bname = desired.deployment_name(key[1])
            return [("Warning", R.BUDGET_REJECTED, f"PodDisruptionBudget {bname}: {exc.status}: {exc.message}")]

    def _sync(self, key: tuple, pool: dict, spec: DaemonPoolSpec) -> list:
        namespace, name = key
        want = desired.build_budget(pool, spec)
        bname = desired.deployment_name(name)
        have_known = self.known.get(key, _UNKNOWN)
        if want is None:
            if have_known in (None, _UNKNOWN, "foreign", "foreign?"):
                return []
            have = self.api.budget("get", namespace, bname)
            self.known[key] = None
            if have is not None and desired.controller_uid(have) == pool["metadata"].get("uid"):
                self.api.budget("delete", namespace, bname)
                return [("Normal", R.UPDATED, f"deleted PodDisruptionBudget {bname} (spec.disruption removed)")]
            return []
        fp = desired.fingerprint(want)
        if have_known == fp:
            return []
        have = self.api.budget("get", namespace, bname)
        if have is None:
            made = self.api.budget("create", namespace, bname, want)
            if made is None:  # appeared meanwhile: look again next pass
                self.known.pop(key, None)
                return []
            self.known[key] = fp
            mu = want["spec"]["maxUnavailable"]
            return [("Normal", R.CREATED, f"created PodDisruptionBudget {bname} (maxUnavailable {mu})")]
        if desired.controller_uid(have) != pool["metadata"].get("uid"):
            was, self.known[key] = have_known, "foreign"
            if was not in ("foreign", "foreign?"):
                why = f"a PodDisruptionBudget {bname} exists that this pool does not control; left alone"
                log.warning("pool %s/%s: %s", namespace, name, why)
                return [("Warning", R.BUDGET_CONFLICT, why)]
            return []
        patch = desired.budget_patch(want, have)
        self.known[key] = fp
        if patch is None:
            return []
        self.api.budget("patch", namespace, bname, patch)
        return [("Normal", R.UPDATED, f"updated PodDisruptionBudget {bname} to spec.disruption")]
