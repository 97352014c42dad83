"""The ledger as a C2SP tlog-witness client: it sends its newest checkpoint to each configured witness and collects
their cosignatures (docs/design.md section 2, witnessed checkpoints).

One task per witness: whenever the log's latest checkpoint is newer than what the witness last cosigned (checked
every ``poll_s``, 0.2 s by default, so under load the newest checkpoint goes out at least every second), it POSTs ``add-checkpoint``
with the consistency proof from the size the witness last cosigned. A 409 with ``text/x.tlog.size`` resyncs to the
size the witness reports; any other failure retries with exponential backoff. Nothing here is on Submit's path:
the tasks only read the published checkpoint.

A checkpoint that collected cosignatures from ``quorum`` witnesses becomes the witnessed checkpoint: the log's note
with those cosignature lines appended. It is kept in memory and persisted (``save``), so a restart serves it.

In a replica set (``leading`` given) only the sequencer lease holder talks to the witnesses: the checkpoints are
its own, and N replicas sending the same ones would only make each witness answer repeats. The others read the
witnessed checkpoint the leader saved (``load``, every second) and serve it; a follower that becomes the leader
starts sending (a witness ahead of what it knows answers 409 with its size, and it resyncs).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from opentelemetry import trace

from consent_ledger.app import instruments
from consent_ledger.app.ports import StoredCheckpoint
from consent_ledger.core.errors import ConsentLedgerError, InvalidInput
from consent_ledger.core.note import parse_signature_line
from consent_ledger.core.witness import SIZE_CONTENT_TYPE, WitnessKey, format_add_checkpoint

__all__ = ["WitnessEndpoint", "Witnessing"]

log = logging.getLogger(__name__)

witness_requests = instruments.meter.create_counter(
    "ledger.witness.requests", unit="{request}", description="add-checkpoint round trips, by witness and outcome"
)
witness_duration = instruments.meter.create_histogram(
    "ledger.witness.duration", unit="ms", description="add-checkpoint round-trip time by witness"
)
witnessed_size = instruments.meter.create_gauge(
    "ledger.witness.witnessed_size", unit="{entry}", description="Tree size of the latest checkpoint with a quorum"
)

_KEEP_SIZES = 64
_MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class WitnessEndpoint:
    """A configured witness: its add-checkpoint URL prefix and its cosignature verifier key."""

    url: str
    key: WitnessKey


@dataclass
class _Collected:
    checkpoint: StoredCheckpoint
    lines: dict[str, str] = field(default_factory=dict)  # witness name -> cosignature line


class Witnessing:
    """Collects cosignatures for the ledger's checkpoints. ``latest`` reads the published checkpoint; ``prove``
    returns the consistency proof between two sizes (blocking; run in a thread); ``save`` persists a witnessed
    note (blocking)."""

    def __init__(
        self,
        witnesses: list[WitnessEndpoint],
        quorum: int,
        latest: Callable[[], StoredCheckpoint],
        prove: Callable[[int, int], list[bytes]],
        save: Callable[[int, bytes], None] | None = None,
        witnessed: tuple[int, bytes] | None = None,
        poll_s: float = 0.2,
        timeout_s: float = 5.0,
        ca_file: str | None = None,
        leading: Callable[[], bool] | None = None,
        load: Callable[[], tuple[int, bytes] | None] | None = None,
    ) -> None:
        if not witnesses:
            raise InvalidInput("no witnesses configured")
        if not 1 <= quorum <= len(witnesses):
            raise InvalidInput(f"witness quorum must be between 1 and {len(witnesses)}")
        self.witnesses = witnesses
        self.quorum = quorum
        self._latest = latest
        self._prove = prove
        self._save = save
        self._leading = leading
        self._load = load
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        # HTTPS witnesses are checked against the system's roots, or only against ca_file when given.
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._collected: OrderedDict[int, _Collected] = OrderedDict()
        # (size, note with the quorum's cosignature lines) of the newest witnessed checkpoint.
        self.witnessed: tuple[int, bytes] | None = witnessed
        self._history: list[tuple[int, bytes]] = [witnessed] if witnessed is not None else []
        self.cosigned_size: dict[str, int] = {w.key.name: 0 for w in witnesses}
        self.failures: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._changed = asyncio.Event()
        # Every witness is sent the same checkpoint (the target) so that their cosignatures meet on one; the
        # target moves to the latest checkpoint once a quorum cosigned it or every witness has had its try.
        self._target: StoredCheckpoint | None = None
        self._tried: set[str] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout_s), connector=aiohttp.TCPConnector(ssl=self._ssl)
        )
        self._tasks = [
            asyncio.create_task(self._run(w), name=f"witness-{w.key.name}") for w in self.witnesses
        ]
        if self._leading is not None and self._load is not None:
            self._tasks.append(asyncio.create_task(self._follow_saved(self._leading, self._load), name="witnessed"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    def note_for(self, cp: StoredCheckpoint) -> bytes:
        """The checkpoint's note with every cosignature collected for it so far."""
        got = self._collected.get(cp.size)
        if got is None or got.checkpoint.root_hash != cp.root_hash or not got.lines:
            return cp.note
        return cp.note + "".join(got.lines[n] for n in sorted(got.lines)).encode("utf-8")

    def witnessed_at_most(self, size: int) -> tuple[int, bytes] | None:
        """The newest witnessed (size, note) no larger than ``size``."""
        for w in reversed(self._history):
            if w[0] <= size:
                return w
        return None

    async def wait_witnessed(self, size: int, timeout_s: float) -> bool:
        """Wait until a checkpoint of at least ``size`` is witnessed (tests and benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while self.witnessed is None or self.witnessed[0] < size:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return False
        return True

    def _sending(self) -> bool:
        return self._leading is None or self._leading()

    async def _follow_saved(self, leading: Callable[[], bool], load: Callable[[], tuple[int, bytes] | None]) -> None:
        """A follower: adopt the witnessed checkpoint the leader saved, when it is newer than the one served."""
        while True:
            await asyncio.sleep(self._poll_s * 5)
            if leading():
                continue
            try:
                saved = await asyncio.to_thread(load)
            except Exception as e:  # noqa: BLE001 - the database is down: served as before, tried again
                log.warning("reading the witnessed checkpoint: %s: %s", type(e).__name__, e)
                continue
            if saved is not None and (self.witnessed is None or self.witnessed[0] < saved[0]):
                self._set_witnessed(saved)

    def _set_witnessed(self, witnessed: tuple[int, bytes]) -> None:
        self.witnessed = witnessed
        self._history = [*self._history[-(_KEEP_SIZES - 1):], witnessed]
        witnessed_size.set(witnessed[0])
        self._changed.set()

    async def _run(self, w: WitnessEndpoint) -> None:
        name = w.key.name
        backoff = 0.0
        sent: tuple[int, bytes] | None = None  # (size, root) last cosigned by this witness
        while True:
            await asyncio.sleep(max(self._poll_s, backoff))
            if not self._sending():  # a follower: the leader sends (see the module docstring)
                sent, backoff = None, 0.0
                continue
            cp = self._next_target()
            if sent is not None and sent == (cp.size, cp.root_hash):
                continue
            try:
                outcome = await self._add_checkpoint(w, cp)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a witness that fails is retried, never fatal
                outcome = f"error: {type(e).__name__}: {e}"
            if outcome != "resync" and self._target is cp:
                self._tried.add(name)
            if outcome == "ok":
                sent = (cp.size, cp.root_hash)
                backoff = 0.0
                self.failures.pop(name, None)
            elif outcome == "resync":
                backoff = 0.0
            else:
                self.failures[name] = outcome
                backoff = min(_MAX_BACKOFF_S, max(0.1, backoff * 2))
                log.warning("witness %s: %s (retrying in %.1f s)", name, outcome, backoff)

    def _next_target(self) -> StoredCheckpoint:
        """The checkpoint to send: the current target until a quorum cosigned it or every witness tried it,
        then the latest one."""
        t = self._target
        if t is not None:
            got = self._collected.get(t.size)
            quorum = got is not None and got.checkpoint.root_hash == t.root_hash and len(got.lines) >= self.quorum
            if not quorum and len(self._tried) < len(self.witnesses):
                return t
        latest = self._latest()
        if t is None or (latest.size, latest.root_hash) != (t.size, t.root_hash):
            self._target, self._tried = latest, set()
        return self._target  # type: ignore[return-value]

    async def _add_checkpoint(self, w: WitnessEndpoint, cp: StoredCheckpoint) -> str:
        name = w.key.name
        old = self.cosigned_size[name]
        if old > cp.size:
            return f"witness holds size {old}, larger than the log's {cp.size}"
        with instruments.tracer.start_as_current_span(
            "witness.add_checkpoint", attributes={"witness": name, "tree_size": cp.size, "old_size": old}
        ) as span:
            proof = await asyncio.to_thread(self._prove, old, cp.size) if 0 < old < cp.size else []
            body = format_add_checkpoint(old, proof, cp.note)
            assert self._session is not None
            start = time.perf_counter()
            try:
                async with self._session.post(
                    w.url.rstrip("/") + "/add-checkpoint", data=body, headers={"Content-Type": "text/plain"}
                ) as resp:
                    text = await resp.read()
                    status = resp.status
                    ctype = resp.headers.get("Content-Type", "")
            except (aiohttp.ClientError, TimeoutError) as e:
                self._count(w, "unreachable", start, span)
                return f"unreachable: {type(e).__name__}: {e}"
            if status == 409 and ctype.split(";")[0].strip() == SIZE_CONTENT_TYPE:
                try:
                    size = int(text.decode("ascii").removesuffix("\n"))
                except ValueError:
                    self._count(w, "bad_response", start, span)
                    return "malformed 409 body"
                self.cosigned_size[name] = size
                self._count(w, "resync", start, span)
                return "resync"
            if status != 200:
                self._count(w, f"http_{status}", start, span)
                return f"HTTP {status}: {text[:200].decode('utf-8', 'replace').strip()}"
            try:
                line = self._check_cosignature(w, cp, text)
            except ConsentLedgerError as e:
                self._count(w, "bad_cosignature", start, span)
                return f"bad cosignature: {e}"
            self._count(w, "ok", start, span)
        self.cosigned_size[name] = cp.size
        self._record(name, cp, line)
        return "ok"

    def _count(self, w: WitnessEndpoint, outcome: str, start: float, span: trace.Span) -> None:
        attrs = {"witness": w.key.name, "outcome": outcome}
        witness_requests.add(1, attrs)
        witness_duration.record((time.perf_counter() - start) * 1000, {"witness": w.key.name})
        span.set_attribute("outcome", outcome)
        if outcome != "ok":
            span.set_status(trace.StatusCode.ERROR, outcome)

    @staticmethod
    def _check_cosignature(w: WitnessEndpoint, cp: StoredCheckpoint, text: bytes) -> str:
        """The witness's cosignature line among the response's lines, verified over the checkpoint body."""
        body = cp.note[: cp.note.rfind(b"\n\n") + 1].decode("utf-8")
        for raw in text.decode("utf-8").splitlines():
            sig = parse_signature_line(raw)
            if sig.name == w.key.name and sig.key_hash == w.key.key_hash:
                w.key.verify(body, sig)
                return raw + "\n"
        raise InvalidInput("the response holds no cosignature by the witness's key")

    def _record(self, name: str, cp: StoredCheckpoint, line: str) -> None:
        got = self._collected.get(cp.size)
        if got is None or got.checkpoint.root_hash != cp.root_hash:
            got = self._collected[cp.size] = _Collected(cp)
            while len(self._collected) > _KEEP_SIZES:
                self._collected.popitem(last=False)
        got.lines[name] = line
        if len(got.lines) >= self.quorum and (self.witnessed is None or self.witnessed[0] < cp.size):
            note = self.note_for(cp)
            self._set_witnessed((cp.size, note))
            if self._save is not None:
                save = self._save
                asyncio.get_running_loop().run_in_executor(None, save, cp.size, note)

