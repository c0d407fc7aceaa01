"""Side-by-side table of `scalestore bench --json` reports: one row per workload, ScaleStore's
figures, etcd's, then ScaleStore's ops/s over etcd's as `N.NNx` at the end of the row.

Usage: python3 scripts/bench_table.py DIR  (DIR holds N-name, N-scalestore.json, N-etcd.json)
"""
import json
import pathlib
import sys


def cells(r):
    cpu = r.get("cpu_seconds_per_1000_ops")
    fs = r.get("fsyncs_per_write")
    return "{:>10,.0f} {:>7.2f} {:>7.2f} {:>8} {:>8}".format(
        r["ops_per_s"], r["p50_ms"], r["p99_ms"],
        "-" if cpu is None else "{:.3f}".format(cpu),
        "-" if fs is None else "{:.3f}".format(fs),
    )


def main(folder):
    d = pathlib.Path(folder)
    names = sorted(d.glob("*-name"), key=lambda p: int(p.name.split("-")[0]))
    head = "{:>10} {:>7} {:>7} {:>8} {:>8}".format("ops/s", "p50 ms", "p99 ms", "CPU s/1k", "fsync/w")
    # Headers carry no column bars: the first line with bars is the first row (writes).
    print("{:<28}   {:^45}   {:^45}   {}".format("", "ScaleStore", "etcd", "ScaleStore/etcd"))
    print("{:<28}   {}   {}   {}".format("workload", head, head, "ops/s ratio"))
    for n in names:
        i = n.name.split("-")[0]
        ss = json.loads((d / f"{i}-scalestore.json").read_text())
        etcd = json.loads((d / f"{i}-etcd.json").read_text())
        ratio = ss["ops_per_s"] / etcd["ops_per_s"] if etcd["ops_per_s"] > 0 else float("inf")
        errors = ss["errors"] + etcd["errors"]
        name = n.read_text().strip() + (f" [{errors} errors]" if errors else "")
        print("{:<28} | {} | {} | {:.2f}x".format(name, cells(ss), cells(etcd), ratio))


if __name__ == "__main__":
    main(sys.argv[1])
