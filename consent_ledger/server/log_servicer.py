"""LogService: a thin adapter from protobuf requests to the ledger's log queries and sequencer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc

from consent_ledger.app.authorization import Authorizer
from consent_ledger.app.ledger import Ledger
from consent_ledger.app.ports import StoredCheckpoint, StoredEntry
from consent_ledger.core.errors import InvalidInput
from consent_ledger.server.auth import caller_of
from consent_ledger.server.bulk import BulkSubmit
from consent_ledger.server.errors import streaming, unary
from consent_ledger.server.limits import EntryWindow, RateLimit
from consent_ledger.v1 import log_pb2, log_pb2_grpc


def checkpoint_pb(cp: StoredCheckpoint) -> log_pb2.Checkpoint:
    return log_pb2.Checkpoint(note=cp.note)


async def witnessed_fields(ledger: Ledger, size: int) -> tuple[log_pb2.Checkpoint | None, list[bytes]]:
    """The newest witnessed checkpoint no larger than ``size`` and the consistency proof from it to ``size``;
    (None, []) without witnesses or a quorum yet."""
    w = ledger.witnessing
    got = w.witnessed_at_most(size) if w is not None else None
    if got is None:
        return None, []
    wsize, note = got
    proof: list[bytes] = []
    if wsize < size:
        proof = await ledger.queries.consistency_on_loop(wsize, size)
    return log_pb2.Checkpoint(note=note), proof


class LogServicer(log_pb2_grpc.LogServiceServicer):
    def __init__(
        self,
        ledger: Ledger,
        map_vrf_proof: Callable[[bytes | None], bytes] | None = None,
        *,
        authorizer: Authorizer | None = None,
        limit: RateLimit = RateLimit(),
    ) -> None:
        self._ledger = ledger
        self._q = ledger.queries
        self._map_vrf_proof = map_vrf_proof
        self._bulk = (
            BulkSubmit(ledger, authorizer, lambda: EntryWindow(limit.stream_window_entries, limit.stream_window_bytes))
            if authorizer is not None
            else None
        )

    def _bulk_submit(self) -> BulkSubmit:
        if self._bulk is None:
            raise RuntimeError("bulk submission needs the authorizer")
        return self._bulk

    @unary("SubmitBatch")
    async def SubmitBatch(
        self, request: log_pb2.SubmitBatchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.SubmitBatchResponse:
        return await self._bulk_submit().batch(request, caller_of(context))

    @streaming("SubmitStream")
    async def SubmitStream(
        self, requests: AsyncIterator[log_pb2.SubmitStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[log_pb2.SubmitStreamResponse]:
        async for response in self._bulk_submit().stream(requests, caller_of(context)):
            yield response

    @unary("Submit")
    async def Submit(self, request: log_pb2.SubmitRequest, context: grpc.aio.ServicerContext) -> log_pb2.SubmitResponse:
        done = await self._ledger.submit(request.envelope)
        return log_pb2.SubmitResponse(
            index=done.index,
            duplicate=done.duplicate,
            leaf=done.leaf,
            checkpoint=checkpoint_pb(done.checkpoint),
            inclusion_proof=done.proof,
        )

    @unary("GetEntry")
    async def GetEntry(self, request: log_pb2.GetEntryRequest, context: grpc.aio.ServicerContext) -> log_pb2.GetEntryResponse:
        cp, proven = await asyncio.to_thread(self._q.entry, request.index)
        return log_pb2.GetEntryResponse(
            entry=entry_pb(proven.entry), checkpoint=checkpoint_pb(cp), inclusion_proof=proven.proof
        )

    @unary("GetEntries")
    async def GetEntries(
        self, request: log_pb2.GetEntriesRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.GetEntriesResponse:
        cp, proven = await asyncio.to_thread(self._q.entries, request.start, request.end)
        pis: list[bytes] = []
        if self._map_vrf_proof is not None:
            f = self._map_vrf_proof
            pis = await asyncio.to_thread(lambda: [f(p.entry.envelope) for p in proven])
        return log_pb2.GetEntriesResponse(
            entries=[entry_pb(p.entry) for p in proven],
            checkpoint=checkpoint_pb(cp),
            proofs=[log_pb2.InclusionProof(hashes=p.proof) for p in proven],
            map_vrf_proofs=pis,
        )

    @unary("GetCheckpoint")
    async def GetCheckpoint(
        self, request: log_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.GetCheckpointResponse:
        cp = self._q.checkpoint()
        w = self._ledger.witnessing
        resp = log_pb2.GetCheckpointResponse(checkpoint=log_pb2.Checkpoint(note=w.note_for(cp) if w else cp.note))
        witnessed, proof = await witnessed_fields(self._ledger, cp.size)
        if witnessed is not None:
            resp.witnessed_checkpoint.CopyFrom(witnessed)
            resp.witnessed_consistency.extend(proof)
        return resp

    @unary("GetInclusionProof")
    async def GetInclusionProof(
        self, request: log_pb2.GetInclusionProofRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.GetInclusionProofResponse:
        which = request.WhichOneof("leaf")
        if which == "leaf_hash":
            index, size, proof = await asyncio.to_thread(self._q.inclusion_by_hash, request.leaf_hash, request.tree_size)
        elif which == "index":
            index = request.index
            size, proof = await self._q.inclusion_on_loop(index, request.tree_size)
        else:
            raise InvalidInput("give either a leaf index or a leaf hash")
        return log_pb2.GetInclusionProofResponse(index=index, tree_size=size, hashes=proof)

    @unary("GetConsistencyProof")
    async def GetConsistencyProof(
        self, request: log_pb2.GetConsistencyProofRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.GetConsistencyProofResponse:
        proof = await self._q.consistency_on_loop(request.first, request.second)
        return log_pb2.GetConsistencyProofResponse(hashes=proof)


def entry_pb(entry: StoredEntry) -> log_pb2.Entry:
    return log_pb2.Entry(
        index=entry.index,
        leaf=entry.leaf,
        envelope=entry.envelope or b"",
        body_erased=entry.envelope is None,
        erased_by_index=entry.erased_by or 0,
    )
