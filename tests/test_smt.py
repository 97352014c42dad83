"""The consent-state map (core.smt): shared vectors, a naive reference in both directions, incremental batches
against rebuilding, systematic proof mutations, and hypothesis."""

from __future__ import annotations

import hashlib
import json
import pathlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consent_ledger.core import smt
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.smt import EMPTY_HASH, MapProof

from .smt_reference import ref_prove, ref_root, ref_verify

VECTORS = json.loads((pathlib.Path(__file__).parent / "data" / "smt_vectors.json").read_text())


def unhex_proof(p: dict) -> MapProof:
    leaf = p["leaf"]
    return MapProof(
        tuple(bytes.fromhex(s) for s in p["siblings"]),
        None if leaf is None else (bytes.fromhex(leaf["key"]), bytes.fromhex(leaf["value_hash"])),
    )


def case_pairs(case: dict) -> dict[bytes, bytes]:
    return {bytes.fromhex(x["key"]): bytes.fromhex(x["value_hash"]) for x in case["leaves"]}


def stored(pairs: dict[bytes, bytes]) -> smt.MemoryMapNodes:
    """The map built through apply_batch from an empty store."""
    mem = smt.MemoryMapNodes()
    root, changed, deleted = smt.apply_batch(mem, pairs)
    assert not deleted
    mem.apply(changed, deleted)
    assert root == mem.root()
    return mem


def with_prefix(base: bytes, bits: int, tail: bytes) -> bytes:
    """A key with ``base``'s first ``bits`` bits and the rest from ``tail``."""
    mask = ((1 << 256) - 1) >> bits
    v = (int.from_bytes(base, "big") & ~mask) | (int.from_bytes(tail, "big") & mask)
    return v.to_bytes(32, "big")


def flip(key: bytes, bit: int) -> bytes:
    return (int.from_bytes(key, "big") ^ (1 << (255 - bit))).to_bytes(32, "big")


def random_keys(rng: random.Random, n: int) -> list[bytes]:
    """Random keys, some of them sharing long prefixes with others (up to all 255 bits but one)."""
    keys: set[bytes] = set()
    while len(keys) < n:
        if keys and rng.random() < 0.2:
            base = rng.choice(sorted(keys))
            keys.add(with_prefix(base, rng.choice([1, 7, 8, 9, 64, 161, 200, 255]), rng.randbytes(32)))
        else:
            keys.add(rng.randbytes(32))
    return sorted(keys)


def random_pairs(rng: random.Random, n: int) -> dict[bytes, bytes]:
    return {k: rng.randbytes(32) for k in random_keys(rng, n)}


# Vectors (tests/data/smt_vectors.json; see tests/data/README.md for their origin).


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"size{c['size']}")
def test_vector_roots(case):
    pairs = case_pairs(case)
    assert len(pairs) == case["size"]
    expected = bytes.fromhex(case["root"])
    assert smt.root(pairs) == expected
    assert smt.root(list(pairs.items())) == expected
    assert stored(pairs).root() == expected
    assert ref_root(pairs) == expected


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"size{c['size']}")
def test_vector_proofs(case):
    pairs = case_pairs(case)
    mem = stored(pairs)
    root = bytes.fromhex(case["root"])
    assert case["proofs"]
    for p in case["proofs"]:
        key = bytes.fromhex(p["key"])
        proof = unhex_proof(p)
        assert smt.prove(mem, key) == proof
        got = smt.verify_map_proof(root, key, proof)
        if p["present"]:
            assert got == pairs[key]
        else:
            assert got is None and key not in pairs
        assert ref_verify(root, key, list(proof.siblings), proof.leaf) == got


def test_vectors_cover_present_absent_and_long_prefixes():
    proofs = [p for c in VECTORS["cases"] for p in c["proofs"]]
    assert any(p["present"] for p in proofs)
    assert any(not p["present"] and p["leaf"] is None for p in proofs)
    assert any(not p["present"] and p["leaf"] is not None for p in proofs)
    assert max(len(p["siblings"]) for p in proofs) > 161


