"""A tampering proxy: forwards every unary RPC to the real server and lets a test edit responses.

The proxy passes the caller's identity through unchanged: the caller's metadata (the development party header,
a patient's request signature) is forwarded as it came, and the request bytes are forwarded untouched, so a
request signature still holds upstream. Under the suite's mTLS transport the proxy serves TLS itself, requires a
client certificate from the test CA, and calls upstream presenting a certificate with the SAME common name as
the caller's (the proxy holds the test CA, so it can stand in for any test identity): the server sees the
caller it would have seen without the proxy in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from consent_ledger.core.decision import LedgerEntry, consent_states, decide
from consent_ledger.core.envelope import parse_envelope
from consent_ledger.core.leaf import parse_leaf
from consent_ledger.core.receipt import decision_from_pb, decision_to_pb, receipt_body, sign_receipt
from consent_ledger.v1 import access_pb2, consent_pb2, log_pb2  # noqa: F401 - registers the descriptors

from .server_support import APP_CN, MTLS, client_credentials, session_ca

Mutation = Callable[[str, Message], None]


def _response_class(method: str) -> type[Message]:
    """The response message class of "/package.Service/Method"."""
    _, service, name = method.split("/")
    desc = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    return message_factory.GetMessageClass(desc.output_type)


class TamperProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mutate: Mutation = lambda method, resp: None
        # Rewrites the request bytes sent upstream (by method name); the identity headers go through unchanged.
        self.rewrite_request: Callable[[str, bytes], bytes] = lambda method, request: request
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: self.loop.run_until_complete(self._serve()), daemon=True)

    @contextlib.contextmanager
    def tampering(self, method: str, mutation: Callable[[Message], None]) -> Iterator[None]:
        """Apply ``mutation`` to every response of ``method`` (e.g. "CheckAccess") inside the block."""
        self.mutate = lambda m, resp: mutation(resp) if m == method else None
        try:
            yield
        finally:
            self.mutate = lambda m, resp: None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _upstream_target(self) -> str:
        host, port = self.upstream.rsplit(":", 1)
        return f"localhost:{port}" if MTLS and host in ("127.0.0.1", "localhost") else self.upstream

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        # One upstream channel per caller identity: plaintext (the identity travels in the metadata), or under
        # mTLS one per client-certificate common name, presenting a certificate with that name.
        channels: dict[str, grpc.aio.Channel] = {}
        target = self._upstream_target()

        def upstream_channel(context: grpc.aio.ServicerContext) -> grpc.aio.Channel:
            if not MTLS:
                cn = ""
            else:
                names = context.auth_context().get("x509_common_name") or []
                cn = names[0].decode() if names else APP_CN
            if cn not in channels:
                channels[cn] = (
                    grpc.aio.secure_channel(target, client_credentials(cn)) if MTLS else grpc.aio.insecure_channel(target)
                )
            return channels[cn]

        proxy = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):  # type: ignore[no-untyped-def]
                method = details.method
                cls = _response_class(method)

                async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                    # The caller's own headers (party header, request signature), unchanged.
                    md = tuple((k, v) for k, v in context.invocation_metadata() or () if k.startswith("x-"))
                    upstream = upstream_channel(context).unary_unary(method)
                    request = proxy.rewrite_request(method.rsplit("/", 1)[1], request)
                    try:
                        raw = await upstream(request, metadata=md)
                    except grpc.aio.AioRpcError as e:
                        await context.abort(e.code(), e.details() or "")
                    resp = cls.FromString(raw)
                    proxy.mutate(method.rsplit("/", 1)[1], resp)
                    return resp.SerializeToString()

                return grpc.unary_unary_rpc_method_handler(call)

        server = grpc.aio.server()
        server.add_generic_rpc_handlers((Handler(),))
        if MTLS:
            ca = session_ca()
            creds = grpc.ssl_server_credentials(
                [((ca.dir / "localhost.key").read_bytes(), (ca.dir / "localhost.pem").read_bytes())],
                root_certificates=ca.ca_file.read_bytes(),
                require_client_auth=True,
            )
            self.port = server.add_secure_port("127.0.0.1:0", creds)
        else:
            self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)
        for channel in channels.values():
            await channel.close()

    def __enter__(self) -> TamperProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


# -- a lying operator: it holds the log key, so it can sign whatever it likes --------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def redecide(
    resp: access_pb2.CheckAccessResponse, time_ms: int, key, checkpoint_note: bytes | None = None, decision_ttl_ms: int = 0
) -> None:
    """Make the answer a decision for ``time_ms`` from its own evidence (the one decision function, as an honest
    server would for that time; with ``decision_ttl_ms``, under a policy with that ttl), bound to
    ``checkpoint_note`` (default: the response's), and re-sign the receipt with the log key ``key``."""
    if checkpoint_note is not None:
        resp.checkpoint.note = checkpoint_note
    entries = [_ledger_entry(e) for e in resp.evidence]
    old = decision_from_pb(resp.decision)
    policy = dataclasses.replace(old.policy, decision_ttl_ms=decision_ttl_ms) if decision_ttl_ms else old.policy
    d = decide(entries, dataclasses.replace(old.request, time_ms=time_ms), policy)
    resp.decision.CopyFrom(decision_to_pb(d))
    resp.receipt = sign_receipt(receipt_body(d, resp.checkpoint.note), key)


def restate(resp: consent_pb2.ListConsentsResponse, time_ms: int) -> None:
    """Make a consent listing one for ``time_ms``: the states its own entries give at that time."""
    entries = [_ledger_entry(e) for e in (*resp.entries, *resp.related)]
    states = consent_states(entries, time_ms)
    resp.time_ms = time_ms
    for s in resp.states:
        s.state = states[s.consent_id]


def _ledger_entry(e: access_pb2.EvidenceEntry) -> LedgerEntry:
    env = parse_envelope(e.entry.envelope)
    return LedgerEntry.from_payload(
        index=e.entry.index, integrated_time_ms=parse_leaf(e.entry.leaf).integrated_time_ms,
        payload_type=env.payload_type, payload=env.payload, signers=env.signers,
    )  # fmt: skip


def shift_clock(server, offset_ms: int) -> None:
    """The operator sets its server's clock ``offset_ms`` ahead: entries, StateCommits and decisions are dated by
    it (and signed with the log key as usual)."""
    clock = lambda: now_ms() + offset_ms  # noqa: E731
    server.service.ledger.sequencer._clock_ms = clock
    server.service.consents._clock_ms = clock


# -- witnesses: the test plays honest witnesses (a dishonest operator does not hold their keys) ------------------


class TestWitnesses:
    """Witness keys for tests (names w0, w1, ...), their verifier keys, and cosigning as honest witnesses would."""

    __test__ = False  # not a test class

    def __init__(self, n: int = 3, seed: int = 0x57) -> None:
        from consent_ledger.core.crypto import Ed25519PrivateKey
        from consent_ledger.core.witness_policy import WitnessKey

        self.keys = {f"w{i}": Ed25519PrivateKey.from_seed(bytes([seed + i]) * 32) for i in range(n)}
        self.witness_keys = {name: WitnessKey(name, k.public_key) for name, k in self.keys.items()}

    def vkeys(self, names: tuple[str, ...] | None = None) -> list[str]:
        from consent_ledger.core.witness_policy import format_witness_key

        return [format_witness_key(self.witness_keys[n]) for n in (names or tuple(self.keys))]

    def policy(self, quorum: int = 2, max_age_s: int = 600, names: tuple[str, ...] | None = None):
        from consent_ledger.core.witness_policy import WitnessPolicy

        return WitnessPolicy.from_keys(self.vkeys(names), quorum=quorum, max_age_s=max_age_s)

    def cosign(self, note: bytes, names: tuple[str, ...] | None = None, time_s: int | None = None) -> bytes:
        """``note`` with a cosignature line by each of ``names`` (default: all) appended, dated ``time_s`` (now)."""
        from consent_ledger.core.note import cosign_checkpoint

        body = note[: note.index(b"\n\n") + 1].decode("utf-8")
        t = int(time.time()) if time_s is None else time_s
        lines = "".join(cosign_checkpoint(body, n, self.keys[n], t) for n in (names or tuple(self.keys)))
        return bytes(note) + lines.encode("utf-8")


def witnessing(
    proxy: TamperProxy,
    witnesses: TestWitnesses,
    *,
    names: tuple[str, ...] | None = None,
    time_s: Callable[[], int] | None = None,
    then: Callable[[str, Message], None] | None = None,
) -> None:
    """Make ``proxy`` serve what a ledger with witnesses serves: GetCheckpoint and CheckAccess answers carry their
    own checkpoint, cosigned by ``names`` (at ``time_s()``), as the witnessed checkpoint (empty consistency proof).
    ``then`` may alter the answer afterwards (the lie under test)."""

    def mutate(method: str, resp: Message) -> None:
        if method in ("GetCheckpoint", "CheckAccess"):
            note = bytes(resp.checkpoint.note)  # type: ignore[attr-defined]
            resp.witnessed_checkpoint.note = witnesses.cosign(  # type: ignore[attr-defined]
                note, names, time_s() if time_s else None
            )
            del resp.witnessed_consistency[:]  # type: ignore[attr-defined]
        if then is not None:
            then(method, resp)

    proxy.mutate = mutate
