"""The linearizability checker (the core's WGL search, per key)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Optional, Union

from . import _scalestore as _native
from .errors import InvalidType
from .history import History


@dataclass(frozen=True)
class CheckResult:
    """``ok``: the history is linearizable. ``verdict``: "linearizable", "not_linearizable" or
    "unknown" (the search budget ran out). ``counterexample``: the key and the operations no
    order explains, in words (None when ok)."""

    ok: bool
    verdict: str
    counterexample: Optional[str]

    def __bool__(self) -> bool:
        return self.ok

    def _repr_html_(self) -> str:
        colour = "green" if self.ok else "red"
        text = f"<b style='color:{colour}'>{html.escape(self.verdict)}</b>"
        if self.counterexample:
            text += f"<pre>{html.escape(self.counterexample)}</pre>"
        return f"<div>{text}</div>"


def check_linearizable(history: Union[History, str]) -> CheckResult:
    """Checks a recorded history (or JSON lines, as ``History.to_jsonl`` writes them)."""
    if isinstance(history, str):
        history = History.from_jsonl(history)
    if not isinstance(history, History):
        raise InvalidType(f"history must be a scalestore.History or JSON lines, not {type(history).__name__}")
    verdict, counterexample = _native.check_history(history)
    return CheckResult(ok=verdict == "linearizable", verdict=verdict, counterexample=counterexample)
