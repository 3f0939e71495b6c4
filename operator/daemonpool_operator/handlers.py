"""kopf glue only: ``register(controller)`` adds the handlers that hand kopf's calls to the controller
(controller.py). No kopf change handlers: kopf writes no progress or diff-base annotations and no finalizer on
pools (cleanup is ownerReferences' job). The watch events are async (they only record and enqueue, on kopf's
loop); the controller's threads do the rest.
"""

from __future__ import annotations

import kopf

from . import kopfhooks, model
from .controller import Controller, Unhealthy

RES = (model.GROUP, model.VERSION, model.PLURAL)


def register(controller: Controller, registry: kopf.OperatorRegistry | None = None) -> None:
    """Register the handlers for ``controller`` (in kopf's default registry unless one is given)."""

    @kopf.on.startup(registry=registry)
    async def watch_guard(**_) -> None:
        """Before the first watch: keepalive on kopf's connections, and watches the census can restart."""
        kopfhooks.install(on_listed=controller.listed)

    @kopf.on.startup(registry=registry)
    def start_controller(**_) -> None:
        controller.start()

    @kopf.on.cleanup(registry=registry)
    def release_lease(**_) -> None:
        controller.release()

    @kopf.on.probe(id="queue", registry=registry)
    def queue_health(**_) -> str:
        """Fails the health endpoint (and so the pod's liveness) when the controller is stuck."""
        try:
            return controller.health()
        except Unhealthy as exc:
            raise kopf.PermanentError(str(exc)) from None

    @kopf.on.event(*RES, registry=registry)
    async def pool_event(type: str | None, body: kopf.Body, **_) -> None:  # noqa: A002 - kopf's argument name
        controller.pool_event(type, body)

    @kopf.on.event("apps", "v1", "deployments", registry=registry)
    async def deployment_event(type: str | None, body: kopf.Body, **_) -> None:  # noqa: A002
        controller.child_event("deployment", type, body)

    @kopf.on.event("", "v1", "pods", registry=registry)
    async def pod_event(type: str | None, body: kopf.Body, **_) -> None:  # noqa: A002
        controller.child_event("pod", type, body)
