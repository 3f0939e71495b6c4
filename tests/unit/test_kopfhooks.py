"""kopf's internals in quarantine (operator/daemonpool_operator/kopfhooks.py): the restartable watch, the
listings reported, keepalive sockets, and kopf's private modules touched here only."""

import asyncio
import socket

import pytest

from daemonpool_operator import kopfhooks


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(kopfhooks, "_restart", {})
    monkeypatch.setattr(kopfhooks, "_loop", {})


def test_only_kopfhooks_touches_kopfs_private_modules():
    import pathlib

    package = pathlib.Path(kopfhooks.__file__).parent
    touching = sorted(p.name for p in package.glob("*.py") if "kopf._cogs" in p.read_text())
    assert touching == ["kopfhooks.py"], touching


def test_keepalive_socket_options():
    s = kopfhooks._keepalive_socket((socket.AF_INET, socket.SOCK_STREAM, 0, "", ("127.0.0.1", 1)))
    try:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == kopfhooks.KEEPIDLE
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == kopfhooks.KEEPINTVL
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == kopfhooks.KEEPCNT
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == kopfhooks.USER_TIMEOUT_MS
    finally:
        s.close()
    assert kopfhooks.KEEPALIVE_SECONDS <= 60, "a dead watch connection is found within a minute"


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
        kopfhooks.install()
        assert watching.watch_objs is not silent_after_one
        assert aiohttp.TCPConnector.__name__ == "KeepaliveConnector"
        got = []

        async def consume():
            async for raw in watching.watch_objs(resource=Res()):
                got.append(raw["type"])

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        assert got == ["ADDED"] and not task.done()
        await asyncio.get_running_loop().run_in_executor(None, kopfhooks.restart_watches)  # from another thread
        await asyncio.wait_for(task, 5)
        return got

    assert asyncio.run(scenario()) == ["ADDED"]
    assert closed == ["daemonpools"], "the silent request was closed, not left hanging"
    assert "daemonpools" in kopfhooks._last_input


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
        kopfhooks.install(on_listed=lambda *a: told.append(a))
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
