"""LedgerClient: a typed client that pins the log's key and verifies every answer it gets.

For every checkpoint it receives it checks the signature and consistency with the last checkpoint it verified
(kept in a state file); for every entry, inclusion of the exact leaf bytes and that the body hashes to the
leaf's commitment. A failed check raises VerificationError; a split view raises InconsistentCheckpoints with
both signed checkpoints and the proof, and writes them as one evidence file (core.splitview). With a witness policy
(core.witness_policy) every checkpoint must be, or extend, one that a quorum of pinned witnesses cosigned recently.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from consent_ledger.core import payloads
from consent_ledger.core.checkpoint import Checkpoint, open_checkpoint
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.errors import (
    InconsistentCheckpoints,
    InvalidInput,
    VerificationError,
)
from consent_ledger.core.merkle import verify_consistency, verify_inclusion
from consent_ledger.core.note import Verifier, parse_verifier_key
from consent_ledger.core.request_auth import HEADER as SIGNATURE_HEADER
from consent_ledger.core.request_auth import PARTY_HEADER
from consent_ledger.core.request_auth import sign_request
from consent_ledger.core.splitview import format_split_view
from consent_ledger.core.vrf import VerifiedMapKeys
from consent_ledger.core.witness_policy import WitnessedCheckpoint, WitnessPolicy, verify_witnessed_extension
from consent_ledger.v1 import log_pb2, log_pb2_grpc
from consent_ledger_client.errors import StateRollback
from consent_ledger_client.state import TrustState, load_state, save_state
from consent_ledger_client.verify import VerifiedEntry, verify_entry

_T = TypeVar("_T")


class WrongMapVrfKey(VerificationError):
    """A StateCommit names another map VRF key than the one pinned (or learned first), or none. Carries both."""

    def __init__(self, expected: bytes | None, named: bytes) -> None:
        super().__init__(
            f"the state commit names map VRF key {named.hex() or '(none)'}, expected "
            f"{expected.hex() if expected else '(any)'}"
        )
        self.expected = expected
        self.named = named


class UnrecordedErasure(VerificationError):
    """The server withholds a body as erased, but no Erasure entry signed by an operator key records that erasure
    of that entry. Carries the entry's index and, if the server named one, the entry it offered as the record."""

    def __init__(self, index: int, named: int | None, problem: str) -> None:
        super().__init__(f"entry {index}: the server says its body was erased, but {problem}")
        self.index = index
        self.named = named


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose signature verified and which is consistent with everything seen before."""

    checkpoint: Checkpoint
    note: bytes
    # With a witness policy: the witnessed checkpoint it was accepted on (itself, or one it extends).
    witnessed: WitnessedCheckpoint | None = None
    # The consistency proof from the witnessed checkpoint's size to this one's (empty when equal).
    witnessed_consistency: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class SubmitReceipt:
    """Proof that a submitted envelope is in the log: its verified entry and whether it was already there."""

    entry: VerifiedEntry
    duplicate: bool
    note: bytes

    @property
    def index(self) -> int:
        return self.entry.index


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class CallerIdentity(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Puts the caller's identity on every call made through a channel.

    ``party``: the organisation, operator or auditor name, in the development header (only a development server
    without TLS honours it; under mutual TLS the client certificate names the caller). ``key``: a patient's (or
    delegate's) key signing each request for the log ``origin``: origin, method, request hash, timestamp, fresh
    nonce (core/request_auth.py).
    """

    def __init__(self, *, party: str | None = None, key: Ed25519PrivateKey | None = None, origin: str = "") -> None:
        if key is not None and not origin:
            raise ValueError("a signing caller needs the log's origin (its requests are bound to one log)")
        self._party = party
        self._key = key
        self._origin = origin

    def _with_identity(self, details: grpc.ClientCallDetails, request: object) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or ())
        if self._party:
            metadata.append((PARTY_HEADER, self._party))
        if self._key is not None:
            method = details.method.decode() if isinstance(details.method, bytes) else details.method
            # A message, or its bytes already serialized (a channel without serializers).
            body = request if isinstance(request, bytes) else request.SerializeToString(deterministic=True)  # type: ignore[attr-defined]
            sig = sign_request(self._key, self._origin, method, body, timestamp_ms=time.time_ns() // 1_000_000)
            metadata.append((SIGNATURE_HEADER, sig.header_value()))
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials,
            getattr(details, "wait_for_ready", None), getattr(details, "compression", None),
        )  # fmt: skip

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with_identity(client_call_details, request), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._with_identity(client_call_details, request), request)


