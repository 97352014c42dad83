"""AccessService and ConsentService: thin adapters over consent_ledger.app.consents."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator

import grpc

from consent_ledger.app.authorization import Kind
from consent_ledger.app.broker import OVERFLOW
from consent_ledger.app.access import AccessAnswer
from consent_ledger.app.consents import (
    ConsentLedger,
    Proven,
    Pushed,
    records_access_event,
)
from consent_ledger.app.errors import PermissionDenied, Unavailable, WouldBlock
from consent_ledger.app.ledger import Ledger
from consent_ledger.app.lru import Lru
from consent_ledger.core.errors import InvalidInput
from consent_ledger.core.payloads import Period, data_item_from_pb
from consent_ledger.server.errors import streaming, unary
from consent_ledger.server.auth import caller_of
from consent_ledger.server.log_servicer import checkpoint_pb, entry_pb, witnessed_fields
from consent_ledger.v1 import access_pb2, access_pb2_grpc, consent_pb2, consent_pb2_grpc

# A watch ends after this long; clients reconnect (bounded stream durations, docs/design.md section 7).
MAX_WATCH_SECONDS = 3600.0


def evidence_pb(p: Proven) -> access_pb2.EvidenceEntry:
    return access_pb2.EvidenceEntry(entry=entry_pb(p.entry), inclusion_proof=p.proof)


# A page token is the index of the last entry of the previous page; indices are below 2^63 - 1 (a signed 64-bit
# column, and the next page starts one further).
_MAX_PAGE_AFTER = 2**63 - 2


def _page_after(token: str) -> int:
    if not token:
        return -1
    # isdigit() alone also takes "¹" and other Unicode digits that int() refuses.
    if not (token.isascii() and token.isdigit()) or len(token) > 19:
        raise InvalidInput("page token is malformed: pass next_page_token from the previous page, or nothing")
    after = int(token)
    if after > _MAX_PAGE_AFTER:
        raise InvalidInput(f"page token is out of range: an entry index is at most {_MAX_PAGE_AFTER}")
    return after


def _shared_tail(a: list[bytes], b: list[bytes]) -> int:
    """How many trailing hashes two inclusion proofs (at one tree size) have in common."""
    n, most = 0, min(len(a), len(b))
    while n < most and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


# A tail is left out only when it saves this many hashes, taken from one of the first or latest few entries.
_MIN_TAIL = 2
_TAIL_CANDIDATES = 4


def _evidence_pbs(evidence: list[Proven]) -> list[access_pb2.EvidenceEntry]:
    out = []
    for k, p in enumerate(evidence):
        best, tail = None, 0
        for j in sorted({*range(min(k, _TAIL_CANDIDATES)), *range(max(0, k - _TAIL_CANDIDATES), k)}):
            q = evidence[j]
            n = min(_shared_tail(q.proof, p.proof), len(p.proof) - 1)  # at least one hash given
            if n > tail and q.entry.index != p.entry.index:
                best, tail = q, n
        if best is None or tail < _MIN_TAIL:
            out.append(access_pb2.EvidenceEntry(entry=entry_pb(p.entry), inclusion_proof=p.proof))
        else:
            out.append(
                access_pb2.EvidenceEntry(
                    entry=entry_pb(p.entry),
                    inclusion_proof=p.proof[: len(p.proof) - tail],
                    inclusion_proof_tail=tail,
                    inclusion_proof_tail_from=best.entry.index,
                )
            )
    return out


def access_response(answer: AccessAnswer, requester: str, wire: Lru[tuple[bytes, str, int, int], bytes] | None = None) -> access_pb2.CheckAccessResponse:
    """A CheckAccess answer on the wire, without what the client derives (access.proto): the shared tails of
    inclusion proofs, and the leaf of a map proof that ends at its own key. The evidence part depends only on
    ``answer.key`` and is kept serialized in ``wire``; the decision is the receipt's."""
    blob = wire.get(answer.key) if wire is not None and answer.key is not None else None
    if blob is None:
        blob = _evidence_part(answer, requester).SerializeToString()
        if wire is not None and answer.key is not None:
            wire.put(answer.key, blob)
    resp = access_pb2.CheckAccessResponse.FromString(blob)
    body = access_pb2.ReceiptBody.FromString(access_pb2.SignedReceipt.FromString(answer.receipt).body)
    resp.decision.CopyFrom(body.decision)
    resp.checkpoint.note = answer.checkpoint.note
    resp.receipt = answer.receipt
    return resp


