"""The embedded cluster: faults, restarts, data dirs, membership, recording, load, serving."""

import os
import time

import pytest

import scalestore

from conftest import eventually


def test_defaults_are_3_nodes_8_shards_3_replicas_and_the_temp_dir_goes_on_close():
    c = scalestore.Cluster()
    try:
        status = c.status()
        assert c.node_ids == [1, 2, 3]
        assert len(status["shards"]) == 8
        assert all(len(s["replicas"]) == 3 for s in status["shards"])
        data_dir = c.data_dir
        assert data_dir and os.path.isdir(data_dir)
        assert "scalestore.Cluster" in repr(c) and "<table>" in c._repr_html_()
    finally:
        c.close()
    c.close()
    assert c.closed and not os.path.exists(data_dir)
    with pytest.raises(scalestore.ClosedError):
        c.status()


def test_shard_of_and_leader_of(cluster):
    shard = cluster.shard_of("some-key")
    assert shard == cluster.shard_of(b"some-key")
    assert 0 <= shard < 4
    assert cluster.leader_of(shard) in cluster.node_ids
    with pytest.raises(scalestore.InvalidArgument):
        cluster.leader_of(99)


def test_unknown_node_ids_raise_invalid_argument(cluster):
    for call in (
        lambda: cluster.stop_node(42),
        lambda: cluster.start_node(42),
        lambda: cluster.client(node=42),
        lambda: cluster.partition([1], [42]),
        lambda: cluster.remove_node(42),
    ):
        with pytest.raises(scalestore.InvalidArgument) as e:
            call()
        assert e.value.kind == "unknown_node"
    with pytest.raises(scalestore.InvalidType):
        cluster.stop_node("1")


def test_data_survives_stop_node_and_start_node():
    with scalestore.Cluster(nodes=3, shards=2) as c:
        kv = c.client()
        kv.put_many({f"d-{i}": str(i) for i in range(100)})
        victim = c.leader_of(c.shard_of("d-7"))
        c.stop_node(victim)
        assert c.node_ids == [1, 2, 3]
        assert [n["alive"] for n in c.status()["nodes"] if n["id"] == victim] == [False]
        kv.put("written-while-down", "yes")
        assert kv.get("d-7") == b"7"
        c.start_node(victim)
        c.wait_for_leaders(30)
        kinds = [e["kind"] for e in c.events()]
        assert "node_stopped" in kinds and kinds.count("node_started") >= 4
        pinned = c.client(node=victim)
        assert eventually(lambda: pinned.get("written-while-down", consistency="stale") == b"yes")
        assert eventually(lambda: pinned.get("d-99", consistency="stale") == b"99")


def test_a_kept_data_dir_reopens_with_its_data_and_stored_shape(tmp_path):
    d = tmp_path / "kept"
    with scalestore.Cluster(nodes=3, shards=2, data_dir=d) as c:
        c.client().put("persisted", "value")
    with scalestore.Cluster(data_dir=str(d)) as c:
        assert c.node_ids == [1, 2, 3] and len(c.status()["shards"]) == 2
        assert c.client().get("persisted") == b"value"
    with pytest.raises(scalestore.InvalidArgument):
        scalestore.Cluster(nodes=3, shards=5, data_dir=d)
    with pytest.raises(scalestore.InvalidArgument):
        scalestore.Cluster(nodes=4, data_dir=d)
    assert os.path.exists(d / "scalestore-cluster.json")


def test_a_data_dir_held_by_an_open_cluster_is_refused(tmp_path):
    with scalestore.Cluster(nodes=1, shards=1, data_dir=tmp_path / "held"):
        with pytest.raises(scalestore.DataDirError) as e:
            scalestore.Cluster(data_dir=tmp_path / "held")
        assert e.value.kind == "data_dir"


