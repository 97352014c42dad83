// The shared test vectors (kept in the repository's tests/data/, copied from the design folder; see its README):
// RFC 6962 roots and proofs and Go-made signed-note checkpoints (tlog_vectors.json), consent-state map roots and
// proofs (smt_vectors.json), and RFC 9381 ECVRF-EDWARDS25519-SHA512-TAI examples (vrf_vectors.json).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import {
  fromBase64,
  fromHex,
  hashChildren,
  hashLeaf,
  InvalidInput,
  openCheckpoint,
  parseVerifierKey,
  proofToHash,
  rootFromInclusionProof,
  toHex,
  UnknownVerifier,
  Verifier,
  utf8,
  valueHash,
  VerificationError,
  verifyConsistency,
  verifyInclusion,
  verifyMapProof,
  vrfVerify,
  consentAlpha,
} from "../src/index.ts";

const DATA = new URL("../../../tests/data/", import.meta.url);
const load = (name: string) => JSON.parse(readFileSync(new URL(name, DATA), "utf8"));
const tlog = load("tlog_vectors.json");
const smt = load("smt_vectors.json");
const vrf = load("vrf_vectors.json");

const leaves: Uint8Array[] = tlog.leaves_b64.map((b: string) => fromBase64(b, "leaf"));
const roots: Uint8Array[] = tlog.roots_b64.map((b: string) => fromBase64(b, "root"));
const b64s = (xs: string[]) => xs.map((x) => fromBase64(x, "hash"));

/** RFC 6962 MTH, recursive: the reference the vectors' roots are checked against. */
function mth(hashes: Uint8Array[]): Uint8Array {
  if (hashes.length === 1) return hashes[0]!;
  let k = 1;
  while (k * 2 < hashes.length) k *= 2;
  return hashChildren(mth(hashes.slice(0, k)), mth(hashes.slice(k)));
}

function flip(b: Uint8Array, i = 0): Uint8Array {
  const c = b.slice();
  c[i]! ^= 1;
  return c;
}

