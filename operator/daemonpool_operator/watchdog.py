"""Watches that cannot go silently stale (kopf issues 585, 1276: an operator alive, healthy and deaf).

Three layers, cheapest first:

1. TCP keepalive on kopf's connections. A watch connection whose peer stopped answering (packets
   dropped, a NAT or load balancer that forgot it) fails within about ``KEEPALIVE_SECONDS`` instead of
   waiting for data that never comes; kopf then watches again from its last resourceVersion on a new
   connection. Costs no request.
2. kopf's own bounds (settings.py): the API server ends every watch after 5 minutes; the client gives
   up 30 s later if that end never arrives.
3. A census every ``CHECK_SECONDS`` (the resync thread): one LIST of pools with ``limit=1`` (how many
   there are, and the first one's resourceVersion), compared with what the watch delivered. The same
   difference at two checks in a row means the watch stopped delivering while the API server answers:
   every watch is restarted (a new request from its last resourceVersion). Still different after
   ``UNHEALTHY_CHECKS`` checks: the health endpoint fails, and the kubelet restarts the operator.

The watch restart hooks kopf's ``watch_objs`` (kopf._cogs.clients.watching, kopf 1.45): the one place
every watch request passes. Each raw input (events and bookmarks) is timed per resource for the metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from . import metrics

# A dead connection is found within KEEPIDLE + KEEPINTVL * KEEPCNT seconds (about 40 s).
KEEPIDLE, KEEPINTVL, KEEPCNT = 20, 5, 4
KEEPALIVE_SECONDS = KEEPIDLE + KEEPINTVL * KEEPCNT
# Data sent and not acknowledged for this long also ends the connection (TCP_USER_TIMEOUT, ms).
USER_TIMEOUT_MS = KEEPALIVE_SECONDS * 1000
# Seconds between censuses of the pools: one small LIST each, whatever the number of pools.
CHECK_SECONDS = 30.0
# Consecutive censuses that disagree with the cache before the health endpoint fails (with restarts between).
UNHEALTHY_CHECKS = 5

log = logging.getLogger("daemonpool")
_loop: dict = {}  # the event loop kopf's watches run in
_restart: dict = {}  # resource plural -> asyncio.Event: set to end that resource's current watch request
_last_input: dict = {}  # resource plural -> monotonic time of its last raw input (event or bookmark)
_census = {"disagreements": 0, "last": None}


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
    import aiohttp  # noqa: PLC0415 - kopf's HTTP client; only the operator process needs it
    from kopf._cogs.clients import watching  # noqa: PLC0415

    _loop["loop"] = asyncio.get_running_loop()
    if getattr(watching.watch_objs, "_daemonpool", False):
        return

    class KeepaliveConnector(aiohttp.TCPConnector):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("socket_factory", _keepalive_socket)
            super().__init__(*args, **kwargs)

    aiohttp.TCPConnector = KeepaliveConnector  # kopf makes its session's connector from this name
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
            await stream.aclose()

    watch_objs._daemonpool = True
    watching.watch_objs = watch_objs
    if on_listed is not None:
        _hook_listings(on_listed)


def _hook_listings(on_listed) -> None:
    """Tell ``on_listed(plural, namespace, uids, resourceVersion)`` when a watch's listing is complete.

    kopf lists before it watches (at start, and again when the watch's resourceVersion expired) and
    sends each listed object as an event, but nothing for what is gone: the cache must drop that
    itself (cache.World.listed). A listing cut short (an error) tells nothing.
    """
    from kopf._cogs.clients import fetching  # noqa: PLC0415

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


def disagreement(listed: tuple, cached: dict) -> str | None:
    """Why the API server's census and the cache disagree, or None.

    ``listed``: (count, first) from a LIST with limit=1, first = (namespace, name, resourceVersion) or None;
    ``cached``: {(namespace, name): resourceVersion} from the watch.
    """
    count, first = listed
    if count != len(cached):
        return f"the API server has {count} pool(s), the watch delivered {len(cached)}"
    if first is not None:
        ns, name, rv = first
        have = cached.get((ns, name))
        if have is None:
            return f"pool {ns}/{name} exists, the watch never delivered it"
        if _rv(have) < _rv(rv):
            return f"pool {ns}/{name} is at resourceVersion {rv}, the watch delivered {have}"
    return None


def _rv(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return -1  # opaque: an unknown version counts as older


def census(listed: tuple, cached: dict) -> None:
    """One check: restart the watches at the second disagreement in a row; count them for the health probe."""
    why = disagreement(listed, cached)
    if why is None:
        _census.update(disagreements=0, last=None)
        return
    _census["disagreements"] += 1
    metrics.WATCH_STALE_CHECKS.inc()
    if _census["disagreements"] >= 2:
        log.warning(
            "the pools' watch looks stale (%s, at %d checks in a row): restarting every watch",
            why,
            _census["disagreements"],
        )
        restart_watches()
    _census["last"] = why


def health() -> str | None:
    """None while the watches keep up; why not, once restarts did not help for UNHEALTHY_CHECKS checks."""
    if _census["disagreements"] >= UNHEALTHY_CHECKS:
        return f"watches stale for {_census['disagreements']} checks despite restarts: {_census['last']}"
    return None