def test_key_example():
    ex = VECTORS["key_example"]
    key = smt.map_key(bytes.fromhex(ex["patient_public_key"]), ex["selector"])
    assert key.hex() == ex["key"]
    assert key == hashlib.sha256(bytes.fromhex(ex["patient_public_key"]) + b"\x00" + ex["selector"].encode()).digest()


def test_value_hash_example():
    ex = VECTORS["value_hash_example"]
    entries = [(i, bytes.fromhex(h)) for i, h in ex["entries"]]
    assert smt.value_hash(entries).hex() == ex["value_hash"]
    assert smt.value_hash(reversed(entries)).hex() == ex["value_hash"]  # any order in, index order hashed


def test_value_hash_and_map_key_refuse_malformed_input():
    h = bytes(32)
    with pytest.raises(InvalidInput, match="no in-force entries"):
        smt.value_hash([])
    with pytest.raises(InvalidInput, match="appears twice"):
        smt.value_hash([(1, h), (1, h)])
    with pytest.raises(InvalidInput, match="not in 0"):
        smt.value_hash([(-1, h)])
    with pytest.raises(InvalidInput, match="not in 0"):
        smt.value_hash([(1 << 64, h)])
    with pytest.raises(InvalidInput, match="not 32 bytes"):
        smt.value_hash([(0, h[:31])])
    assert smt.value_hash([((1 << 64) - 1, h)]) == hashlib.sha256(b"\xff" * 8 + h).digest()
    with pytest.raises(InvalidInput, match="32 bytes"):
        smt.map_key(bytes(31), "org:x")
    with pytest.raises(InvalidInput, match="non-empty"):
        smt.map_key(bytes(32), "")


def test_root_refuses_repeated_or_malformed_keys():
    with pytest.raises(InvalidInput, match="appears twice"):
        smt.root([(bytes(32), bytes(32)), (bytes(32), b"\x01" * 32)])
    with pytest.raises(InvalidInput, match="32 bytes"):
        smt.root({bytes(31): bytes(32)})
    with pytest.raises(InvalidInput, match="32 bytes"):
        smt.apply_batch(smt.MemoryMapNodes(), {bytes(32): bytes(33)})


def test_node_paths():
    key = bytes([0b1011_0110]) + b"\xff" * 31
    assert smt.node_path(0, key) == b"\x80" == smt.ROOT_PATH
    assert smt.node_path(1, key) == bytes([0b1100_0000])
    assert smt.node_path(3, key) == bytes([0b1011_0000])
    assert smt.node_path(7, key) == bytes([0b1011_0111])
    assert smt.node_path(8, key) == bytes([0b1011_0110, 0x80])
    assert smt.node_path(256, key) == key + b"\x80"
    # Distinct positions (depth, first `depth` bits) never share an encoding.
    keys = (key, bytes(32), b"\xff" * 32, b"\x80" + bytes(31))
    positions = {(d, int.from_bytes(k, "big") >> (256 - d)) for d in range(257) for k in keys}
    assert len({smt.node_path(d, k) for d in range(257) for k in keys}) == len(positions)


# The naive reference, in both directions.

SIZES = [*range(0, 41), 64, 100, 257, 500, 2000]


@pytest.mark.parametrize("size", SIZES)
def test_against_reference(size):
    rng = random.Random(size)
    pairs = random_pairs(rng, size)
    root = ref_root(pairs)
    assert smt.root(pairs) == root
    mem = stored(pairs)
    assert mem.root() == root
    keys = sorted(pairs)
    absent = [rng.randbytes(32) for _ in range(5)] + [flip(k, rng.randrange(256)) for k in keys[:5]]
    absent = [k for k in absent if k not in pairs]
    # Core proofs for every key are checked by the reference verifier; reference proofs for a sample (they are
    # slow to make) must equal the core's and verify in the core's verifier.
    core_root, proofs = smt.prove_many(mem, keys + absent)
    assert core_root == root
    for key, proof in proofs.items():
        assert ref_verify(root, key, list(proof.siblings), proof.leaf) == pairs.get(key)
    sample = keys if size <= 64 else rng.sample(keys, 12)
    for key in sample + absent:
        siblings, leaf = ref_prove(pairs, key)
        assert proofs[key] == MapProof(tuple(siblings), leaf)
        assert smt.verify_map_proof(root, key, MapProof(tuple(siblings), leaf)) == pairs.get(key)


