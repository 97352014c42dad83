"""The verifiable consent state (docs/design.md section 5): which grants are in force for each (patient, selector), the
sparse Merkle map that commits to them, and the StateCommit entry that closes each batch.

A grant is in the in-force set of its (patient, grantee selector) key from its integration until an entry ends
it, by the one rule of core.state_rules (a revocation or superseding grant of the same patient, validly signed);
its validity period is not applied here (the decision reads it from the entry). The map's value for a key is
``smt.value_hash`` over the set's (leaf index, leaf hash) pairs; a key with an empty set is absent. The index
tables are the server's implementation of the rule's facts (IndexFacts): the sequencer applies the rule entry by
entry to each batch (ConsentState.prepare), and the access check to what the index finds (in_force).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from consent_ledger.app.errors import Unavailable
from consent_ledger.app.lru import OVERHEAD, CacheBudget, Lru, estimate_size
from consent_ledger.app.payload_check import Validated
from consent_ledger.app.ports import ConsentIndex, ConsentMap, ConsentRow, NewEntry, StateCommitRow, StoredEntry
from consent_ledger.app.sequencer import PreparedBatch
from consent_ledger.core import delegation, payloads, smt, state_rules
from consent_ledger.core.envelope import parse_envelope, sign_envelope
from consent_ledger.core.leaf import parse_leaf
from consent_ledger.core.note import Signer
from consent_ledger.core.vrf import MapKeyProver

log = logging.getLogger(__name__)

GRANT, REVOCATION, DELEGATION = state_rules.GRANT, state_rules.REVOCATION, state_rules.DELEGATION
EVERYTHING = 2**63 - 1  # "below" that admits every index

Key = tuple[bytes, str]  # (patient public key, grantee selector)


@dataclass(frozen=True)
class StatePolicy:
    """When the sequencer writes a StateCommit: after every batch that changes the map, after any batch when the
    last one is older than ``max_age_ms`` (so evidence stays "current as of" a recent time while entries
    arrive), and as an idle heartbeat every ``heartbeat_s`` seconds."""

    max_age_ms: int = 5_000
    heartbeat_s: float = 30.0


Read = Callable[[Collection[int]], Sequence[StoredEntry]]


class IndexFacts:
    """The server's implementation of the facts the one rule reads (core.state_rules.ConsentFacts): the consent
    index tables for entries below ``below``, then the entries of the batch being integrated, noted in order.
    ``read``: how to read stored entries (a cache, or the index).

    A batch reads what it needs once, as sets (``prefetch``: the first rows of every consent id it names, and
    which of its signers signed before), and admission's facts hand what they read to the map update of the same
    batch (``fork``: the stored facts without admission's notes)."""

    def __init__(self, index: ConsentIndex, below: int = EVERYTHING, read: Read | None = None) -> None:
        self._index = index
        self._below = below
        self._read = read or index.read_indices
        # Stored facts (below ``below``): the first row of each consent id, delegations by (patient, delegate)
        # with their stored revocations, and keys known to have signed (or not) an entry.
        self._rows: dict[str, ConsentRow | None] = {}
        self._stored_delegations: dict[tuple[bytes, bytes], list[delegation.Delegate]] = {}
        self._signed: dict[bytes, bool] = {}
        # The batch's entries, noted in order.
        self._logged: dict[str, state_rules.Logged] = {}
        self._delegations: dict[tuple[bytes, bytes], list[delegation.Delegate]] = {}
        self._batch_delegations: list[delegation.Delegate] = []
        # The batch's revocations of delegations, by (delegation id, patient): (integration time, index).
        self._batch_revoked: dict[tuple[str, bytes | None], tuple[int, int]] = {}

    def fork(self) -> IndexFacts:
        """Facts over the same stored state (sharing what was read), with no batch entry noted."""
        out = IndexFacts(self._index, self._below, self._read)
        out._rows, out._stored_delegations, out._signed = self._rows, self._stored_delegations, self._signed
        return out

    def prefetch(self, consent_ids: Collection[str]) -> None:
        """Read the first rows of ``consent_ids`` in one query."""
        missing = [c for c in set(consent_ids) if c and c not in self._rows]
        if missing:
            found = self._index.consents(missing)
            for c in missing:
                row = found.get(c)
                self._rows[c] = row if row is not None and row.index < self._below else None

    def prefetch_signed(self, keys: Collection[bytes]) -> None:
        """Learn in one query which of ``keys`` signed an entry already."""
        missing = [k for k in set(keys) if k not in self._signed]
        if missing:
            found = self._index.signed(missing)
            self._signed.update((k, k in found) for k in missing)

    def signed_before(self, keys: Collection[bytes]) -> set[bytes]:
        """Which of ``keys`` signed an entry logged before the batch."""
        self.prefetch_signed(keys)
        return {k for k in keys if self._signed[k]}

    def row(self, consent_id: str) -> ConsentRow | None:
        """The first stored row of ``consent_id`` (below ``below``), if any."""
        if consent_id not in self._rows:
            r = self._index.consent(consent_id)
            self._rows[consent_id] = r if r is not None and r.index < self._below else None
        return self._rows[consent_id]

    def logged(self, consent_id: str) -> state_rules.Logged | None:
        r = self.row(consent_id)
        if r is not None:
            return state_rules.Logged(r.index, r.kind, r.patient)
        return self._logged.get(consent_id)

    def _stored_delegates(self, patient: bytes, delegate: bytes) -> list[delegation.Delegate]:
        key = (patient, delegate)
        if key not in self._stored_delegations:
            rows = self._index.delegations(patient, delegate, self._below)
            found: list[delegation.Delegate] = []
            if rows:
                revoked: dict[str, tuple[int, int]] = {}
                for r in self._index.targeting({r.delegation_id for r in rows}, self._below):
                    if r.kind == REVOCATION and r.target is not None and r.patient == patient:
                        revoked[r.target] = min(revoked.get(r.target, (r.integrated_ms, r.index)), (r.integrated_ms, r.index))
                for stored in self._read({r.index for r in rows}):
                    if stored.envelope is None:
                        continue
                    env = parse_envelope(stored.envelope)
                    d = payloads.parse_payload(env.payload_type, env.payload)
                    assert isinstance(d, payloads.DelegationPayload)
                    did = payloads.consent_id(env.payload)
                    ms, idx = revoked.get(did, (None, None))
                    found.append(delegation.Delegate(did, stored.index, parse_leaf(stored.leaf).integrated_time_ms, d, ms, idx))
            self._stored_delegations[key] = found
        return self._stored_delegations[key]

    def delegates(self, patient: bytes, delegate: bytes) -> list[delegation.Delegate]:
        """The delegations of ``patient`` naming ``delegate``, each with its first revocation. Only entries that
        passed admission reach an honest log, so every one is taken as authentic."""
        key = (patient, delegate)
        if key not in self._delegations:
            # Copies: the batch's revocations are noted on them, not on the shared stored facts.
            found = [dataclasses.replace(d) for d in self._stored_delegates(patient, delegate)]
            found.extend(d for d in self._batch_delegations if (d.payload.patient, d.payload.delegate) == key)
            for d in found:
                hit = self._batch_revoked.get((d.delegation_id, d.payload.patient))
                if d.revoked_ms is None and hit is not None:
                    d.revoked_ms, d.revoked_index = hit
            self._delegations[key] = found
        return self._delegations[key]

    def signers(self, indices: Collection[int]) -> dict[int, frozenset[bytes] | None]:
        """The keys that signed each entry (None: its body was erased; its index row stands for it)."""
        out: dict[int, frozenset[bytes] | None] = {i: None for i in indices}
        for stored in self._read(indices):
            if stored.envelope is not None:
                out[stored.index] = frozenset(parse_envelope(stored.envelope).signers)
        return out

    def note(self, e: state_rules.ConsentEntry, payload: payloads.Payload | None = None) -> None:
        """Record an entry of the batch being integrated (after the rule was applied to it)."""
        if self.logged(e.consent_id) is None:
            self._logged[e.consent_id] = state_rules.Logged(e.index, e.kind, e.patient)
        if isinstance(payload, payloads.DelegationPayload):
            d = delegation.Delegate(e.consent_id, e.index, e.integrated_ms, payload)
            self._batch_delegations.append(d)
            self._delegations.pop((payload.patient, payload.delegate), None)
        elif e.kind == REVOCATION and e.target and (e.target, e.patient) not in self._batch_revoked:
            self._batch_revoked[(e.target, e.patient)] = (e.integrated_ms, e.index)
            for found in self._delegations.values():
                for d in found:
                    if d.delegation_id == e.target and d.payload.patient == e.patient and d.revoked_ms is None:
                        d.revoked_ms, d.revoked_index = e.integrated_ms, e.index


def _rule_entry(row: ConsentRow, signers: frozenset[bytes] | None) -> state_rules.ConsentEntry:
    return state_rules.ConsentEntry(row.index, row.integrated_ms, row.consent_id, row.kind, row.patient, row.target, signers)


def in_force(
    index: ConsentIndex, patient: bytes, selectors: Collection[str], below: int, read: Read | None = None
) -> dict[str, dict[str, int]]:
    """For each selector, the patient's in-force grants among entries with index < below: consent id -> index of
    the grant (in_force_many for one patient)."""
    found = in_force_many(index, {(patient, sel) for sel in selectors}, below, read)
    return {sel: found[(patient, sel)] for sel in selectors}


def in_force_many(
    index: ConsentIndex, keys: Collection[Key], below: int, read: Read | None = None
) -> dict[Key, dict[str, int]]:
    """For each (patient, selector) key, its in-force grants among entries with index < below: consent id ->
    index of the grant. The index finds the candidates in one read for all keys (their grants, then the entries
    naming them); the one rule (core.state_rules) says which joined and which entries ended them. Keys do not
    interact: an entry ends only a grant of its own patient."""
    out: dict[Key, dict[str, int]] = {k: {} for k in keys}
    if not keys:
        return out
    grants = [r for r in index.for_keys(list(out), below) if r.kind == GRANT]
    if not grants:
        return out
    facts = IndexFacts(index, below, read)
    rows = {r.index: r for r in grants}
    rows.update((r.index, r) for r in index.targeting({r.consent_id for r in grants}, below))
    signers = facts.signers(rows.keys())
    live = state_rules.live((_rule_entry(r, signers[i]) for i, r in rows.items()), state_rules.Replay(delegates=facts.delegates))
    for r in grants:
        key = (r.patient, r.grantee or "")
        if r.consent_id in live and live[r.consent_id].index == r.index and key in out:
            out[key][r.consent_id] = r.index
    return out


_ABSENT = None
# What estimate_size gives any map node (a branch or a leaf: two 32-byte hashes).
_NODE_COST = estimate_size(smt.MapBranch(bytes(32), bytes(32)))
assert _NODE_COST == estimate_size(smt.MapLeaf(bytes(32), bytes(32)))


class NodeCache:
    """The committed map nodes by position, in memory: storage is read only on a miss (absent positions are
    remembered too), and each committed batch's change is written through. Bounded by bytes; thread-safe."""

    def __init__(self, store: ConsentMap, max_bytes: int = CacheBudget().of("map_nodes")) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._nodes: OrderedDict[bytes, tuple[smt.MapNode | None, int]] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()

    def read(self, paths: Collection[bytes]) -> dict[bytes, smt.MapNode]:
        out: dict[bytes, smt.MapNode] = {}
        missing = []
        with self._lock:
            for p in paths:
                if p in self._nodes:
                    node = self._nodes[p][0]
                    if node is not None:
                        out[p] = node
                else:
                    missing.append(p)
        if missing:
            found = self._store.read(missing)
            with self._lock:
                for p in missing:
                    self._set(p, found.get(p))
                self._trim()
            out.update(found)
        return out

    def apply(self, changed: Mapping[bytes, smt.MapNode], deleted: Collection[bytes]) -> None:
        with self._lock:
            for p in deleted:
                self._set(p, _ABSENT)
            for p, node in changed.items():
                self._set(p, node)
            self._trim()

    def _set(self, path: bytes, node: smt.MapNode | None) -> None:
        old = self._nodes.pop(path, None)
        if old is not None:
            self.bytes -= old[1]
        # A node is two 32-byte hashes (either kind): its estimate is a constant, not walked per node.
        cost = 2 * OVERHEAD + len(path) + (_NODE_COST if node is not None else OVERHEAD // 2)
        self._nodes[path] = (node, cost)
        self.bytes += cost

    def _trim(self) -> None:
        while self.bytes > self._max_bytes and self._nodes:
            _, (_, cost) = self._nodes.popitem(last=False)
            self.bytes -= cost


Members = dict[str, tuple[int, bytes]]  # consent id -> (leaf index, leaf hash) of the in-force grants of a key


class InForceCache:
    """The committed in-force sets of recently touched keys, with their leaf hashes. Only the sequencer's thread
    uses it: a miss is read from the index, and each committed batch's new sets are written through, so a batch
    reads nothing for a key it has seen before (a patient with a long history costs no more than a new one)."""

    def __init__(self, index: ConsentIndex, max_bytes: int = CacheBudget().of("in_force")) -> None:
        self._index = index
        # A member: its consent id (64 characters), leaf index and 32-byte leaf hash.
        self._sets: Lru[Key, Members] = Lru(
            max_bytes, lambda k, m: 2 * OVERHEAD + len(k[0]) + len(k[1]) + len(m) * (4 * OVERHEAD + 64 + 32)
        )

    def get(self, keys: Collection[Key]) -> dict[Key, Members]:
        out = {k: hit for k in keys if (hit := self._sets.get(k)) is not None}
        missing = [k for k in keys if k not in out]
        if missing:
            loaded = in_force_many(self._index, missing, EVERYTHING)
            wanted = {i for live in loaded.values() for i in live.values()}
            hashes = self._index.leaf_hashes(wanted) if wanted else {}
            for k, live in loaded.items():
                out[k] = {cid: (i, hashes[i]) for cid, i in live.items()}
            self.put(out)
        return out

    def put(self, sets: Mapping[Key, Members]) -> None:
        for k, members in sets.items():
            self._sets.put(k, dict(members))


class ConsentState:
    """Keeps the consent map in step with the log, and hands out the latest StateCommit."""

    def __init__(
        self,
        index: ConsentIndex,
        cmap: ConsentMap,
        signer: Signer,
        policy: StatePolicy,
        map_keys: MapKeyProver,
        cache: CacheBudget = CacheBudget(),
    ) -> None:
        self._index = index
        # Map keys are map VRF outputs (docs/design.md section 5), cached by the prover (a prove costs about 0.4 ms).
        self.map_keys = map_keys
        # Updates the next batch applies besides its own (set by rebuild_map: every key, into an emptied map).
        self._forced: dict[bytes, bytes | None] = {}
        self._map = cmap
        self._nodes = NodeCache(cmap, cache.of("map_nodes"))
        self._sets = InForceCache(index, cache.of("in_force"))
        self._proofs: Lru[tuple[bytes, bytes], smt.MapProof] = Lru(
            cache.of("map_proofs"), lambda k, p: 4 * OVERHEAD + 64 + len(p.siblings) * (OVERHEAD + 32)
        )
        self._signer = signer
        self.policy = policy
        self.latest: StateCommitRow | None = index.latest_state_commit()
        # The map change of the batch being integrated, by the index of its StateCommit; written through to
        # the cache once that batch committed.
        self._pending: tuple[int, Mapping[bytes, smt.MapNode], Collection[bytes], Mapping[Key, Members]] | None = None
        # Replicas (app/replica.py): a follower catches up with the log when a map proof meets a newer map.
        self.on_stale: Callable[[], None] | None = None

    def in_force_ids(self, keys: Collection[Key]) -> dict[Key, set[str]]:
        """The consent ids in force for ``keys`` as of the last committed batch. The sequencer's thread only (the
        admit hook counts them against core.decision.MAX_IN_FORCE)."""
        return {k: set(members) for k, members in self._sets.get(keys).items()}

    def rebuild_next(self, updates: Mapping[bytes, bytes | None]) -> None:
        """Have the next batch apply ``updates`` too (the whole map, when the stored map was emptied to rebuild
        it with new keys): that batch is closed by a StateCommit."""
        self._forced = dict(updates)

    def party_updates(self, entries: Sequence[NewEntry], party_rows: Sequence[Mapping[str, object]]) -> dict[bytes, bytes]:
        """The party keys a batch's registrations change: each party's key holds its latest registration alone."""
        leaf_hash = {e.index: e.leaf_hash for e in entries}
        latest: dict[str, int] = {}
        for row in party_rows:
            pid, idx = str(row["party_id"]), int(row["idx"])  # type: ignore[call-overload]
            latest[pid] = max(idx, latest.get(pid, -1))
        return {self.map_keys.party_key(pid): smt.value_hash([(i, leaf_hash[i])]) for pid, i in latest.items()}

    def prepare(
        self,
        entries: Sequence[NewEntry],
        consent_rows: Sequence[Mapping[str, object]],
        batch_time_ms: int,
        closing_index: int,
        heartbeat: bool,
        party_rows: Sequence[Mapping[str, object]] = (),
        items: Sequence[Validated] = (),
        facts: IndexFacts | None = None,
    ) -> PreparedBatch:
        """Update the map for a batch by the one rule (core.state_rules.effect) and decide whether a StateCommit
        closes it. ``items``: the entries' validated envelopes (parsed once; parsed here when not given);
        ``facts``: stored facts the batch already read (admission's, IndexFacts.fork)."""
        changes = self._changes(entries, consent_rows, items, facts)
        change = None
        sets: dict[Key, Members] = {}
        extra_updates: dict[bytes, bytes | None] = {**self._forced, **self.party_updates(entries, party_rows)}
        self._forced = {}
        if extra_updates and not changes:
            change = smt.apply_batch(self._nodes, extra_updates)
        if changes:
            sets = {k: dict(v) for k, v in self._sets.get({key for _, key, _, _ in changes}).items()}
            for joins, key, cid, member in changes:
                if joins:
                    sets[key].setdefault(cid, member)
                else:
                    sets[key].pop(cid, None)
            updates = {
                self.map_keys.consent_key(p, sel): smt.value_hash(m.values()) if m else None
                for (p, sel), m in sets.items()
            }
            change = smt.apply_batch(self._nodes, {**extra_updates, **updates})
        due = self.latest is None or batch_time_ms - self.latest.batch_time_ms >= self.policy.max_age_ms
        if change is None and not heartbeat and not (entries and due):
            return PreparedBatch(state_index=self.latest.index if self.latest is not None else None)
        root, changed, deleted = change if change is not None else smt.apply_batch(self._nodes, {})
        self._pending = (closing_index, changed, deleted, sets)
        payload = payloads.build_state_commit(
            map_root=root, batch_time_ms=batch_time_ms, map_vrf_public_key=self.map_keys.public_key
        )
        closing = Validated.of(parse_envelope(sign_envelope(payloads.STATE_COMMIT, payload, [self._signer.private_key])))
        extra = {
            **self._map.rows(changed, deleted),
            "state_commits": [{"idx": closing_index, "map_root": root, "batch_time_ms": batch_time_ms}],
        }
        return PreparedBatch(closing, extra, state_index=closing_index)

    def _changes(
        self,
        entries: Sequence[NewEntry],
        rows: Sequence[Mapping[str, object]],
        items: Sequence[Validated] = (),
        facts: IndexFacts | None = None,
    ) -> list[tuple[bool, Key, str, tuple[int, bytes]]]:
        """The batch's changes to the in-force sets, in order: (joins, key, consent id, (index, leaf hash))."""
        if not rows:
            return []
        if len(items) != len(entries):
            items = [Validated.of(parse_envelope(e.envelope)) for e in entries]
        by_index = {e.index: (e, v) for e, v in zip(entries, items)}
        facts = facts if facts is not None else IndexFacts(self._index)
        facts.prefetch({str(r["consent_id"]) for r in rows} | {str(r["target"]) for r in rows if r.get("target")})
        grantee_of: dict[str, str] = {}
        out: list[tuple[bool, Key, str, tuple[int, bytes]]] = []
        for row in rows:
            idx = int(row["idx"])  # type: ignore[call-overload]
            new, v = by_index[idx]
            p = v.payload
            e = state_rules.ConsentEntry.of(idx, new.integrated_ms, v.consent_id, p, v.signers)
            if e is None:
                continue
            eff = state_rules.effect(e, facts)
            facts.note(e, p)
            if isinstance(p, payloads.ConsentGrantPayload):
                grantee_of.setdefault(e.consent_id, p.grantee)
                if eff.joins:
                    out.append((True, (p.patient, p.grantee), e.consent_id, (idx, new.leaf_hash)))
            if eff.ends:
                ended = facts.logged(eff.ends)
                grantee = grantee_of.get(eff.ends)
                if grantee is None:
                    old = facts.row(eff.ends)
                    grantee = old.grantee if old else None
                if ended is not None and ended.patient is not None and grantee is not None:
                    out.append((False, (ended.patient, grantee), eff.ends, (0, b"")))
        return out

    def committed(self, extra: Mapping[str, Sequence[Mapping[str, object]]]) -> None:
        """Move to the batch's StateCommit once the batch committed."""
        for row in extra.get("state_commits", ()):
            sc = StateCommitRow(int(row["idx"]), bytes(row["map_root"]), int(row["batch_time_ms"]))  # type: ignore[call-overload, arg-type]
            if self._pending is not None and self._pending[0] == sc.index:
                self._nodes.apply(self._pending[1], self._pending[2])
                self._sets.put(self._pending[3])
            self._pending = None
            self.latest = sc

    def reset(self) -> None:
        """Forget the cached map nodes and in-force sets and the pending change, and read the latest StateCommit
        back from storage: after a batch whose outcome is unknown, the next batch's map update starts from the
        stored nodes. (Fresh caches, not cleared ones: a request thread still reading into the old cache cannot
        put a node read before the batch into the new one.)"""
        self._nodes = NodeCache(self._map)
        self._sets = InForceCache(self._index)
        self._pending = None
        self.latest = self._index.latest_state_commit()

    def proofs(self, keys: Iterable[bytes], attempts: int = 5) -> tuple[StateCommitRow, dict[bytes, smt.MapProof]]:
        """Map proofs for ``keys`` against the latest StateCommit's root (retrying while a batch moves it)."""
        keys = list(keys)
        for _ in range(attempts):
            sc = self.latest
            if sc is None:
                raise Unavailable("the ledger has no consent state commit yet")
            # A proof depends only on the key and the root: cache it by both.
            proofs = {k: p for k in keys if (p := self._proofs.get((k, sc.map_root))) is not None}
            missing = [k for k in keys if k not in proofs]
            if not missing:
                return sc, proofs
            try:
                root, fresh = smt.prove_many(self._nodes, missing)
            except smt.InconsistentMapNodes:  # a batch was written through between two rounds of the walk
                continue
            if root == sc.map_root:
                for k, p in fresh.items():
                    self._proofs.put((k, root), p)
                return sc, {**proofs, **fresh}
            if self.on_stale is not None:  # a replica that follows the log: the map moved past its view
                self.on_stale()
                continue
            time.sleep(0.01)  # a batch changed the map and its StateCommit is about to be published
        raise Unavailable("the consent state is being updated; try again")
