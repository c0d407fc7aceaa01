"""Clients: :class:`Client` (blocking, thread-safe) and :class:`AsyncClient` (asyncio), one type
each for embedded and remote clusters. Keys and values are ``bytes`` or ``str`` (UTF-8); values
and scanned keys come back as ``bytes``, or as ``str`` decoded with ``encoding`` when the client
was made with one (``connect(..., encoding="utf-8")``, like redis-py's ``decode_responses``).
Every call takes ``timeout=`` (seconds; ``None``: the client's default)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import os
from dataclasses import dataclass
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
    overload,
)

from . import _scalestore as _native
from ._html import status_html
from .errors import Error, InvalidArgument, InvalidType
from .history import History

Key = Union[bytes, str]
Value = Union[bytes, str]
Pairs = Union[Mapping[Key, Value], Iterable[Tuple[Key, Value]]]
Endpoints = Union[str, Sequence[str]]
# What values and scanned keys come back as: bytes, or str for a client with an encoding.
V = TypeVar("V", bytes, str)
# How fresh a read must be: "linearizable" (default), "lease" or "stale".
Consistency = Literal["linearizable", "lease", "stale"]

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
    """A TLS connection's settings: the CA that signed the nodes' certificates and, when the
    cluster asks for one, this client's certificate and key. Each is a PEM file's path or its
    contents (``bytes``, or a ``str`` starting with ``-----BEGIN``). ``server_name``: the name
    the nodes' certificates are checked against instead of the host dialed (behind NAT or port
    mapping the host dialed is not the one the certificates name)."""

    ca: Union[str, bytes, "os.PathLike[str]"]
    cert: Optional[Union[str, bytes, "os.PathLike[str]"]] = None
    key: Optional[Union[str, bytes, "os.PathLike[str]"]] = None
    server_name: Optional[str] = None


def _pem(value: Any, what: str) -> Optional[bytes]:
    """PEM contents from contents or a path; a path that cannot be read is refused at once."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        data = value.encode()
    elif isinstance(value, (str, os.PathLike)):
        try:
            with open(os.fspath(value), "rb") as f:
                data = f.read()
        except OSError as e:
            raise InvalidArgument(f"tls.{what}: cannot read {os.fspath(value)!r}: {e.strerror}") from None
    else:
        raise InvalidType(f"tls.{what} must be a path, bytes or a PEM str, not {type(value).__name__}")
    if b"-----BEGIN" not in data:
        raise InvalidArgument(f"tls.{what} is not PEM (no -----BEGIN line)")
    return data


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


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidType(f"return_current must be a bool, not {type(value).__name__}")
    return value


def _endpoints(endpoints: Optional[Endpoints]) -> List[str]:
    if endpoints is None:
        endpoints = os.environ.get("SCALESTORE_ENDPOINTS", "")
        if not endpoints.strip():
            raise InvalidArgument("no endpoints: pass them, or set SCALESTORE_ENDPOINTS (as the CLI reads it)")
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


def _address_map(address_map: Optional[Mapping[str, str]]) -> List[str]:
    """``ADVERTISED=REACHABLE`` entries for the native layer (which checks them); None:
    ``$SCALESTORE_ADDRESS_MAP``, as the CLI reads it."""
    if address_map is None:
        return [os.environ.get("SCALESTORE_ADDRESS_MAP", "")]
    if not isinstance(address_map, Mapping):
        raise InvalidType(
            f"address_map must be a dict of advertised -> reachable addresses, not {type(address_map).__name__}"
        )
    entries = []
    for advertised, reachable in address_map.items():
        if not isinstance(advertised, str) or not isinstance(reachable, str):
            raise InvalidType("address_map's addresses must be str (HOST:PORT)")
        if "=" in advertised or "," in advertised or "," in reachable:
            raise InvalidArgument(f"address_map: {advertised!r} -> {reachable!r} is not HOST:PORT -> HOST:PORT")
        entries.append(f"{advertised}={reachable}")
    return entries


def _native_client(inner: Any, how: str) -> None:
    """Refuses anything but a native client at once (``Client("host:port")`` would otherwise
    break on its first call)."""
    if not isinstance(inner, _native.Client):
        raise InvalidType(
            f"clients are made by {how} or Cluster.client(), not from {type(inner).__name__}"
        )