def test_two_keys_that_differ_in_the_last_bit_only():
    a = hashlib.sha256(b"a").digest()
    b = flip(a, 255)
    pairs = {a: b"\x01" * 32, b: b"\x02" * 32}
    mem = stored(pairs)
    assert mem.root() == ref_root(pairs)
    assert smt.node_path(256, a) in mem.nodes and smt.node_path(256, b) in mem.nodes
    proof = smt.prove(mem, a)
    assert len(proof.siblings) == 256
    assert smt.verify_map_proof(mem.root(), a, proof) == b"\x01" * 32
    assert smt.verify_map_proof(mem.root(), b, smt.prove(mem, b)) == b"\x02" * 32
    # Removing one moves the other's leaf to the root.
    root, changed, deleted = smt.apply_batch(mem, {b: None})
    mem.apply(changed, deleted)
    assert root == smt.hash_leaf(a, b"\x01" * 32) and set(mem.nodes) == {smt.ROOT_PATH}


# Batch updates against rebuilding.


def check_batches(batches: list[dict[bytes, bytes | None]], *, window: int = smt.DEFAULT_WINDOW) -> None:
    mem = smt.MemoryMapNodes()
    model: dict[bytes, bytes] = {}
    for updates in batches:
        root, changed, deleted = smt.apply_batch(mem, updates, window=window)
        assert not set(changed) & deleted
        mem.apply(changed, deleted)
        for k, v in updates.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        assert root == smt.root(model) == mem.root()
        # Exactly the nodes a fresh build stores: nothing stale is left behind, nothing is missing.
        assert mem.nodes == stored(model).nodes


def test_batches_of_inserts_updates_and_deletions():
    rng = random.Random(7)
    for _ in range(60):
        model_keys: list[bytes] = []
        batches = []
        for _ in range(8):
            updates: dict[bytes, bytes | None] = {}
            for _ in range(rng.randint(0, 25)):
                if model_keys and rng.random() < 0.5:
                    k = rng.choice(model_keys)
                elif model_keys and rng.random() < 0.3:
                    k = with_prefix(rng.choice(model_keys), rng.choice([3, 20, 161, 255]), rng.randbytes(32))
                else:
                    k = rng.randbytes(32)
                updates[k] = None if rng.random() < 0.4 else rng.randbytes(32)
            model_keys = sorted(set(model_keys) | {k for k, v in updates.items() if v is not None})
            batches.append(updates)
        check_batches(batches, window=rng.choice([1, 2, 5, 24]))


def test_deleting_down_to_one_and_to_none():
    rng = random.Random(8)
    pairs = random_pairs(rng, 300)
    keys = sorted(pairs)
    rng.shuffle(keys)
    check_batches([dict(pairs), {k: None for k in keys[1:]}, {keys[0]: None}, {keys[0]: b"\x07" * 32}])
    check_batches([dict(pairs), {k: None for k in keys}])
    check_batches([dict(pairs), *({k: None} for k in keys[:40])])
    check_batches([{}, {keys[0]: None}, {keys[0]: b"\x01" * 32}, {keys[0]: None}, {}])


def test_keys_sharing_161_bits():
    a = hashlib.sha256(b"161").digest()
    b = with_prefix(a, 161, flip(a, 161))  # shares exactly 161 bits with a
    c = with_prefix(a, 100, flip(a, 100))
    d = with_prefix(b, 200, flip(b, 200))
    v = [bytes([i]) * 32 for i in range(1, 6)]
    check_batches([{a: v[0]}, {b: v[1]}, {c: v[2]}, {a: None}, {d: v[3]}, {b: None}, {a: v[4]}, {d: None, c: None}])
    check_batches([{a: v[0], b: v[1]}, {b: None}, {b: v[1], a: None}, {b: None}])
    mem = stored({a: v[0], b: v[1]})
    proof = smt.prove(mem, a)
    assert len(proof.siblings) == 162
    assert proof.siblings[0] == smt.hash_leaf(b, v[1]) and set(proof.siblings[1:]) == {EMPTY_HASH}


