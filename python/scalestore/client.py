"""Clients: :class:`Client` (blocking, thread-safe) and :class:`AsyncClient` (asyncio), one type
each for embedded and remote clusters. Keys and values are ``bytes`` or ``str`` (UTF-8); values
come back as ``bytes``. Every call takes ``timeout=`` (seconds; ``None``: the client's default)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from dataclasses import dataclass
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _scalestore as _native
from ._html import status_html
from .errors import Error, InvalidArgument, InvalidType
from .history import History

Key = Union[bytes, str]
Value = Union[bytes, str]
Pairs = Union[Mapping[Key, Value], Iterable[Tuple[Key, Value]]]
Endpoints = Union[str, Sequence[str]]

# put_many sends at most this many pairs per call into Rust (each split further under the
# store's byte caps), so a progress bar can move and Ctrl-C is honoured between chunks.
_CHUNK = 10_000


class Status(dict):  # type: ignore[type-arg]
    """The cluster's status: a dict (``{"nodes": [...], "shards": [...]}``) that renders as
    tables in notebooks."""

    def _repr_html_(self) -> str:
        return status_html(self)


@dataclass(frozen=True)
class TLS:
    """Files for a TLS connection: the CA that signed the nodes' certificates and, when the
    cluster asks for one, this client's certificate and key (PEM file paths)."""

    ca: Union[str, "os.PathLike[str]"]
    cert: Optional[Union[str, "os.PathLike[str]"]] = None
    key: Optional[Union[str, "os.PathLike[str]"]] = None


def _pairs(items: Pairs) -> List[Tuple[Any, Any]]:
    if isinstance(items, Mapping):
        return list(items.items())
    if isinstance(items, (str, bytes)):
        raise InvalidType("items must be a mapping or an iterable of (key, value) pairs")
    try:
        return list(items)
    except TypeError:
        raise InvalidType("items must be a mapping or an iterable of (key, value) pairs") from None


