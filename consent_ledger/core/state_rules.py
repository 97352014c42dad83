"""The in-force sets of the consent-state map, kept entry by entry (DESIGN section 5).

A grant is in the set of its key ``keys.consent_key(patient, grantee)`` from its integration until a revocation
or a superseding grant of it is integrated; a consent logged twice counts once, at its first index. A party's
key ``keys.party_key(party id)`` holds its latest registration alone. Map keys are map VRF outputs (core.vrf):
the ledger derives them with its secret key, an auditor takes them from verified VRF proofs. The server keeps
the same sets through its index tables (app.consent_state.in_force); auditors replay the log through this class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from consent_ledger.core import smt
from consent_ledger.core.payloads import (
    ConsentGrantPayload,
    ConsentRevocationPayload,
    PartyRegistrationPayload,
    Payload,
    consent_id,
    parse_payload,
)


class MapKeys(Protocol):
    """Where map keys come from (core.vrf.MapKeyProver on the ledger; verified proofs for an auditor)."""

    def consent_key(self, patient: bytes, selector: str) -> bytes: ...

    def party_key(self, party_id: str) -> bytes: ...


@dataclass(frozen=True)
class ErasureFacts:
    """What replaying the consent state needs of an entry once its body is erased (recorded in the Erasure):
    a grant's consent id and map key, and the consent an entry ends (revoked or superseded). Empty otherwise."""

    consent_id: str = ""
    map_key: bytes = b""
    ends: str = ""


def erasure_facts(payload_type: str, payload: bytes, keys: MapKeys) -> ErasureFacts:
    """The facts an Erasure of this body must carry. Raises InvalidInput for a malformed payload."""
    p = parse_payload(payload_type, payload)
    if isinstance(p, ConsentGrantPayload):
        return ErasureFacts(consent_id(payload), keys.consent_key(p.patient, p.grantee), p.supersedes or "")
    if isinstance(p, ConsentRevocationPayload):
        return ErasureFacts(ends=p.consent_id)
    return ErasureFacts()


class InForceSets:
    def __init__(self, keys: MapKeys) -> None:
        self.keys = keys
        self.sets: dict[bytes, dict[int, bytes]] = {}
        # Party key -> (leaf index, leaf hash) of the party's latest registration.
        self.parties: dict[bytes, tuple[int, bytes]] = {}
        self._grants: dict[str, tuple[bytes, int]] = {}
        self._touched: set[bytes] = set()

    def add(self, index: int, leaf_hash: bytes, consent_id: str, payload: Payload) -> None:
        """Account for one entry, in log order. Entries of other kinds are ignored."""
        if isinstance(payload, ConsentGrantPayload):
            key = self.keys.consent_key(payload.patient, payload.grantee)
            self._add_grant(index, leaf_hash, consent_id, key, payload.supersedes)
        elif isinstance(payload, ConsentRevocationPayload):
            self._end(payload.consent_id)
        elif isinstance(payload, PartyRegistrationPayload):
            key = self.keys.party_key(payload.party_id)
            self.parties[key] = (index, leaf_hash)
            self._touched.add(key)

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
        out = {k: self.value_of(k) for k in self._touched}
        self._touched = set()
        return out

    def value_of(self, key: bytes) -> bytes | None:
        """The value hash of a key now (None: absent)."""
        if key in self.parties:
            return smt.value_hash([self.parties[key]])
        return smt.value_hash(self.sets[key].items()) if self.sets.get(key) else None

    def all_values(self) -> dict[bytes, bytes]:
        """Every key present in the map and its value hash."""
        out = {k: smt.value_hash(v.items()) for k, v in self.sets.items() if v}
        out.update({k: smt.value_hash([v]) for k, v in self.parties.items()})
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "sets": {k.hex(): {str(i): h.hex() for i, h in v.items()} for k, v in self.sets.items()},
            "grants": {cid: [k.hex(), i] for cid, (k, i) in self._grants.items()},
            "parties": {k.hex(): [i, h.hex()] for k, (i, h) in self.parties.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, object], keys: MapKeys) -> InForceSets:
        s = cls(keys)
        parties = data.get("parties", {})
        assert isinstance(parties, dict)
        s.parties = {bytes.fromhex(k): (int(i), bytes.fromhex(h)) for k, (i, h) in parties.items()}
        sets = data["sets"]
        grants = data["grants"]
        assert isinstance(sets, dict) and isinstance(grants, dict)
        s.sets = {bytes.fromhex(k): {int(i): bytes.fromhex(h) for i, h in v.items()} for k, v in sets.items()}
        s._grants = {cid: (bytes.fromhex(k), int(i)) for cid, (k, i) in grants.items()}
        return s
