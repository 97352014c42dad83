"""Fuzzing the parsers and verifiers of the pure core (and the client's offline bundle checks) with hypothesis.

Each target in tests/fuzz_support.py gets arbitrary bytes and, more often, mutations of valid inputs (bytes
flipped, inserted, deleted, truncated, duplicated, spliced from another seed); structured tests add random proofs,
sizes, indices and JSON. The rules: only the documented error types, values re-encode to their input, and
nothing verifies that was not signed or proven. The default suite runs a couple of hundred examples per test;
``CONSENT_LEDGER_FUZZ_EXAMPLES=N`` sets the count (scripts/fuzz.py runs it long, with atheris beside it).
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_ledger.core import payloads as P
from consent_ledger.core import smt
from consent_ledger.core.checkpoint import (
    Checkpoint,
    format_checkpoint,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from consent_ledger.core.envelope import parse_envelope, sign_envelope, verify_envelope
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.merkle import (
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from consent_ledger.core.receipt import decode_decision, encode_decision, open_receipt
from consent_ledger_client.bundle import verify_consent_bundle, verify_decision_receipt

from . import fuzz_support as F
from .merkle_reference import consistency as ref_consistency
from .merkle_reference import path as ref_path

EXAMPLES = int(os.environ.get("CONSENT_LEDGER_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)

# Bytes that parsers treat specially: separators of notes and keys, protobuf varint edges, base64 padding.
_INTERESTING = b"\x00\x01\x7f\x80\xff\n +-=/\x08\x0a\x12\x1a\x22\xe2\x80\x94"


@st.composite
def mutations(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A seed with one to four random edits: the inputs that reach past the first length check."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 7))
        n = len(data)
        pos = draw(st.integers(0, max(n - 1, 0)))
        if op == 0 and n:  # flip one bit
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and n:  # replace a byte
            data[pos] = draw(st.integers(0, 255))
        elif op == 2 and n:  # an interesting byte
            data[pos] = draw(st.sampled_from(_INTERESTING))
        elif op == 3:  # insert bytes
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 4:  # delete bytes
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == 5:  # truncate
            del data[pos:]
        elif op == 6 and n:  # duplicate a slice
            end = draw(st.integers(pos, min(n, pos + 64)))
            data[end:end] = data[pos:end]
        else:  # splice: this seed's head, another seed's tail
            other = draw(st.sampled_from(seeds))
            data = data[:pos] + other[draw(st.integers(0, len(other))) :]
    return bytes(data)


def inputs(target: F.Target) -> st.SearchStrategy[bytes]:
    return st.one_of(mutations(target.seeds), mutations(target.seeds), st.binary(max_size=600))


@pytest.mark.parametrize("name", sorted(F.TARGETS))
@FUZZ
@given(data=st.data())
def test_target(name: str, data: st.DataObject) -> None:
    target = F.TARGETS[name]
    target.check(data.draw(inputs(target), label=name))


def test_seeds_are_valid_and_round_trip() -> None:
    F.self_check()
    for t, seeds in F.PAYLOAD_SEEDS.items():
        for s in seeds:
            assert P.encode_payload(P.parse_payload(t, s)) == s
    for d in F.DECISIONS:
        assert encode_decision(decode_decision(d)) == d


@pytest.mark.parametrize("payload_type", F.PAYLOAD_TYPES)
@FUZZ
@given(data=st.data())
def test_payload_of_every_type(payload_type: str, data: st.DataObject) -> None:
    """Each type's parser on mutations of every type's seeds (a grant's bytes read as a delegation, ...)."""
    seeds = tuple(p for ps in F.PAYLOAD_SEEDS.values() for p in ps)
    F.check_payload_of(payload_type, data.draw(st.one_of(mutations(seeds), st.binary(max_size=300))))


# --- valid inputs round-trip ----------------------------------------------------------------------------------


@FUZZ
@given(
    payload_type=st.sampled_from(F.PAYLOAD_TYPES) | st.from_regex(r"[\x21-\x7e]{1,128}", fullmatch=True),
    payload=st.binary(min_size=1, max_size=400),
    two=st.booleans(),
)
def test_signed_envelopes_round_trip(payload_type: str, payload: bytes, two: bool) -> None:
    keys = [F.PATIENT, F.DELEGATE] if two else [F.ORG]
    env = sign_envelope(payload_type, payload, keys)
    parsed = parse_envelope(env)
    assert (parsed.payload_type, parsed.payload, parsed.signers) == (payload_type, payload, tuple(k.public_key for k in keys))
    verify_envelope(parsed)


_line = st.text(st.characters(min_codepoint=0x20, exclude_categories=("Cs",)), min_size=1, max_size=40)


@FUZZ
@given(
    size=st.integers(0, 2**63 - 1), root=st.binary(min_size=32, max_size=32), extensions=st.lists(_line, max_size=4)
)
def test_checkpoints_round_trip(size: int, root: bytes, extensions: list[str]) -> None:
    cp = Checkpoint(F.LOG_NAME, size, root, tuple(extensions))
    assert parse_checkpoint(format_checkpoint(cp)) == cp
    assert open_checkpoint(sign_checkpoint(cp, F.LOG), F.LOG_VERIFIER) == cp


# --- proofs with random sizes, indices and hashes ---------------------------------------------------------------

_hash = st.one_of(
    st.sampled_from(F.LEAF_HASHES + F.ROOTS[1:]), st.binary(min_size=32, max_size=32), st.binary(max_size=40)
)
_big = st.one_of(st.integers(0, 2 * F.TREE_SIZE), st.integers(-(2**70), 2**70), st.sampled_from([2**63 - 1, 2**64]))


@FUZZ
@given(index=_big, size=_big, leaf_hash=_hash, proof=st.lists(_hash, max_size=70), root=_hash)
def test_inclusion_random(index: int, size: int, leaf_hash: bytes, proof: list[bytes], root: bytes) -> None:
    try:
        root_from_inclusion_proof(index, size, leaf_hash, proof)
        verify_inclusion(index, size, leaf_hash, proof, root)
    except VerificationError:
        return
    if 0 <= size <= F.TREE_SIZE and root == F.ROOTS[size]:
        assert leaf_hash == F.LEAF_HASHES[index]


@st.composite
def _edited_proof(draw: st.DrawFn, proof: list[bytes]) -> list[bytes]:
    proof = list(proof)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.integers(0, 3))
        i = draw(st.integers(0, len(proof)))
        if op == 0:
            proof.insert(i, draw(_hash))
        elif op == 1 and proof:
            del proof[i % len(proof)]
        elif op == 2 and len(proof) > 1:
            j = draw(st.integers(0, len(proof) - 1))
            proof[i % len(proof)], proof[j] = proof[j], proof[i % len(proof)]
        elif proof:
            proof[i % len(proof)] = draw(_hash)
    return proof


