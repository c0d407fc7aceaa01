"""What the Python binding costs: put/get throughput from Python (one thread, threads, asyncio)
next to the Rust client (the core's load generator) on the same embedded cluster.

    scripts/bench-python.sh [--seconds 5] [--nodes 3] [--shards 8] [--threads 8] [--in-flight 64]

Not part of CI: it prints numbers, it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from typing import Callable, List, Tuple

import scalestore

VALUE = b"x" * 100
KEYS = 10_000


def key(i: int) -> str:
    return f"bench-{i % KEYS:08}"


def timed_loop(op: Callable[[int], object], seconds: float, start: int) -> List[float]:
    latencies: List[float] = []
    deadline = time.monotonic() + seconds
    i = start
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        op(i)
        latencies.append(time.perf_counter() - t0)
        i += 7919
    return latencies


def sync_threads(kv: scalestore.Client, threads: int, seconds: float, read: bool) -> Tuple[float, List[float]]:
    results: List[List[float]] = [[] for _ in range(threads)]

    def op(i: int) -> object:
        return kv.get(key(i)) if read else kv.put(key(i), VALUE)

    def worker(n: int) -> None:
        results[n] = timed_loop(op, seconds, n * 1000)

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - started
    latencies = [x for r in results for x in r]
    return len(latencies) / elapsed, latencies


def asyncio_tasks(akv: scalestore.AsyncClient, in_flight: int, seconds: float, read: bool) -> Tuple[float, List[float]]:
    latencies: List[float] = []

    async def worker(n: int) -> None:
        deadline = time.monotonic() + seconds
        i = n * 1000
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            if read:
                await akv.get(key(i))
            else:
                await akv.put(key(i), VALUE)
            latencies.append(time.perf_counter() - t0)
            i += 7919

    async def main() -> float:
        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(in_flight)))
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    return len(latencies) / elapsed, latencies


def quantile(latencies: List[float], q: float) -> float:
    """The q-quantile in milliseconds."""
    if not latencies:
        return float("nan")
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args()

    with scalestore.Cluster(nodes=args.nodes, shards=args.shards) as cluster:
        cluster.wait_for_leaders(60)
        kv = cluster.client()
        kv.put_many([(key(i), VALUE) for i in range(KEYS)])
        akv = cluster.async_client()
        for read in (False, True):
            what = "get" if read else "put"
            rows: List[Tuple[str, float, float, float]] = []
            for writers in (1, args.in_flight):
                run = cluster.start_load(writers=writers, read_ratio=1.0 if read else 0.0, keys=KEYS, value_size=len(VALUE))
                time.sleep(args.seconds)
                report = run.stop()
                rows.append((f"Rust client, {writers} in flight", report.ops_per_s, report.p50_ms, report.p99_ms))
            for threads in (1, args.threads):
                ops, lat = sync_threads(kv, threads, args.seconds, read)
                rows.append((f"Python sync, {threads} thread(s)", ops, quantile(lat, 0.5), quantile(lat, 0.99)))
            ops, lat = asyncio_tasks(akv, args.in_flight, args.seconds, read)
            rows.append((f"Python asyncio, {args.in_flight} in flight", ops, quantile(lat, 0.5), quantile(lat, 0.99)))
            for label, ops, p50, p99 in rows:
                print(f"{what}  {label:30} {ops:>10,.0f} ops/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms", flush=True)
    print(
        f"\n{args.nodes} nodes, {args.shards} shards, fsync on, 100 B values, {KEYS} keys, {args.seconds:g} s each; "
        "gets are linearizable"
    )


if __name__ == "__main__":
    main()
