"""ScaleStore: a sharded, Raft-replicated key-value store.

>>> import scalestore
>>> with scalestore.Cluster(nodes=3) as cluster:
...     kv = cluster.client()
...     kv.put("greeting", "hello")
...     kv.get("greeting")
b'hello'
"""

from __future__ import annotations

import logging

from . import _scalestore
from .checker import CheckResult, check_linearizable
from .client import TLS, AsyncClient, Client, Status, connect, connect_async
from .cluster import Cluster
from .errors import (
    ClosedError,
    DataDirError,
    Error,
    InvalidArgument,
    InvalidType,
    SessionExpired,
    StorageError,
    Timeout,
    Unavailable,
    Unsupported,
)
from .history import History
from .load import LoadReport, LoadRun
from .suite import NEMESES, SuiteReport, run_suite

__version__: str = _scalestore.__version__

logging.getLogger("scalestore").addHandler(logging.NullHandler())

__all__ = [
    "AsyncClient",
    "CheckResult",
    "Client",
    "ClosedError",
    "Cluster",
    "DataDirError",
    "Error",
    "History",
    "InvalidArgument",
    "InvalidType",
    "LoadReport",
    "LoadRun",
    "NEMESES",
    "SessionExpired",
    "Status",
    "StorageError",
    "SuiteReport",
    "TLS",
    "Timeout",
    "Unavailable",
    "Unsupported",
    "check_linearizable",
    "connect",
    "connect_async",
    "run_suite",
]