class _Checked:
    """The native client, with pyo3's own argument errors (a str where seconds belong, a
    negative count) raised as InvalidType / InvalidArgument like every other bad input."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._native, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except Error:
                raise
            except TypeError as e:
                raise InvalidType(str(e)) from None
            except OverflowError as e:
                raise InvalidArgument(str(e)) from None

        return call


def _progress(total: int, what: str) -> Any:
    """A tqdm bar when tqdm is installed and the job is large, else None."""
    if total < 5 * _CHUNK:
        return None
    try:
        from tqdm.auto import tqdm  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return None
    return tqdm(total=total, desc=what, unit="pairs", leave=False)


def _endpoints(endpoints: Endpoints) -> List[str]:
    if isinstance(endpoints, str):
        found = [e.strip() for e in endpoints.split(",") if e.strip()]
    elif isinstance(endpoints, (list, tuple)):
        found = []
        for e in endpoints:
            if not isinstance(e, str):
                raise InvalidType(f"endpoints must be strings, not {type(e).__name__}")
            found.extend(p.strip() for p in e.split(",") if p.strip())
    else:
        raise InvalidType("endpoints must be a str or a list of str")
    return found


class Client:
    """A blocking client. Safe to share across threads; calls release the GIL and honour
    Ctrl-C. Use as a context manager or call :meth:`close`."""

    def __init__(self, inner: Any, owner: Any = None) -> None:
        self._inner = _Checked(inner)
        self._owner = owner  # keeps an embedded cluster's wrapper alive while its clients are

    def put(self, key: Key, value: Value, timeout: Optional[float] = None) -> None:
        self._inner.put(key, value, timeout)

    def get(self, key: Key, consistency: str = "linearizable", timeout: Optional[float] = None) -> Optional[bytes]:
        """The value, or None if absent. ``consistency``: "linearizable" (default), "lease"
        (the leader's lease, no round trip) or "stale" (any replica, may be behind)."""
        return self._inner.get(key, consistency, timeout)  # type: ignore[no-any-return]

    def delete(self, key: Key, timeout: Optional[float] = None) -> bool:
        """True if the key existed."""
        return self._inner.delete(key, timeout)  # type: ignore[no-any-return]

    def append(self, key: Key, value: Value, timeout: Optional[float] = None) -> int:
        """Appends to the value (absent = empty); returns the new length in bytes."""
        return self._inner.append(key, value, timeout)  # type: ignore[no-any-return]

    def cas(self, key: Key, expected: Optional[Value], new: Value, timeout: Optional[float] = None) -> bool:
        """Sets ``key`` to ``new`` if its value is ``expected`` (None: absent)."""
        return self._inner.cas(key, expected, new, timeout)  # type: ignore[no-any-return]

    def scan(
        self,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        prefix: Optional[Key] = None,
        limit: Optional[int] = None,
        consistency: str = "linearizable",
        timeout: Optional[float] = None,
    ) -> List[Tuple[bytes, bytes]]:
        """Pairs with ``start <= key < end`` starting with ``prefix``, in key order; at most
        ``limit`` (None: every match)."""
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise InvalidType(f"limit must be an int or None, not {type(limit).__name__}")
        return self._inner.scan(start, end, prefix, limit, consistency, timeout)  # type: ignore[no-any-return]

    def scan_iter(
        self,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        prefix: Optional[Key] = None,
        consistency: str = "linearizable",
        timeout: Optional[float] = None,
        page_size: int = 1000,
    ) -> Iterator[Tuple[bytes, bytes]]:
        """Like :meth:`scan`, fetched page by page as you iterate."""
        cursor: Optional[bytes] = None
        while True:
            items, cursor = self._inner.scan_page(start, end, prefix, consistency, cursor, page_size, timeout)
            yield from items
            if cursor is None:
                return

    def get_many(
        self, keys: Iterable[Key], consistency: str = "linearizable", timeout: Optional[float] = None
    ) -> List[Optional[bytes]]:
        """Values (None where absent) in the order of ``keys``."""
        return self._inner.get_many(keys, consistency, timeout)  # type: ignore[no-any-return]

    def put_many(self, items: Pairs, timeout: Optional[float] = None) -> None:
        """Writes a mapping or an iterable of pairs, in chunks under the store's caps. Every pair
        is checked before the first chunk is sent, so bad input writes nothing. Atomic per shard
        within a chunk, not across shards: a failure of the store (a timeout, say) midway leaves
        earlier chunks written."""
        pairs = self._inner.check_pairs(_pairs(items))
        bar = _progress(len(pairs), "put_many")
        try:
            for i in range(0, max(len(pairs), 1), _CHUNK):
                chunk = pairs[i : i + _CHUNK]
                self._inner.put_many(chunk, timeout)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()

    def status(self, timeout: Optional[float] = None) -> Status:
        """The cluster's status (same shape as :meth:`Cluster.status`)."""
        return Status(self._inner.status(timeout))

    def events(self, timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """Recent cluster events: ``{"time": Unix seconds, "kind": str, "detail": str}``."""
        return self._inner.events(timeout)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def record(self) -> Iterator[History]:
        """Records this client's operations while the block is open."""
        history = self._inner.start_recording()
        try:
            yield history
        finally:
            self._inner.stop_recording()

    @property
    def node(self) -> Optional[int]:
        """The node this client is pinned to (None: any)."""
        return self._inner.node  # type: ignore[no-any-return]

    @property
    def closed(self) -> bool:
        return self._inner.closed  # type: ignore[no-any-return]

    def close(self) -> None:
        """Later calls raise ClosedError. Safe to call twice."""
        self._inner.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        pinned = f" pinned to node {self.node}" if self.node is not None else ""
        return f"<scalestore.Client {state}{pinned}>"


def _settle(future: "asyncio.Future[Any]", ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


async def _awaiting(method: Callable[..., Any], *args: Any) -> Any:
    """Calls ``method(*args, callback)``; the store calls back from its own thread when done."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def done(ok: bool, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
            loop.call_soon_threadsafe(_settle, future, ok, value)

    method(*args, done)
    return await future


class AsyncClient:
    """The asyncio client: the same methods as :class:`Client`, awaitable. It does not depend on
    any particular event loop: each call completes on the loop that awaits it."""

    def __init__(self, inner: Any, owner: Any = None) -> None:
        self._inner = _Checked(inner)
        self._owner = owner

    async def put(self, key: Key, value: Value, timeout: Optional[float] = None) -> None:
        await _awaiting(self._inner.put, key, value, timeout)

    async def get(
        self, key: Key, consistency: str = "linearizable", timeout: Optional[float] = None
    ) -> Optional[bytes]:
        return await _awaiting(self._inner.get, key, consistency, timeout)  # type: ignore[no-any-return]

    async def delete(self, key: Key, timeout: Optional[float] = None) -> bool:
        return await _awaiting(self._inner.delete, key, timeout)  # type: ignore[no-any-return]

    async def append(self, key: Key, value: Value, timeout: Optional[float] = None) -> int:
        return await _awaiting(self._inner.append, key, value, timeout)  # type: ignore[no-any-return]

    async def cas(
        self, key: Key, expected: Optional[Value], new: Value, timeout: Optional[float] = None
    ) -> bool:
        return await _awaiting(self._inner.cas, key, expected, new, timeout)  # type: ignore[no-any-return]

    async def scan(
        self,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        prefix: Optional[Key] = None,
        limit: Optional[int] = None,
        consistency: str = "linearizable",
        timeout: Optional[float] = None,
    ) -> List[Tuple[bytes, bytes]]:
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise InvalidType(f"limit must be an int or None, not {type(limit).__name__}")
        return await _awaiting(self._inner.scan, start, end, prefix, limit, consistency, timeout)  # type: ignore[no-any-return]

    async def scan_iter(
        self,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        prefix: Optional[Key] = None,
        consistency: str = "linearizable",
        timeout: Optional[float] = None,
        page_size: int = 1000,
    ) -> AsyncIterator[Tuple[bytes, bytes]]:
        cursor: Optional[bytes] = None
        while True:
            items, cursor = await _awaiting(
                self._inner.scan_page, start, end, prefix, consistency, cursor, page_size, timeout
            )
            for item in items:
                yield item
            if cursor is None:
                return

    async def get_many(
        self, keys: Iterable[Key], consistency: str = "linearizable", timeout: Optional[float] = None
    ) -> List[Optional[bytes]]:
        return await _awaiting(self._inner.get_many, keys, consistency, timeout)  # type: ignore[no-any-return]

    async def put_many(self, items: Pairs, timeout: Optional[float] = None) -> None:
        pairs = self._inner.check_pairs(_pairs(items))
        bar = _progress(len(pairs), "put_many")
        try:
            for i in range(0, max(len(pairs), 1), _CHUNK):
                chunk = pairs[i : i + _CHUNK]
                await _awaiting(self._inner.put_many, chunk, timeout)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()

    async def status(self, timeout: Optional[float] = None) -> Status:
        return Status(await _awaiting(self._inner.status, timeout))

    async def events(self, timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        return await _awaiting(self._inner.events, timeout)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def record(self) -> Iterator[History]:
        history = self._inner.start_recording()
        try:
            yield history
        finally:
            self._inner.stop_recording()

    @property
    def node(self) -> Optional[int]:
        return self._inner.node  # type: ignore[no-any-return]

    @property
    def closed(self) -> bool:
        return self._inner.closed  # type: ignore[no-any-return]

    async def close(self) -> None:
        self._inner.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<scalestore.AsyncClient {'closed' if self.closed else 'open'}>"


def _connect_native(endpoints: Endpoints, timeout: float, tls: Optional[TLS]) -> Any:
    if tls is not None and not isinstance(tls, TLS):
        raise InvalidType("tls must be a scalestore.TLS or None")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidType(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    fs = (lambda p: None if p is None else os.fspath(p))
    return _native.connect(
        _endpoints(endpoints),
        float(timeout),
        fs(tls.ca) if tls else None,
        fs(tls.cert) if tls else None,
        fs(tls.key) if tls else None,
    )


def connect(endpoints: Endpoints, timeout: float = 5.0, tls: Optional[TLS] = None) -> Client:
    """A client of the cluster at ``endpoints`` (any of its nodes; a list or a comma-separated
    string). Fetches the cluster map at once: raises Unavailable if no endpoint answers within
    ``timeout``, which is also the default timeout of every call."""
    return Client(_connect_native(endpoints, timeout, tls))


async def connect_async(endpoints: Endpoints, timeout: float = 5.0, tls: Optional[TLS] = None) -> AsyncClient:
    """:func:`connect` for asyncio."""
    loop = asyncio.get_running_loop()
    inner = await loop.run_in_executor(None, _connect_native, endpoints, timeout, tls)
    return AsyncClient(inner)