def test_a_foreign_data_dir_is_refused_untouched(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(scalestore.DataDirError):
        scalestore.Cluster(data_dir=foreign)
    assert os.listdir(foreign) == ["notes.txt"]
    assert (foreign / "notes.txt").read_text() == "mine"


def test_bad_cluster_arguments():
    with pytest.raises(scalestore.InvalidArgument):
        scalestore.Cluster(nodes=0)
    with pytest.raises(scalestore.InvalidType):
        scalestore.Cluster(nodes="3")
    with pytest.raises(scalestore.InvalidArgument):
        scalestore.Cluster(nodes=2, replication=3)


def test_a_client_pinned_to_a_partitioned_minority_node_reads_stale_but_not_linearizably():
    with scalestore.Cluster(nodes=3, shards=1) as c:
        c.wait_for_leaders(30)
        kv = c.client()
        kv.put("p", "before")
        # Make node 1 a follower with the value, then cut it off.
        minority = next(n for n in c.node_ids if n != c.leader_of(0))
        pinned = c.client(node=minority)
        assert eventually(lambda: pinned.get("p", consistency="stale") == b"before")
        c.partition([minority], [n for n in c.node_ids if n != minority])
        try:
            with pytest.raises((scalestore.Unavailable, scalestore.Timeout)):
                pinned.get("p", timeout=2)
            assert pinned.get("p", consistency="stale") == b"before"
            kv.put("p", "after")  # the majority still serves
            assert kv.get("p") == b"after"
            assert pinned.get("p", consistency="stale") == b"before"
        finally:
            c.heal()
        assert eventually(lambda: pinned.get("p") == b"after")


def test_lossy_network_still_serves_and_heals(cluster):
    kv = cluster.client()
    cluster.set_network(drop_rate=0.2, delay_ms=2, jitter_ms=3)
    try:
        for i in range(20):
            kv.put(f"lossy-{i}", str(i), timeout=20)
    finally:
        cluster.set_network()
    assert kv.get_many([f"lossy-{i}" for i in range(20)]) == [str(i).encode() for i in range(20)]
    with pytest.raises(scalestore.InvalidArgument):
        cluster.set_network(drop_rate=2)


def test_add_node_remove_node_and_set_replication_move_replicas():
    with scalestore.Cluster(nodes=3, shards=2) as c:
        kv = c.client()
        kv.put("m", "kept")
        new = c.add_node()
        assert new == 4 and c.node_ids == [1, 2, 3, 4]
        c.wait_until_settled(120)
        assert eventually(lambda: any(n["shards"] > 0 for n in c.status()["nodes"] if n["id"] == 4), 60)
        c.set_replication(2)
        c.wait_until_settled(120)
        assert all(len(s["replicas"]) == 2 for s in c.status()["shards"])
        c.remove_node(1, timeout=120)
        assert c.node_ids == [2, 3, 4]
        c.wait_until_settled(120)
        assert all(1 not in s["replicas"] for s in c.status()["shards"])
        kinds = {e["kind"] for e in c.events()}
        assert {"move_started", "move_finished"} <= kinds
        assert kv.get("m") == b"kept"


def test_cluster_record_covers_every_client_whenever_created(cluster):
    before = cluster.client()
    with cluster.record() as history:
        before.put("crec", "1")
        after = cluster.client()
        after.append("crec", "2")
        before.get("crec")
    cluster.client().put("crec", "not recorded")
    assert len(history) == 3
    assert {op["client"] for op in history} == {1, 2}
    result = scalestore.check_linearizable(history)
    assert result.ok and result.verdict == "linearizable" and "linearizable" in result._repr_html_()
    again = scalestore.check_linearizable(history.to_jsonl())
    assert again.ok and len(scalestore.History.from_jsonl(history.to_jsonl())) == 3


def test_the_checker_finds_a_history_that_is_not_linearizable():
    # A read that saw a value nobody wrote.
    lines = (
        '{"client":1,"key":[107],"input":{"op":"put","value":[49]},"invoke_ns":0,"return_ns":10,"output":{"result":"put"}}\n'
        '{"client":2,"key":[107],"input":{"op":"get"},"invoke_ns":20,"return_ns":30,"output":{"result":"value","value":[50]}}\n'
    )
    result = scalestore.check_linearizable(lines)
    assert not result.ok and result.verdict == "not_linearizable" and result.counterexample


def test_start_load_timeline_shows_the_dip_when_a_leader_is_stopped():
    with scalestore.Cluster(nodes=3, shards=1) as c:
        c.wait_for_leaders(30)
        run = c.start_load(writers=8, keys=100)
        time.sleep(1.5)
        leader = c.leader_of(0)
        c.stop_node(leader)
        time.sleep(3.0)
        report = run.stop()
        assert c.leader_of(0) not in (None, leader)
    assert report.ops_per_s > 0 and report.p99_ms >= report.p50_ms > 0
    rows = report.timeline
    assert all(set(r) == {"t", "ops", "p50_ms", "p99_ms", "errors"} for r in rows)
    assert abs(rows[1]["t"] - 0.1) < 1e-9
    before = [r["ops"] for r in rows if 0.5 <= r["t"] < 1.4]
    after = [r["ops"] for r in rows if 1.5 <= r["t"] < 4.0]
    assert min(before) > 0
    # The outage: some 100 ms slices after the stop complete (almost) nothing.
    assert min(after) <= min(before) / 4
    # And it recovers: a new leader serves again.
    assert max(r["ops"] for r in rows if r["t"] >= 3.0) > 0
    assert "ops/s" in report._repr_html_()


def test_serve_then_connect_over_grpc(cluster):
    address = cluster.serve("127.0.0.1:0")
    assert cluster.serve("127.0.0.1:0") == address
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    with scalestore.connect(address, timeout=10) as remote:
        remote.put("served", "over grpc")
        assert cluster.client().get("served") == b"over grpc"
        assert remote.get("served") == b"over grpc"
        assert {n["id"] for n in remote.status()["nodes"]} == {1, 2, 3}
        assert remote.events()
    with pytest.raises(scalestore.ClosedError):
        remote.get("served")


def test_connect_to_unreachable_endpoints_raises_unavailable():
    with pytest.raises(scalestore.Unavailable):
        scalestore.connect(["127.0.0.1:1"], timeout=0.5)
    with pytest.raises(scalestore.InvalidArgument):
        scalestore.connect("", timeout=0.5)
    with pytest.raises(scalestore.InvalidType):
        scalestore.connect(7001)


def test_connect_to_scalestore_server_processes(server_cluster):
    kv = eventually(lambda: scalestore.connect(",".join(server_cluster), timeout=5), timeout=60)
    try:
        eventually(lambda: kv.put("remote", "value", timeout=5) is None, timeout=60)
        assert kv.get("remote") == b"value"
        assert kv.append("remote", "!") == 6
        assert kv.scan(prefix="rem") == [(b"remote", b"value!")]
        status = kv.status()
        assert len(status["nodes"]) == 3 and len(status["shards"]) == 4
        with pytest.raises(scalestore.InvalidArgument):
            kv.put("k" * 5000, "v")
        # A split over the Admin service: the new shard takes part of the data, nothing is lost.
        kv.put_many([(f"s{i}", str(i)) for i in range(100)])
        child = kv.split(0)
        assert child == 4
        assert len(kv.status()["shards"]) == 5
        assert kv.get_many([f"s{i}" for i in range(100)]) == [str(i).encode() for i in range(100)]
        with pytest.raises(scalestore.InvalidArgument):
            kv.split(99)
    finally:
        kv.close()
    tls = scalestore.TLS(ca="/no/such/ca.pem")
    with pytest.raises(scalestore.InvalidArgument):
        scalestore.connect(server_cluster, timeout=2, tls=tls)


def test_connect_reads_scalestore_endpoints_and_refuses_tls_that_is_not_pem_at_once(monkeypatch, tmp_path):
    monkeypatch.delenv("SCALESTORE_ENDPOINTS", raising=False)
    with pytest.raises(scalestore.InvalidArgument, match="SCALESTORE_ENDPOINTS"):
        scalestore.connect(timeout=0.5)
    monkeypatch.setenv("SCALESTORE_ENDPOINTS", "127.0.0.1:1")
    with pytest.raises(scalestore.Unavailable):
        scalestore.connect(timeout=0.5)
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("this is no certificate")
    for ca in (b"not pem", str(not_pem), not_pem):
        with pytest.raises(scalestore.InvalidArgument, match="not PEM"):
            scalestore.connect("127.0.0.1:1", timeout=0.5, tls=scalestore.TLS(ca=ca))
    with pytest.raises(scalestore.InvalidType):
        scalestore.connect("127.0.0.1:1", timeout=0.5, tls=scalestore.TLS(ca=3))  # type: ignore[arg-type]


def test_dialing_has_its_own_timeout_apart_from_the_calls():
    import time

    started = time.monotonic()
    with pytest.raises(scalestore.Unavailable):
        scalestore.connect(["127.0.0.1:1"], timeout=60, connect_timeout=0.5)
    assert time.monotonic() - started < 30, "the dial gave up at connect_timeout, not at timeout"
    with pytest.raises(scalestore.InvalidType):
        scalestore.connect(["127.0.0.1:1"], connect_timeout="1")  # type: ignore[arg-type]
    with pytest.raises(scalestore.InvalidArgument):
        scalestore.connect(["127.0.0.1:1"], attempt_timeout=-1)


def test_an_address_map_reaches_nodes_behind_nat_and_without_it_the_error_names_the_option(nat_server, monkeypatch):
    reachable, advertised = nat_server
    monkeypatch.delenv("SCALESTORE_ADDRESS_MAP", raising=False)
    # The seed endpoint answers; the address the node advertises does not.
    lost = eventually(lambda: scalestore.connect(reachable, timeout=3), timeout=60)
    try:
        with pytest.raises(scalestore.Error) as raised:
            lost.put("k", "v")
        assert "address_map" in str(raised.value) and advertised in str(raised.value), raised.value
    finally:
        lost.close()
    kv = scalestore.connect(reachable, timeout=10, address_map={advertised: reachable}, encoding="utf-8")
    try:
        kv.put_many({f"nat-{i}": f"v{i}" for i in range(10)})
        assert kv.get("nat-3") == "v3"
        assert len(kv.scan(prefix="nat-")) == 10
    finally:
        kv.close()
    # SCALESTORE_ADDRESS_MAP in its place, as the CLI reads it.
    monkeypatch.setenv("SCALESTORE_ADDRESS_MAP", f"{advertised}={reachable}")
    with scalestore.connect(reachable, timeout=10) as env_kv:
        assert env_kv.get("nat-9") == b"v9"


def test_address_maps_tls_server_names_and_back_offs_are_checked_at_once():
    for bad, error in (
        ({"no-port": "127.0.0.1:1"}, scalestore.InvalidArgument),
        ({"10.0.0.1:7001": "nowhere"}, scalestore.InvalidArgument),
        ([("10.0.0.1:7001", "127.0.0.1:1")], scalestore.InvalidType),
        ({"10.0.0.1:7001": 7001}, scalestore.InvalidType),
    ):
        with pytest.raises(error):
            scalestore.connect("127.0.0.1:1", timeout=0.5, address_map=bad)  # type: ignore[arg-type]
    with pytest.raises(scalestore.InvalidArgument, match="back-off"):
        scalestore.connect("127.0.0.1:1", timeout=0.5, backoff_initial=2, backoff_max=1)
    with pytest.raises(scalestore.InvalidArgument):
        scalestore.connect("127.0.0.1:1", timeout=0.5, backoff_initial=0)
    with pytest.raises(scalestore.InvalidType):
        scalestore.connect("127.0.0.1:1", timeout=0.5, tls=scalestore.TLS(ca=b"-----BEGIN x", server_name=3))  # type: ignore[arg-type]


def test_a_split_divides_a_shard_online_and_keeps_every_key():
    with scalestore.Cluster(nodes=3, shards=1) as c:
        c.wait_for_leaders(30)
        with c.client() as kv:
            kv.put_many([(f"k{i}", f"v{i}") for i in range(200)])
            child = c.split(0)
            assert child == 1
            assert c.split(0, at=2**62) == 2
            assert len(c.status()["shards"]) == 3
            assert kv.get_many([f"k{i}" for i in range(200)]) == [f"v{i}".encode() for i in range(200)]
            assert len(kv.scan(limit=1000)) == 200
            kv.put("after", "split")
            assert kv.get("after") == b"split"
            with pytest.raises(scalestore.InvalidArgument):
                c.split(7)
            with pytest.raises(scalestore.InvalidArgument):
                c.split(0, at=0)
            with pytest.raises(scalestore.InvalidType):
                c.split("0")  # type: ignore[arg-type]
            with pytest.raises(scalestore.InvalidArgument):
                c.split(0, at=2**64)
            assert len(c.status()["shards"]) == 3, "nothing changed"
