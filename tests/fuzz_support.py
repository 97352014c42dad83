"""Fuzz targets for the parsers and verifiers, shared by tests/test_parser_fuzz.py (hypothesis) and
scripts/fuzz_atheris.py (coverage-guided, atheris).

A target is a function of one byte string plus valid seed inputs to mutate. Every target calls one parser or
verifier and holds it to three rules:

- it returns a value or raises only the error types its docstring documents (each target lists them); any
  other exception (IndexError, UnicodeError, RecursionError, ...) escapes the target and is a failure;
- a value that parses re-encodes to exactly the input (one encoding per value);
- whatever verifies was really signed or proven: a verified envelope carries only (signer, PAE) pairs that were
  signed here, an opened note only texts the log signed, an inclusion or consistency proof against a known root
  only the true leaves and roots, a map proof only the true value, a receipt only a body the ledger signed.
  So a mutated signed input never verifies as something it is not.

The world the seeds come from is fixed (fixed keys, times and nonces), so corpus files are reproducible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consent_ledger.core import payloads as P
from consent_ledger.core import smt
from consent_ledger.core.checkpoint import (
    Checkpoint,
    format_checkpoint,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.decision import AccessRequest, LedgerEntry, Policy, decide
from consent_ledger.core.envelope import (
    pae,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.leaf import encode_leaf, parse_leaf
from consent_ledger.core.merkle import verify_consistency, verify_inclusion
from consent_ledger.core.note import (
    Signer,
    cosign_checkpoint,
    format_signer_key,
    format_verifier_key,
    open_note,
    parse_signature_line,
    parse_signer_key,
    parse_verifier_key,
    verify_cosignature,
)
from consent_ledger.core.receipt import (
    decode_decision,
    encode_decision,
    open_receipt,
    receipt_body,
    sign_receipt,
)
from consent_ledger.core.request_auth import check_request_signature as check_request
from consent_ledger.core.request_auth import parse_header, sign_request, signed_message
from consent_ledger.core.rfc6962 import hash_leaf
from consent_ledger.v1 import envelope_pb2
from consent_ledger_client.bundle import (
    export_consent_bundle,
    export_decision_receipt,
    verify_consent_bundle,
    verify_decision_receipt,
)
from consent_ledger_client.verify import verify_entry

from .merkle_reference import consistency as ref_consistency
from .merkle_reference import mth
from .merkle_reference import path as ref_path

__all__ = ["TARGETS", "Target", "decode_items", "encode_items"]

T = 1_800_000_000_000


def at_t() -> int:
    """The verifier's clock for offline checks of the seeds: their time, T (decisions are made for now)."""
    return T
LOG_NAME = "ledger.test/log"
LOG = Signer(LOG_NAME, Ed25519PrivateKey.from_seed(bytes(range(32))))
LOG_VERIFIER = LOG.verifier()
LOG_VERIFIER_KEY = format_verifier_key(LOG.name, LOG.public_key)
WITNESS_NAME = "witness.test/w1"
WITNESS = Ed25519PrivateKey.from_seed(b"\x22" * 32)
PATIENT = Ed25519PrivateKey.from_seed(b"\x11" * 32)
DELEGATE = Ed25519PrivateKey.from_seed(b"\x33" * 32)
ORG = Ed25519PrivateKey.from_seed(b"\x44" * 32)


def _nonce(i: int) -> bytes:
    return bytes([i]) * P.NONCE_SIZE


# --- the world: payloads, envelopes, a log, checkpoints, a map, a receipt, bundles ----------------------------

