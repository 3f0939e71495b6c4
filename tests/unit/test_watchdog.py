"""Watches that cannot go silently stale: the census rules, the restartable watch, keepalive sockets."""

import asyncio
import socket

import pytest

from daemonpool_operator import watchdog


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(watchdog, "_census", {"disagreements": 0, "last": None})
    monkeypatch.setattr(watchdog, "_restart", {})
    monkeypatch.setattr(watchdog, "_loop", {})


@pytest.mark.parametrize(
    "listed, cached, why",
    [
        ((0, None), {}, None),
        ((2, ("ns", "a", "10")), {("ns", "a"): "10", ("ns", "b"): "3"}, None),
        ((2, ("ns", "a", "10")), {("ns", "a"): "12", ("ns", "b"): "3"}, None),  # the watch is ahead: fine
        ((3, ("ns", "a", "10")), {("ns", "a"): "10", ("ns", "b"): "3"}, "the API server has 3 pool(s), the watch"),
        ((1, None), {("ns", "a"): "1"}, None),  # count agrees, nothing to compare
        ((2, ("ns", "c", "10")), {("ns", "a"): "10", ("ns", "b"): "3"}, "pool ns/c exists, the watch never"),
        ((2, ("ns", "a", "11")), {("ns", "a"): "10", ("ns", "b"): "3"}, "pool ns/a is at resourceVersion 11"),
        ((1, ("ns", "a", "11")), {("ns", "a"): "opaque"}, "pool ns/a is at resourceVersion 11"),
    ],
)
def test_disagreement(listed, cached, why):
    got = watchdog.disagreement(listed, cached)
    assert (got is None) if why is None else got.startswith(why)


def test_the_second_disagreement_in_a_row_restarts_the_watches_and_the_fifth_fails_health(monkeypatch):
    restarts = []
    monkeypatch.setattr(watchdog, "restart_watches", lambda: restarts.append(1))
    stale, fine = (1, None), {}
    watchdog.census(stale, fine)
    assert restarts == [] and watchdog.health() is None, "one disagreement may be an event in flight"
    watchdog.census((0, None), {})
    watchdog.census(stale, fine)
    assert restarts == [], "agreement in between starts the count again"
    for _ in range(watchdog.UNHEALTHY_CHECKS - 2):  # the 2nd .. (UNHEALTHY - 1)th in a row
        watchdog.census(stale, fine)
        assert watchdog.health() is None
    assert len(restarts) == watchdog.UNHEALTHY_CHECKS - 2
    watchdog.census(stale, fine)
    assert len(restarts) == watchdog.UNHEALTHY_CHECKS - 1
    assert watchdog.health().startswith(f"watches stale for {watchdog.UNHEALTHY_CHECKS} checks despite restarts")
    watchdog.census((0, None), {})
    assert watchdog.health() is None


def test_keepalive_socket_options():
    s = watchdog._keepalive_socket((socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", 1)))
    try:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == watchdog.KEEPIDLE
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == watchdog.KEEPINTVL
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == watchdog.KEEPCNT
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == watchdog.USER_TIMEOUT_MS
    finally:
        s.close()
    assert watchdog.KEEPALIVE_SECONDS <= 60, "a dead watch connection is found within a minute"


def test_restart_ends_a_silent_watch_and_kopf_watches_again(monkeypatch):
    """The hook around kopf's watch_objs: events pass through; a restart closes the silent request."""
    import aiohttp
    from kopf._cogs.clients import fetching, watching

    closed = []

    async def silent_after_one(*, resource, **_):
        try:
            yield {"type": "ADDED", "object": {"metadata": {"resourceVersion": "1"}}}
            await asyncio.sleep(3600)  # a stalled connection: nothing more ever arrives
        finally:
            closed.append(resource.plural)

    monkeypatch.setattr(watching, "watch_objs", silent_after_one)
    monkeypatch.setattr(aiohttp, "TCPConnector", aiohttp.TCPConnector)
    monkeypatch.setattr(fetching, "fetch_objs", fetching.fetch_objs)

    class Res:
        plural = "daemonpools"

    async def scenario():
        watchdog.install()
        assert watching.watch_objs is not silent_after_one
        assert aiohttp.TCPConnector.__name__ == "KeepaliveConnector"
        got = []

        async def consume():
            async for raw in watching.watch_objs(resource=Res()):
                got.append(raw["type"])

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        assert got == ["ADDED"] and not task.done()
        await asyncio.get_running_loop().run_in_executor(None, watchdog.restart_watches)  # from another thread
        await asyncio.wait_for(task, 5)
        return got

    assert asyncio.run(scenario()) == ["ADDED"]
    assert closed == ["daemonpools"], "the silent request was closed, not left hanging"
    assert "daemonpools" in watchdog._last_input


def test_a_complete_listing_is_reported_with_every_uid_and_a_cut_one_is_not(monkeypatch):
    """kopf lists before it watches and sends nothing for what is gone: the cache is told what a listing had."""
    import aiohttp
    from kopf._cogs.clients import fetching, watching

    async def two_chunks(*, resource, namespace, **_):
        yield [{"metadata": {"uid": "a"}}, {"metadata": {"uid": "b"}}], "41"
        if namespace == "cut":
            raise aiohttp.ClientConnectionError("the listing broke")
        yield [{"metadata": {"uid": "c"}}], "41"

    monkeypatch.setattr(fetching, "fetch_objs", two_chunks)
    monkeypatch.setattr(watching, "watch_objs", watching.watch_objs)
    monkeypatch.setattr(aiohttp, "TCPConnector", aiohttp.TCPConnector)
    told = []

    class Res:
        plural = "deployments"

    async def scenario():
        watchdog.install(on_listed=lambda *a: told.append(a))
        seen = [
            obj["metadata"]["uid"]
            async for chunk, _ in fetching.fetch_objs(resource=Res(), namespace="ns")
            for obj in chunk
        ]
        assert seen == ["a", "b", "c"], "the listing passes through unchanged"
        with pytest.raises(aiohttp.ClientConnectionError):
            async for _ in fetching.fetch_objs(resource=Res(), namespace="cut"):
                pass

    asyncio.run(scenario())
    assert told == [("deployments", "ns", {"a", "b", "c"}, "41")]
