"""kopf's internals, in quarantine: the one module that touches ``kopf._cogs`` (an import contract keeps
kopf itself to the glue modules, and a test keeps ``kopf._cogs`` to this one). At import it checks that the
names it patches exist, and fails naming the kopf version when they do not.

Watches that cannot go silently stale (kopf issues 585, 1276: an operator alive, healthy and deaf). Three
layers, cheapest first:

1. TCP keepalive on kopf's connections. A watch connection whose peer stopped answering (packets
   dropped, a NAT or load balancer that forgot it) fails within about ``KEEPALIVE_SECONDS`` instead of
   waiting for data that never comes; kopf then watches again from its last resourceVersion on a new
   connection. Costs no request.
2. kopf's own bounds (settings.py): the API server ends every watch after 5 minutes; the client gives
   up 30 s later if that end never arrives.
3. A census (census.py, run by the controller's slow loop) that restarts every watch here
   (``restart_watches``) when the watch stopped delivering while the API server answers.

The watch restart hooks kopf's ``watch_objs`` (kopf._cogs.clients.watching, kopf 1.45): the one place
every watch request passes. Each raw input (events and bookmarks) is timed per resource for the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import aiohttp
import kopf
from kopf._cogs.clients import fetching, watching

from . import metrics

# What install() patches: kopf renamed fetch_objs (list_objs, returning a tuple) after 1.45, so a kopf
# without these names is refused here, at import, with its version, instead of failing in a watch.
_PATCHED = ((watching, "watch_objs"), (fetching, "fetch_objs"))
for _module, _name in _PATCHED:
    if not callable(getattr(_module, _name, None)):
        raise ImportError(
            f"daemonpool needs kopf's {_module.__name__}.{_name}, which kopf {getattr(kopf, '__version__', '?')} "
            "does not have: install the kopf version pyproject.toml pins (>=1.37,<1.46)"
        )

# A dead connection is found within KEEPIDLE + KEEPINTVL * KEEPCNT seconds (about 40 s).
KEEPIDLE, KEEPINTVL, KEEPCNT = 20, 5, 4
KEEPALIVE_SECONDS = KEEPIDLE + KEEPINTVL * KEEPCNT
# Data sent and not acknowledged for this long also ends the connection (TCP_USER_TIMEOUT, ms).
USER_TIMEOUT_MS = KEEPALIVE_SECONDS * 1000

log = logging.getLogger("daemonpool")
_loop: dict = {}  # the event loop kopf's watches run in
_restart: dict = {}  # resource plural -> asyncio.Event: set to end that resource's current watch request
_last_input: dict = {}  # resource plural -> monotonic time of its last raw input (event or bookmark)


def _keepalive_socket(addr_info) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    s = socket.socket(family=family, type=type_, proto=proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux, where the operator runs; elsewhere the OS defaults
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPIDLE)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPINTVL)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPCNT)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
    return s


def install(on_listed=None) -> None:
    """Keepalive on kopf's connections, the restartable watch, and listings reported to ``on_listed``;
    once, from kopf's event loop."""
    _loop["loop"] = asyncio.get_running_loop()
    if getattr(watching.watch_objs, "_daemonpool", False):
        return

    class KeepaliveConnector(aiohttp.TCPConnector):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("socket_factory", _keepalive_socket)
            super().__init__(*args, **kwargs)

    aiohttp.TCPConnector = KeepaliveConnector  # type: ignore[misc] # kopf makes its session's connector from this
    original = watching.watch_objs

    async def watch_objs(*, resource, **kwargs):
        name = resource.plural
        metrics.WATCH_REQUESTS.labels(name).inc()
        stop = _restart.setdefault(name, asyncio.Event())
        stop.clear()
        stream = original(resource=resource, **kwargs)
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while True:
                nxt = asyncio.ensure_future(stream.__anext__())
                await asyncio.wait({nxt, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await nxt
                    metrics.WATCH_RESTARTS.labels(name).inc()
                    log.warning("watch of %s restarted: it stopped delivering", name)
                    return  # kopf watches again from its last resourceVersion
                try:
                    raw = nxt.result()
                except StopAsyncIteration:
                    return
                metrics.mark_now(metrics.WATCH_INPUT_AGE, _last_input, name)
                yield raw
        finally:
            stopped.cancel()
            await stream.aclose()  # type: ignore[attr-defined] # an async generator

    watch_objs._daemonpool = True  # type: ignore[attr-defined] # marks the patch: install() twice is once
    watching.watch_objs = watch_objs
    if on_listed is not None:
        _hook_listings(on_listed)


def _hook_listings(on_listed) -> None:
    """Tell ``on_listed(plural, namespace, uids, resourceVersion)`` when a watch's listing is complete.

    kopf lists before it watches (at start, and again when the watch's resourceVersion expired) and
    sends each listed object as an event, but nothing for what is gone: the cache must drop that
    itself (cache.World.listed). A listing cut short (an error) tells nothing.
    """
    original = fetching.fetch_objs

    async def fetch_objs(*, resource, namespace, **kwargs):
        uids: set = set()
        version = None
        async for chunk, version in original(resource=resource, namespace=namespace, **kwargs):
            uids.update((obj.get("metadata") or {}).get("uid") for obj in chunk)
            yield chunk, version
        on_listed(resource.plural, namespace, uids, version)

    fetching.fetch_objs = fetch_objs


def restart_watches() -> None:
    """End every current watch request (thread-safe); kopf opens new ones at once."""
    loop = _loop.get("loop")
    if loop is not None:
        for event in list(_restart.values()):
            loop.call_soon_threadsafe(event.set)
