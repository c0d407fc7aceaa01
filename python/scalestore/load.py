"""Load generated and measured in Rust: :meth:`Cluster.start_load` returns a :class:`LoadRun`;
``stop()`` gives a :class:`LoadReport` with a 100 ms timeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

from ._html import table


@dataclass(frozen=True)
class LoadReport:
    """``timeline``: one row per 100 ms: ``{"t": seconds since start, "ops": count in that
    100 ms, "p50_ms", "p99_ms", "errors"}``."""

    ops_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    timeline: List[Dict[str, Any]]
    p90_ms: float = 0.0
    p999_ms: float = 0.0
    operations: int = 0
    seconds: float = 0.0

    def plot(self, ax: Any = None) -> Any:
        """Throughput (ops/s) and p99 latency over time (matplotlib); returns the axes."""
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

        if ax is None:
            _, ax = plt.subplots(figsize=(9, 3.5))
        t = [row["t"] for row in self.timeline]
        ax.plot(t, [row["ops"] * 10 for row in self.timeline], color="tab:blue", label="ops/s")
        ax.set_xlabel("seconds")
        ax.set_ylabel("ops/s", color="tab:blue")
        p99 = ax.twinx()
        p99.plot(t, [row["p99_ms"] for row in self.timeline], color="tab:red", alpha=0.6, label="p99 ms")
        p99.set_ylabel("p99 latency (ms)", color="tab:red")
        errors = [row["t"] for row in self.timeline if row["errors"]]
        if errors:
            ax.scatter(errors, [0] * len(errors), color="black", marker="x", label="errors")
        ax.set_title(f"{self.ops_per_s:,.0f} ops/s, p99 {self.p99_ms:.1f} ms, {self.errors} errors")
        return ax

    def _repr_html_(self) -> str:
        return table(
            ["ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors", "operations", "seconds"],
            [[self.ops_per_s, self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.errors,
              self.operations, self.seconds]],
            "load",
        )


class LoadRun:
    """A running load; :meth:`stop` ends it and returns the report."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    @property
    def elapsed(self) -> float:
        return self._inner.elapsed  # type: ignore[no-any-return]

    @property
    def running(self) -> bool:
        return self._inner.running  # type: ignore[no-any-return]

    def stop(self) -> LoadReport:
        return LoadReport(**self._inner.stop())

    def __enter__(self) -> "LoadRun":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.running:
            self.stop()