def _shard(value: Any) -> int:
    """A shard id: an int from 0 (a shard that does not exist is the cluster's to refuse)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"a shard id must be an int, not {type(value).__name__}")
    if not 0 <= value < 2**64:
        raise InvalidArgument(f"shard {value} does not exist")
    return value


def _position(value: Any) -> Optional[int]:
    """A ring position (0 <= p < 2**64), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType(f"a ring position must be an int, not {type(value).__name__}")
    if not 0 <= value < 2**64:
        raise InvalidArgument(f"a ring position is in 0..2**64, not {value}")
    return value


def _encoding(encoding: Optional[str]) -> Optional[str]:
    """``encoding`` checked: None (bytes) or a codec Python knows."""
    if encoding is None:
        return None
    if not isinstance(encoding, str):
        raise InvalidType(f"encoding must be a str or None, not {type(encoding).__name__}")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InvalidArgument(f"unknown encoding {encoding!r}") from None
    return encoding


class _Decoder:
    """Turns what the store returns (bytes) into what the caller asked for."""

    __slots__ = ("encoding",)

    def __init__(self, encoding: Optional[str]) -> None:
        self.encoding = _encoding(encoding)

    def one(self, value: Optional[bytes]) -> Any:
        if value is None or self.encoding is None:
            return value
        return value.decode(self.encoding)

    def many(self, values: List[Optional[bytes]]) -> List[Any]:
        if self.encoding is None:
            return values
        return [self.one(v) for v in values]

    def pairs(self, pairs: List[Tuple[bytes, bytes]]) -> List[Tuple[Any, Any]]:
        if self.encoding is None:
            return pairs
        return [(k.decode(self.encoding), v.decode(self.encoding)) for k, v in pairs]

    def cas(self, outcome: Tuple[bool, Optional[bytes]], return_current: bool) -> Any:
        success, current = outcome
        return (success, self.one(current)) if return_current else success


