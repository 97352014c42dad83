"""Bulk submission (SubmitBatch, SubmitStream): many envelopes per message, each answered on its own.

Each envelope goes through the ledger's one admission path (Ledger.submit_many: the checks of Submit, then the
sequencer's group commit, all the message's entries queued at once) after Submit's authorization rule for that
entry. A stream holds a bounded window of unanswered entries (server/limits.py EntryWindow): its next message is
read only when there is room, and room is freed only once the response answering a message has been handed to the
transport, so a client that stops reading its responses stops the stream rather than growing the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from consent_ledger.app import instruments
from consent_ledger.app.authorization import Authorizer, Caller
from consent_ledger.app.ledger import CALL_STARTED, Ledger
from consent_ledger.app.sequencer import Appended
from consent_ledger.core.errors import InvalidInput
from consent_ledger.server.errors import status_for
from consent_ledger.server.limits import MAX_BULK_ENTRIES, EntryWindow
from consent_ledger.v1 import log_pb2

log = logging.getLogger(__name__)


def _check_size(envelopes: Sequence[bytes]) -> None:
    if len(envelopes) > MAX_BULK_ENTRIES:
        raise InvalidInput(f"{len(envelopes)} envelopes in one message; at most {MAX_BULK_ENTRIES}")


def results_pb(results: Sequence[Appended | Exception]) -> tuple[list[log_pb2.SubmitResult], list[log_pb2.Checkpoint]]:
    """Each result as a SubmitResult, and the distinct checkpoints they are proven against, by tree size."""
    checkpoints = sorted({r.checkpoint.size: r.checkpoint for r in results if isinstance(r, Appended)}.values(), key=lambda c: c.size)
    position = {cp.size: i for i, cp in enumerate(checkpoints)}
    out: list[log_pb2.SubmitResult] = []
    for r in results:
        if isinstance(r, Appended):
            out.append(
                log_pb2.SubmitResult(
                    index=r.index,
                    duplicate=r.duplicate,
                    leaf=r.leaf,
                    checkpoint=position[r.checkpoint.size],
                    inclusion_proof=r.proof,
                )
            )
        else:
            code, message = status_for(r)
            if code is grpc.StatusCode.INTERNAL:
                log.error("a bulk-submitted entry failed", exc_info=r)
            out.append(log_pb2.SubmitResult(error_code=code.value[0], error_message=message))
    return out, [log_pb2.Checkpoint(note=cp.note) for cp in checkpoints]


class BulkSubmit:
    """The handlers' work, for one ledger and the authorizer applying Submit's rule to each entry."""

    def __init__(self, ledger: Ledger, authorizer: Authorizer, window: Callable[[], EntryWindow]) -> None:
        self._ledger = ledger
        self._authz = authorizer
        self._window = window

    async def answer(
        self,
        envelopes: Sequence[bytes],
        caller: Caller,
        started: float | None,
        after: asyncio.Future[None] | None = None,
        queued: asyncio.Future[None] | None = None,
    ) -> tuple[list[log_pb2.SubmitResult], list[log_pb2.Checkpoint]]:
        try:
            _check_size(envelopes)
            with instruments.tracer.start_as_current_span("ledger.submit_many") as span:
                span.set_attribute("ledger.bulk.entries", len(envelopes))
                results = await self._ledger.submit_many(
                    [bytes(e) for e in envelopes],
                    precheck=lambda raw: self._authz.check_submission(caller, raw),
                    started=started,
                    after=after,
                    queued=queued,
                )
        finally:
            if queued is not None and not queued.done():
                queued.set_result(None)  # never hold up the messages after this one
        refused = sum(1 for r in results if not isinstance(r, Appended))
        instruments.bulk_entries.add(len(results) - refused, {"ledger.bulk.outcome": "appended"})
        instruments.bulk_entries.add(refused, {"ledger.bulk.outcome": "refused"})
        return results_pb(results)

    async def batch(self, request: log_pb2.SubmitBatchRequest, caller: Caller) -> log_pb2.SubmitBatchResponse:
        results, checkpoints = await self.answer(request.envelopes, caller, CALL_STARTED.get())
        return log_pb2.SubmitBatchResponse(results=results, checkpoints=checkpoints)

    async def stream(
        self, requests: AsyncIterator[log_pb2.SubmitStreamRequest], caller: Caller
    ) -> AsyncIterator[log_pb2.SubmitStreamResponse]:
        """Answer each message in order. A reader task takes the next message only when the window has room for
        its entries and starts its submission at once (several messages can be in the sequencer together); this
        generator yields the answers in order and frees a message's room once its answer was written."""
        window = self._window()
        tag = {"ledger.bulk.window": window.max_entries}

        async def answer(
            envelopes: list[bytes], after: asyncio.Future[None] | None, queued: asyncio.Future[None]
        ) -> tuple[list[log_pb2.SubmitResult], list[log_pb2.Checkpoint]]:
            out = await self.answer(envelopes, caller, time.monotonic(), after, queued)
            instruments.bulk_stream_messages.add(1, {**tag, "ledger.bulk.stage": "answered"})
            return out

        answers: asyncio.Queue[tuple[asyncio.Task[tuple[list[log_pb2.SubmitResult], list[log_pb2.Checkpoint]]], int, int] | BaseException | None] = asyncio.Queue()

        async def read() -> None:
            # Each message's entries are queued for the sequencer after the previous message's: indices follow the
            # order sent, while messages are validated concurrently.
            previous: asyncio.Future[None] | None = None
            try:
                async for request in requests:
                    envelopes = list(request.envelopes)
                    _check_size(envelopes)
                    size = sum(len(e) for e in envelopes)
                    await window.acquire(len(envelopes), size)
                    instruments.bulk_in_flight.record(window.entries, tag)
                    instruments.bulk_stream_messages.add(1, {**tag, "ledger.bulk.stage": "read"})
                    queued: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    task = asyncio.create_task(answer(envelopes, previous, queued))
                    previous = queued
                    answers.put_nowait((task, len(envelopes), size))
                answers.put_nowait(None)
            except BaseException as e:  # noqa: BLE001 - handed to the writer, which ends the call with it
                answers.put_nowait(e)
                if isinstance(e, asyncio.CancelledError):
                    raise

        reader = asyncio.create_task(read(), name="submit-stream-reader")
        try:
            while True:
                item = await answers.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                task, n, size = item
                results, checkpoints = await task
                yield log_pb2.SubmitStreamResponse(results=results, checkpoints=checkpoints)
                instruments.bulk_stream_messages.add(1, {**tag, "ledger.bulk.stage": "written"})
                await window.release(n, size)
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            while not answers.empty():
                item = answers.get_nowait()
                if isinstance(item, tuple):
                    item[0].cancel()