def test_no_op_updates_change_nothing():
    rng = random.Random(9)
    pairs = random_pairs(rng, 50)
    mem = stored(pairs)
    before = dict(mem.nodes)
    absent = rng.randbytes(32)
    some = sorted(pairs)[:5]
    root, changed, deleted = smt.apply_batch(mem, {absent: None, **{k: pairs[k] for k in some}})
    assert (root, changed, deleted) == (mem.root(), {}, frozenset())
    assert smt.apply_batch(mem, {}) == (mem.root(), {}, frozenset())
    assert mem.nodes == before


class RecordingReader(smt.MemoryMapNodes):
    def __init__(self, nodes):
        super().__init__(nodes)
        self.paths: list[set[bytes]] = []

    def read(self, paths):
        self.paths.append(set(paths))
        return super().read(paths)


def test_a_batch_reads_only_the_paths_it_updates():
    rng = random.Random(10)
    pairs = {rng.randbytes(32): rng.randbytes(32) for _ in range(4000)}
    mem = stored(pairs)
    keys = sorted(pairs)
    updates: dict[bytes, bytes | None] = {k: None for k in rng.sample(keys, 20)}
    updates.update({k: rng.randbytes(32) for k in rng.sample(keys, 20)})
    updates.update({rng.randbytes(32): rng.randbytes(32) for _ in range(20)})
    reader = RecordingReader(mem.nodes)
    root, changed, deleted = smt.apply_batch(reader, updates)
    allowed = {smt.node_path(d, k) for k in updates for d in range(257)}
    allowed |= {smt.node_path(d + 1, flip(k, d)) for k in updates for d in range(256)}
    read = set().union(*reader.paths)
    assert read <= allowed
    assert len(read) <= 24 * len(updates) + 60
    assert len(reader.paths) <= 2  # one round of paths, one of siblings for the deletions
    assert set(changed) | deleted <= allowed
    mem.apply(changed, deleted)
    for k, v in updates.items():
        if v is None:
            pairs.pop(k, None)
        else:
            pairs[k] = v
    assert root == smt.root(pairs)


def test_a_proof_at_a_few_thousand_keys_is_one_read():
    rng = random.Random(11)
    mem = stored({rng.randbytes(32): rng.randbytes(32) for _ in range(4000)})
    reader = RecordingReader(mem.nodes)
    proof = smt.prove(reader, rng.randbytes(32))
    assert len(reader.paths) == 1 and len(reader.paths[0]) <= smt.DEFAULT_WINDOW
    assert 8 <= len(proof.siblings) <= 24


def test_empty_map():
    mem = smt.MemoryMapNodes()
    key = bytes(32)
    assert smt.root({}) == EMPTY_HASH
    assert smt.prove_many(mem, []) == (EMPTY_HASH, {})
    assert smt.prove(mem, key) == MapProof((), None)
    assert smt.verify_map_proof(EMPTY_HASH, key, MapProof((), None)) is None


# Corrupt or inconsistent storage is reported, never turned into a wrong proof or root.


def test_inconsistent_nodes_are_detected():
    rng = random.Random(12)
    pairs = random_pairs(rng, 200)
    mem = stored(pairs)
    key = sorted(pairs)[0]
    proof = smt.prove(mem, key)
    path = smt.node_path(len(proof.siblings), key)  # the key's leaf
    leaf = mem.nodes[path]
    assert isinstance(leaf, smt.MapLeaf)
    tampered = dict(mem.nodes)
    tampered[path] = smt.MapLeaf(leaf.key, b"\x00" * 31 + b"\x01")
    with pytest.raises(smt.InconsistentMapNodes, match="not the one its parent holds"):
        smt.prove(smt.MemoryMapNodes(tampered), key)
    with pytest.raises(smt.InconsistentMapNodes, match="not the one its parent holds"):
        smt.apply_batch(smt.MemoryMapNodes(tampered), {key: None})
    del tampered[path]
    with pytest.raises(smt.InconsistentMapNodes, match="missing"):
        smt.prove(smt.MemoryMapNodes(tampered), key)
    with pytest.raises(smt.InconsistentMapNodes, match="missing"):
        smt.apply_batch(smt.MemoryMapNodes(tampered), {key: b"\x01" * 32})


# Systematic mutations of valid proofs.