class Client(Generic[V]):
    """A blocking client. Safe to share across threads; calls release the GIL and honour
    Ctrl-C. Use as a context manager or call :meth:`close`. Values and scanned keys come back
    as ``bytes`` (``Client[bytes]``), or as ``str`` for a client made with an ``encoding``
    (``Client[str]``)."""

    def __init__(self, inner: Any, owner: Any = None, encoding: Optional[str] = None) -> None:
        _native_client(inner, "scalestore.connect(endpoints)")
        self._decode = _Decoder(encoding)
        self._inner = _Checked(inner)
        self._owner = owner  # keeps an embedded cluster's wrapper alive while its clients are

    @property
    def encoding(self) -> Optional[str]:
        """What values and scanned keys are decoded with (None: they come back as bytes)."""
        return self._decode.encoding

    def put(self, key: Key, value: Value, timeout: Optional[float] = None) -> None:
        self._inner.put(key, value, timeout)

    def get(self, key: Key, consistency: Consistency = "linearizable", timeout: Optional[float] = None) -> Optional[V]:
        """The value, or None if absent. ``consistency``: "linearizable" (default), "lease"
        (the leader's lease, no round trip) or "stale" (any replica, may be behind)."""
        return self._decode.one(self._inner.get(key, consistency, timeout))  # type: ignore[no-any-return]

    def delete(self, key: Key, timeout: Optional[float] = None) -> bool:
        """True if the key existed."""
        return self._inner.delete(key, timeout)  # type: ignore[no-any-return]

    def delete_prefix(self, prefix: Key, timeout: Optional[float] = None) -> int:
        """Deletes every key starting with ``prefix`` (``""``: every key); returns how many.
        Atomic within each shard, not across shards: every shard deletes its keys in one write,
        and a failure midway (a timeout, say) can leave some shards done."""
        return self._inner.delete_prefix(prefix, timeout)  # type: ignore[no-any-return]

    def append(self, key: Key, value: Value, timeout: Optional[float] = None) -> int:
        """Appends to the value (absent = empty); returns the new length in bytes."""
        return self._inner.append(key, value, timeout)  # type: ignore[no-any-return]

    @overload
    def cas(
        self,
        key: Key,
        expected: Optional[Value],
        new: Value,
        timeout: Optional[float] = None,
        return_current: Literal[False] = False,
    ) -> bool: ...

    @overload
    def cas(
        self,
        key: Key,
        expected: Optional[Value],
        new: Value,
        timeout: Optional[float] = None,
        *,
        return_current: Literal[True],
    ) -> Tuple[bool, Optional[V]]: ...

    def cas(
        self,
        key: Key,
        expected: Optional[Value],
        new: Value,
        timeout: Optional[float] = None,
        return_current: bool = False,
    ) -> Any:
        """Sets ``key`` to ``new`` if its value is ``expected`` (None: absent); True if it did.
        With ``return_current=True``: ``(success, current)``, where ``current`` is the value
        after the operation (``new`` on success, the value that did not match otherwise), read
        in the same step, so a read-modify-write loop needs no extra ``get``."""
        flag = _flag(return_current)
        return self._decode.cas(self._inner.cas(key, expected, new, timeout), flag)

    def scan(
        self,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        prefix: Optional[Key] = None,
        limit: Optional[int] = None,
        consistency: Consistency = "linearizable",
        timeout: Optional[float] = None,
    ) -> List[Tuple[V, V]]:
        """Pairs with ``start <= key < end`` starting with ``prefix``, in key order; at most
        ``limit`` (None: every match)."""
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise InvalidType(f"limit must be an int or None, not {type(limit).__name__}")
        return self._decode.pairs(self._inner.scan(start, end, prefix, limit, consistency, timeout))

    def scan_iter(
        self,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        prefix: Optional[Key] = None,
        consistency: Consistency = "linearizable",
        timeout: Optional[float] = None,
        page_size: int = 1000,
    ) -> Iterator[Tuple[V, V]]:
        """Like :meth:`scan`, fetched page by page as you iterate."""
        cursor: Optional[bytes] = None
        while True:
            items, cursor = self._inner.scan_page(start, end, prefix, consistency, cursor, page_size, timeout)
            yield from self._decode.pairs(items)
            if cursor is None:
                return

    def get_many(
        self, keys: Iterable[Key], consistency: Consistency = "linearizable", timeout: Optional[float] = None
    ) -> List[Optional[V]]:
        """Values (None where absent) in the order of ``keys``."""
        return self._decode.many(self._inner.get_many(keys, consistency, timeout))

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

    def split(self, shard: int, at: Optional[int] = None, timeout: Optional[float] = None) -> int:
        """Splits ``shard`` online: the part of its ring range from position ``at`` (default:
        the middle of its largest range) becomes a new shard on the same replicas; its id.
        Raises InvalidArgument for a shard that does not exist or a position outside it or at
        its start, Unavailable (retry) while it is being moved or split."""
        return self._inner.split(_shard(shard), _position(at), timeout)  # type: ignore[no-any-return]

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

    def __enter__(self) -> "Client[V]":
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