_grant = P.build_grant(
    patient=PATIENT.public_key, grantee="org:insurer-1", actions=["access", "use"], purposes=["HPAYMT"],
    data_classes=["laboratory-results", "clinical-notes"], sensitivity_labels=["MH"],
    data_period=P.Period(T - 10**9, T), validity=P.Period(T - 10, T + 10**9),
    legal_basis=P.LegalBasis("PIPL-29", "separate consent"), issued_at_ms=T - 20, nonce=_nonce(1),
)
PAYLOAD_SEEDS: dict[str, tuple[bytes, ...]] = {
    P.CONSENT_GRANT: (
        _grant,
        P.build_grant(
            patient=PATIENT.public_key, grantee="role:hospital", decision=P.DENY, actions=["disclose"],
            purposes=["TREAT"], data_classes=["*"], supersedes=P.consent_id(_grant), issued_at_ms=T, nonce=_nonce(2),
        ),
    ),
    P.CONSENT_REVOCATION: (
        P.build_revocation(
            patient=PATIENT.public_key, consent_id=P.consent_id(_grant), reason="changed my mind",
            issued_at_ms=T + 5, nonce=_nonce(3),
        ),
    ),
    P.PARTY_REGISTRATION: (
        P.build_party_registration(
            party_id="insurer-1", roles=["insurer", "research"], public_keys=[ORG.public_key],
            display_name="Insurer One", issued_at_ms=T - 100, nonce=_nonce(4),
        ),
        P.build_party_registration(
            party_id="hospital-1", roles=["hospital"], public_keys=[ORG.public_key], display_name="Hospital One",
            capabilities=["attest-guardianship"], issued_at_ms=T - 100, nonce=_nonce(13),
        ),
    ),
    P.ACCESS_EVENT: (
        P.build_access_event(
            patient=PATIENT.public_key, party_id="insurer-1", action="access", purpose="ETREAT",
            data=[P.DataItem("laboratory-results"), P.DataItem("clinical-notes", ("MH", "PSY"))],
            decision=P.PARTIAL, consent_ids=[P.consent_id(_grant)], break_glass=True, break_glass_reason="ED",
            accessed_at_ms=T + 1, receipt_sha256=bytes(range(32)), issued_at_ms=T + 2, nonce=_nonce(5),
        ),
    ),
    P.DELEGATION: (
        P.build_delegation(
            patient=PATIENT.public_key, delegate=DELEGATE.public_key, relationship="guardian", scope=["grant", "revoke"],
            validity=P.Period(T, T + 10**10), majority_date_ms=T + 10**11, evidence_reference="court order 7",
            issued_at_ms=T, nonce=_nonce(6),
        ),
        P.build_delegation(
            patient=PATIENT.public_key, delegate=DELEGATE.public_key, relationship="guardian", scope=["*"],
            majority_date_ms=T + 10**11, evidence_reference="birth register 12", attested_by="insurer-1",
            issued_at_ms=T, nonce=_nonce(10),
        ),
    ),
    P.ERASURE: (
        P.build_erasure(index=3, reason="entered in error", issued_at_ms=T + 9, nonce=_nonce(7)),
        P.build_erasure(
            index=0, reason="retention period over", consent_id=P.consent_id(_grant), map_key=b"\x07" * 32,
            ends=P.consent_id(_grant), issued_at_ms=T + 9, nonce=_nonce(11),
        ),
    ),
    P.BREAK_GLASS_REVIEW: (
        P.build_break_glass_review(event_index=4, outcome="justified", notes="overdose", issued_at_ms=T + 12, nonce=_nonce(12)),
    ),
    P.STATE_COMMIT: (P.build_state_commit(map_root=b"\x5a" * 32, batch_time_ms=T + 3, issued_at_ms=T + 3, nonce=_nonce(8)),),
}
PAYLOAD_TYPES = tuple(PAYLOAD_SEEDS)

_SIGNERS = {
    P.CONSENT_GRANT: [PATIENT], P.CONSENT_REVOCATION: [PATIENT], P.PARTY_REGISTRATION: [LOG.private_key],
    P.ACCESS_EVENT: [ORG], P.DELEGATION: [PATIENT], P.ERASURE: [LOG.private_key], P.STATE_COMMIT: [LOG.private_key],
    P.BREAK_GLASS_REVIEW: [LOG.private_key],
}
ENVELOPES: tuple[bytes, ...] = (
    *(sign_envelope(t, p, _SIGNERS[t]) for t, ps in PAYLOAD_SEEDS.items() for p in ps),
    sign_envelope(P.CONSENT_GRANT, _grant, [PATIENT, DELEGATE]),
)
# Every (public key, PAE message) that was signed: nothing else may ever verify.
SIGNED_STATEMENTS = frozenset(
    (pk, pae(e.payload_type, e.payload)) for e in map(parse_envelope, ENVELOPES) for pk in e.signers
)

