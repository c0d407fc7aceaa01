"""The embedded cluster: many nodes in this process, with faults to inject. For tests,
notebooks and experiments; :meth:`Cluster.serve` puts it on gRPC for other processes."""

from __future__ import annotations

import atexit
import contextlib
import os
import time
import weakref
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from . import _scalestore as _native
from ._html import status_html
from .client import AsyncClient, Client, Consistency, Key, Status, _encoding, _position, _shard
from .errors import InvalidArgument, InvalidType, Timeout, require_embedded
from .history import History
from .load import LoadRun

_open: "weakref.WeakSet[Cluster]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Closes clusters left open at exit, so their temporary dirs are removed."""
    for cluster in list(_open):
        with contextlib.suppress(Exception):
            cluster.close()


def _count(name: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise InvalidArgument(f"{name} must be at least 1, not {value}")
    return value


def _node(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"a node id must be an int, not {type(value).__name__}")
    if value < 0:
        raise InvalidArgument(f"unknown node {value}", kind="unknown_node")
    return value


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{name} must be a number of seconds, not {type(value).__name__}")
    return float(value)


class Cluster:
    """``Cluster(nodes=None, shards=None, replication=None, data_dir=None, seed=None)``.

    ``None`` means the stored value when ``data_dir`` holds a cluster, else 3 nodes, 8 shards
    and min(3, nodes) replicas; explicit values that contradict a stored cluster raise
    InvalidArgument. ``data_dir=None``: a temporary dir, removed on :meth:`close` and at exit.
    A ``data_dir`` another open Cluster holds raises DataDirError."""

    def __init__(
        self,
        nodes: Optional[int] = None,
        shards: Optional[int] = None,
        replication: Optional[int] = None,
        data_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
        seed: Optional[int] = None,
    ) -> None:
        require_embedded("Cluster(...)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise InvalidType("seed must be a non-negative int or None")
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise InvalidType(f"data_dir must be a path, not {type(data_dir).__name__}")
        self._inner = _native.Cluster(
            _count("nodes", nodes),
            _count("shards", shards),
            _count("replication", replication),
            os.fspath(data_dir) if data_dir is not None else None,
            seed,
        )
        _open.add(self)

    # ----- clients -----

    def client(self, node: Optional[int] = None, encoding: Optional[str] = None) -> Client[Any]:
        """A client; ``node=N`` pins it to node N (its requests enter there, and its "stale"
        reads are answered there). ``encoding`` (e.g. ``"utf-8"``): values and scanned keys
        come back as ``str`` (default: ``bytes``)."""
        _encoding(encoding)
        return Client(self._inner.client(None if node is None else _node(node)), owner=self, encoding=encoding)

    def async_client(self, node: Optional[int] = None, encoding: Optional[str] = None) -> AsyncClient[Any]:
        _encoding(encoding)
        return AsyncClient(
            self._inner.client(None if node is None else _node(node)), owner=self, encoding=encoding
        )

    # ----- shape -----

    @property
    def node_ids(self) -> List[int]:
        """Every member, stopped ones included (removed ones not)."""
        return self._inner.node_ids  # type: ignore[no-any-return]

    @property
    def data_dir(self) -> Optional[str]:
        d = self._inner.data_dir
        return None if d is None else os.fspath(d)

    @property
    def seed(self) -> int:
        return self._inner.seed  # type: ignore[no-any-return]

    @property
    def closed(self) -> bool:
        return self._inner.closed  # type: ignore[no-any-return]

    def shard_of(self, key: Key) -> int:
        return self._inner.shard_of(key)  # type: ignore[no-any-return]

    def leader_of(self, shard: int) -> Optional[int]:
        """The shard's leader now, or None while it has none."""
        if isinstance(shard, bool) or not isinstance(shard, int):
            raise InvalidType(f"shard must be an int, not {type(shard).__name__}")
        if shard < 0:
            raise InvalidArgument(f"no shard {shard}")
        return self._inner.leader_of(shard)  # type: ignore[no-any-return]

    # ----- faults -----

    def stop_node(self, node_id: int) -> None:
        """Crash-stops the node (unsynced writes may be lost, as on power loss)."""
        self._inner.stop_node(_node(node_id))

    def start_node(self, node_id: int) -> None:
        """Restarts a stopped node from its data dir."""
        self._inner.start_node(_node(node_id))

    def partition(self, *groups: Sequence[int]) -> None:
        """``partition([1], [2, 3])``: nodes talk only within their group (clients still reach
        every node)."""
        sides = []
        for g in groups:
            if isinstance(g, (str, bytes)) or not hasattr(g, "__iter__"):
                raise InvalidType("each group must be a list of node ids")
            sides.append([_node(n) for n in g])
        self._inner.partition(sides)

    def heal(self) -> None:
        """Removes every partition (loss and delay settings stay)."""
        self._inner.heal()

    def set_network(self, drop_rate: float = 0.0, delay_ms: float = 0, jitter_ms: float = 0) -> None:
        """Loss (requests and replies) and delay on node-to-node and client links."""
        for name, v in (("drop_rate", drop_rate), ("delay_ms", delay_ms), ("jitter_ms", jitter_ms)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidType(f"{name} must be a number, not {type(v).__name__}")
        self._inner.set_network(float(drop_rate), float(delay_ms), float(jitter_ms))

    # ----- membership -----

    def add_node(self) -> int:
        """Starts a new node and adds it; the shard manager moves replicas to it. Its id."""
        return self._inner.add_node()  # type: ignore[no-any-return]

    def remove_node(self, node_id: int, timeout: float = 120.0) -> None:
        """Moves the node's replicas away, then removes it (waits up to ``timeout``)."""
        self._inner.remove_node(_node(node_id), _seconds("timeout", timeout))

    def split(self, shard: int, at: Optional[int] = None) -> int:
        """Splits ``shard`` online: the part of its ring range from position ``at`` (default:
        the middle of its largest range) becomes a new shard on the same replicas, built by
        each replica from its own copy; returns the new shard's id once the map records it.
        Raises InvalidArgument for a shard that does not exist or a position outside it or at
        its start, Unavailable (retry) while it is being moved or split."""
        return self._inner.split(_shard(shard), _position(at))  # type: ignore[no-any-return]

    def set_replication(self, r: int) -> None:
        if isinstance(r, bool) or not isinstance(r, int):
            raise InvalidType(f"replication must be an int, not {type(r).__name__}")
        if r < 1:
            raise InvalidArgument(f"replication must be at least 1, not {r}")
        self._inner.set_replication(r)

    # ----- looking -----

    def status(self) -> Status:
        """``{"nodes": [{"id", "alive", "shards", "leaders"}], "shards": [{"id", "leader",
        "replicas", "term", "commit_index", "applied_index", "size"}]}``."""
        return Status(self._inner.status())

    def events(self) -> List[Dict[str, Any]]:
        """``[{"time": Unix seconds, "kind": str, "detail": str}]``, oldest first."""
        return self._inner.events()  # type: ignore[no-any-return]

    def wait_for_leaders(self, timeout: float = 10.0) -> None:
        self._inner.wait_for_leaders(_seconds("timeout", timeout))

    def wait_until_settled(self, timeout: float = 60.0) -> None:
        """Waits until no move is pending, every shard has R replicas in a uniform config and
        replicas are balanced. Shows a progress bar when tqdm is installed."""
        timeout = _seconds("timeout", timeout)
        try:
            from tqdm.auto import tqdm  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            self._inner.wait_until_settled(timeout)
            return
        deadline = time.monotonic() + timeout
        bar = None
        try:
            while True:
                left = deadline - time.monotonic()
                try:
                    self._inner.wait_until_settled(max(0.05, min(1.0, left)))
                    return
                except Timeout as slice_timeout:
                    if time.monotonic() >= deadline:
                        raise Timeout(f"the cluster did not settle within {timeout} s") from slice_timeout
                shards = self._inner.status()["shards"]
                # A shard counts once it has its full replica set, a leader and one config; the
                # bar can reach the end while the manager still balances replicas over nodes.
                full = max((len(s["replicas"]) for s in shards), default=0)
                settled = sum(
                    1 for s in shards if s["leader"] is not None and not s["joint"] and len(s["replicas"]) >= full
                )
                if bar is None:
                    bar = tqdm(total=len(shards), desc="settling", unit="shards", leave=False)
                bar.n = settled
                bar.refresh()
        finally:
            if bar is not None:
                bar.close()

    # ----- proof and load -----

    @contextlib.contextmanager
    def record(self) -> Iterator[History]:
        """Every client of this cluster, whenever created, records while the block is open."""
        history = self._inner.start_recording()
        try:
            yield history
        finally:
            self._inner.stop_recording()

    def start_load(
        self,
        writers: int = 16,
        read_ratio: float = 0.0,
        consistency: Consistency = "linearizable",
        keys: int = 10_000,
        value_size: int = 100,
    ) -> LoadRun:
        """Starts load generated in Rust; ``stop()`` the run for its report."""
        for name, v in (("writers", writers), ("keys", keys), ("value_size", value_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InvalidType(f"{name} must be a non-negative int")
        if isinstance(read_ratio, bool) or not isinstance(read_ratio, (int, float)):
            raise InvalidType("read_ratio must be a number")
        return LoadRun(self._inner.start_load(writers, float(read_ratio), consistency, keys, value_size))

    # ----- serving -----

    def serve(self, address: str = "127.0.0.1:0") -> str:
        """Serves the cluster over gRPC (every node on its own port); node 1's address."""
        if not isinstance(address, str):
            raise InvalidType("address must be a str like '127.0.0.1:0'")
        return self._inner.serve(address)  # type: ignore[no-any-return]

    # ----- life -----

    def close(self) -> None:
        """Stops every node and client; removes a temporary data dir. Safe to call twice."""
        self._inner.close()
        _open.discard(self)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return "<scalestore.Cluster closed>"
        return f"<scalestore.Cluster nodes={self.node_ids} data_dir={self.data_dir!r}>"

    def _repr_html_(self) -> str:
        if self.closed:
            return "<b>scalestore.Cluster (closed)</b>"
        return f"<b>scalestore.Cluster</b> in <code>{self.data_dir}</code>" + status_html(self.status())


__all__ = ["Cluster"]