class AsyncClient(Generic[V]):
    """The asyncio client: the same methods as :class:`Client`, awaitable. It does not depend on
    any particular event loop: each call completes on the loop that awaits it."""

    def __init__(self, inner: Any, owner: Any = None, encoding: Optional[str] = None) -> None:
        _native_client(inner, "await scalestore.connect_async(endpoints)")
        self._decode = _Decoder(encoding)
        self._inner = _Checked(inner)
        self._owner = owner

    @property
    def encoding(self) -> Optional[str]:
        return self._decode.encoding

    async def put(self, key: Key, value: Value, timeout: Optional[float] = None) -> None:
        await _awaiting(self._inner.put, key, value, timeout)

    async def get(
        self, key: Key, consistency: Consistency = "linearizable", timeout: Optional[float] = None
    ) -> Optional[V]:
        return self._decode.one(await _awaiting(self._inner.get, key, consistency, timeout))  # type: ignore[no-any-return]

    async def delete(self, key: Key, timeout: Optional[float] = None) -> bool:
        return await _awaiting(self._inner.delete, key, timeout)  # type: ignore[no-any-return]

    async def delete_prefix(self, prefix: Key, timeout: Optional[float] = None) -> int:
        return await _awaiting(self._inner.delete_prefix, prefix, timeout)  # type: ignore[no-any-return]

    async def append(self, key: Key, value: Value, timeout: Optional[float] = None) -> int:
        return await _awaiting(self._inner.append, key, value, timeout)  # type: ignore[no-any-return]

    @overload
    async def cas(
        self,
        key: Key,
        expected: Optional[Value],
        new: Value,
        timeout: Optional[float] = None,
        return_current: Literal[False] = False,
    ) -> bool: ...

    @overload
    async def cas(
        self,
        key: Key,
        expected: Optional[Value],
        new: Value,
        timeout: Optional[float] = None,
        *,
        return_current: Literal[True],
    ) -> Tuple[bool, Optional[V]]: ...

    async def cas(
        self,
        key: Key,
        expected: Optional[Value],
        new: Value,
        timeout: Optional[float] = None,
        return_current: bool = False,
    ) -> Any:
        flag = _flag(return_current)
        return self._decode.cas(await _awaiting(self._inner.cas, key, expected, new, timeout), flag)

    async def scan(
        self,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        prefix: Optional[Key] = None,
        limit: Optional[int] = None,
        consistency: Consistency = "linearizable",
        timeout: Optional[float] = None,
    ) -> List[Tuple[V, V]]:
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise InvalidType(f"limit must be an int or None, not {type(limit).__name__}")
        return self._decode.pairs(await _awaiting(self._inner.scan, start, end, prefix, limit, consistency, timeout))

    async def scan_iter(
        self,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        prefix: Optional[Key] = None,
        consistency: Consistency = "linearizable",
        timeout: Optional[float] = None,
        page_size: int = 1000,
    ) -> AsyncIterator[Tuple[V, V]]:
        cursor: Optional[bytes] = None
        while True:
            items, cursor = await _awaiting(
                self._inner.scan_page, start, end, prefix, consistency, cursor, page_size, timeout
            )
            for item in self._decode.pairs(items):
                yield item
            if cursor is None:
                return

    async def get_many(
        self, keys: Iterable[Key], consistency: Consistency = "linearizable", timeout: Optional[float] = None
    ) -> List[Optional[V]]:
        return self._decode.many(await _awaiting(self._inner.get_many, keys, consistency, timeout))

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

    async def split(self, shard: int, at: Optional[int] = None, timeout: Optional[float] = None) -> int:
        """See :meth:`Client.split`."""
        return await _awaiting(self._inner.split, _shard(shard), _position(at), timeout)  # type: ignore[no-any-return]

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

    async def __aenter__(self) -> "AsyncClient[V]":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<scalestore.AsyncClient {'closed' if self.closed else 'open'}>"


