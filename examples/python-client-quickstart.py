"""ScaleStore's client-only Python package against a running cluster (SCALESTORE_ENDPOINTS,
e.g. from `scalestore dev`): write, read, scan, compare-and-swap. Run after
pip install scalestore-client (scripts/package.sh builds it)."""

import scalestore

with scalestore.connect(encoding="utf-8") as kv:
    kv.put_many({f"client-{i}": str(i) for i in range(10)})
    kv.append("client-0", "!")
    print("read:", kv.get("client-0"), "scan:", len(kv.scan(prefix="client-")), "keys")
    swapped, current = kv.cas("client-1", "1", "one", return_current=True)
    print("cas:", swapped, current)
    assert kv.get("client-0") == "0!" and current == "one"
    try:
        scalestore.Cluster(nodes=1)
    except scalestore.Unsupported as e:
        print("no embedded cluster in this build:", e.kind)
    else:
        raise SystemExit("a client-only build started an embedded cluster")
