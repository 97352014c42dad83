"""What the application needs from storage. The SQLAlchemy implementation lives in consent_ledger.storage."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from consent_ledger.app.errors import Unavailable
from consent_ledger.core.smt import MapNode
from consent_ledger.core.tiles import TileId


@dataclass(frozen=True)
class StoredCheckpoint:
    """A signed checkpoint as published: the tree size, its root and the signed note bytes."""

    size: int
    root_hash: bytes
    note: bytes
    created_ms: int


@dataclass(frozen=True)
class NewEntry:
    """An entry being integrated: its index, leaf bytes and hash, and the envelope body stored beside the tree."""

    index: int
    leaf: bytes
    leaf_hash: bytes
    envelope: bytes
    envelope_sha256: bytes
    payload_type: str
    integrated_ms: int


@dataclass(frozen=True)
class StoredEntry:
    """An entry as read back. ``envelope`` is None when the body was erased; ``erased_by`` is then the index of the
    Erasure entry that records it (None if there is none: storage lost the body)."""

    index: int
    leaf: bytes
    envelope: bytes | None
    erased_by: int | None = None


@dataclass(frozen=True)
class IntegrationBatch:
    """Everything one group commit writes, in one transaction.

    ``entries`` have consecutive indices starting at the current tree size; ``tiles`` are the tile rows that are
    new or grew; ``checkpoint`` covers the tree after the batch; ``erasures`` maps the index of an earlier entry to
    the reason its body is erased (set to NULL) in the same transaction (the batch holds the Erasure entry).
    """

    entries: Sequence[NewEntry]
    tiles: Mapping[TileId, bytes]
    checkpoint: StoredCheckpoint
    extra: Mapping[str, Sequence[Mapping[str, object]]] = field(default_factory=dict)
    erasures: Mapping[int, str] = field(default_factory=dict)
    # Replicas (app/replica.py): the sequencer lease this batch is written under. The integration transaction
    # writes nothing unless the lease's token is still this one (storage raises Fenced); None: no lease.
    fence: Fence | None = None


@dataclass(frozen=True)
class Fence:
    """The sequencer lease a replica believes it holds: its holder id and fencing token."""

    holder: str
    token: int


class Fenced(Unavailable):
    """The batch was not written: its fencing token is no longer the lease's (another replica took the lease)."""


class ConcurrentIntegration(Exception):
    """Another writer integrated first: the batch was rolled back and nothing was written."""


class AsyncTileSource(Protocol):
    """Tile reads awaited on the event loop (storage.async_reads, PostgreSQL): LogStore.read_tile_levels without a
    worker thread. Raises StorageUnavailable as the store does."""

    async def read_tile_levels(self, ids: Collection[TileId]) -> dict[TileId, tuple[bytes, ...]]: ...

    async def close(self) -> None: ...