def _seconds(value: Any, what: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{what} must be a number of seconds, not {type(value).__name__}")
    return float(value)


def _connect_native(
    endpoints: Optional[Endpoints],
    timeout: float,
    tls: Optional[TLS],
    connect_timeout: Optional[float] = None,
    attempt_timeout: Optional[float] = None,
    address_map: Optional[Mapping[str, str]] = None,
    backoff_initial: Optional[float] = None,
    backoff_max: Optional[float] = None,
) -> Any:
    if tls is not None and not isinstance(tls, TLS):
        raise InvalidType("tls must be a scalestore.TLS or None")
    if tls is not None and tls.server_name is not None and not isinstance(tls.server_name, str):
        raise InvalidType("tls.server_name must be a str or None")
    call_timeout = _seconds(timeout, "timeout")
    return _native.connect(
        _endpoints(endpoints),
        call_timeout,
        _pem(tls.ca, "ca") if tls else None,
        _pem(tls.cert, "cert") if tls else None,
        _pem(tls.key, "key") if tls else None,
        _seconds(connect_timeout, "connect_timeout"),
        _seconds(attempt_timeout, "attempt_timeout"),
        _address_map(address_map),
        tls.server_name if tls else None,
        _seconds(backoff_initial, "backoff_initial"),
        _seconds(backoff_max, "backoff_max"),
    )


@overload
def connect(
    endpoints: Optional[Endpoints] = None,
    timeout: float = 10.0,
    tls: Optional[TLS] = None,
    encoding: None = None,
    connect_timeout: Optional[float] = None,
    attempt_timeout: Optional[float] = None,
    address_map: Optional[Mapping[str, str]] = None,
    backoff_initial: Optional[float] = None,
    backoff_max: Optional[float] = None,
) -> Client[bytes]: ...


@overload
def connect(
    endpoints: Optional[Endpoints] = None,
    timeout: float = 10.0,
    tls: Optional[TLS] = None,
    *,
    encoding: str,
    connect_timeout: Optional[float] = None,
    attempt_timeout: Optional[float] = None,
    address_map: Optional[Mapping[str, str]] = None,
    backoff_initial: Optional[float] = None,
    backoff_max: Optional[float] = None,
) -> Client[str]: ...


def connect(
    endpoints: Optional[Endpoints] = None,
    timeout: float = 10.0,
    tls: Optional[TLS] = None,
    encoding: Optional[str] = None,
    connect_timeout: Optional[float] = None,
    attempt_timeout: Optional[float] = None,
    address_map: Optional[Mapping[str, str]] = None,
    backoff_initial: Optional[float] = None,
    backoff_max: Optional[float] = None,
) -> Client[Any]:
    """A client of the cluster at ``endpoints`` (any of its nodes; a list or a comma-separated
    string; None: ``$SCALESTORE_ENDPOINTS``, as the CLI reads it). Fetches the cluster map at
    once: raises Unavailable if no endpoint answers within ``connect_timeout`` (default:
    ``timeout``). ``timeout`` (10 s, as the Rust and Node clients) is the default deadline of
    every call, retries included, and ``attempt_timeout`` (default 2 s) that of each attempt
    before the next node is tried. ``encoding`` (e.g.
    ``"utf-8"``): values and scanned keys come back as ``str`` decoded with it (None stays None;
    default: ``bytes``). ``address_map`` (``{"advertised:port": "reachable:port"}``; None:
    ``$SCALESTORE_ADDRESS_MAP``, ``adv=reach`` comma-separated) says where to reach nodes whose
    advertised addresses this client cannot dial (NAT, Docker, Kubernetes port mapping).
    ``backoff_initial`` (default 0.005 s) is the pause after a failed attempt, doubled up to
    ``backoff_max`` (default 0.2 s)."""
    _encoding(encoding)
    native = _connect_native(
        endpoints, timeout, tls, connect_timeout, attempt_timeout, address_map, backoff_initial, backoff_max
    )
    return Client(native, encoding=encoding)


@overload
async def connect_async(
    endpoints: Optional[Endpoints] = None,
    timeout: float = 10.0,
    tls: Optional[TLS] = None,
    encoding: None = None,
    connect_timeout: Optional[float] = None,
    attempt_timeout: Optional[float] = None,
    address_map: Optional[Mapping[str, str]] = None,
    backoff_initial: Optional[float] = None,
    backoff_max: Optional[float] = None,
) -> AsyncClient[bytes]: ...


@overload
async def connect_async(
    endpoints: Optional[Endpoints] = None,
    timeout: float = 10.0,
    tls: Optional[TLS] = None,
    *,
    encoding: str,
    connect_timeout: Optional[float] = None,
    attempt_timeout: Optional[float] = None,
    address_map: Optional[Mapping[str, str]] = None,
    backoff_initial: Optional[float] = None,
    backoff_max: Optional[float] = None,
) -> AsyncClient[str]: ...


async def connect_async(
    endpoints: Optional[Endpoints] = None,
    timeout: float = 10.0,
    tls: Optional[TLS] = None,
    encoding: Optional[str] = None,
    connect_timeout: Optional[float] = None,
    attempt_timeout: Optional[float] = None,
    address_map: Optional[Mapping[str, str]] = None,
    backoff_initial: Optional[float] = None,
    backoff_max: Optional[float] = None,
) -> AsyncClient[Any]:
    """:func:`connect` for asyncio."""
    _encoding(encoding)
    loop = asyncio.get_running_loop()
    inner = await loop.run_in_executor(
        None,
        _connect_native,
        endpoints,
        timeout,
        tls,
        connect_timeout,
        attempt_timeout,
        address_map,
        backoff_initial,
        backoff_max,
    )
    return AsyncClient(inner, encoding=encoding)
