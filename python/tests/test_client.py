"""Every client method against an embedded cluster, and bad input that must write nothing."""

import threading

import pytest

import scalestore


def test_put_get_delete_append_cas_round_trip_bytes_and_str(kv):
    kv.put("t-a", "héllo")
    assert kv.get("t-a") == "héllo".encode()
    assert kv.get(b"t-a", consistency="lease") == "héllo".encode()
    assert kv.get("t-a", "stale", timeout=5) in (None, "héllo".encode())
    assert kv.append("t-a", b"!") == len("héllo".encode()) + 1
    assert kv.cas("t-a", "nope", "x") is False
    assert kv.cas("t-a", "héllo!".encode(), bytearray(b"x")) is True
    assert kv.get("t-a") == b"x"
    assert kv.cas("t-new", None, "first") is True
    assert kv.cas("t-new", None, "second") is False
    assert kv.get("t-new") == b"first"
    assert kv.delete("t-a") is True
    assert kv.delete("t-a") is False
    assert kv.get("t-a") is None
    assert kv.append("t-fresh", "abc") == 3


def test_scan_is_in_key_order_with_end_exclusive_prefix_and_limit(kv):
    kv.put_many({f"s-{i:03}": str(i) for i in range(50)})
    kv.put("sz", "outside the prefix")
    everything = kv.scan(prefix="s-")
    assert [k for k, _ in everything] == [f"s-{i:03}".encode() for i in range(50)]
    assert everything[7] == (b"s-007", b"7")
    assert [k for k, _ in kv.scan(start="s-010", end="s-013")] == [b"s-010", b"s-011", b"s-012"]
    assert len(kv.scan(prefix="s-", limit=5)) == 5
    assert kv.scan(prefix="s-", limit=0) == []
    assert list(kv.scan_iter(prefix="s-", page_size=7)) == everything
    assert kv.scan(prefix="no-such-prefix") == []


def test_get_many_and_put_many_keep_order_and_accept_pairs(kv):
    kv.put_many([("m-1", "one"), (b"m-2", b"two")])
    kv.put_many({"m-3": "three"})
    assert kv.get_many(["m-3", "m-missing", "m-1", b"m-2"]) == [b"three", None, b"one", b"two"]
    assert kv.get_many([]) == []


def test_a_large_put_many_is_split_into_chunks_and_all_written(kv):
    items = {f"big-{i:06}": f"v{i}" for i in range(25_000)}
    kv.put_many(items)
    got = kv.scan(prefix="big-")
    assert len(got) == 25_000
    assert got[12_345] == (b"big-012345", b"v12345")


def test_a_large_put_many_with_one_bad_pair_past_the_first_chunk_writes_nothing(kv):
    good = [(f"atomic-{i:06}", "v") for i in range(12_000)]
    for bad, error in (((b"x" * 5000, "v"), scalestore.InvalidArgument), ((3, "v"), scalestore.InvalidType)):
        with pytest.raises(error):
            kv.put_many(good + [bad])
        assert kv.scan(prefix="atomic-", limit=1) == []


def test_put_many_accepts_pairs_as_lists_and_tuples(kv):
    kv.put_many([["lp-1", "one"], ("lp-2", b"two")])
    assert kv.get_many(["lp-1", "lp-2"]) == [b"one", b"two"]


def test_status_and_events_have_the_documented_shape(cluster, kv):
    for status in (cluster.status(), kv.status()):
        assert {n["id"] for n in status["nodes"]} == {1, 2, 3}
        for n in status["nodes"]:
            assert set(n) >= {"id", "alive", "shards", "leaders"} and n["alive"] is True
        assert [s["id"] for s in status["shards"]] == [0, 1, 2, 3]
        for s in status["shards"]:
            assert set(s) >= {"id", "leader", "replicas", "term", "commit_index", "applied_index", "size"}
            assert s["leader"] in s["replicas"] and len(s["replicas"]) == 3
        assert sum(n["leaders"] for n in status["nodes"]) == 4
        assert "<table>" in status._repr_html_()
    events = kv.events()
    assert events and {"time", "kind", "detail"} <= set(events[0])
    assert any(e["kind"] == "node_started" for e in events)
    assert isinstance(events[0]["time"], float) and events[0]["time"] > 1.6e9


