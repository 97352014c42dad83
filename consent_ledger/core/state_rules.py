"""The in-force sets of the consent-state map, kept entry by entry (DESIGN section 5).

A grant is in the set of its key ``map_key(patient, grantee)`` from its integration until a revocation or a
superseding grant of it is integrated; a consent logged twice counts once, at its first index. The server keeps
the same sets through its index tables (app.consent_state.in_force); auditors replay the log through this class.
"""

from __future__ import annotations

from dataclasses import dataclass

from consent_ledger.core import smt
from consent_ledger.core.payloads import (
    ConsentGrantPayload,
    ConsentRevocationPayload,
    Payload,
    consent_id,
    parse_payload,
)


@dataclass(frozen=True)
class ErasureFacts:
    """What replaying the consent state needs of an entry once its body is erased (recorded in the Erasure):
    a grant's consent id and map key, and the consent an entry ends (revoked or superseded). Empty otherwise."""

    consent_id: str = ""
    map_key: bytes = b""
    ends: str = ""


def erasure_facts(payload_type: str, payload: bytes) -> ErasureFacts:
    """The facts an Erasure of this body must carry. Raises InvalidInput for a malformed payload."""
    p = parse_payload(payload_type, payload)
    if isinstance(p, ConsentGrantPayload):
        return ErasureFacts(consent_id(payload), smt.map_key(p.patient, p.grantee), p.supersedes or "")
    if isinstance(p, ConsentRevocationPayload):
        return ErasureFacts(ends=p.consent_id)
    return ErasureFacts()


class InForceSets:
    def __init__(self) -> None:
        self.sets: dict[bytes, dict[int, bytes]] = {}
        self._grants: dict[str, tuple[bytes, int]] = {}
        self._touched: set[bytes] = set()

    def add(self, index: int, leaf_hash: bytes, consent_id: str, payload: Payload) -> None:
        """Account for one entry, in log order. Entries of other kinds are ignored."""
        if isinstance(payload, ConsentGrantPayload):
            self._add_grant(index, leaf_hash, consent_id, smt.map_key(payload.patient, payload.grantee), payload.supersedes)
        elif isinstance(payload, ConsentRevocationPayload):
            self._end(payload.consent_id)

    def add_erased(self, index: int, leaf_hash: bytes, facts: ErasureFacts) -> None:
        """Account for an entry whose body was erased, from the facts its Erasure records."""
        if facts.map_key:
            self._add_grant(index, leaf_hash, facts.consent_id, facts.map_key, facts.ends or None)
        elif facts.ends:
            self._end(facts.ends)

    def _add_grant(self, index: int, leaf_hash: bytes, consent_id: str, key: bytes, supersedes: str | None) -> None:
        if consent_id in self._grants:
            return
        self.sets.setdefault(key, {})[index] = leaf_hash
        self._grants[consent_id] = (key, index)
        self._touched.add(key)
        if supersedes:
            self._end(supersedes)

    def _end(self, consent_id: str) -> None:
        found = self._grants.get(consent_id)
        if found is None:
            return
        key, index = found
        members = self.sets.get(key, {})
        if members.pop(index, None) is not None:
            self._touched.add(key)
        if not members:
            self.sets.pop(key, None)

    def take_updates(self) -> dict[bytes, bytes | None]:
        """The value hash of every key changed since the last call (None: the key left the map)."""
        out = {k: smt.value_hash(self.sets[k].items()) if self.sets.get(k) else None for k in self._touched}
        self._touched = set()
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "sets": {k.hex(): {str(i): h.hex() for i, h in v.items()} for k, v in self.sets.items()},
            "grants": {cid: [k.hex(), i] for cid, (k, i) in self._grants.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> InForceSets:
        s = cls()
        sets = data["sets"]
        grants = data["grants"]
        assert isinstance(sets, dict) and isinstance(grants, dict)
        s.sets = {bytes.fromhex(k): {int(i): bytes.fromhex(h) for i, h in v.items()} for k, v in sets.items()}
        s._grants = {cid: (bytes.fromhex(k), int(i)) for cid, (k, i) in grants.items()}
        return s