class LogStore(Protocol):
    """Durable storage of one log. Implementations must be safe to call from several threads."""

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The checkpoint with the largest tree size, or None for an empty log."""
        ...

    def read_tiles(self, ids: Collection[TileId]) -> dict[TileId, bytes]:
        """The stored rows of the given tiles; missing tiles are absent from the result."""
        ...

    def read_tile_levels(self, ids: Collection[TileId]) -> dict[TileId, tuple[bytes, ...]]:
        """Every complete level of each stored tile's subtree (core.tiles.tile_levels), a full tile's from the
        interior hashes stored with it, so that a read needs no hashing; missing tiles are absent."""
        ...

    def find_envelopes(self, sha256s: Collection[bytes]) -> dict[bytes, int]:
        """Index of each already-logged envelope, by the SHA-256 of its exact bytes."""
        ...

    def find_leaf(self, leaf_hash: bytes) -> int | None:
        """Index of the leaf with this RFC 6962 leaf hash, if any."""
        ...

    def read_entries(self, start: int, end: int) -> list[StoredEntry]:
        """Entries with start <= index < end, in index order (fewer if the log is shorter)."""
        ...

    def integrate(self, batch: IntegrationBatch) -> None:
        """Write a batch atomically. Raises ConcurrentIntegration if the log is no longer at the batch's start."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction for everything the calling thread does with this store (and the index and map
        look-ups over it) until the block ends, ``integrate`` included; committed at the end unless an exception
        escapes. The sequencer holds one per batch: its admission reads and its writes commit together."""
        ...

    def ping(self) -> None:
        """A cheap round trip to storage (health). Raises Unavailable when storage cannot be reached."""
        ...

    def close(self) -> None:
        ...


@dataclass(frozen=True)
class ConsentRow:
    """A consent-index row: where a grant or revocation is and what it concerns (see storage.schema.consents)."""

    index: int
    patient: bytes
    kind: str
    consent_id: str
    grantee: str | None
    target: str | None
    integrated_ms: int


@dataclass(frozen=True)
class PartyRow:
    """The party registration in force for a party id: the entry holding it and the roles it grants."""

    index: int
    party_id: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class DelegationRow:
    """Where a Delegation entry is and whom it concerns (see storage.schema.delegations); the entry holds its terms."""

    index: int
    patient: bytes
    delegate: bytes
    delegation_id: str
    integrated_ms: int


@dataclass(frozen=True)
class StateCommitRow:
    """Where a StateCommit entry is, the map root it commits to and its batch time."""

    index: int
    map_root: bytes
    batch_time_ms: int


class ConsentMap(Protocol):
    """The stored consent-state map (docs/design.md section 5): node reads, and how to write a change with a batch."""

    def read(self, paths: Collection[bytes]) -> Mapping[bytes, MapNode]:
        """The committed nodes at ``paths``; empty positions are absent from the result."""
        ...

    def rows(self, changed: Mapping[bytes, MapNode], deleted: Collection[bytes]) -> Mapping[str, Sequence[Mapping[str, object]]]:
        """IntegrationBatch.extra rows that write a change computed by core.smt.apply_batch."""
        ...


class ConsentIndex(Protocol):
    """Look-ups over the consent entries, all limited to entries below a tree size (a checkpoint's view)."""

    def consent(self, consent_id: str) -> ConsentRow | None:
        """The first entry with this consent id (grant, revocation or delegation), if any."""
        ...

    def consents(self, consent_ids: Collection[str]) -> dict[str, ConsentRow]:
        """The first entry with each of ``consent_ids`` that has one."""
        ...

    def for_keys(self, keys: Collection[tuple[bytes, str]], below: int) -> list[ConsentRow]:
        """The grants and revocations of each (patient, grantee selector) key, in index order."""
        ...

    def break_glass_events(self, indices: Collection[int]) -> set[int]:
        """Which of ``indices`` are indexed break-glass access events."""
        ...

    def logged_ids(self, consent_ids: Collection[str]) -> set[str]:
        """Which of these consent ids some entry in the log already has."""
        ...

    def signed(self, keys: Collection[bytes]) -> set[bytes]:
        """Which of these keys signed some entry in the log (StateCommits aside)."""
        ...

    def for_selectors(self, patient: bytes, selectors: Collection[str], below: int) -> list[ConsentRow]:
        """A patient's grants and revocations whose grantee is one of ``selectors``."""
        ...

    def targeting(self, consent_ids: Collection[str], below: int) -> list[ConsentRow]:
        """Entries that revoke or supersede any of ``consent_ids``."""
        ...

    def for_patient(self, patient: bytes, after: int, limit: int, below: int) -> list[ConsentRow]:
        """A patient's grants, revocations and delegations with index > after, in index order."""
        ...

    def delegations(self, patient: bytes, delegate: bytes, below: int) -> list[DelegationRow]:
        """The Delegation entries of ``patient`` naming ``delegate``, in index order."""
        ...

    def party(self, party_id: str, below: int) -> PartyRow | None:
        """The latest registration of a party."""
        ...

    def access_events(self, patient: bytes, after: int, limit: int, below: int) -> list[int]:
        """Indices of access events about a patient, index > after, in index order."""
        ...

    def latest_state_commit(self) -> StateCommitRow | None:
        """The StateCommit with the largest index, if any."""
        ...

    def leaf_hashes(self, indices: Collection[int]) -> dict[int, bytes]:
        """The RFC 6962 leaf hash of each entry."""
        ...

    def envelope_logged(self, sha256: bytes) -> bool:
        """Whether an envelope with exactly these bytes (by SHA-256) is already in the log."""
        ...

    def read_indices(self, indices: Collection[int]) -> list[StoredEntry]:
        """Entries at the given indices, in index order."""
        ...

    def break_glass_queue(self, after: int, limit: int, below: int, *, unreviewed_only: bool) -> list[tuple[int, int | None]]:
        """Break-glass access events with index > after, in index order: (event index, review index or None)."""
        ...

    def is_break_glass_event(self, index: int) -> bool:
        """Whether the entry at ``index`` is an indexed break-glass access event."""
        ...

    def reviews_of(self, event_indices: Collection[int], below: int) -> dict[int, int]:
        """The review entry's index for each of ``event_indices`` that has one."""
        ...

    def erased_by(self, indices: Collection[int]) -> dict[int, int]:
        """For each of ``indices`` whose body was erased, the index of the Erasure entry that did it."""
        ...


@dataclass(frozen=True)
class SpentNonce:
    """The nonce of a signed request, by its signer's key, to be remembered until ``expires_ms``."""

    signer: bytes
    nonce: bytes
    expires_ms: int


class NonceStore(Protocol):
    """The nonces of signed requests, shared by every server process of the log (docs/design.md section 7)."""

    def claim(self, nonces: Sequence[SpentNonce], now_ms: int) -> list[bool]:
        """Record each nonce; True for each one no one recorded before (its first use). Atomic per nonce: of two
        processes claiming the same one, exactly one gets True; a nonce twice in ``nonces`` is True once. Rows
        expired at ``now_ms`` may be deleted."""
        ...
