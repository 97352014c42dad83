// RFC 6962 / RFC 9162 Merkle trees: leaf and node hashes, inclusion and consistency proof verification.
// Mirrors consent_ledger/core/rfc6962.py and merkle.py (the same checks, the same refusals).
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, equal } from "./bytes.ts";
import { VerificationError } from "./errors.ts";

export const HASH_SIZE = 32;
export const EMPTY_ROOT = sha256(new Uint8Array(0));

/** SHA-256(0x00 || leaf). */
export function hashLeaf(leaf: Uint8Array): Uint8Array {
  return sha256(concat(Uint8Array.of(0), leaf));
}

/** SHA-256(0x01 || left || right). */
export function hashChildren(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(concat(Uint8Array.of(1), left, right));
}

function bitLength(n: bigint): number {
  return n === 0n ? 0 : n.toString(2).length;
}

function popCount(n: bigint): number {
  let c = 0;
  for (const ch of n.toString(2)) if (ch === "1") c++;
  return c;
}

function checkHashes(proof: readonly Uint8Array[], expected: number, what: string): void {
  if (proof.length !== expected) {
    throw new VerificationError(`${what} proof has ${proof.length} hashes, expected ${expected}`);
  }
  for (const h of proof) {
    if (!(h instanceof Uint8Array) || h.length !== HASH_SIZE) {
      throw new VerificationError(`${what} proof holds a hash that is not ${HASH_SIZE} bytes`);
    }
  }
}

/** The root implied by an inclusion proof (RFC 9162 2.1.3.2). Throws VerificationError for a malformed proof. */
export function rootFromInclusionProof(
  index: bigint,
  size: bigint,
  leafHash: Uint8Array,
  proof: readonly Uint8Array[],
): Uint8Array {
  if (!(0n <= index && index < size)) {
    throw new VerificationError(`index ${index} is out of range for tree size ${size}`);
  }
  if (leafHash.length !== HASH_SIZE) throw new VerificationError("leaf hash is not 32 bytes");
  const inner = bitLength(index ^ (size - 1n));
  const border = popCount(index >> BigInt(inner));
  checkHashes(proof, inner + border, "inclusion");
  let fn = index;
  let sn = size - 1n;
  let r = leafHash;
  for (const p of proof) {
    if ((fn & 1n) === 1n || fn === sn) {
      r = hashChildren(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = hashChildren(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return r;
}

/** Check that leafHash is leaf `index` of the tree of `size` with `root`. */
export function verifyInclusion(
  index: bigint,
  size: bigint,
  leafHash: Uint8Array,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): void {
  if (!equal(rootFromInclusionProof(index, size, leafHash, proof), root)) {
    throw new VerificationError(`inclusion proof for index ${index} does not match the root of tree size ${size}`);
  }
}

function split(n: bigint): bigint {
  return 1n << BigInt(bitLength(n - 1n) - 1);
}

/** How many hashes the consistency proof from size1 to size2 holds (RFC 9162 SUBPROOF). */
function consistencyProofLength(size1: bigint, size2: bigint): number {
  if (size1 === 0n || size1 === size2) return 0;
  let lo = 0n;
  let hi = size2;
  let count = 0;
  let complete = true;
  while (size1 !== hi) {
    const k = split(hi - lo);
    if (size1 - lo <= k) {
      hi = lo + k;
    } else {
      lo = lo + k;
      complete = false;
    }
    count++;
  }
  return complete ? count : count + 1;
}

/** The roots (of size1, of size2) a consistency proof implies (RFC 9162 2.1.4.2). Requires 0 < size1 < size2. */
export function rootsFromConsistencyProof(
  size1: bigint,
  size2: bigint,
  root1: Uint8Array,
  proof: readonly Uint8Array[],
): [Uint8Array, Uint8Array] {
  if (!(0n < size1 && size1 < size2)) {
    throw new VerificationError(`no consistency proof from tree size ${size1} to ${size2}`);
  }
  checkHashes(proof, consistencyProofLength(size1, size2), "consistency");
  const path = [...proof];
  if ((size1 & (size1 - 1n)) === 0n) path.unshift(root1);
  let fn = size1 - 1n;
  let sn = size2 - 1n;
  while ((fn & 1n) === 1n) {
    fn >>= 1n;
    sn >>= 1n;
  }
  let fr = path[0]!;
  let sr = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0n) throw new VerificationError("consistency proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      fr = hashChildren(c, fr);
      sr = hashChildren(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      sr = hashChildren(sr, c);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) {
    throw new VerificationError(`consistency proof from tree size ${size1} to ${size2} does not hold`);
  }
  return [fr, sr];
}

/** Check that the tree of size1 with root1 is a prefix of the tree of size2 with root2. */
export function verifyConsistency(
  size1: bigint,
  size2: bigint,
  root1: Uint8Array,
  root2: Uint8Array,
  proof: readonly Uint8Array[],
): void {
  if (!(0n <= size1 && size1 <= size2)) {
    throw new VerificationError(`tree size ${size1} is larger than ${size2}`);
  }
  if (size1 === size2 || size1 === 0n) {
    checkHashes(proof, 0, "consistency");
    if (size1 === size2 && !equal(root1, root2)) {
      throw new VerificationError(`two different roots for tree size ${size1}`);
    }
    return;
  }
  const [fr, sr] = rootsFromConsistencyProof(size1, size2, root1, proof);
  if (!equal(fr, root1) || !equal(sr, root2)) {
    throw new VerificationError(`consistency proof from tree size ${size1} to ${size2} does not hold`);
  }
}