class LedgerClient:
    """A verifying client for one log. Thread-safe.

    Identity: an organisation, the operator or an auditor is identified by its TLS client certificate (on a
    development server without TLS, by ``party_id``, sent in a header); a patient or a patient's delegate by
    ``patient_key``, which signs every request.
    """

    def __init__(
        self,
        *,
        channel: grpc.Channel,
        verifier_key: str,
        state_path: Path | None = None,
        timeout: float = 30.0,
        party_id: str | None = None,
        patient_key: Ed25519PrivateKey | None = None,
        operator_keys: Iterable[bytes] = (),
        map_vrf_key: bytes | None = None,
        witness_policy: WitnessPolicy | None = None,
        evidence_dir: Path | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        """``witness_policy``: accept a checkpoint only when a quorum of pinned witnesses cosigned it (or a
        checkpoint it extends) recently enough, by ``clock_ms`` (docs/design.md section 2); None: today's trust in the
        log key and the state file alone. ``evidence_dir``: where a split view's evidence file is written (default:
        beside the state file; neither: none is written). ``operator_keys``: keys, besides the pinned log key, trusted to sign operator entries (erasures, party
        registrations, reviews). ``map_vrf_key``: the map VRF public key to pin beside the log key (docs/design.md section
        5); without it, the key named by the first StateCommit the client verifies (signed by the log key) is
        taken and held to from then on."""
        if map_vrf_key is not None and len(map_vrf_key) != 32:
            raise InvalidInput("a map VRF public key is 32 bytes")
        self._map_vrf_key = map_vrf_key
        self.map_vrf_key_pinned = map_vrf_key is not None
        # Verified map keys: (VRF public key, alpha, pi) -> key (a verify costs about 0.9 ms; keys never change).
        self.map_keys = VerifiedMapKeys()
        self.party_id = party_id
        self.patient_key = patient_key
        self._verifier: Verifier = parse_verifier_key(verifier_key)
        if party_id or patient_key is not None:
            identity = CallerIdentity(party=party_id, key=patient_key, origin=self._verifier.name)
            channel = grpc.intercept_channel(channel, identity)
        self._verifier_key = verifier_key
        self._channel = channel
        self._log = log_pb2_grpc.LogServiceStub(channel)
        self._timeout = timeout
        self._state_path = state_path
        self._lock = threading.Lock()
        self._last: tuple[Checkpoint, bytes] | None = None
        # The newest StateCommit verified for this log: (index, batch time ms). Only moves forward.
        self._state_commit: tuple[int, int] | None = None
        self._operator_keys = frozenset({self._verifier.public_key, *operator_keys})
        self._witness_policy = witness_policy
        self._clock_ms = clock_ms
        self._evidence_dir = evidence_dir if evidence_dir is not None else (state_path.parent if state_path else None)
        # The newest witnessed checkpoint accepted (with a policy); refreshed when its cosignatures grow stale.
        self._witnessed: WitnessedCheckpoint | None = None
        # Erasures already checked: erased entry index -> (index, payload) of the Erasure entry (both permanent).
        self._erasures: dict[int, tuple[int, payloads.ErasurePayload]] = {}
        if state_path is not None:
            saved = load_state(state_path)
            if saved is not None:
                if saved.verifier_key != verifier_key:
                    raise InvalidInput(f"state file {state_path} belongs to another log key")
                if saved.checkpoint_note:
                    self._last = (open_checkpoint(saved.checkpoint_note, self._verifier), saved.checkpoint_note)
                if saved.state_commit_index is not None and saved.state_commit_time_ms is not None:
                    self._state_commit = (saved.state_commit_index, saved.state_commit_time_ms)

    @classmethod
    def connect(
        cls,
        target: str,
        *,
        verifier_key: str,
        state_path: Path | None = None,
        root_certificates: bytes | None = None,
        client_cert: tuple[bytes, bytes] | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
        party_id: str | None = None,
        patient_key: Ed25519PrivateKey | None = None,
        operator_keys: Iterable[bytes] = (),
        map_vrf_key: bytes | None = None,
        witness_policy: WitnessPolicy | None = None,
        evidence_dir: Path | None = None,
    ) -> LedgerClient:
        """Open a channel to ``target``: TLS (mTLS with ``client_cert`` = (key, cert)), or plaintext if insecure."""
        if insecure:
            channel = grpc.insecure_channel(target)
        else:
            key, cert = client_cert if client_cert else (None, None)
            creds = grpc.ssl_channel_credentials(root_certificates, key, cert)
            channel = grpc.secure_channel(target, creds)
        return cls(
            channel=channel,
            verifier_key=verifier_key,
            state_path=state_path,
            timeout=timeout,
            party_id=party_id,
            patient_key=patient_key,
            operator_keys=operator_keys,
            map_vrf_key=map_vrf_key,
            witness_policy=witness_policy,
            evidence_dir=evidence_dir,
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def origin(self) -> str:
        return self._verifier.name

    @property
    def log_public_key(self) -> bytes:
        """The pinned log key (it also signs receipts and the ledger's own entries)."""
        return self._verifier.public_key

    @property
    def operator_keys(self) -> frozenset[bytes]:
        """The keys trusted to sign operator entries: the log key and any operator keys given."""
        return self._operator_keys

    @property
    def verifier(self) -> Verifier:
        """The pinned log verifier key."""
        return self._verifier

    @property
    def witness_policy(self) -> WitnessPolicy | None:
        return self._witness_policy

    def require_witness_policy(self, policy: WitnessPolicy) -> None:
        """Use ``policy`` from now on (a ConsentClient's option); refuses a second, different one."""
        with self._lock:
            if self._witness_policy is not None and self._witness_policy != policy:
                raise InvalidInput("this client already holds another witness policy")
            self._witness_policy = policy

    @property
    def map_vrf_public_key(self) -> bytes | None:
        """The map VRF public key: pinned, or learned from a verified StateCommit; None before either."""
        return self._map_vrf_key

    def accept_map_vrf_key(self, named: bytes) -> bytes:
        """The map VRF key a verified StateCommit (signed by the log key) names: it must be the pinned one, or,
        with none pinned, the one learned first. Returns it. Raises WrongMapVrfKey."""
        with self._lock:
            if not named:
                raise WrongMapVrfKey(self._map_vrf_key, named)
            if self._map_vrf_key is None:
                self._map_vrf_key = bytes(named)
            elif self._map_vrf_key != named:
                raise WrongMapVrfKey(self._map_vrf_key, named)
            return self._map_vrf_key

    def trust_operator_keys(self, keys: Iterable[bytes]) -> None:
        """Also trust ``keys`` as operator keys."""
        with self._lock:
            self._operator_keys = self._operator_keys | frozenset(keys)

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        """The latest checkpoint this client has verified (persisted across runs with a state file)."""
        return self._last[0] if self._last else None

    # -- checkpoints ----------------------------------------------------------------------------------------

    def accept_checkpoint(self, note: bytes) -> Checkpoint:
        """Verify a signed checkpoint and its consistency with the last one seen; remember it if newer.

        With a witness policy the client first holds a witnessed checkpoint whose cosignatures are fresh (fetching
        the log's, GetCheckpoint, when it has none or it grew stale), so ``note`` is accepted only as one history
        with a checkpoint the witnesses saw recently.

        Raises VerificationError for a bad signature or malformed checkpoint, InconsistentCheckpoints for a
        split view (the error carries both signed notes and the proof; its evidence file is written, see
        ``evidence_dir``), and the witness policy's typed errors (core.witness_policy).
        """
        if self._witness_policy is not None:
            self._fresh_witnessed()
        return self._accept(note)

    def _accept(self, note: bytes) -> Checkpoint:
        try:
            return self._accept_unwitnessed(note)
        except InconsistentCheckpoints as e:
            self._write_evidence(e)
            raise

    def _accept_unwitnessed(self, note: bytes) -> Checkpoint:
        with self._lock:
            last = self._last
        if last is not None and bytes(note) == last[1]:
            return last[0]  # the very note already verified and remembered
        try:
            cp = open_checkpoint(note, self._verifier)
        except InvalidInput as e:
            raise VerificationError(f"malformed checkpoint: {e}") from e
        if last is None:
            self._remember(cp, note)
            return cp
        last_cp, last_note = last
        if cp.size == last_cp.size:
            if cp.root_hash != last_cp.root_hash:
                raise InconsistentCheckpoints(last_note, note, [])
            return cp
        small, small_note, large, large_note = (
            (last_cp, last_note, cp, note) if cp.size > last_cp.size else (cp, note, last_cp, last_note)
        )
        req = log_pb2.GetConsistencyProofRequest(first=small.size, second=large.size)
        proof = list(self.call(self._log.GetConsistencyProof, req).hashes)
        try:
            verify_consistency(small.size, large.size, small.root_hash, large.root_hash, proof)
        except VerificationError:
            raise InconsistentCheckpoints(small_note, large_note, proof) from None
        if cp.size > last_cp.size:
            self._remember(cp, note)
        return cp

    def _now_s(self) -> int:
        return self._clock_ms() // 1000

    def _fresh_witnessed(self) -> WitnessedCheckpoint:
        """The newest witnessed checkpoint held, if a quorum of its cosignatures is still within the policy's age;
        else the log's current one, fetched and verified."""
        policy = self._witness_policy
        assert policy is not None
        with self._lock:
            held = self._witnessed
        now = self._now_s()
        if held is not None and sum(1 for _, t in held.cosignatures if now - t <= policy.max_age_s) >= policy.quorum:
            return held
        witnessed = self.checkpoint().witnessed
        assert witnessed is not None
        return witnessed

    def accept_witnessed(
        self, note: bytes, witnessed_note: bytes, consistency: Iterable[bytes]
    ) -> tuple[Checkpoint, WitnessedCheckpoint]:
        """Accept the checkpoint ``note`` under the witness policy: the witnessed checkpoint ``witnessed_note``
        (empty: ``note`` itself must carry the cosignatures) verifies under the policy, ``consistency`` proves
        ``note`` extends it (empty when their sizes are equal), and both are consistent with what this client saw
        before. Requires a witness policy. Raises the policy's typed errors, VerificationError, and
        InconsistentCheckpoints (with its evidence file) when the two notes are a split view."""
        policy = self._witness_policy
        if policy is None:
            raise InvalidInput("accept_witnessed needs a witness policy")
        note, witnessed_note, proof = bytes(note), bytes(witnessed_note), [bytes(h) for h in consistency]
        try:
            wc = policy.verify(witnessed_note or note, self._verifier, self._now_s())
            cp = open_checkpoint(note, self._verifier)
        except InvalidInput as e:
            raise VerificationError(f"malformed checkpoint: {e}") from e
        if witnessed_note:
            if cp.size < wc.checkpoint.size:
                raise VerificationError(
                    f"the checkpoint (size {cp.size}) is older than the witnessed checkpoint (size {wc.checkpoint.size})"
                )
            try:
                verify_witnessed_extension(wc.checkpoint, cp, proof)
            except VerificationError:
                split = InconsistentCheckpoints(witnessed_note, note, proof)
                self._write_evidence(split)
                raise split from None
        elif proof:
            raise VerificationError("a consistency proof came without a witnessed checkpoint")
        self._accept(wc.note)
        self._accept(note)
        with self._lock:
            self._witnessed = wc  # verified fresh just now: the anchor for answers without cosignatures
        return cp, wc

    def witness_proof(self, cp: Checkpoint) -> tuple[WitnessedCheckpoint, list[bytes]]:
        """A fresh witnessed checkpoint and the consistency proof between it and ``cp`` (a verified checkpoint of
        this log; the proof goes from the smaller size to the larger, empty when equal), checked. Requires a
        witness policy. For bundles: ``cp``'s history is the one the witnesses saw."""
        if self._witness_policy is None:
            raise InvalidInput("witness_proof needs a witness policy")
        wc = self._fresh_witnessed()
        w = wc.checkpoint
        proof: list[bytes] = []
        if w.size != cp.size and min(w.size, cp.size) > 0:
            req = log_pb2.GetConsistencyProofRequest(first=min(w.size, cp.size), second=max(w.size, cp.size))
            proof = list(self.call(self._log.GetConsistencyProof, req).hashes)
        verify_witnessed_extension(w, cp, proof)
        return wc, proof

    def _write_evidence(self, e: InconsistentCheckpoints) -> None:
        """Write the split view's self-contained evidence file (core.splitview) to the evidence directory, and name
        it on the error (``e.evidence_path``; None when there is no directory or it cannot be written)."""
        if self._evidence_dir is None:
            return
        try:
            data = format_split_view(e.smaller, e.larger, e.proof)
            small, large = (open_checkpoint(n, self._verifier).size for n in (e.smaller, e.larger))
        except (InvalidInput, VerificationError):
            return
        origin = re.sub(r"[^A-Za-z0-9._-]+", "_", self._verifier.name).strip("_") or "log"
        name = f"split-view-{origin}-{small}-{large}-{hashlib.sha256(data).hexdigest()[:12]}.json"
        path = Path(self._evidence_dir) / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError:
            return
        e.evidence_path = str(path)

    def _remember(self, cp: Checkpoint, note: bytes) -> None:
        with self._lock:
            if self._last is not None and self._last[0].size >= cp.size:
                return
            self._last = (cp, note)
            self._save_locked()

    def _save_locked(self) -> None:
        if self._state_path is None:
            return
        note = self._last[1] if self._last else None
        index, time_ms = self._state_commit if self._state_commit else (None, None)
        save_state(self._state_path, TrustState(self._verifier_key, note, index, time_ms))

    # -- consent state: no rollback ---------------------------------------------------------------------------

    @property
    def newest_state_commit(self) -> tuple[int, int] | None:
        """The newest StateCommit this client verified for the log, (index, batch time ms), kept in the state file."""
        with self._lock:
            return self._state_commit

    def check_no_rollback(self, index: int, batch_time_ms: int | None = None) -> None:
        """Refuse an answer resting on the StateCommit at ``index`` (dated ``batch_time_ms``, if known) when it is
        older than the newest one verified. Raises StateRollback."""
        with self._lock:
            newest = self._state_commit
        if newest is not None and (index < newest[0] or (batch_time_ms is not None and batch_time_ms < newest[1])):
            raise StateRollback(index, batch_time_ms, *newest)

    def accept_state_commit(self, index: int, batch_time_ms: int) -> None:
        """Remember a verified StateCommit if it is newer than the one remembered (and save the state file); refuse
        an older one (StateRollback). The check and the update are one step, so concurrent answers cannot move
        the mark back."""
        with self._lock:
            newest = self._state_commit
            if newest is not None and (index < newest[0] or batch_time_ms < newest[1]):
                raise StateRollback(index, batch_time_ms, *newest)
            if newest is None or index > newest[0]:
                self._state_commit = (index, batch_time_ms)
                self._save_locked()

    def checkpoint(self) -> VerifiedCheckpoint:
        """The log's latest checkpoint, verified (with a witness policy: on the witnessed checkpoint served with it,
        or its own cosignatures; see accept_witnessed)."""
        resp = self.call(self._log.GetCheckpoint, log_pb2.GetCheckpointRequest())
        note = bytes(resp.checkpoint.note)
        if self._witness_policy is None:
            return VerifiedCheckpoint(self.accept_checkpoint(note), note)
        w_note = bytes(resp.witnessed_checkpoint.note) if resp.HasField("witnessed_checkpoint") else b""
        proof = tuple(bytes(h) for h in resp.witnessed_consistency)
        cp, wc = self.accept_witnessed(note, w_note, proof)
        return VerifiedCheckpoint(cp, note, wc, proof)

    # -- entries --------------------------------------------------------------------------------------------

    def submit(self, envelope: bytes) -> SubmitReceipt:
        """Append a signed envelope; verify that the leaf committing to it is in the returned checkpoint."""
        resp = self.call(self._log.Submit, log_pb2.SubmitRequest(envelope=envelope))
        cp = self.accept_checkpoint(resp.checkpoint.note)
        entry = verify_entry(resp.index, resp.leaf, envelope, resp.inclusion_proof, cp)
        if entry.leaf.envelope_sha256 != hashlib.sha256(envelope).digest():
            raise VerificationError("the returned leaf does not commit to the submitted envelope")
        return SubmitReceipt(entry, resp.duplicate, resp.checkpoint.note)

    def get_entry(self, index: int) -> VerifiedEntry:
        """Entry ``index`` with its body, proven against a verified checkpoint."""
        return self.get_entry_with_note(index)[0]

    def get_entry_with_note(self, index: int) -> tuple[VerifiedEntry, bytes]:
        """Entry ``index`` verified, and the exact signed checkpoint note it is proven in (for bundles). An erased
        body is accepted only with its Erasure entry (see verify_erasure)."""
        entry, note, erased_by = self._get_entry(index)
        return self.verify_erasure(entry, erased_by), note

    def _get_entry(self, index: int) -> tuple[VerifiedEntry, bytes, int]:
        resp = self.call(self._log.GetEntry, log_pb2.GetEntryRequest(index=index))
        if resp.entry.index != index:
            raise VerificationError(f"asked for entry {index}, got entry {resp.entry.index}")
        cp = self.accept_checkpoint(resp.checkpoint.note)
        entry = verify_entry(index, resp.entry.leaf, body_of(resp.entry), resp.inclusion_proof, cp)
        return entry, bytes(resp.checkpoint.note), resp.entry.erased_by_index

    def verify_erasure(self, entry: VerifiedEntry, erased_by: int) -> VerifiedEntry:
        """Accept an entry whose body the server withholds as erased only if the entry the server names as the
        record, ``erased_by``, is a proven Erasure entry signed by an operator key that names this entry. Returns
        the entry with ``erased_by`` set (an entry with its body is returned as it is).

        What this proves: the erasure is on the record, in the log, signed by the operator, for everyone (witnesses,
        auditors) to see. What it cannot prove: that the body is really gone from the server's storage, nor what
        the body held. Raises UnrecordedErasure (a VerificationError)."""
        if entry.envelope is not None:
            return entry
        with self._lock:
            known = self._erasures.get(entry.index)
        if known is None or known[0] != erased_by:
            known = (erased_by, self._check_erasure_record(entry.index, erased_by))
            with self._lock:
                self._erasures[entry.index] = known
        return dataclasses.replace(entry, erased_by=erased_by, erasure=known[1])

    def _check_erasure_record(self, index: int, erased_by: int) -> payloads.ErasurePayload:
        if erased_by <= index:
            raise UnrecordedErasure(index, None, "it names no later Erasure entry as the record")
        try:
            record, _, _ = self._get_entry(erased_by)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
                raise UnrecordedErasure(index, erased_by, f"entry {erased_by}, named as the record, does not exist") from e
            raise
        env = record.envelope
        if env is None or env.payload_type != payloads.ERASURE:
            raise UnrecordedErasure(index, erased_by, f"entry {erased_by}, named as the record, is not an Erasure entry")
        try:
            p = payloads.parse_payload(env.payload_type, env.payload)
        except InvalidInput as e:
            raise UnrecordedErasure(index, erased_by, f"the Erasure entry {erased_by} is malformed: {e}") from e
        assert isinstance(p, payloads.ErasurePayload)
        if p.index != index:
            raise UnrecordedErasure(index, erased_by, f"the Erasure entry {erased_by} erases entry {p.index}")
        if not self._operator_keys.intersection(env.signers):
            raise UnrecordedErasure(index, erased_by, f"the Erasure entry {erased_by} is not signed by an operator key")
        return p

    def get_entries(self, start: int, end: int) -> list[VerifiedEntry]:
        """Entries start <= index < end (the server may return fewer, never other ones), each proven."""
        return self.get_entries_with_map_proofs(start, end)[0]

    def get_entries_with_map_proofs(self, start: int, end: int) -> tuple[list[VerifiedEntry], list[bytes]]:
        """get_entries, and for each entry the VRF proof of its map key the server gave (empty when none; not
        verified here: the caller knows which alpha to expect)."""
        resp = self.call(self._log.GetEntries, log_pb2.GetEntriesRequest(start=start, end=end))
        cp = self.accept_checkpoint(resp.checkpoint.note)
        if len(resp.proofs) != len(resp.entries):
            raise VerificationError("the server returned a different number of proofs and entries")
        out = []
        for i, (entry, proof) in enumerate(zip(resp.entries, resp.proofs)):
            if entry.index != start + i:
                raise VerificationError(f"expected entry {start + i}, got entry {entry.index}")
            verified = verify_entry(entry.index, entry.leaf, body_of(entry), proof.hashes, cp)
            out.append(self.verify_erasure(verified, entry.erased_by_index))
        if not out and start < min(end, cp.size):
            raise VerificationError(f"the server returned no entries for [{start}, {end}) of a log of {cp.size}")
        pis = list(resp.map_vrf_proofs)
        return out, [bytes(pis[i]) if i < len(pis) else b"" for i in range(len(out))]

    def prove_included(self, leaf_hash: bytes) -> tuple[int, Checkpoint]:
        """Find a leaf by its hash and verify its inclusion in the latest verified checkpoint.

        Returns (index, checkpoint). Raises VerificationError if the proof does not hold.
        """
        cp = self.checkpoint().checkpoint
        req = log_pb2.GetInclusionProofRequest(leaf_hash=leaf_hash, tree_size=cp.size)
        resp = self.call(self._log.GetInclusionProof, req)
        if resp.tree_size != cp.size:
            raise VerificationError(f"asked for a proof at size {cp.size}, got one at size {resp.tree_size}")
        verify_inclusion(resp.index, cp.size, leaf_hash, list(resp.hashes), cp.root_hash)
        return resp.index, cp

    def call(self, method: Callable[..., _T], request: object) -> _T:
        """Invoke a unary stub method with this client's timeout (its channel carries the identity)."""
        return method(request, timeout=self._timeout)

    def stream(self, method: Callable[..., _T], request: object, timeout: float | None = None) -> _T:
        """Invoke a server-streaming stub method (its channel carries the identity)."""
        return method(request, timeout=timeout)



def body_of(entry: log_pb2.Entry) -> bytes | None:
    """The entry's body as the server gives it, or None when the server says it was erased."""
    return None if entry.body_erased else entry.envelope