describe("tlog_vectors.json (Go sumdb tlog and note)", () => {
  it("roots: the RFC 6962 root of every prefix of the leaves", () => {
    const hashes = leaves.map(hashLeaf);
    roots.forEach((root, k) => assert.equal(toHex(mth(hashes.slice(0, k + 1))), toHex(root)));
  });

  it("inclusion proofs verify, and a changed hash, index or size does not", () => {
    assert.ok(tlog.inclusion.length > 0);
    for (const c of tlog.inclusion) {
      const index = BigInt(c.index);
      const size = BigInt(c.size);
      const proof = b64s(c.proof);
      const root = roots[c.size - 1]!;
      verifyInclusion(index, size, hashLeaf(leaves[c.index]!), proof, root);
      assert.throws(() => verifyInclusion(index, size, hashLeaf(new Uint8Array([...leaves[c.index]!, 0])), proof, root), VerificationError);
      if (proof.length > 0) {
        const bad = [...proof];
        bad[0] = flip(bad[0]!);
        assert.throws(() => verifyInclusion(index, size, hashLeaf(leaves[c.index]!), bad, root), VerificationError);
        assert.throws(() => verifyInclusion(index, size, hashLeaf(leaves[c.index]!), proof.slice(1), root), VerificationError);
      }
      if (size > 1n) {
        const other = index === 0n ? 1n : index - 1n;
        assert.throws(() => verifyInclusion(other, size, hashLeaf(leaves[c.index]!), proof, root), VerificationError);
      }
      assert.throws(() => rootFromInclusionProof(size, size, hashLeaf(leaves[0]!), proof), VerificationError);
    }
  });

  it("consistency proofs verify, and a changed hash or root does not", () => {
    assert.ok(tlog.consistency.length > 0);
    for (const c of tlog.consistency) {
      const s1 = BigInt(c.old_size);
      const s2 = BigInt(c.new_size);
      const proof = b64s(c.proof);
      const r1 = roots[c.old_size - 1]!;
      const r2 = roots[c.new_size - 1]!;
      verifyConsistency(s1, s2, r1, r2, proof);
      assert.throws(() => verifyConsistency(s1, s2, r1, flip(r2), proof), VerificationError);
      if (proof.length > 0) {
        const bad = [...proof];
        bad[bad.length - 1] = flip(bad[bad.length - 1]!);
        assert.throws(() => verifyConsistency(s1, s2, r1, r2, bad), VerificationError);
        assert.throws(() => verifyConsistency(s1, s2, r1, r2, [...proof, proof[0]!]), VerificationError);
      }
      if (s1 !== s2) assert.throws(() => verifyConsistency(s2, s1, r2, r1, proof), VerificationError);
    }
  });

  it("checkpoints: Go-signed notes open with the Go verifier key and name the right root", () => {
    const verifier = parseVerifierKey(tlog.verifier_key);
    assert.equal(verifier.toString(), tlog.verifier_key);
    assert.equal(verifier.name, tlog.signer_name);
    for (const c of tlog.checkpoints) {
      const raw = utf8.encode(c.note);
      const { checkpoint } = openCheckpoint(raw, verifier);
      assert.equal(checkpoint.origin, tlog.signer_name);
      assert.equal(checkpoint.size, BigInt(c.size));
      assert.equal(toHex(checkpoint.rootHash), toHex(roots[c.size - 1]!));
      assert.equal(checkpoint.consentState, null);
      // A changed body byte breaks the signature; so does a changed signature byte.
      const body = c.note.replace(`\n${c.size}\n`, `\n${c.size + 1}\n`);
      assert.throws(() => openCheckpoint(utf8.encode(body), verifier), VerificationError);
      const sigStart = c.note.lastIndexOf(" ") + 1;
      const sig = fromBase64(c.note.slice(sigStart, -1), "sig");
      const badSig = c.note.slice(0, sigStart) + Buffer.from(flip(sig, 10)).toString("base64") + "\n";
      assert.throws(() => openCheckpoint(utf8.encode(badSig), verifier), VerificationError);
    }
  });

  it("verifier keys: a wrong hash, algorithm or encoding is refused", () => {
    const key: string = tlog.verifier_key;
    const [name, hash, b64] = key.split("+") as [string, string, string];
    assert.throws(() => parseVerifierKey(`${name}+${hash.replace(/^./, hash[0] === "0" ? "1" : "0")}+${b64}`), InvalidInput);
    assert.throws(() => parseVerifierKey(`${name}+${hash.toUpperCase()}+${b64}`), InvalidInput);
    const raw = fromBase64(b64, "key");
    raw[0] = 0x04;
    assert.throws(() => parseVerifierKey(`${name}+${hash}+${Buffer.from(raw).toString("base64")}`), InvalidInput);
    assert.throws(() => parseVerifierKey(`${name}+${hash}`), InvalidInput);
    // A note signed by another key: UnknownVerifier, naming the key that did sign it.
    const otherKey = new Uint8Array(32).fill(7);
    const other = new Verifier("other.example", otherKey);
    assert.throws(() => openCheckpoint(utf8.encode(tlog.checkpoints[0].note), other), UnknownVerifier);
  });
});