def mutation_subjects() -> list[tuple[bytes, bytes, MapProof]]:
    """(root, key, proof) for present keys, absent keys ending in an empty subtree, and absent keys ending at
    another pair, from the vectors and from a random map with long shared prefixes."""
    out = []
    for case in VECTORS["cases"]:
        for p in case["proofs"]:
            out.append((bytes.fromhex(case["root"]), bytes.fromhex(p["key"]), unhex_proof(p)))
    rng = random.Random(13)
    pairs = random_pairs(rng, 120)
    mem = stored(pairs)
    keys = sorted(pairs)[:10] + [rng.randbytes(32) for _ in range(10)] + [flip(k, 200) for k in sorted(pairs)[:5]]
    root, proofs = smt.prove_many(mem, keys)
    out += [(root, k, p) for k, p in proofs.items()]
    kinds = {(p.leaf is None, p.leaf is not None and p.leaf[0] == k) for _, k, p in out}
    assert kinds == {(True, False), (False, True), (False, False)}
    return out


SUBJECTS = mutation_subjects()


def mutants(key: bytes, proof: MapProof, rng: random.Random):
    """Every systematic mutation of a valid proof, each named. Mutations that change nothing are skipped."""
    sib = list(proof.siblings)
    n = len(sib)
    leaf = proof.leaf
    out: list[tuple[str, MapProof]] = []
    for i in range(n):
        for bit in sorted({0, 7, 255, rng.randrange(256)}):
            s = bytearray(sib[i])
            s[bit // 8] ^= 0x80 >> (bit % 8)
            out.append((f"flip bit {bit} of sibling {i}", MapProof(tuple(sib[:i] + [bytes(s)] + sib[i + 1 :]), leaf)))
        out.append((f"drop sibling {i}", MapProof(tuple(sib[:i] + sib[i + 1 :]), leaf)))
        out.append((f"truncate sibling {i}", MapProof(tuple(sib[:i] + [sib[i][:31]] + sib[i + 1 :]), leaf)))
        if i + 1 < n:
            swapped = sib[:i] + [sib[i + 1], sib[i]] + sib[i + 2 :]
            out.append((f"swap siblings {i} and {i + 1}", MapProof(tuple(swapped), leaf)))
    for i in range(n + 1):
        for extra in (EMPTY_HASH, rng.randbytes(32)):
            out.append((f"insert sibling at {i}", MapProof(tuple(sib[:i] + [extra] + sib[i:]), leaf)))
    out.append(("prepend garbage", MapProof(tuple([rng.randbytes(32)] + sib), leaf)))
    out.append(("siblings reversed", MapProof(tuple(reversed(sib)), leaf)))
    out.append(("too many siblings", MapProof(tuple(sib + [rng.randbytes(32)] * (257 - n)), leaf)))
    if leaf is None:
        out.append(("absent claimed present", MapProof(proof.siblings, (key, rng.randbytes(32)))))
        out.append(("a pair on the path that is not there", MapProof(proof.siblings, (flip(key, 255), bytes(32)))))
    else:
        k, v = leaf
        name = "leaf dropped (present claimed absent)" if k == key else "leaf dropped"
        out.append((name, MapProof(proof.siblings, None)))
        out.append(("wrong value hash", MapProof(proof.siblings, (k, bytes(b ^ 1 for b in v)))))
        out.append(("leaf key changed below the prefix", MapProof(proof.siblings, (flip(k, 255), v))))
        if k != key:
            out.append(("absent claimed present", MapProof(proof.siblings, (key, v))))
        if n:
            out.append(("leaf key off the prefix", MapProof(proof.siblings, (flip(k, n - 1), v))))
        out.append(("leaf key truncated", MapProof(proof.siblings, (k[:31], v))))
        out.append(("leaf value truncated", MapProof(proof.siblings, (k, v[:31]))))
    return [(name, m) for name, m in out if m != proof]


def test_mutated_proofs_are_rejected():
    rng = random.Random(14)
    count = 0
    for root, key, proof in SUBJECTS:
        expected = smt.verify_map_proof(root, key, proof)
        for name, mutant in mutants(key, proof, rng):
            with pytest.raises(VerificationError):
                got = smt.verify_map_proof(root, key, mutant)
                pytest.fail(f"{name}: accepted, giving {got!r} (valid proof gives {expected!r})")
            count += 1
    assert count > 2000


def test_mutation_messages():
    root, key, proof = next((r, k, p) for r, k, p in SUBJECTS if p.leaf is not None and p.leaf[0] == k and p.siblings)
    k, v = proof.leaf
    n = len(proof.siblings)
    with pytest.raises(VerificationError, match="does not match the root"):
        smt.verify_map_proof(root, key, MapProof(proof.siblings, (k, bytes(32))))
    with pytest.raises(VerificationError, match=f"does not share the key's first {n} bits"):
        smt.verify_map_proof(root, key, MapProof(proof.siblings, (flip(k, n - 1), v)))
    with pytest.raises(VerificationError, match="at most 256"):
        smt.verify_map_proof(root, key, MapProof((bytes(32),) * 257, proof.leaf))
    with pytest.raises(VerificationError, match="first subtree holding at most one pair"):
        smt.verify_map_proof(root, key, MapProof((EMPTY_HASH, *proof.siblings), proof.leaf))
    with pytest.raises(VerificationError, match="not 32 bytes"):
        smt.verify_map_proof(root, key, MapProof((proof.siblings[0][:31], *proof.siblings[1:]), proof.leaf))
    with pytest.raises(VerificationError, match="not 32 bytes"):
        smt.verify_map_proof(root, key, MapProof(proof.siblings, (k, v + b"\x00")))
    with pytest.raises(VerificationError, match="map root is 32 bytes"):
        smt.verify_map_proof(root[:31], key, proof)
    with pytest.raises(VerificationError, match="map key is 32 bytes"):
        smt.verify_map_proof(root, key[:31], proof)
    with pytest.raises(VerificationError, match="does not match the root"):
        smt.verify_map_proof(bytes(32), key, proof)


def test_reference_verifier_rejects_what_the_core_rejects():
    rng = random.Random(15)
    for root, key, proof in SUBJECTS[:40]:
        for name, mutant in mutants(key, proof, rng):
            if name.startswith("insert sibling") and mutant.siblings[0] == EMPTY_HASH:
                continue  # only the core insists that the walk stops as high as it can; the fold catches it too
            with pytest.raises(AssertionError):
                ref_verify(root, key, list(mutant.siblings), mutant.leaf)


# Hypothesis.

BASES = [hashlib.sha256(bytes([i])).digest() for i in range(4)]
keys_strategy = st.builds(
    with_prefix,
    st.sampled_from(BASES),
    st.sampled_from([0, 1, 2, 8, 13, 64, 161, 254, 255, 256]),
    st.binary(min_size=32, max_size=32),
)
values_strategy = st.sampled_from([bytes([i]) * 32 for i in range(1, 5)])


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys_strategy, values_strategy, max_size=24), keys_strategy)
def test_hypothesis_core_matches_reference(pairs, probe):
    root = ref_root(pairs)
    assert smt.root(pairs) == root
    mem = stored(pairs)
    for key in [*pairs, probe]:
        proof = smt.prove(mem, key)
        siblings, leaf = ref_prove(pairs, key)
        assert proof == MapProof(tuple(siblings), leaf)
        assert smt.verify_map_proof(root, key, proof) == pairs.get(key)
        assert ref_verify(root, key, siblings, leaf) == pairs.get(key)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.dictionaries(keys_strategy, st.one_of(st.none(), values_strategy), max_size=10), max_size=6),
    st.integers(min_value=1, max_value=30),
)
def test_hypothesis_batches_match_rebuilding(batches, window):
    # The key space is small near the bases (the 256-bit "prefix" is the base itself), so keys come back.
    check_batches(batches, window=window)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=32, max_size=32),
    st.lists(st.binary(min_size=0, max_size=33), max_size=6),
    st.one_of(st.none(), st.tuples(st.binary(min_size=31, max_size=33), st.binary(min_size=31, max_size=33))),
)
def test_hypothesis_garbage_proofs_fail_closed(key, siblings, leaf):
    root = smt.root({BASES[0]: bytes(32), BASES[1]: bytes(32)})
    with pytest.raises(VerificationError):
        smt.verify_map_proof(root, key, MapProof(tuple(siblings), leaf))