@FUZZ
@given(data=st.data(), size=st.integers(1, F.TREE_SIZE), delta=st.tuples(st.integers(-3, 3), st.integers(-3, 3)))
def test_inclusion_edited(data: st.DataObject, size: int, delta: tuple[int, int]) -> None:
    """A valid proof with hashes added, dropped, swapped or replaced, and index or size moved."""
    index = data.draw(st.integers(0, size - 1))
    proof = ref_path(index, list(F.LEAVES[:size]))
    edited = data.draw(_edited_proof(proof)) if data.draw(st.booleans()) else proof
    i2, s2 = index + delta[0], size + delta[1]
    try:
        verify_inclusion(i2, s2, F.LEAF_HASHES[index], edited, F.ROOTS[size])
    except VerificationError:
        return
    # The size comes from the signed checkpoint; under another size the same hashes may fold to the same root
    # (index 1 of 2 and index 2 of 3 both hash (proof[0], leaf)), which is why a verifier must pin the size.
    if s2 == size:
        assert i2 == index and edited == proof, "an edited inclusion proof verified"


@FUZZ
@given(data=st.data(), size2=st.integers(0, F.TREE_SIZE), delta=st.tuples(st.integers(-2, 2), st.integers(-2, 2)))
def test_consistency_edited(data: st.DataObject, size2: int, delta: tuple[int, int]) -> None:
    size1 = data.draw(st.integers(0, size2))
    proof = ref_consistency(size1, list(F.LEAVES[:size2]))
    edited = data.draw(_edited_proof(proof)) if data.draw(st.booleans()) else proof
    s1, s2 = size1 + delta[0], size2 + delta[1]
    root1 = data.draw(st.sampled_from([F.ROOTS[size1], F.ROOTS[max(size1 - 1, 0)]]))
    try:
        verify_consistency(s1, s2, root1, F.ROOTS[size2], edited)
    except VerificationError:
        return
    if s2 == size2 and s1 > 0:
        assert root1 == F.ROOTS[s1], "an edited consistency proof verified a root the tree never had"


