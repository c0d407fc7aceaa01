"""ScaleStore's exceptions. Every failure of the store raises a subclass of :class:`Error`, whose
``kind`` is the core's stable label (``"not_leader"``, ``"unknown_node"``, ``"timeout"``, ...)."""

from __future__ import annotations

from typing import Optional

__all__ = [
    "Error",
    "Unavailable",
    "Timeout",
    "ClosedError",
    "SessionExpired",
    "StorageError",
    "DataDirError",
    "InvalidArgument",
    "InvalidType",
    "Unsupported",
]


class Error(Exception):
    """Base class of every ScaleStore error."""

    default_kind = "error"

    def __init__(self, message: str = "", *, kind: Optional[str] = None) -> None:
        super().__init__(message)
        self.kind: str = kind or self.default_kind


class Unavailable(Error):
    """No node could serve the call (no leader, no quorum, no endpoint answered). Retryable."""

    default_kind = "unavailable"


class Timeout(Error, TimeoutError):
    """The call did not finish within its timeout. A write may or may not have been applied."""

    default_kind = "timeout"


class ClosedError(Error):
    """The client or cluster was closed (or created before a fork); nothing was sent."""

    default_kind = "closed"


class SessionExpired(Error):
    """The client's session expired before a retried write was applied; it was not applied."""

    default_kind = "session_expired"


class StorageError(Error):
    """A node's storage failed."""

    default_kind = "storage"


class DataDirError(Error):
    """The data dir belongs to another cluster, is corrupt, or is held by another open Cluster.
    Nothing in it was changed."""

    default_kind = "data_dir"


class InvalidArgument(Error, ValueError):
    """Bad input (an oversized key or value, an unknown node id, a bad option); nothing was
    written."""

    default_kind = "invalid_argument"


class InvalidType(InvalidArgument, TypeError):
    """An argument of the wrong type (a key that is neither bytes nor str, ...)."""

    default_kind = "invalid_argument"


class Unsupported(Error, NotImplementedError):
    """This build of the package lacks the feature asked for: a client-only build (without the
    ``embedded`` cargo feature) has no embedded cluster and no fault suite."""

    default_kind = "unsupported"


def require_embedded(what: str) -> None:
    """Raises :class:`Unsupported` in a client-only build."""
    from . import _scalestore

    if not getattr(_scalestore, "EMBEDDED", False):
        raise Unsupported(
            f"{what} needs the embedded cluster, and this scalestore package is the client-only "
            "build (compiled without the 'embedded' cargo feature, so without RocksDB); install "
            "the full package, or connect() to a running cluster"
        )

