// The consent-state map: a compressed sparse Merkle tree over 256-bit keys (docs/design.md section 5).
// Verification only; mirrors map_root_from_proof, verify_map_proof and value_hash of consent_ledger/core/smt.py.
//
//   H(S, d) = 32 zero bytes                               if S is empty
//           = SHA-256(0x02 || key || value_hash)          if S holds one pair (at every depth)
//           = SHA-256(0x03 || H(S0, d+1) || H(S1, d+1))   otherwise
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, equal, u64be } from "./bytes.ts";
import { InvalidInput, VerificationError } from "./errors.ts";

export const KEY_BITS = 256;
export const EMPTY_HASH = new Uint8Array(32);

export interface MapProof {
  /** Sibling hashes, bottom-up (deepest first). */
  siblings: readonly Uint8Array[];
  /** The pair where the walk ended, if any. */
  leaf: { key: Uint8Array; valueHash: Uint8Array } | null;
}

export function hashMapLeaf(key: Uint8Array, valueHash: Uint8Array): Uint8Array {
  return sha256(concat(Uint8Array.of(2), key, valueHash));
}

export function hashMapChildren(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(concat(Uint8Array.of(3), left, right));
}

function bit(key: Uint8Array, depth: number): number {
  return (key[depth >> 3]! >> (7 - (depth & 7))) & 1;
}

function sharesPrefix(a: Uint8Array, b: Uint8Array, bits: number): boolean {
  const whole = bits >> 3;
  const rest = bits & 7;
  for (let i = 0; i < whole; i++) if (a[i] !== b[i]) return false;
  return rest === 0 || (a[whole]! ^ b[whole]!) >> (8 - rest) === 0;
}

/** The value of a key: SHA-256 over (8-byte big-endian leaf index || leaf hash), in increasing index order. */
export function valueHash(entries: Iterable<readonly [bigint, Uint8Array]>): Uint8Array {
  const items = [...entries].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  if (items.length === 0) {
    throw new InvalidInput("a key with no in-force entries is absent from the map and has no value hash");
  }
  const parts: Uint8Array[] = [];
  let previous = -1n;
  for (const [index, leafHash] of items) {
    if (leafHash.length !== 32) throw new InvalidInput(`the leaf hash of index ${index} is not 32 bytes`);
    if (index === previous) throw new InvalidInput(`leaf index ${index} appears twice`);
    parts.push(u64be(index), leafHash);
    previous = index;
  }
  return sha256(concat(...parts));
}

/** The root a proof implies for `key`. Throws VerificationError for a malformed proof. */
export function mapRootFromProof(key: Uint8Array, proof: MapProof): Uint8Array {
  if (key.length !== 32) throw new VerificationError("a map key is 32 bytes");
  const siblings = proof.siblings;
  const n = siblings.length;
  if (n > KEY_BITS) throw new VerificationError(`map proof has ${n} siblings, at most ${KEY_BITS} are possible`);
  for (const s of siblings) {
    if (s.length !== 32) throw new VerificationError("map proof holds a sibling that is not 32 bytes");
  }
  if (n > 0 && equal(siblings[0]!, EMPTY_HASH)) {
    throw new VerificationError("map proof does not stop at the first subtree holding at most one pair");
  }
  let h: Uint8Array;
  if (proof.leaf === null) {
    h = EMPTY_HASH;
  } else {
    const { key: leafKey, valueHash: leafValue } = proof.leaf;
    if (leafKey.length !== 32 || leafValue.length !== 32) {
      throw new VerificationError("map proof leaf holds a key or value hash that is not 32 bytes");
    }
    if (!sharesPrefix(leafKey, key, n)) throw new VerificationError(`map proof leaf does not share the key's first ${n} bits`);
    h = hashMapLeaf(leafKey, leafValue);
  }
  siblings.forEach((s, i) => {
    h = bit(key, n - 1 - i) ? hashMapChildren(s, h) : hashMapChildren(h, s);
  });
  return h;
}

/** Check a proof for `key` against the map root: the key's value hash, or null when the proof shows it absent. */
export function verifyMapProof(root: Uint8Array, key: Uint8Array, proof: MapProof): Uint8Array | null {
  if (root.length !== 32) throw new VerificationError("a map root is 32 bytes");
  if (!equal(mapRootFromProof(key, proof), root)) throw new VerificationError("map proof does not match the root");
  if (proof.leaf !== null && equal(proof.leaf.key, key)) return proof.leaf.valueHash;
  return null;
}