@FUZZ
@given(size1=_big, size2=_big, root1=_hash, root2=_hash, proof=st.lists(_hash, max_size=70))
def test_consistency_random(size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]) -> None:
    try:
        verify_consistency(size1, size2, root1, root2, proof)
    except VerificationError:
        return
    if 0 < size1 and 0 <= size2 <= F.TREE_SIZE and root2 == F.ROOTS[size2]:  # size 0: see fuzz_support
        assert root1 == F.ROOTS[size1]


_map_hash = st.one_of(
    st.sampled_from([smt.EMPTY_HASH, *F.MAP_PAIRS, *F.MAP_PAIRS.values(), *(s for p in F.MAP_PROOFS.values() for s in p.siblings)]),
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=40),
)
_leaf = st.one_of(
    st.none(),
    st.tuples(_map_hash, _map_hash),
    st.sampled_from([p.leaf for p in F.MAP_PROOFS.values() if p.leaf]),
    st.lists(_map_hash, max_size=3).map(tuple),  # malformed: a pair is two hashes
)


@FUZZ
@given(data=st.data(), key=st.sampled_from(F.MAP_KEYS) | _map_hash, leaf=_leaf)
def test_map_proof_random(data: st.DataObject, key: bytes, leaf: object) -> None:
    base = data.draw(st.sampled_from(list(F.MAP_PROOFS.values())))
    siblings = data.draw(st.one_of(_edited_proof(list(base.siblings)), st.lists(_map_hash, max_size=260)))
    proof = smt.MapProof(tuple(siblings), leaf if data.draw(st.booleans()) else base.leaf)  # type: ignore[arg-type]
    try:
        found = smt.verify_map_proof(F.MAP_ROOT, key, proof)
    except VerificationError:
        return
    assert found == F.MAP_PAIRS.get(key), "a map proof verified a value the map does not hold"


# --- the client's offline JSON documents ---------------------------------------------------------------------

def _json_containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    _json_containers,
    max_leaves=12,
)
# Deep nesting: the json module recurses, and RecursionError is not a documented outcome.
_deep = st.integers(1, 200_000).map(lambda n: "[" * n + "]" * n) | st.integers(1, 200_000).map(lambda n: '{"a":' * n)


def _replace_somewhere(doc: object, path_bits: list[int], value: object) -> object:
    """doc with one value (found by following path_bits through dicts and lists) replaced by value."""
    if not path_bits or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        k = sorted(doc)[path_bits[0] % len(doc)]
        return {**doc, k: _replace_somewhere(doc[k], path_bits[1:], value)}
    i = path_bits[0] % len(doc)
    return [*doc[:i], _replace_somewhere(doc[i], path_bits[1:], value), *doc[i + 1 :]]


@FUZZ
@given(
    which=st.integers(0, len(F.BUNDLES) - 1),
    path_bits=st.lists(st.integers(0, 50), min_size=1, max_size=4),
    value=_json,
    as_text=st.booleans(),
)
def test_bundle_json_values(which: int, path_bits: list[int], value: object, as_text: bool) -> None:
    doc = _replace_somewhere(json.loads(F.BUNDLES[which]), path_bits, value)
    try:
        verify_consent_bundle(json.dumps(doc) if as_text else doc, F.LOG_VERIFIER_KEY, clock_ms=F.at_t)  # type: ignore[arg-type]
    except VerificationError:
        return
    original = json.loads(F.BUNDLES[which])
    # The key a bundle names is informational: verification uses the pinned key and never reads this one.
    assert isinstance(doc, dict) and isinstance(doc.get("log"), dict)
    doc["log"]["verifier_key"] = original["log"]["verifier_key"]
    assert doc == original, "a changed bundle verified"


@FUZZ
@given(text=st.one_of(_deep, _json.map(json.dumps), st.text(max_size=200)))
def test_json_documents_arbitrary(text: str) -> None:
    for call in (verify_consent_bundle, verify_decision_receipt):
        with pytest.raises(VerificationError):
            call(text, F.LOG_VERIFIER_KEY)


@FUZZ
@given(data=st.binary(max_size=300), key=st.binary(max_size=40))
def test_open_receipt_any_key(data: bytes, key: bytes) -> None:
    """A malformed ledger key is a failed verification too (open_receipt documents VerificationError only)."""
    for r in (data, *F.RECEIPTS):
        try:
            open_receipt(r, key)
        except VerificationError:
            continue
        assert key == F.LOG.public_key


def test_invalid_input_is_not_leaked_by_verifiers() -> None:
    """The verifiers' documented errors, spot-checked on the empty input."""
    with pytest.raises(InvalidInput):
        parse_envelope(b"")
    with pytest.raises(VerificationError):
        open_receipt(b"", F.LOG.public_key)
