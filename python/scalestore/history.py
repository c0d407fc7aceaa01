"""Recorded histories: ``len(history)``, ``list(history)`` (dicts with the fields of the core's
JSON lines: client, key, op, invoke_ns, return_ns, output, ...), ``history.to_jsonl()`` and
``History.from_jsonl(text)``."""

from __future__ import annotations

from ._scalestore import History

__all__ = ["History"]
