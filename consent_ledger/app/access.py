"""The access check (docs/design.md sections 4 and 5): a decision with its evidence and a signed receipt, answered from
memory when it can.

What an answer rests on is fixed by two published things: the checkpoint (its tree size: the inclusion proofs)
and the StateCommit it names (its index, and its map root: the in-force sets, the map proofs and the requester's
registration, which the root commits to). So the caches here are keyed by them and never need invalidating:

- the evidence of a (patient, requester) by map root: the selectors, the VRF-proven map keys, the map proofs, and
  which entries are evidence (the in-force grants, the delegations behind delegate-signed ones, the registration);
  the StateCommit entry is added per answer, so an idle heartbeat StateCommit (same root) keeps it;
- the inclusion proof of an entry by (index, tree size);
- the evidence part of an answer as serialized, by (patient, requester, StateCommit index, tree size).

A check first picks a checkpoint and the StateCommit it names, read together (``pair``); an answer is never
computed on a StateCommit other than the one its checkpoint names, so nothing it returns is staler than the
checkpoint. A revocation integrated by a batch moves both (and the root), and the next check misses the evidence
cache and reads the new in-force set. Another server process on the same database (which publishes checkpoints
it reads from storage) keys its caches the same way.

``check_access(io=False)`` serves from memory alone (the caches, the expanded tiles) and raises WouldBlock on any
miss: the gRPC layer calls it on the event loop and only a miss goes to a worker thread (as app.authorization does
for authorisation).

Warm-up (``warm_up``): after start-up, in the background, the full tiles (upper levels first) and the top of the
consent map are read into their caches, up to the caches' budgets; readiness does not wait for it, and nothing is
replayed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from consent_ledger.app.errors import FailedPrecondition, Unavailable, WouldBlock
from consent_ledger.app.lru import OVERHEAD, CacheBudget, Lru
from consent_ledger.app.consent_state import ConsentState, NodeCache
from consent_ledger.app.ports import PartyRow, StateCommitRow, StoredCheckpoint, StoredEntry
from consent_ledger.app.tree import TreeReader
from consent_ledger.core import payloads, smt, vrf
from consent_ledger.core.checkpoint import parse_checkpoint
from consent_ledger.core.decision import (
    AccessRequest,
    Decision,
    LedgerEntry,
    Policy,
    decide,
    grantee_selectors,
)
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.merkle import prove_inclusion
from consent_ledger.core.receipt import receipt_body, sign_receipt
from consent_ledger.core.rfc6962 import hash_leaf
from consent_ledger.core.timing import check_request_time

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Proven:
    """An entry with its inclusion proof against a checkpoint."""

    entry: StoredEntry
    proof: list[bytes]


@dataclass(frozen=True)
class AccessAnswer:
    decision: Decision
    evidence: list[Proven]
    checkpoint: StoredCheckpoint
    receipt: bytes
    state_commit_index: int
    selector_proofs: dict[str, smt.MapProof]
    # The VRF proof of each selector's map key, and the map proof (with its VRF proof) of the requester's party key.
    selector_pis: dict[str, bytes] = field(default_factory=dict)
    party_proof: smt.MapProof | None = None
    party_pi: bytes = b""
    # The map key of each selector and of the party key (what the VRF proofs prove): a proof whose walk ends at its
    # own key's pair needs no leaf on the wire (the client derives it from the key and the evidence).
    selector_keys: dict[str, bytes] = field(default_factory=dict)
    party_key: bytes = b""
    # What the evidence part of the answer depends on: (patient, requester, StateCommit index, tree size). The
    # server keeps that part as sent under this key (AccessPath.wire).
    key: tuple[bytes, str, int, int] | None = None


@dataclass(frozen=True)
class Evidence:
    """What a (patient, requester) answer rests on as of one StateCommit: valid for as long as that StateCommit is
    the one the served checkpoint names (and for any tree size that includes it)."""

    party: PartyRow
    selectors: tuple[str, ...]
    keys: dict[str, vrf.ProvenKey]
    party_key: vrf.ProvenKey
    proofs: dict[bytes, smt.MapProof]
    # Every evidence entry's index but the StateCommit's, and those the decision reads (the grants and what
    # authorised them).
    indices: frozenset[int]
    parsed: frozenset[int]


def _evidence_cost(key: tuple[bytes, str, bytes], ev: Evidence) -> int:
    proofs = sum(2 * OVERHEAD + 64 + len(p.siblings) * (OVERHEAD + 32) for p in ev.proofs.values())
    keys = (len(ev.keys) + 1) * (3 * OVERHEAD + 32 + 80 + 16)
    return 8 * OVERHEAD + len(key[1]) + 32 + proofs + keys + (len(ev.indices) + len(ev.parsed)) * OVERHEAD


class AccessSource(Protocol):
    """What the access path reads from the consent side (app.consents.ConsentLedger provides it)."""

    state: ConsentState
    policy: Policy

    def party(self, party_id: str, below: int) -> PartyRow: ...

    def entries_at(
        self, indices: set[int], parsed: set[int], *, io: bool = True
    ) -> tuple[list[StoredEntry], list[LedgerEntry]]: ...

    def in_force_at(self, patient: bytes, selectors: Sequence[str], sc: StateCommitRow) -> dict[str, dict[str, int]]: ...

    def support(self, entries: Sequence[LedgerEntry]) -> set[int]: ...


class InclusionProofs:
    """Inclusion proofs by (index, tree size), bounded by bytes; from the tree reader on a miss (with ``io=False``,
    from the tiles in memory only, raising WouldBlock when one would be read)."""

    def __init__(self, reader: TreeReader, max_bytes: int) -> None:
        self.reader = reader
        self._memory = reader.memory_only()
        self._proofs: Lru[tuple[int, int], list[bytes]] = Lru(
            max_bytes, lambda k, p: 3 * OVERHEAD + len(p) * (OVERHEAD + 32)
        )

    @property
    def cache(self) -> Lru[tuple[int, int], list[bytes]]:
        return self._proofs

    def prove(self, index: int, size: int, *, io: bool = True) -> list[bytes]:
        hit = self._proofs.get((index, size))
        if hit is not None:
            return hit
        proof = prove_inclusion(index, size, self.reader if io else self._memory)
        return self._proofs.put((index, size), proof)


class AccessPath:
    """CheckAccess: the decision, its evidence and a receipt, as of the latest checkpoint and the StateCommit it
    names; see the module docstring for the caches."""

    def __init__(
        self,
        source: AccessSource,
        signer_key: bytes,
        reader: TreeReader,
        latest: Callable[[], StoredCheckpoint],
        clock_ms: Callable[[], int],
        cache: CacheBudget = CacheBudget(),
    ) -> None:
        self._source = source
        self._signer_key = signer_key
        self._latest = latest
        self._clock_ms = clock_ms
        self.proofs = InclusionProofs(reader, cache.of("inclusion_proofs"))
        # By (patient, requester, map root): the root commits to the in-force sets and the registrations, so a
        # StateCommit that changes nothing (an idle heartbeat) keeps the evidence; the StateCommit entry itself is
        # added per answer.
        self.evidence: Lru[tuple[bytes, str, bytes], Evidence] = Lru(cache.of("access_evidence"), _evidence_cost)
        # The evidence part of an answer as the gRPC layer serialized it, by AccessAnswer.key (opaque bytes here).
        self.wire: Lru[tuple[bytes, str, int, int], bytes] = Lru(cache.of("access_wire"), lambda k, b: 2 * OVERHEAD + len(b))
        # The consent-state index the last checkpoint seen names (checkpoint note -> index or None).
        self._named: tuple[bytes, int | None] = (b"", None)

    def reset(self) -> None:
        """Forget the cached evidence and proofs (after a batch whose outcome is unknown; fresh caches, so a
        request still holding the old ones cannot put into the new)."""
        self.proofs = InclusionProofs(self.proofs.reader, self.proofs.cache.max_bytes)
        self.evidence = Lru(self.evidence.max_bytes, _evidence_cost)
        self.wire = Lru(self.wire.max_bytes, self.wire._size)  # noqa: SLF001

    # -- a checkpoint and its StateCommit -----------------------------------------------------------------------

    def _named_state(self, cp: StoredCheckpoint) -> int | None:
        note, index = self._named
        if note == cp.note:
            return index
        body = cp.note[: cp.note.index(b"\n\n") + 1].decode("utf-8")
        index = parse_checkpoint(body).consent_state
        self._named = (cp.note, index)
        return index

    def pair(self, *, io: bool = True) -> tuple[StoredCheckpoint, StateCommitRow]:
        """The latest checkpoint and the StateCommit it names, read together: the sequencer publishes a checkpoint
        just before the consent state moves to its StateCommit, so a reader between the two waits (or, with
        ``io=False``, raises WouldBlock)."""
        state = self._source.state
        for _ in range(200 if io else 1):
            cp = self._latest()
            sc = state.latest
            named = self._named_state(cp)
            # A checkpoint written before checkpoints named their StateCommit names none: the latest one it holds
            # is used (the client refuses such evidence, StateCommitNotNamed; the server still answers).
            paired = sc is not None and (named == sc.index if named is not None else sc.index < cp.size)
            if paired and sc is not None and self._latest() is cp:
                return cp, sc
            if sc is None and named is None:
                raise Unavailable("the ledger has no consent state commit yet")
            if not io:
                raise WouldBlock("the consent state is moving to the checkpoint's")
            time.sleep(0.005)
        raise Unavailable("the consent state is being updated; try again")

    # -- the check ------------------------------------------------------------------------------------------------

    def check_access(
        self,
        requester_id: str,
        *,
        patient: bytes,
        action: str,
        purpose: str,
        data: Sequence[payloads.DataItem],
        data_period: payloads.Period = payloads.Period(),
        time_ms: int = 0,
        break_glass: bool = False,
        break_glass_reason: str = "",
        io: bool = True,
    ) -> AccessAnswer:
        """Decide a request as of the latest checkpoint's StateCommit; return the decision, its evidence and a
        receipt.

        The evidence (docs/design.md section 5): for each selector that could name the requester (its ``org:`` id, a
        ``role:`` per registered role, ``any``), a map proof against the StateCommit's root and the complete
        in-force set the map commits to; the requester's registration; the StateCommit entry. Each entry comes with
        its inclusion proof, so the client re-runs the decision knowing nothing was left out. Nothing about other
        grantees is returned. With ``io=False`` it answers from memory or raises WouldBlock (nothing changes)."""
        payloads.check_patient_key(patient)
        now = self._clock_ms()
        check_request_time(time_ms, now)
        # (The request itself is checked by decide, core.decision.check_request.)
        for _ in range(5):
            cp, sc = self.pair(io=io)
            ev = self.evidence.get((patient, requester_id, sc.map_root))
            if ev is None:
                if not io:
                    raise WouldBlock("the evidence of this patient and requester is not cached")
                ev = self._gather(requester_id, patient, cp, sc)
                if ev is None:
                    continue  # the consent state moved while gathering: again, on the new pair
            stored, entries = self._source.entries_at({*ev.indices, sc.index}, set(ev.parsed), io=io)
            break
        else:
            raise Unavailable("the consent state is being updated; try again")
        t = time_ms or max(now, sc.batch_time_ms)
        if t < sc.batch_time_ms:
            raise InvalidInput("decisions are made on the latest consent state: ask for now or a later time")
        request = AccessRequest(
            patient=patient,
            requester_id=requester_id,
            requester_roles=ev.party.roles,
            action=action,
            purpose=purpose,
            data=tuple(data),
            data_period=data_period,
            time_ms=t,
            break_glass=break_glass,
            break_glass_reason=break_glass_reason,
        )
        proven = [Proven(s, self.proofs.prove(s.index, cp.size, io=io)) for s in stored]
        decision = decide(entries, request, self._source.policy)
        receipt = sign_receipt(receipt_body(decision, cp.note), self._signer_key)
        return AccessAnswer(
            decision,
            proven,
            cp,
            receipt,
            sc.index,
            {sel: ev.proofs[k.key] for sel, k in ev.keys.items()},
            {sel: k.pi for sel, k in ev.keys.items()},
            ev.proofs[ev.party_key.key],
            ev.party_key.pi,
            {sel: k.key for sel, k in ev.keys.items()},
            ev.party_key.key,
            (patient, requester_id, sc.index, cp.size),
        )

    def _gather(self, requester_id: str, patient: bytes, cp: StoredCheckpoint, sc: StateCommitRow) -> Evidence | None:
        """The evidence as of ``sc`` (storage reads allowed); None if the consent state moved past ``sc`` meanwhile.
        Cached by (patient, requester, StateCommit index)."""
        source = self._source
        state = source.state
        party = source.party(requester_id, cp.size)
        prover = state.map_keys
        party_key = prover.prove(vrf.party_alpha(requester_id))
        for _ in range(5):
            selectors = grantee_selectors(requester_id, party.roles)
            keys = {sel: prover.prove(vrf.consent_alpha(patient, sel)) for sel in selectors}
            at, proofs = state.proofs([*(k.key for k in keys.values()), party_key.key])
            if at.index != sc.index:
                return None
            # The requester's party key holds its latest registration as of sc: the roles used must be its.
            (reg,), _ = source.entries_at({party.index}, set())
            if proofs[party_key.key].leaf == (party_key.key, smt.value_hash([(party.index, hash_leaf(reg.leaf))])):
                break
            newer = source.party(requester_id, sc.index)
            if newer.index == party.index:
                raise FailedPrecondition(
                    f"the consent-state map does not hold the registration of {requester_id} (a map written before "
                    "party keys or with other map keys: run consent-ledger rebuild-map)"
                )
            party = newer
        else:
            raise Unavailable(f"the registration of {requester_id} is being updated; try again")
        live = source.in_force_at(patient, selectors, sc)
        grant_indices = {i for s in live.values() for i in s.values()}
        _, grants = source.entries_at(grant_indices, grant_indices)
        # Delegate-signed grants come with the delegation that authorised them (core.decision reads it).
        parsed = grant_indices | source.support(grants)
        ev = Evidence(
            party, tuple(selectors), keys, party_key, proofs,
            frozenset(parsed | {party.index}), frozenset(parsed),
        )  # fmt: skip
        return self.evidence.put((patient, requester_id, sc.map_root), ev)


# -- warm-up at start-up ------------------------------------------------------------------------------------------


class WarmUp:
    """Reads full tiles (the upper levels first, then the leaves' tiles from the newest) and the consent map's
    nodes (breadth first from the root) into their caches, in a background thread, until each cache's budget is
    nearly used or ``stop()`` is called. Serving never waits for it. ``progress`` counts what was read."""

    CHUNK = 64

    def __init__(self, reader: TreeReader, size: int, nodes: Callable[[], NodeCache], map_budget: int) -> None:
        self._reader = reader
        self._size = size
        self._nodes = nodes  # the consent state's node cache (a new one after a reset)
        self._map_budget = map_budget
        self._stopped = threading.Event()
        self.tiles = 0
        self.map_nodes = 0
        self.seconds = 0.0
        self.done = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        started = time.perf_counter()
        try:
            self._warm_tiles()
            self._warm_map()
        except Exception:  # noqa: BLE001 - a failed warm-up only leaves caches cold
            log.exception("cache warm-up stopped")
        finally:
            self.seconds = time.perf_counter() - started
            self.done.set()
            log.info("cache warm-up: %d tiles, %d map nodes in %.1f s", self.tiles, self.map_nodes, self.seconds)

    def _warm_tiles(self) -> None:
        for ids in self._reader.full_tile_ids(self._size, self.CHUNK):
            if self._stopped.is_set() or not self._reader.warm(ids):
                return
            self.tiles += len(ids)
            time.sleep(0.002)  # requests first: the GIL goes to them between chunks

    def _warm_map(self) -> None:
        frontier: list[tuple[int, bytes]] = [(0, bytes(32))]  # (depth, a key with the position's bits)
        while frontier and not self._stopped.is_set():
            nxt: list[tuple[int, bytes]] = []
            for k in range(0, len(frontier), 512):
                nodes = self._nodes()
                # Stop short of the budget: the map nodes requests read are kept, not evicted by the warm-up.
                if self._stopped.is_set() or nodes.bytes + 512 * 4 * OVERHEAD > self._map_budget * 0.9:
                    return
                chunk = frontier[k : k + 512]
                found = nodes.read([smt.node_path(d, key) for d, key in chunk])
                for d, key in chunk:
                    node = found.get(smt.node_path(d, key))
                    if isinstance(node, smt.MapBranch):
                        if node.left != smt.EMPTY_HASH:
                            nxt.append((d + 1, key))
                        if node.right != smt.EMPTY_HASH:
                            nxt.append((d + 1, _with_bit(key, d)))
                self.map_nodes += len(found)
                time.sleep(0.002)
            frontier = nxt


def _with_bit(key: bytes, bit: int) -> bytes:
    b = bytearray(key)
    b[bit >> 3] |= 0x80 >> (bit & 7)
    return bytes(b)