def test_a_client_records_its_own_operations(cluster, kv):
    other = cluster.client()
    with kv.record() as history:
        kv.put("rec-1", "a")
        kv.append("rec-1", "b")
        other.put("rec-2", "not recorded")
    assert len(history) == 2
    ops = list(history)
    assert [op["input"]["op"] for op in ops] == ["put", "append"]
    assert scalestore.check_linearizable(history).ok
    kv.put("rec-3", "after the block")
    assert len(history) == 2


def test_a_wrong_type_raises_invalid_type_and_writes_nothing(kv):
    for call in (
        lambda: kv.put(1, "x"),
        lambda: kv.put("bad-type", 1.5),
        lambda: kv.get(None),
        lambda: kv.cas("bad-type", 3, "x"),
        lambda: kv.get_many("not-a-list"),
        lambda: kv.put_many("nope"),
        lambda: kv.put_many([("only-key",)]),
        lambda: kv.scan(limit="3"),
        lambda: kv.put("bad-type", "x", timeout="5"),
        lambda: kv.get("bad-type", consistency=3),
        lambda: list(kv.scan_iter(prefix="x", page_size="7")),
    ):
        with pytest.raises(scalestore.InvalidType) as e:
            call()
        assert isinstance(e.value, TypeError) and isinstance(e.value, scalestore.InvalidArgument)
    assert kv.get("bad-type") is None


def test_oversized_keys_and_values_are_refused_and_nothing_is_written(kv):
    with pytest.raises(scalestore.InvalidArgument) as e:
        kv.put("k" * 5000, "v")
    assert e.value.kind == "invalid_argument" and isinstance(e.value, ValueError)
    with pytest.raises(scalestore.InvalidArgument):
        kv.put("oversize", b"v" * (1024 * 1024 + 1))
    assert kv.get("oversize") is None
    # One bad pair in a batch: the whole batch is refused before anything is sent.
    with pytest.raises(scalestore.InvalidArgument):
        kv.put_many([("batch-ok", "1"), ("batch-bad", b"v" * (1024 * 1024 + 1))])
    assert kv.get_many(["batch-ok", "batch-bad"]) == [None, None]


def test_bad_options_raise_invalid_argument(kv):
    with pytest.raises(scalestore.InvalidArgument):
        kv.get("k", consistency="eventual")
    with pytest.raises(scalestore.InvalidArgument):
        kv.put("k", "v", timeout=-1)
    with pytest.raises(scalestore.InvalidArgument):
        kv.scan(limit=-1)


def test_a_closed_client_raises_closed_error_and_writes_nothing(cluster):
    c = cluster.client()
    c.close()
    c.close()
    assert c.closed
    with pytest.raises(scalestore.ClosedError):
        c.put("closed-key", "v")
    with pytest.raises(scalestore.ClosedError):
        c.status()
    assert cluster.client().get("closed-key") is None


def test_a_timeout_is_a_timeout_error(cluster):
    kv = cluster.client()
    cluster.set_network(delay_ms=300)
    try:
        with pytest.raises(scalestore.Timeout) as e:
            kv.put("slow", "v", timeout=0.05)
        assert isinstance(e.value, TimeoutError)
    finally:
        cluster.set_network()


def test_one_client_shared_by_8_threads(kv):
    errors = []

    def work(t):
        try:
            for i in range(50):
                kv.put(f"thr-{t}-{i}", str(i))
                kv.append(f"thr-count-{t}", "x")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for t in range(8):
        assert kv.get(f"thr-count-{t}") == b"x" * 50
        assert len(kv.scan(prefix=f"thr-{t}-")) == 50


def test_blocking_calls_work_inside_a_running_event_loop(kv):
    import asyncio

    async def inside():
        kv.put("in-loop", "ok")
        return kv.get("in-loop")

    assert asyncio.run(inside()) == b"ok"


