"""kopf settings, each with its reason."""

from __future__ import annotations

import logging

import kopf

from . import model


def register() -> None:
    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_) -> None:
        # kopf's bookkeeping lives in the pool's annotations under our own prefix, never in
        # .status: status is ours, rebuilt from the world on every pass.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=model.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=model.GROUP, key="last-handled-configuration"
        )
        # Leader election is ours (a Lease, leader.py), not kopf's peering: no peering objects, no RBAC for them.
        settings.peering.standalone = True
        # Our resources are known at start; watching CRDs for new ones would need RBAC we do not ask for.
        settings.scanning.disabled = True
        # Events are ours (Created, Scaled, Updated, InvalidSpec, ...); kopf posts only its failures.
        settings.posting.level = logging.WARNING
        # Only the Deployments and pods that carry our pool label are sent to us (server-side),
        # not every one in the cluster.
        settings.watching.label_selectors["apps", "v1", "deployments"] = model.POOL_LABEL
        settings.watching.label_selectors["", "v1", "pods"] = model.POOL_LABEL
        # kopf keeps a task (and the object's last event) per object for this long after its last event:
        # short, so thousands of pods do not each hold a body in memory for long.
        settings.batching.idle_timeout = 1.0
        # Our event handlers are async and only enqueue; the work queue has threads of its own.
        settings.execution.max_workers = 2
        # Reconnect watches well before proxies cut idle connections.
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