def _evidence_part(answer: AccessAnswer, requester: str) -> access_pb2.CheckAccessResponse:
    evidence = _evidence_pbs(answer.evidence)
    selector_proofs = []
    for sel, proof in answer.selector_proofs.items():
        own = proof.leaf is not None and proof.leaf[0] == answer.selector_keys.get(sel)
        selector_proofs.append(
            access_pb2.SelectorProof(
                selector=sel,
                siblings=proof.siblings,
                leaf_key=proof.leaf[0] if proof.leaf and not own else b"",
                leaf_value_hash=proof.leaf[1] if proof.leaf and not own else b"",
                vrf_proof=answer.selector_pis.get(sel, b""),
                leaf_derived=own,
            )
        )
    resp = access_pb2.CheckAccessResponse(
        evidence=evidence,
        state_commit_index=answer.state_commit_index,
        selector_proofs=selector_proofs,
    )
    if answer.party_proof is not None:
        pp = answer.party_proof
        own = pp.leaf is not None and pp.leaf[0] == answer.party_key
        resp.party_proof.CopyFrom(
            access_pb2.PartyProof(
                party_id=requester,
                siblings=pp.siblings,
                leaf_key=pp.leaf[0] if pp.leaf and not own else b"",
                leaf_value_hash=pp.leaf[1] if pp.leaf and not own else b"",
                vrf_proof=answer.party_pi,
                leaf_derived=own,
            )
        )
    return resp


class AccessServicer(access_pb2_grpc.AccessServiceServicer):
    def __init__(self, ledger: Ledger, consents: ConsentLedger) -> None:
        self._ledger = ledger
        self._consents = consents

    @unary("CheckAccess")
    async def CheckAccess(
        self, request: access_pb2.CheckAccessRequest, context: grpc.aio.ServicerContext
    ) -> access_pb2.CheckAccessResponse:
        requester = caller_of(context).name
        access = self._consents.access
        assert access is not None
        check = functools.partial(
            access.check_access,
            requester,
            patient=request.patient,
            action=request.action,
            purpose=request.purpose,
            data=[data_item_from_pb(d) for d in request.data],
            data_period=Period(start_ms=request.data_period.start_ms, end_ms=request.data_period.end_ms),
            time_ms=request.time_ms,
            break_glass=request.break_glass,
            break_glass_reason=request.break_glass_reason,
        )
        try:
            # Warm: answered from memory, here on the event loop. A miss goes to a worker thread.
            answer = check(io=False)
        except WouldBlock:
            answer = await asyncio.to_thread(check, io=True)
        resp = access_response(answer, requester, access.wire)
        witnessed, proof = await witnessed_fields(self._ledger, answer.checkpoint.size)
        if witnessed is not None:
            resp.witnessed_checkpoint.CopyFrom(witnessed)
            resp.witnessed_consistency.extend(proof)
        if records_access_event(answer, request.record_access_event):
            done = await self._ledger.append(self._consents.access_event_envelope(answer))
            resp.access_event_recorded = True
            resp.access_event_index = done.index
        return resp