LEAVES: tuple[bytes, ...] = tuple(
    encode_leaf(T + 100 + i, parse_envelope(e).payload_type, hashlib.sha256(e).digest()) for i, e in enumerate(ENVELOPES)
) + tuple(encode_leaf(T + 200 + i, P.STATE_COMMIT, bytes([i]) * 32) for i in range(2))
TREE_SIZE = len(LEAVES)  # 11: not a power of two
LEAF_HASHES = tuple(hash_leaf(x) for x in LEAVES)
ROOTS = tuple(mth(list(LEAVES[:n])) for n in range(TREE_SIZE + 1))  # ROOTS[n]: the root of the first n leaves

CHECKPOINTS = tuple(Checkpoint(LOG_NAME, n, ROOTS[n]) for n in (0, 1, 7, TREE_SIZE)) + (
    Checkpoint(LOG_NAME, TREE_SIZE, ROOTS[TREE_SIZE], ("state 5a5a", "x-ext ok")),
)
COSIGN_TIME = 1_800_000_000
NOTES: tuple[bytes, ...] = tuple(
    sign_checkpoint(cp, LOG)
    + cosign_checkpoint(format_checkpoint(cp), WITNESS_NAME, WITNESS, COSIGN_TIME + i).encode()
    for i, cp in enumerate(CHECKPOINTS)
) + (sign_checkpoint(CHECKPOINTS[-2], LOG),)
LOG_SIGNED_TEXTS = frozenset(format_checkpoint(cp) for cp in CHECKPOINTS)
COSIGNED = frozenset((format_checkpoint(cp), COSIGN_TIME + i) for i, cp in enumerate(CHECKPOINTS))

# The consent-state map: a few keys, one pair sharing a long prefix with another key.
MAP_PAIRS: dict[bytes, bytes] = {
    hashlib.sha256(b"k%d" % i).digest(): hashlib.sha256(b"v%d" % i).digest() for i in range(7)
}
_near = bytearray(next(iter(MAP_PAIRS)))
_near[20] ^= 0x01
MAP_PAIRS[bytes(_near)] = b"\x77" * 32
_mem = smt.MemoryMapNodes()
MAP_ROOT, _changed, _deleted = smt.apply_batch(_mem, MAP_PAIRS)
_mem.apply(_changed, _deleted)
MAP_KEYS = (*list(MAP_PAIRS)[:3], bytes(_near), hashlib.sha256(b"absent").digest(), bytes(32), b"\xff" * 32)
MAP_PROOFS = {k: smt.prove(_mem, k) for k in MAP_KEYS}

# A decision and its receipt, bound to the size-11 checkpoint.
_entries = [
    LedgerEntry.from_payload(index=0, integrated_time_ms=T - 5, payload_type=P.CONSENT_GRANT, payload=_grant)
]
_request = AccessRequest(
    patient=PATIENT.public_key, requester_id="insurer-1", requester_roles=("insurer",), action="access",
    purpose="CLMATTCH", data=(P.DataItem("laboratory-results"), P.DataItem("clinical-notes", ("MH",))),
    data_period=P.Period(T - 10**8, T - 1), time_ms=T,
)
DECISIONS = (
    encode_decision(decide(_entries, _request, Policy(implicit="basic-normal"))),
    encode_decision(
        decide(
            [], AccessRequest(
                patient=PATIENT.public_key, requester_id="hospital-1", requester_roles=("hospital",),
                action="access", purpose="BTG", data=(P.DataItem("imaging"),), time_ms=T, break_glass=True,
                break_glass_reason="unconscious",
            ), Policy(),
        )
    ),
)
RECEIPT_BODIES = frozenset(receipt_body(decode_decision(d), NOTES[3]) for d in DECISIONS)
RECEIPTS = tuple(sign_receipt(b, LOG.private_key) for b in sorted(RECEIPT_BODIES))

