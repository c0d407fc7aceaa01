"""Collects the `scalestore bench --json` reports of scripts/bench-scaling.sh into one JSON file
and plots throughput, CPU per write and fsyncs per write against the shard count.

Usage: python scripts/plot_scaling.py REPORT_DIR OUT.json OUT.png
"""
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SETUPS = {"embedded": "embedded (3 nodes, one process)", "processes": "3 server processes"}


def main(folder, out_json, out_png):
    d = pathlib.Path(folder)
    rows = []
    for setup in SETUPS:
        for f in sorted(d.glob(f"{setup}-*.json"), key=lambda p: int(p.stem.split("-")[1])):
            r = json.loads(f.read_text())
            rows.append({
                "setup": setup,
                "shards": int(f.stem.split("-")[1]),
                "writes_per_s": round(r["ops_per_s"]),
                "p99_ms": r["p99_ms"],
                "cpu_us_per_write": None if r["cpu_seconds_per_1000_ops"] is None
                else round(r["cpu_seconds_per_1000_ops"] * 1000, 1),
                "fsyncs_per_write": None if r["fsyncs_per_write"] is None
                else round(r["fsyncs_per_write"], 3),
                "errors": r["errors"],
            })
    pathlib.Path(out_json).write_text(json.dumps(rows, indent=1) + "\n")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for setup, label in SETUPS.items():
        mine = [r for r in rows if r["setup"] == setup]
        x = [r["shards"] for r in mine]
        for ax, key in zip(axes, ["writes_per_s", "cpu_us_per_write", "fsyncs_per_write"]):
            ax.plot(x, [r[key] for r in mine], marker="o", label=label)
    for ax, title in zip(axes, ["writes/s", "CPU µs per write (all nodes)", "fsyncs per write (all nodes)"]):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16], ["1", "2", "4", "8", "16"])
        ax.set_xlabel("shards")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("ScaleStore writes by shard count: R=3, fsync on, 64 in flight, 100 B values, 2 cores",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    print("{:<10} {:>6} {:>12} {:>8} {:>14} {:>14}".format(
        "setup", "shards", "writes/s", "p99 ms", "CPU µs/write", "fsyncs/write"))
    for r in rows:
        print("{:<10} {:>6} {:>12,} {:>8.1f} {:>14} {:>14}".format(
            r["setup"], r["shards"], r["writes_per_s"], r["p99_ms"],
            r["cpu_us_per_write"], r["fsyncs_per_write"]))


if __name__ == "__main__":
    main(*sys.argv[1:4])
