"""The fault suite as one call: a fresh embedded cluster, a nemesis, a recorded workload and
every check of the Rust suite (linearizable, no acknowledged append lost or duplicated,
recovery in time, placement agrees, no session expired)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import _scalestore as _native
from ._html import table
from .errors import InvalidType, require_embedded
from .history import History

# Empty in a client-only build (no embedded cluster to run the suite on).
NEMESES: Tuple[str, ...] = tuple(_native.nemeses()) if getattr(_native, "EMBEDDED", False) else ()


@dataclass(frozen=True)
class SuiteReport:
    passed: bool
    verdict: str
    operations: int
    lost: int
    duplicated: int
    lost_appends: List[str]
    duplicated_appends: List[str]
    recovery_s: Optional[float]
    stale: Dict[str, Any]
    history: History
    nemesis: str = ""
    seed: int = 0
    counterexample: Optional[str] = None
    summary: str = ""
    details: Dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.passed

    def _repr_html_(self) -> str:
        colour = "green" if self.passed else "red"
        rows: List[List[Any]] = [
            ["nemesis", self.nemesis],
            ["seed", self.seed],
            ["verdict", self.verdict],
            ["operations", self.operations],
            ["lost appends", self.lost],
            ["duplicated appends", self.duplicated],
            ["recovery (s)", self.recovery_s],
            ["stale reads", self.stale.get("reads")],
            ["stale lag, max (ms)", self.stale.get("max_ms_behind")],
        ]
        head = f"<b style='color:{colour}'>{'PASS' if self.passed else 'FAIL'}</b>"
        extra = f"<pre>{html.escape(self.counterexample)}</pre>" if self.counterexample else ""
        return f"<div>{head}{table(['', ''], rows)}{extra}</div>"


def run_suite(nemesis: str = "crash-all", seed: int = 1, seconds: float = 5.0) -> SuiteReport:
    """Runs one seeded scenario; ``nemesis`` is one of :data:`NEMESES` (InvalidArgument
    otherwise)."""
    if not isinstance(nemesis, str):
        raise InvalidType(f"nemesis must be a str, not {type(nemesis).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidType("seed must be a non-negative int")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidType("seconds must be a number")
    require_embedded("run_suite")
    d = _native.run_suite(nemesis, seed, float(seconds))
    known = {
        "passed", "verdict", "operations", "lost", "duplicated", "lost_appends",
        "duplicated_appends", "recovery_s", "stale", "history", "nemesis", "seed",
        "counterexample", "summary",
    }
    return SuiteReport(
        **{k: d[k] for k in known},
        details={k: v for k, v in d.items() if k not in known},
    )
