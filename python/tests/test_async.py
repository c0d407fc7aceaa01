"""The asyncio client: every method awaitable, many in flight, any event loop."""

import asyncio

import pytest

import scalestore


def test_every_async_method(cluster):
    async def main():
        akv = cluster.async_client()
        await akv.put("a-1", "one")
        assert await akv.get("a-1") == b"one"
        assert await akv.get("a-1", consistency="lease") == b"one"
        assert await akv.append("a-1", "!") == 4
        assert await akv.cas("a-1", "one!", "two") is True
        assert await akv.delete("a-1") is True
        assert await akv.get("a-1") is None
        await akv.put_many({f"a-s-{i}": str(i) for i in range(30)})
        assert len(await akv.scan(prefix="a-s-")) == 30
        assert len(await akv.scan(prefix="a-s-", limit=4)) == 4
        assert [k async for k, _ in akv.scan_iter(prefix="a-s-", page_size=4)] == sorted(
            f"a-s-{i}".encode() for i in range(30)
        )
        assert await akv.get_many(["a-s-3", "nope"]) == [b"3", None]
        assert len((await akv.status())["shards"]) == 4
        assert await akv.events()
        with pytest.raises(scalestore.InvalidType):
            await akv.put(3, "x")
        with pytest.raises(scalestore.InvalidArgument):
            await akv.put("k" * 5000, "x")
        await akv.close()
        with pytest.raises(scalestore.ClosedError):
            await akv.get("a-1")

    asyncio.run(main())


def test_1000_concurrent_asyncio_puts(cluster):
    async def main():
        akv = cluster.async_client()
        await asyncio.gather(*(akv.put(f"c-{i:04}", str(i)) for i in range(1000)))
        return await akv.scan(prefix="c-")

    got = asyncio.run(main())
    assert len(got) == 1000
    assert got[999] == (b"c-0999", b"999")


def test_the_async_client_works_from_any_loop_one_after_another(cluster):
    akv = cluster.async_client()
    for i in range(3):
        # A new event loop each time: the client is bound to none of them.
        assert asyncio.run(akv.append("loops", "x")) == i + 1
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(akv.get("loops")) == b"xxx"
    finally:
        loop.close()


def test_connect_async_over_a_served_cluster(cluster):
    address = cluster.serve()

    async def main():
        remote = await scalestore.connect_async(address, timeout=10)
        async with remote:
            await remote.put("async-remote", "yes")
            return await remote.get("async-remote")

    assert asyncio.run(main()) == b"yes"


def test_a_cancelled_await_leaves_the_client_usable(cluster):
    async def main():
        akv = cluster.async_client()
        cluster.set_network(delay_ms=200)
        try:
            task = asyncio.ensure_future(akv.put("cancelled", "maybe"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            cluster.set_network()
        await akv.put("after-cancel", "ok")
        return await akv.get("after-cancel")

    assert asyncio.run(main()) == b"ok"


def test_an_await_in_flight_when_its_cluster_closes_gets_closed_error_not_a_hang():
    async def main():
        c = scalestore.Cluster(nodes=3, shards=1)
        try:
            akv = c.async_client()
            await akv.put("k", "v")
            c.set_network(drop_rate=1.0)  # nothing answers: the get waits out its timeout
            pending = asyncio.ensure_future(akv.get("k", timeout=60))
            await asyncio.sleep(0.3)
            assert not pending.done()
        finally:
            c.close()
        with pytest.raises(scalestore.ClosedError):
            await asyncio.wait_for(pending, 10)

    asyncio.run(main())


def test_the_async_client_decodes_with_its_encoding_and_returns_the_current_value_of_a_cas(cluster):
    async def main():
        text = cluster.async_client(encoding="utf-8")
        await text.put("aenc-1", "ünï")
        assert await text.get("aenc-1") == "ünï"
        assert await text.get_many(["aenc-1", "aenc-none"]) == ["ünï", None]
        assert await text.scan(prefix="aenc-") == [("aenc-1", "ünï")]
        assert [p async for p in text.scan_iter(prefix="aenc-")] == [("aenc-1", "ünï")]
        assert await text.cas("aenc-1", "other", "x", return_current=True) == (False, "ünï")
        assert await text.cas("aenc-1", "ünï", "x") is True

    asyncio.run(main())
