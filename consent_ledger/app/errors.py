"""Outcomes of the application layer that callers must tell apart (mapped to gRPC codes at the edge)."""

from __future__ import annotations

from consent_ledger.core.errors import ConsentLedgerError


class NotFound(ConsentLedgerError):
    """The thing asked for does not exist (an entry index, a leaf hash, a consent)."""


class OutOfRange(ConsentLedgerError):
    """A tree size or index beyond the log as it is now; the same request may succeed later."""


class PermissionDenied(ConsentLedgerError):
    """The caller may not do this."""


class Unavailable(ConsentLedgerError):
    """The ledger cannot serve this now (shutting down, storage failure); retrying later may help."""


class StorageUnavailable(Unavailable):
    """Storage could not do the work (connection refused or lost, timeout, disk full). Expected during an outage:
    callers get UNAVAILABLE; ``detail`` (the driver's message, for the log) is not shown to callers. A write in
    flight has an unknown outcome."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class CorruptStorage(ConsentLedgerError):
    """What storage holds contradicts what the ledger signed. Never expected; the server refuses to go on."""


class FailedPrecondition(ConsentLedgerError):
    """The log is not in a state that allows this (erasing a body still needed as evidence); the message says why
    and what would allow it."""


class AlreadyExists(ConsentLedgerError):
    """The thing already exists and deduplication cannot apply (the same consent in another envelope)."""


class Unauthenticated(ConsentLedgerError):
    """The caller's credentials are missing where required, malformed, stale, replayed or do not verify."""


class WouldBlock(Exception):
    """A look-up asked to answer from memory only would have to read storage. Not an error for callers: retry it
    where blocking is allowed (off the event loop), or fetch ``tiles`` (the tree's tiles it missed, when that is
    what it missed) and try again."""

    def __init__(self, message: str, tiles: frozenset[tuple[int, int]] = frozenset()) -> None:
        super().__init__(message)
        self.tiles = tiles
