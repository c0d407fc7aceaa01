"""ScaleStore from Python: start a cluster, write and read, stop a shard leader, read again,
check the recorded history. Run: python examples/python-quickstart.py (after pip install)."""

import scalestore

with scalestore.Cluster(nodes=3, shards=4) as cluster:
    kv = cluster.client(encoding="utf-8")
    with cluster.record() as history:
        kv.put("greeting", "hello")
        kv.append("greeting", ", world")
        victim = cluster.leader_of(cluster.shard_of("greeting"))
        cluster.stop_node(victim)
        print(f"stopped node {victim}; read:", kv.get("greeting"))
        cluster.start_node(victim)
    result = scalestore.check_linearizable(history)
    print(f"{len(history)} operations recorded: {result.verdict}")
    if not result.ok:
        raise SystemExit(1)