class ConsentServicer(consent_pb2_grpc.ConsentServiceServicer):
    def __init__(self, consents: ConsentLedger) -> None:
        self._consents = consents

    @unary("ListConsents")
    async def ListConsents(
        self, request: consent_pb2.ListConsentsRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.ListConsentsResponse:
        page = await asyncio.to_thread(
            self._consents.list_consents,
            request.patient,
            after=_page_after(request.page_token),
            limit=request.page_size,
            time_ms=request.time_ms,
        )
        return consent_pb2.ListConsentsResponse(
            checkpoint=checkpoint_pb(page.checkpoint),
            entries=[evidence_pb(p) for p in page.entries],
            states=[
                consent_pb2.ConsentState(
                    consent_id=cid, state=state, ended=ended is not None, ended_by_index=ended or 0
                )
                for cid, (state, ended) in page.states.items()
            ],
            related=[evidence_pb(p) for p in page.related],
            time_ms=page.time_ms,
            next_page_token="" if page.next_after is None else str(page.next_after),
        )

    @unary("ListAccessEvents")
    async def ListAccessEvents(
        self, request: consent_pb2.ListAccessEventsRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.ListAccessEventsResponse:
        page = await asyncio.to_thread(
            self._consents.list_access_events,
            request.patient,
            after=_page_after(request.page_token),
            limit=request.page_size,
        )
        return consent_pb2.ListAccessEventsResponse(
            checkpoint=checkpoint_pb(page.checkpoint),
            entries=[evidence_pb(p) for p in page.entries],
            next_page_token="" if page.next_after is None else str(page.next_after),
            reviews=[evidence_pb(p) for p in page.reviews],
        )

    @unary("ListBreakGlassReviews")
    async def ListBreakGlassReviews(
        self, request: consent_pb2.ListBreakGlassReviewsRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.ListBreakGlassReviewsResponse:
        page = await asyncio.to_thread(
            self._consents.list_break_glass_reviews,
            after=_page_after(request.page_token),
            limit=request.page_size,
            unreviewed_only=request.unreviewed_only,
        )
        return consent_pb2.ListBreakGlassReviewsResponse(
            checkpoint=checkpoint_pb(page.checkpoint),
            items=[
                consent_pb2.BreakGlassReviewItem(
                    event=evidence_pb(item.event), review=None if item.review is None else evidence_pb(item.review)
                )
                for item in page.items
            ],
            next_page_token="" if page.next_after is None else str(page.next_after),
        )

    async def _watch(self, keys: list[tuple[str, object]]) -> AsyncIterator[consent_pb2.WatchResponse]:
        broker = self._consents.broker
        if broker is None:
            raise Unavailable("watching is not available on this server")
        queue = broker.subscribe(keys)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + MAX_WATCH_SECONDS
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    return
                if item is OVERFLOW:
                    raise Unavailable("the watcher fell too far behind; reconnect and list what was missed")
                assert isinstance(item, Pushed)
                proven = self._consents.prove_pushed(item)
                yield consent_pb2.WatchResponse(checkpoint=checkpoint_pb(item.checkpoint), entry=evidence_pb(proven))
        finally:
            broker.unsubscribe(keys, queue)

    @streaming("WatchPatient")
    async def WatchPatient(
        self, request: consent_pb2.WatchPatientRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[consent_pb2.WatchResponse]:
        if len(request.patient) != 32:
            raise InvalidInput("patient must be a 32-byte Ed25519 public key")
        patient, caller = bytes(request.patient), caller_of(context)
        # A delegate watches only while its delegation is in force: checked again before each push.
        delegate = caller.key if caller.kind is Kind.PATIENT and caller.key != patient else None
        async for item in self._watch([("patient", patient)]):
            if delegate is not None and not await asyncio.to_thread(
                self._consents.delegate_in_force, patient, delegate, time.time_ns() // 1_000_000
            ):
                raise PermissionDenied("the delegation that let this key watch the patient is no longer in force")
            yield item

    @streaming("WatchRevocations")
    async def WatchRevocations(
        self, request: consent_pb2.WatchRevocationsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[consent_pb2.WatchResponse]:
        party = caller_of(context).name
        keys = await asyncio.to_thread(self._consents.revocation_keys, party)
        async for item in self._watch(list(keys)):
            yield item