def test_get_many_sees_a_put_many_of_one_shard_whole_or_not_at_all(cluster, kv):
    a = "atomic-a"
    b = next(f"atomic-b{i}" for i in range(10_000) if cluster.shard_of(f"atomic-b{i}") == cluster.shard_of(a))
    kv.put_many({a: "0", b: "0"})
    stop = threading.Event()
    torn = []

    def writer():
        i = 1
        while not stop.is_set():
            kv.put_many({a: str(i), b: str(i)})
            i += 1

    def reader(consistency):
        with cluster.client() as own:
            while not stop.is_set():
                got = own.get_many([a, b], consistency)
                if got[0] != got[1]:
                    torn.append((consistency, got))

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(c,)) for c in ("linearizable", "lease", "stale")
    ]
    for t in threads:
        t.start()
    stop.wait(8)
    stop.set()
    for t in threads:
        t.join()
    assert torn == [], f"batch reads saw half of a batch write: {torn[:3]}"
    final = kv.get_many([a, b])
    assert final[0] == final[1] and final[0] is not None


def test_a_client_with_an_encoding_returns_str_values_and_keys_and_none_stays_none(cluster):
    text = cluster.client(encoding="utf-8")
    assert text.encoding == "utf-8"
    text.put("enc-a", "héllo")
    text.put(b"enc-b", b"w\xc3\xb6rld")
    assert text.get("enc-a") == "héllo"
    assert text.get("enc-missing") is None
    assert text.get_many(["enc-a", "enc-missing", "enc-b"]) == ["héllo", None, "wörld"]
    assert text.scan(prefix="enc-") == [("enc-a", "héllo"), ("enc-b", "wörld")]
    assert list(text.scan_iter(prefix="enc-", page_size=1)) == [("enc-a", "héllo"), ("enc-b", "wörld")]
    assert text.cas("enc-a", "héllo", "x", return_current=True) == (True, "x")
    # Bytes stay the default.
    raw = cluster.client()
    assert raw.encoding is None
    assert raw.get("enc-b") == b"w\xc3\xb6rld"
    assert scalestore.Client is type(raw)
    with pytest.raises(scalestore.InvalidArgument, match="unknown encoding"):
        cluster.client(encoding="no-such-codec")
    with pytest.raises(scalestore.InvalidType):
        cluster.client(encoding=8)


def test_cas_can_return_the_current_value_so_a_read_modify_write_loop_needs_no_get(kv):
    kv.put("rmw", "1")
    assert kv.cas("rmw", "0", "5", return_current=True) == (False, b"1")
    assert kv.cas("rmw", None, "5", return_current=True) == (False, b"1")
    assert kv.cas("rmw-absent", "x", "5", return_current=True) == (False, None)
    # An increment loop that reads only through cas.
    seen = None
    for _ in range(3):
        ok, current = kv.cas("rmw", seen, str(int(seen or b"0") + 1), return_current=True)
        if ok:
            break
        seen = current
    assert kv.get("rmw") == b"2"
    assert kv.cas("rmw", "2", "3") is True
    with pytest.raises(scalestore.InvalidType):
        kv.cas("rmw", "3", "4", return_current="yes")
    assert kv.get("rmw") == b"3", "a bad flag writes nothing"


def test_a_client_made_from_an_address_fails_at_once_and_points_to_connect():
    with pytest.raises(scalestore.InvalidType, match="connect"):
        scalestore.Client("127.0.0.1:7001")
    with pytest.raises(scalestore.InvalidType, match="connect_async"):
        scalestore.AsyncClient("127.0.0.1:7001")


def test_delete_prefix_deletes_every_matching_key_and_counts_them(kv):
    kv.put_many({f"dp/{i:03}": "x" for i in range(120)})
    kv.put("dp-kept", "y")
    assert kv.delete_prefix("dp/") == 120
    assert kv.scan(prefix="dp/") == []
    assert kv.get("dp-kept") == b"y"
    assert kv.delete_prefix(b"dp/") == 0
    with pytest.raises(scalestore.InvalidType):
        kv.delete_prefix(3)
    with pytest.raises(scalestore.InvalidArgument):
        kv.delete_prefix("p" * 100_000)
    assert kv.get("dp-kept") == b"y", "bad input deletes nothing"
