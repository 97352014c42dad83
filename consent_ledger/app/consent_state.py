"""The verifiable consent state (DESIGN section 5): which grants are in force for each (patient, selector), the
sparse Merkle map that commits to them, and the StateCommit entry that closes each batch.

A grant is in the in-force set of its (patient, grantee selector) key from its integration until a revocation
or a superseding grant is integrated; its validity period is not applied here (the decision reads it from the
entry). The map's value for a key is ``smt.value_hash`` over the set's (leaf index, leaf hash) pairs; a key
with an empty set is absent. One function computes the set, for the sequencer and for the access check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from consent_ledger.app.errors import Unavailable
from consent_ledger.app.ports import ConsentIndex, ConsentMap, NewEntry, StateCommitRow
from consent_ledger.app.sequencer import PreparedBatch
from consent_ledger.core import payloads, smt
from consent_ledger.core.envelope import parse_envelope, sign_envelope
from consent_ledger.core.note import Signer

log = logging.getLogger(__name__)

GRANT, REVOCATION = "grant", "revocation"
_EVERYTHING = 2**63 - 1

Key = tuple[bytes, str]  # (patient public key, grantee selector)


@dataclass(frozen=True)
class StatePolicy:
    """When the sequencer writes a StateCommit: after every batch that changes the map, after any batch when the
    last one is older than ``max_age_ms`` (so evidence stays "current as of" a recent time while entries
    arrive), and as an idle heartbeat every ``heartbeat_s`` seconds."""

    max_age_ms: int = 5_000
    heartbeat_s: float = 30.0


def in_force(
    index: ConsentIndex, key: Key, below: int, batch_rows: Sequence[Mapping[str, object]] = ()
) -> dict[str, int]:
    """The in-force grants of ``key`` among entries with index < below, plus this batch's rows: consent id ->
    index of the grant (the first, should the same consent be logged twice)."""
    patient, selector = key
    grants: dict[str, int] = {}
    for r in index.for_selectors(patient, [selector], below):
        if r.kind == GRANT:
            grants.setdefault(r.consent_id, r.index)
    for row in batch_rows:
        if row["kind"] == GRANT and row["patient"] == patient and row["grantee"] == selector:
            grants.setdefault(str(row["consent_id"]), int(row["idx"]))  # type: ignore[call-overload]
    if not grants:
        return {}
    ended = {r.target for r in index.targeting(grants, below)}
    ended.update(str(row["target"]) for row in batch_rows if row["target"] in grants)
    return {cid: i for cid, i in grants.items() if cid not in ended}


class ConsentState:
    """Keeps the consent map in step with the log, and hands out the latest StateCommit."""

    def __init__(self, index: ConsentIndex, cmap: ConsentMap, signer: Signer, policy: StatePolicy) -> None:
        self._index = index
        self._map = cmap
        self._signer = signer
        self.policy = policy
        self.latest: StateCommitRow | None = index.latest_state_commit()

    @property
    def map(self) -> ConsentMap:
        return self._map

    def touched_keys(self, rows: Sequence[Mapping[str, object]]) -> set[Key]:
        """The map keys a batch's consent rows change: each grant's, each revoked or superseded grant's."""
        keys: set[Key] = set()
        grantee_in_batch = {row["consent_id"]: row["grantee"] for row in rows if row["kind"] == GRANT}
        for row in rows:
            patient = bytes(row["patient"])  # type: ignore[arg-type]
            if row["grantee"] is not None:
                keys.add((patient, str(row["grantee"])))
            target = row["target"]
            if row["kind"] == GRANT and target:
                grantee = grantee_in_batch.get(target)
                if grantee is None:
                    old = self._index.consent(str(target))
                    grantee = old.grantee if old else None
                if grantee is not None:
                    keys.add((patient, str(grantee)))
        return keys

    def prepare(
        self,
        entries: Sequence[NewEntry],
        consent_rows: Sequence[Mapping[str, object]],
        batch_time_ms: int,
        closing_index: int,
        heartbeat: bool,
    ) -> PreparedBatch:
        """Update the map for a batch and decide whether a StateCommit closes it."""
        keys = self.touched_keys(consent_rows)
        change = None
        if keys:
            new_hashes = {e.index: e.leaf_hash for e in entries}
            sets = {k: in_force(self._index, k, closing_index, consent_rows) for k in keys}
            old = {i for s in sets.values() for i in s.values() if i not in new_hashes}
            hashes = {**self._index.leaf_hashes(old), **new_hashes} if old else new_hashes
            updates = {
                smt.map_key(p, sel): smt.value_hash((i, hashes[i]) for i in s.values()) if s else None
                for (p, sel), s in sets.items()
            }
            change = self._map.update(updates)
        due = self.latest is None or batch_time_ms - self.latest.batch_time_ms >= self.policy.max_age_ms
        if change is None and not heartbeat and not (entries and due):
            return PreparedBatch()
        if change is None:
            change = self._map.update({})
        payload = payloads.build_state_commit(map_root=change.root, batch_time_ms=batch_time_ms)
        closing = parse_envelope(sign_envelope(payloads.STATE_COMMIT, payload, [self._signer.private_key]))
        extra = {
            **change.extra,
            "state_commits": [{"idx": closing_index, "map_root": change.root, "batch_time_ms": batch_time_ms}],
        }
        return PreparedBatch(closing, extra)

    def committed(self, extra: Mapping[str, Sequence[Mapping[str, object]]]) -> None:
        """Move to the batch's StateCommit once the batch committed."""
        for row in extra.get("state_commits", ()):
            self.latest = StateCommitRow(int(row["idx"]), bytes(row["map_root"]), int(row["batch_time_ms"]))  # type: ignore[call-overload, arg-type]

    def proofs(self, keys: Iterable[bytes], attempts: int = 5) -> tuple[StateCommitRow, dict[bytes, smt.MapProof]]:
        """Map proofs for ``keys`` against the latest StateCommit's root (retrying while a batch moves it)."""
        keys = list(keys)
        for _ in range(attempts):
            sc = self.latest
            if sc is None:
                raise Unavailable("the ledger has no consent state commit yet")
            root, proofs = self._map.prove_many(keys)
            if root == sc.map_root:
                return sc, proofs
            time.sleep(0.01)  # a batch changed the map and its StateCommit is about to be published
        raise Unavailable("the consent state is being updated; try again")
