"""Small HTML tables for notebooks (``_repr_html_``)."""

from __future__ import annotations

import html
from typing import Any, Iterable, Sequence


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def status_html(status: dict) -> str:
    nodes = table(
        ["node", "alive", "shards", "leaders"],
        [[n["id"], "yes" if n["alive"] else "NO", n["shards"], n["leaders"]] for n in status["nodes"]],
        "nodes",
    )
    shards = table(
        ["shard", "leader", "replicas", "term", "commit", "applied", "size (bytes)"],
        [
            [s["id"], s["leader"], s["replicas"], s["term"], s["commit_index"], s["applied_index"], s["size"]]
            for s in status["shards"]
        ],
        "shards",
    )
    return f"<div>{nodes}<br/>{shards}</div>"
