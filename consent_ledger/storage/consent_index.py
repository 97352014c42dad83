"""SQL look-ups over the consent index tables (implements consent_ledger.app.ports.ConsentIndex)."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Any

from sqlalchemy import bindparam, select, tuple_

from consent_ledger.app.ports import ConsentRow, DelegationRow, PartyRow, StateCommitRow, StoredEntry
from consent_ledger.storage import schema
from consent_ledger.storage.sql import (
    ENTRY_COLUMNS,
    ENTRY_FROM,
    SqlLogStore,
    stored_entry,
)

_c = schema.consents
_IN_CHUNK = 500


def _chunks(items: Sequence[Any], n: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


# Built once: constructing a statement costs more than running it on a warm SQLite connection.
_FOR_SELECTORS = (
    select(_c)
    .where(
        _c.c.patient == bindparam("patient"),
        _c.c.grantee.in_(bindparam("selectors", expanding=True)),
        _c.c.idx < bindparam("below"),
    )
    .order_by(_c.c.idx)
)
_CONSENTS = select(_c).where(_c.c.consent_id.in_(bindparam("ids", expanding=True)))
_TARGETING = select(_c).where(_c.c.target.in_(bindparam("ids", expanding=True)), _c.c.idx < bindparam("below"))
_PARTY = (
    select(schema.parties)
    .where(schema.parties.c.party_id == bindparam("party_id"), schema.parties.c.idx < bindparam("below"))
    .order_by(schema.parties.c.idx.desc())
    .limit(1)
)
_d = schema.delegations
_DELEGATIONS = (
    select(_d)
    .where(_d.c.patient == bindparam("patient"), _d.c.delegate == bindparam("delegate"), _d.c.idx < bindparam("below"))
    .order_by(_d.c.idx)
)
_ENTRIES = (
    select(*ENTRY_COLUMNS)
    .select_from(ENTRY_FROM)
    .where(schema.leaves.c.idx.in_(bindparam("indices", expanding=True)))
    .order_by(schema.leaves.c.idx)
)


def _row(r: Any) -> ConsentRow:
    return ConsentRow(r.idx, bytes(r.patient), r.kind, r.consent_id, r.grantee, r.target, r.integrated_ms)


class SqlConsentIndex:
    def __init__(self, store: SqlLogStore) -> None:
        self._store = store

    def consent(self, consent_id: str) -> ConsentRow | None:
        q = select(_c).where(_c.c.consent_id == consent_id).order_by(_c.c.idx).limit(1)
        with self._store.connect() as conn:
            r = conn.execute(q).first()
        return _row(r) if r else None

    def consents(self, consent_ids: Collection[str]) -> dict[str, ConsentRow]:
        """The first entry with each of ``consent_ids`` that has one (one query per 500 ids)."""
        out: dict[str, ConsentRow] = {}
        with self._store.connect() as conn:
            for chunk in _chunks(sorted(set(consent_ids))):
                for r in conn.execute(_CONSENTS, {"ids": list(chunk)}):
                    row = _row(r)
                    if row.consent_id not in out or row.index < out[row.consent_id].index:
                        out[row.consent_id] = row
        return out

    def for_keys(self, keys: Collection[tuple[bytes, str]], below: int) -> list[ConsentRow]:
        """The grants and revocations of each (patient, grantee selector) key, in index order (one query per 250
        keys)."""
        out: list[ConsentRow] = []
        with self._store.connect() as conn:
            for chunk in _chunks(sorted(set(keys)), 250):
                q = select(_c).where(tuple_(_c.c.patient, _c.c.grantee).in_(list(chunk)), _c.c.idx < below)
                out.extend(_row(r) for r in conn.execute(q))
        return sorted(out, key=lambda r: r.index)

    def break_glass_events(self, indices: Collection[int]) -> set[int]:
        """Which of ``indices`` are indexed break-glass access events."""
        ev = schema.break_glass_events
        out: set[int] = set()
        with self._store.connect() as conn:
            for chunk in _chunks(sorted(set(indices))):
                out.update(r[0] for r in conn.execute(select(ev.c.idx).where(ev.c.idx.in_(list(chunk)))))
        return out

    def logged_ids(self, consent_ids: Collection[str]) -> set[str]:
        out: set[str] = set()
        with self._store.connect() as conn:
            for chunk in _chunks(sorted(consent_ids)):
                q = select(_c.c.consent_id).where(_c.c.consent_id.in_(list(chunk)))
                out.update(r[0] for r in conn.execute(q))
        return out

    def signed(self, keys: Collection[bytes]) -> set[bytes]:
        out: set[bytes] = set()
        s = schema.signers
        with self._store.connect() as conn:
            for chunk in _chunks(sorted(keys)):
                out.update(bytes(r[0]) for r in conn.execute(select(s.c.signer).where(s.c.signer.in_(list(chunk)))))
        return out

    def for_selectors(self, patient: bytes, selectors: Collection[str], below: int) -> list[ConsentRow]:
        params = {"patient": patient, "selectors": list(selectors), "below": below}
        with self._store.connect() as conn:
            return [_row(r) for r in conn.execute(_FOR_SELECTORS, params)]

    def targeting(self, consent_ids: Collection[str], below: int) -> list[ConsentRow]:
        out: list[ConsentRow] = []
        with self._store.connect() as conn:
            for chunk in _chunks(sorted(consent_ids)):
                out.extend(_row(r) for r in conn.execute(_TARGETING, {"ids": list(chunk), "below": below}))
        return sorted(out, key=lambda r: r.index)

    def for_patient(self, patient: bytes, after: int, limit: int, below: int) -> list[ConsentRow]:
        q = (
            select(_c)
            .where(_c.c.patient == patient, _c.c.idx > after, _c.c.idx < below)
            .order_by(_c.c.idx)
            .limit(limit)
        )
        with self._store.connect() as conn:
            return [_row(r) for r in conn.execute(q)]

    def delegations(self, patient: bytes, delegate: bytes, below: int) -> list[DelegationRow]:
        params = {"patient": patient, "delegate": delegate, "below": below}
        with self._store.connect() as conn:
            return [
                DelegationRow(r.idx, bytes(r.patient), bytes(r.delegate), r.delegation_id, r.integrated_ms)
                for r in conn.execute(_DELEGATIONS, params)
            ]

    def party(self, party_id: str, below: int) -> PartyRow | None:
        with self._store.connect() as conn:
            r = conn.execute(_PARTY, {"party_id": party_id, "below": below}).first()
        return PartyRow(r.idx, r.party_id, tuple(x for x in r.roles.split(",") if x)) if r else None

    def access_events(self, patient: bytes, after: int, limit: int, below: int) -> list[int]:
        a = schema.access_events
        q = (
            select(a.c.idx)
            .where(a.c.patient == patient, a.c.idx > after, a.c.idx < below)
            .order_by(a.c.idx)
            .limit(limit)
        )
        with self._store.connect() as conn:
            return [r.idx for r in conn.execute(q)]

    def latest_state_commit(self) -> StateCommitRow | None:
        sc = schema.state_commits
        with self._store.connect() as conn:
            r = conn.execute(select(sc).order_by(sc.c.idx.desc()).limit(1)).first()
        return StateCommitRow(r.idx, bytes(r.map_root), r.batch_time_ms) if r else None

    def leaf_hashes(self, indices: Collection[int]) -> dict[int, bytes]:
        leaves = schema.leaves
        out: dict[int, bytes] = {}
        with self._store.connect() as conn:
            for chunk in _chunks(sorted(set(indices))):
                q = select(leaves.c.idx, leaves.c.leaf_hash).where(leaves.c.idx.in_(list(chunk)))
                out.update((i, bytes(h)) for i, h in conn.execute(q))
        return out

    def envelope_logged(self, sha256: bytes) -> bool:
        return bool(self._store.find_envelopes([sha256]))

    def read_indices(self, indices: Collection[int]) -> list[StoredEntry]:
        out: list[StoredEntry] = []
        with self._store.connect() as conn:
            for chunk in _chunks(sorted(set(indices))):
                rows = conn.execute(_ENTRIES, {"indices": list(chunk)})
                out.extend(stored_entry(*row) for row in rows)
        return out

    def break_glass_queue(self, after: int, limit: int, below: int, *, unreviewed_only: bool) -> list[tuple[int, int | None]]:
        ev, rv = schema.break_glass_events, schema.break_glass_reviews
        q = (
            select(ev.c.idx, rv.c.idx.label("review_idx"))
            .select_from(ev.outerjoin(rv, (rv.c.event_idx == ev.c.idx) & (rv.c.idx < below)))
            .where(ev.c.idx > after, ev.c.idx < below)
            .order_by(ev.c.idx)
            .limit(limit)
        )
        if unreviewed_only:
            q = q.where(rv.c.idx.is_(None))
        with self._store.connect() as conn:
            return [(r.idx, r.review_idx) for r in conn.execute(q)]

    def is_break_glass_event(self, index: int) -> bool:
        ev = schema.break_glass_events
        with self._store.connect() as conn:
            return conn.execute(select(ev.c.idx).where(ev.c.idx == index)).first() is not None

    def reviews_of(self, event_indices: Collection[int], below: int) -> dict[int, int]:
        rv = schema.break_glass_reviews
        out: dict[int, int] = {}
        with self._store.connect() as conn:
            for chunk in _chunks(sorted(set(event_indices))):
                q = select(rv.c.event_idx, rv.c.idx).where(rv.c.event_idx.in_(list(chunk)), rv.c.idx < below)
                out.update((e, i) for e, i in conn.execute(q))
        return out

    def erased_by(self, indices: Collection[int]) -> dict[int, int]:
        er = schema.erasures
        out: dict[int, int] = {}
        with self._store.connect() as conn:
            for chunk in _chunks(sorted(set(indices))):
                q = select(er.c.idx, er.c.erasure_idx).where(er.c.idx.in_(list(chunk)))
                out.update((i, e) for i, e in conn.execute(q))
        return out