# Offline bundles for the grant (leaf 0) and the revocation (leaf 2) under the size-11 checkpoint.
_cp11 = open_checkpoint(NOTES[3], LOG_VERIFIER)
BUNDLE_INDICES = (0, 2)
BUNDLES = tuple(
    json.dumps(
        export_consent_bundle(
            verify_entry(i, LEAVES[i], ENVELOPES[i], ref_path(i, list(LEAVES)), _cp11), NOTES[3], LOG_VERIFIER_KEY
        ),
        sort_keys=True,
    ).encode()
    for i in BUNDLE_INDICES
)
RECEIPT_DOCUMENTS = tuple(json.dumps(export_decision_receipt(r)).encode() for r in RECEIPTS)


# --- a framing for structured inputs: items of at most 255 bytes, each after its length byte -----------------


def encode_items(items: Sequence[bytes]) -> bytes:
    """Frame byte strings (each at most 255 bytes) so that a proof can travel as one fuzz input."""
    return b"".join(bytes([len(x)]) + x for x in items)


def decode_items(data: bytes) -> list[bytes]:
    """The inverse of encode_items, total: a short last item is taken as it is."""
    out: list[bytes] = []
    i = 0
    while i < len(data):
        n = data[i]
        out.append(data[i + 1 : i + 1 + n])
        i += 1 + n
    return out


def _item(items: list[bytes], i: int) -> bytes:
    return items[i] if i < len(items) else b""