describe("smt_vectors.json (the consent-state map)", () => {
  it("every proof verifies against its case's root: presence gives the value hash, absence null", () => {
    let n = 0;
    for (const c of smt.cases) {
      const root = fromHex(c.root);
      for (const p of c.proofs) {
        const proof = {
          siblings: p.siblings.map(fromHex),
          leaf: p.leaf === null ? null : { key: fromHex(p.leaf.key), valueHash: fromHex(p.leaf.value_hash) },
        };
        const got = verifyMapProof(root, fromHex(p.key), proof);
        if (p.present) assert.equal(toHex(got!), p.leaf.value_hash);
        else assert.equal(got, null);
        n++;
      }
    }
    assert.ok(n >= 75, `only ${n} proofs`);
  });

  it("a changed sibling, leaf, key or root is refused", () => {
    for (const c of smt.cases) {
      const root = fromHex(c.root);
      for (const p of c.proofs) {
        const siblings: Uint8Array[] = p.siblings.map(fromHex);
        const leaf = p.leaf === null ? null : { key: fromHex(p.leaf.key), valueHash: fromHex(p.leaf.value_hash) };
        const key = fromHex(p.key);
        if (siblings.length > 0) {
          const bad = [...siblings];
          bad[bad.length - 1] = flip(bad[bad.length - 1]!);
          assert.throws(() => verifyMapProof(root, key, { siblings: bad, leaf }), VerificationError);
          // Dropping the top sibling changes the root.
          assert.throws(() => verifyMapProof(root, key, { siblings: siblings.slice(0, -1), leaf }), VerificationError);
        }
        if (leaf !== null) {
          assert.throws(
            () => verifyMapProof(root, key, { siblings, leaf: { key: leaf.key, valueHash: flip(leaf.valueHash) } }),
            VerificationError,
          );
          // Claiming absence where a pair sits.
          if (c.size > 0) assert.throws(() => verifyMapProof(root, key, { siblings, leaf: null }), VerificationError);
        }
        if (c.size > 0) assert.throws(() => verifyMapProof(flip(root, 31), key, { siblings, leaf }), VerificationError);
      }
    }
  });

  it("value hash example", () => {
    const ex = smt.value_hash_example;
    const got = valueHash(ex.entries.map(([i, h]: [number, string]) => [BigInt(i), fromHex(h)] as const));
    assert.equal(toHex(got), ex.value_hash);
    assert.throws(() => valueHash([]), InvalidInput);
    assert.throws(() => valueHash([[1n, fromHex(ex.entries[0][1])], [1n, fromHex(ex.entries[1][1])]]), InvalidInput);
  });
});

describe("vrf_vectors.json (RFC 9381 appendix B.3)", () => {
  it("every proof verifies to its beta, and proof_to_hash agrees", () => {
    assert.equal(vrf.vectors.length, 3);
    for (const v of vrf.vectors) {
      const beta = vrfVerify(fromHex(v.pk), fromHex(v.alpha), fromHex(v.pi));
      assert.equal(toHex(beta), v.beta);
      assert.equal(toHex(proofToHash(fromHex(v.pi))), v.beta);
    }
  });

  it("a changed pi (Gamma, c or s), alpha or key is refused", () => {
    for (const v of vrf.vectors) {
      const pk = fromHex(v.pk);
      const alpha = fromHex(v.alpha);
      const pi = fromHex(v.pi);
      for (const i of [0, 5, 32, 40, 48, 70]) assert.throws(() => vrfVerify(pk, alpha, flip(pi, i)), VerificationError);
      assert.throws(() => vrfVerify(pk, new Uint8Array([...alpha, 0]), pi), VerificationError);
      assert.throws(() => vrfVerify(flip(pk, 3), alpha, pi), VerificationError);
      assert.throws(() => vrfVerify(pk, alpha, pi.slice(0, 79)), VerificationError);
      // s not reduced (s + L) is refused even though it would be the same scalar.
      const s = pi.slice(48);
      let carry = 0;
      const L = fromHex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
      const sl = new Uint8Array(32);
      for (let j = 0; j < 32; j++) {
        const t = s[j]! + L[j]! + carry;
        sl[j] = t & 0xff;
        carry = t >> 8;
      }
      if (carry === 0) assert.throws(() => vrfVerify(pk, alpha, new Uint8Array([...pi.slice(0, 48), ...sl])), VerificationError);
    }
  });

  it("consent alphas are 0x00 || patient || selector", () => {
    const p = fromHex("00".repeat(32));
    assert.equal(toHex(consentAlpha(p, "any")), "00" + "00".repeat(32) + toHex(utf8.encode("any")));
    assert.throws(() => consentAlpha(p.slice(1), "any"), InvalidInput);
  });
});