def _int(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _u(n: int) -> bytes:
    return n.to_bytes(8, "big")


# --- the targets ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A fuzz target: ``check(data)`` returns normally or raises AssertionError / an undocumented exception."""

    name: str
    check: Callable[[bytes], None]
    seeds: tuple[bytes, ...]
    doc: str


def check_envelope(data: bytes) -> None:
    try:
        env = parse_envelope(data)
    except InvalidInput:
        return
    assert env.raw == data and env.sha256 == hashlib.sha256(data).digest()
    rebuilt = envelope_pb2.Envelope(
        payload=env.payload, payload_type=env.payload_type,
        signatures=[envelope_pb2.Signature(sig=s, keyid=k) for s, k in zip(env.signatures, env.keyids, strict=True)],
    )
    assert rebuilt.SerializeToString(deterministic=True) == data, "parsed envelope does not re-encode to its bytes"
    try:
        verify_envelope(env)
    except VerificationError:
        return
    message = pae(env.payload_type, env.payload)
    for pk in env.signers:
        assert (pk, message) in SIGNED_STATEMENTS, "an envelope verified with a signature nobody made"


def check_leaf(data: bytes) -> None:
    try:
        leaf = parse_leaf(data)
    except InvalidInput:
        return
    assert encode_leaf(leaf.integrated_time_ms, leaf.payload_type, leaf.envelope_sha256) == data


def check_payload(data: bytes) -> None:
    """data[0] picks the payload type (modulo the number of types); the rest is the payload."""
    if not data:
        return
    payload_type = PAYLOAD_TYPES[data[0] % len(PAYLOAD_TYPES)]
    check_payload_of(payload_type, data[1:])


def check_payload_of(payload_type: str, payload: bytes) -> None:
    try:
        value = P.parse_payload(payload_type, payload)
    except InvalidInput:
        return
    assert type(value).PAYLOAD_TYPE == payload_type
    assert P.encode_payload(value) == payload, "parsed payload does not re-encode to its bytes"


def check_checkpoint_text(data: bytes) -> None:
    # surrogateescape turns invalid UTF-8 into lone surrogates: the parser must refuse those, not crash.
    text = data.decode("utf-8", "surrogateescape")
    try:
        cp = parse_checkpoint(text)
    except InvalidInput:
        return
    assert format_checkpoint(cp) == text


def check_note(data: bytes) -> None:
    """open_note with the log's key, then the cosignatures of whatever opened, then the checkpoint in it."""
    try:
        note = open_note(data, [LOG_VERIFIER])
    except (InvalidInput, VerificationError):  # UnknownVerifier is a VerificationError
        return
    assert note.text in LOG_SIGNED_TEXTS, "a note opened with a text the log never signed"
    assert all(s.name == LOG_NAME and s.key_hash == LOG_VERIFIER.key_hash for s in note.sigs)
    for sig in note.unverified_sigs:
        assert sig.line().encode() in data  # the line re-formats to what was parsed
        try:
            ts = verify_cosignature(note.text, sig, WITNESS_NAME, WITNESS.public_key)
        except (InvalidInput, VerificationError):
            continue
        assert (note.text, ts) in COSIGNED, "a cosignature verified that the witness never made"
    cp = parse_checkpoint(note.text)  # the log signed it: it must parse
    assert cp in CHECKPOINTS


def check_checkpoint_note(data: bytes) -> None:
    try:
        cp = open_checkpoint(data, LOG_VERIFIER)
    except (InvalidInput, VerificationError):
        return
    assert cp in CHECKPOINTS, "a checkpoint opened that the log never signed"


def check_keys_and_lines(data: bytes) -> None:
    """data[0] % 3 picks: verifier key, signer key, signature line; the rest is the text (surrogates allowed)."""
    if not data:
        return
    text = data[1:].decode("utf-8", "surrogateescape")
    which = data[0] % 3
    try:
        if which == 0:
            v = parse_verifier_key(text)
            assert format_verifier_key(v.name, v.public_key) == text
        elif which == 1:
            s = parse_signer_key(text)
            assert format_signer_key(s.name, s.private_key) == text
        else:
            sig = parse_signature_line(text)
            assert sig.line() in (text, text + "\n")
    except InvalidInput:
        return


def check_cosignature(data: bytes) -> None:
    """Items: checkpoint body, signature line. Verified with the witness key."""
    items = decode_items(data)
    body = _item(items, 0).decode("utf-8", "surrogateescape")
    line = _item(items, 1).decode("utf-8", "surrogateescape")
    try:
        ts = verify_cosignature(body, line, WITNESS_NAME, WITNESS.public_key)
    except (InvalidInput, VerificationError):
        return
    assert (body, ts) in COSIGNED, "a cosignature verified that the witness never made"


def check_inclusion(data: bytes) -> None:
    """Items: index, size, leaf hash, root, proof hashes... (integers big-endian)."""
    items = decode_items(data)
    index, size = _int(_item(items, 0)), _int(_item(items, 1))
    leaf_hash, root, proof = _item(items, 2), _item(items, 3), items[4:]
    try:
        verify_inclusion(index, size, leaf_hash, proof, root)
    except VerificationError:
        return
    if size <= TREE_SIZE and root == ROOTS[size]:
        assert leaf_hash == LEAF_HASHES[index], "an inclusion proof verified a leaf that is not in the tree"


def check_consistency(data: bytes) -> None:
    """Items: size1, size2, root1, root2, proof hashes..."""
    items = decode_items(data)
    size1, size2 = _int(_item(items, 0)), _int(_item(items, 1))
    root1, root2, proof = _item(items, 2), _item(items, 3), items[4:]
    try:
        verify_consistency(size1, size2, root1, root2, proof)
    except VerificationError:
        return
    # From size 0 nothing is checked, root1 included: as Go's proof.VerifyConsistency (RFC 9162 2.1.4 defines
    # proofs for 0 < size1 only), so the empty tree's root is the caller's to check.
    if 0 < size1 and size2 <= TREE_SIZE and root2 == ROOTS[size2]:
        assert root1 == ROOTS[size1], "a consistency proof verified a root that the tree never had"


def check_map_proof(data: bytes) -> None:
    """Items: key, root, leaf flag (empty: no leaf), leaf key, leaf value hash, siblings..."""
    items = decode_items(data)
    key, root = _item(items, 0), _item(items, 1)
    leaf = (_item(items, 3), _item(items, 4)) if _item(items, 2) else None
    proof = smt.MapProof(tuple(items[5:]), leaf)
    try:
        found = smt.verify_map_proof(root, key, proof)
    except VerificationError:
        return
    if root == MAP_ROOT:
        assert found == MAP_PAIRS.get(key), "a map proof verified a value the map does not hold"


def check_decision(data: bytes) -> None:
    try:
        d = decode_decision(data)
    except InvalidInput:
        return
    assert encode_decision(d) == data


def check_receipt(data: bytes) -> None:
    try:
        r = open_receipt(data, LOG.public_key)
    except VerificationError:
        return
    assert r.body in RECEIPT_BODIES, "a receipt verified that the ledger never signed"


def check_bundle(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        b = verify_consent_bundle(text, LOG_VERIFIER_KEY, clock_ms=at_t)
    except VerificationError:
        return
    assert b.entry.index in BUNDLE_INDICES and b.entry.leaf_bytes == LEAVES[b.entry.index]
    assert b.entry.envelope is not None and b.entry.envelope.raw == ENVELOPES[b.entry.index]


def check_receipt_document(data: bytes) -> None:
    """data[0] odd: the bytes are a JSON document; even: the raw receipt bytes."""
    if not data:
        return
    doc: str | bytes = data[1:].decode("utf-8", "surrogateescape") if data[0] & 1 else data[1:]
    try:
        r = verify_decision_receipt(doc, LOG_VERIFIER_KEY, clock_ms=at_t)
    except VerificationError:
        return
    assert encode_decision(r.decision) in DECISIONS and r.checkpoint == CHECKPOINTS[3]


# Signed requests (core/request_auth.py): the header a patient's app sends, for one method and request.
REQUEST_ORIGIN = "ledger.test/log"
REQUEST_METHOD = "/consent_ledger.v1.ConsentService/ListConsents"
REQUEST_BODY = b"\x0a\x20" + PATIENT.public_key
REQUEST_HEADERS: tuple[bytes, ...] = tuple(
    sign_request(k, REQUEST_ORIGIN, REQUEST_METHOD, REQUEST_BODY, timestamp_ms=T + i, nonce=_nonce(20 + i)).header_value().encode()
    for i, k in enumerate((PATIENT, DELEGATE))
)
SIGNED_REQUESTS = frozenset(
    (sig.key, signed_message(REQUEST_ORIGIN, REQUEST_METHOD, REQUEST_BODY, sig.timestamp_ms, sig.nonce))
    for sig in (parse_header(h.decode()) for h in REQUEST_HEADERS)
)


def check_request_signature(data: bytes) -> None:
    """The signature header: parsed strictly (one encoding), verified only if it was really signed."""
    text = data.decode("utf-8", "surrogateescape")
    try:
        sig = parse_header(text)
    except InvalidInput:
        return
    assert sig.header_value() == text, "a request signature header parsed from a non-canonical form"
    try:
        check_request(sig, REQUEST_ORIGIN, REQUEST_METHOD, REQUEST_BODY, now_ms=sig.timestamp_ms)
    except (InvalidInput, VerificationError):
        return
    message = signed_message(REQUEST_ORIGIN, REQUEST_METHOD, REQUEST_BODY, sig.timestamp_ms, sig.nonce)
    assert (sig.key, message) in SIGNED_REQUESTS, "a request signature verified that nobody made"


def _inclusion_seeds() -> tuple[bytes, ...]:
    out = []
    for size in (1, 7, TREE_SIZE):
        for index in sorted({0, size // 2, size - 1}):
            proof = ref_path(index, list(LEAVES[:size]))
            out.append(encode_items([_u(index), _u(size), LEAF_HASHES[index], ROOTS[size], *proof]))
    return tuple(out)


def _consistency_seeds() -> tuple[bytes, ...]:
    out = []
    for s1, s2 in ((1, TREE_SIZE), (4, TREE_SIZE), (7, TREE_SIZE), (3, 7), (0, 5), (TREE_SIZE, TREE_SIZE)):
        proof = ref_consistency(s1, list(LEAVES[:s2]))
        out.append(encode_items([_u(s1), _u(s2), ROOTS[s1], ROOTS[s2], *proof]))
    return tuple(out)


def _map_seeds() -> tuple[bytes, ...]:
    out = []
    for k, proof in MAP_PROOFS.items():
        leaf = [b"\x01", *proof.leaf] if proof.leaf else [b"", b"", b""]
        out.append(encode_items([k, MAP_ROOT, *leaf, *proof.siblings]))
    return tuple(out)


def _cosignature_seeds() -> tuple[bytes, ...]:
    return tuple(
        encode_items([format_checkpoint(cp).encode(), line])
        for cp, note in zip(CHECKPOINTS, NOTES, strict=False)
        for line in note.split(b"\n")
        if line.startswith("\u2014 ".encode()) and WITNESS_NAME.encode() in line
        if len(format_checkpoint(cp).encode()) <= 255
    )


def _text_seeds() -> tuple[bytes, ...]:
    lines = [line for n in NOTES for line in n.decode().split("\n") if line.startswith("\u2014")]
    return (
        b"\x00" + LOG_VERIFIER_KEY.encode(),
        b"\x01" + format_signer_key(LOG.name, LOG.private_key).encode(),
        *(b"\x02" + line.encode() for line in lines[:3]),
    )


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("envelope", check_envelope, ENVELOPES, "parse_envelope + verify_envelope"),
        Target("leaf", check_leaf, LEAVES, "parse_leaf"),
        Target(
            "payload", check_payload,
            tuple(bytes([PAYLOAD_TYPES.index(t)]) + p for t, ps in PAYLOAD_SEEDS.items() for p in ps),
            "parse_payload, every payload type (first byte picks it)",
        ),
        Target(
            "checkpoint", check_checkpoint_text, tuple(format_checkpoint(cp).encode() for cp in CHECKPOINTS),
            "parse_checkpoint",
        ),
        Target("note", check_note, NOTES, "open_note + verify_cosignature + parse_checkpoint"),
        Target("checkpoint_note", check_checkpoint_note, NOTES, "open_checkpoint"),
        Target("keys", check_keys_and_lines, _text_seeds(), "parse_verifier_key / parse_signer_key / parse_signature_line"),
        Target("cosignature", check_cosignature, _cosignature_seeds(), "verify_cosignature"),
        Target("inclusion", check_inclusion, _inclusion_seeds(), "verify_inclusion"),
        Target("consistency", check_consistency, _consistency_seeds(), "verify_consistency"),
        Target("map_proof", check_map_proof, _map_seeds(), "smt.verify_map_proof"),
        Target("decision", check_decision, DECISIONS, "decode_decision"),
        Target("receipt", check_receipt, RECEIPTS, "open_receipt"),
        Target("bundle", check_bundle, BUNDLES, "client: verify_consent_bundle (JSON)"),
        Target(
            "receipt_document", check_receipt_document,
            tuple(b"\x01" + d for d in RECEIPT_DOCUMENTS) + tuple(b"\x00" + r for r in RECEIPTS),
            "client: verify_decision_receipt (JSON or raw)",
        ),
        Target("request_signature", check_request_signature, REQUEST_HEADERS, "parse_header + check_request_signature"),
    )
}


def self_check() -> None:
    """Every seed passes its own target, and the seeds of the signed targets really verify."""
    for t in TARGETS.values():
        assert t.seeds, t.name
        for s in t.seeds:
            t.check(s)
    for e in ENVELOPES:
        verify_envelope(parse_envelope(e))
    for n in NOTES:
        open_checkpoint(n, LOG_VERIFIER)
    for r in RECEIPTS:
        open_receipt(r, LOG.public_key)
    for b in BUNDLES:
        verify_consent_bundle(b.decode(), LOG_VERIFIER_KEY, clock_ms=at_t)
    for seed in TARGETS["inclusion"].seeds:
        items = decode_items(seed)
        verify_inclusion(_int(items[0]), _int(items[1]), items[2], items[4:], items[3])
    for seed in TARGETS["consistency"].seeds:
        items = decode_items(seed)
        verify_consistency(_int(items[0]), _int(items[1]), items[2], items[3], items[4:])
    for k, proof in MAP_PROOFS.items():
        assert smt.verify_map_proof(MAP_ROOT, k, proof) == MAP_PAIRS.get(k)
