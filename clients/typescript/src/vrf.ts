// ECVRF-EDWARDS25519-SHA512-TAI (RFC 9381 section 5.5, suite 0x03) verification and the map keys it derives.
// Point arithmetic comes from @noble/curves (ed25519.Point); mirrors consent_ledger/core/vrf.py, including its
// key validation (a main-subgroup public key) and its one strictness beyond the RFC (Gamma in the main subgroup).
import { ed25519 } from "@noble/curves/ed25519.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { concat, utf8 } from "./bytes.ts";
import { InvalidInput, VerificationError } from "./errors.ts";

const Point = ed25519.Point;
type Point = InstanceType<typeof Point>;

const SUITE = 0x03;
export const PROOF_SIZE = 80;
export const BETA_SIZE = 64;
const C_LEN = 16;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;

function leToBigint(b: Uint8Array): bigint {
  let n = 0n;
  for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
  return n;
}

/** RFC 8032 5.1.3 decoding (any subgroup), or null. */
function decode(s: Uint8Array): Point | null {
  try {
    return Point.fromBytes(s, false);
  } catch {
    return null;
  }
}

function clearCofactor(p: Point): Point {
  const p2 = p.add(p);
  const p4 = p2.add(p2);
  return p4.add(p4);
}

/** ECVRF_encode_to_curve_try_and_increment (RFC 9381 5.4.1.1), salt = the public key. */
function encodeToCurve(publicKey: Uint8Array, alpha: Uint8Array): Point {
  const prefix = concat(Uint8Array.of(SUITE, 0x01), publicKey, alpha);
  for (let ctr = 0; ctr < 256; ctr++) {
    const candidate = sha512(concat(prefix, Uint8Array.of(ctr, 0x00))).slice(0, 32);
    const p = decode(candidate);
    if (p !== null) return clearCofactor(p);
  }
  throw new VerificationError("no curve point found for this input");
}

function challenge(...points: Uint8Array[]): Uint8Array {
  return sha512(concat(Uint8Array.of(SUITE, 0x02), ...points, Uint8Array.of(0x00))).slice(0, C_LEN);
}

function output(gamma: Point): Uint8Array {
  return sha512(concat(Uint8Array.of(SUITE, 0x03), clearCofactor(gamma).toBytes(), Uint8Array.of(0x00)));
}

function decodeProof(pi: Uint8Array): { gamma: Point; c: Uint8Array; s: bigint } {
  if (pi.length !== PROOF_SIZE) throw new VerificationError(`a VRF proof is ${PROOF_SIZE} bytes`);
  const gamma = decode(pi.slice(0, 32));
  if (gamma === null) throw new VerificationError("the VRF proof's Gamma is not a curve point");
  const s = leToBigint(pi.slice(48, 80));
  if (s >= L) throw new VerificationError("the VRF proof's s is not reduced");
  return { gamma, c: pi.slice(32, 48), s };
}

function inMainSubgroup(p: Point): boolean {
  return !p.is0() && p.isTorsionFree() && !clearCofactor(p).is0();
}

// VRF public keys that passed validation (they are pinned or learned once: the check runs once per key).
const validKeys = new Set<string>();

function validPublicKey(publicKey: Uint8Array): Point | null {
  const y = publicKey.length === 32 ? decode(publicKey) : null;
  if (y === null) return null;
  const id = Buffer.from(publicKey).toString("hex");
  if (validKeys.has(id)) return y;
  if (!inMainSubgroup(y)) return null;
  if (validKeys.size < 1_000) validKeys.add(id);
  return y;
}

/** ECVRF_proof_to_hash (RFC 9381 5.2): beta of a proof, without verifying it. */
export function proofToHash(pi: Uint8Array): Uint8Array {
  return output(decodeProof(pi).gamma);
}

/** ECVRF_verify (RFC 9381 5.3, with key validation): beta when pi proves alpha under publicKey. */
export function vrfVerify(publicKey: Uint8Array, alpha: Uint8Array, pi: Uint8Array): Uint8Array {
  const y = validPublicKey(publicKey);
  if (y === null) throw new VerificationError("the VRF public key is not a valid point");
  const { gamma, c, s } = decodeProof(pi);
  if (!inMainSubgroup(gamma)) throw new VerificationError("the VRF proof does not verify");
  const h = encodeToCurve(publicKey, alpha);
  const cn = leToBigint(c);
  const u = Point.BASE.multiplyUnsafe(s).subtract(y.multiplyUnsafe(cn));
  const v = h.multiplyUnsafe(s).subtract(gamma.multiplyUnsafe(cn));
  const expected = challenge(publicKey, h.toBytes(), gamma.toBytes(), u.toBytes(), v.toBytes());
  let same = 0;
  for (let i = 0; i < C_LEN; i++) same |= expected[i]! ^ c[i]!;
  if (same !== 0) throw new VerificationError("the VRF proof does not verify");
  return output(gamma);
}

/** 0x00 || patient public key || selector (UTF-8): the alpha of a consent key. */
export function consentAlpha(patient: Uint8Array, selector: string): Uint8Array {
  if (patient.length !== 32) throw new InvalidInput("a patient public key is 32 bytes");
  if (selector === "") throw new InvalidInput("a selector is a non-empty string");
  return concat(Uint8Array.of(0x00), patient, utf8.encode(selector));
}

/** 0x01 || party id (UTF-8): the alpha of a party-registration key. */
export function partyAlpha(partyId: string): Uint8Array {
  if (partyId === "") throw new InvalidInput("a party id is a non-empty string");
  return concat(Uint8Array.of(0x01), utf8.encode(partyId));
}

/** A client's cache of verified map keys: (VRF key, alpha, pi) -> key, bounded; a key is taken only once pi verifies. */
export class VerifiedMapKeys {
  private readonly cache = new Map<string, Uint8Array>();
  constructor(private readonly capacity = 10_000) {}

  key(publicKey: Uint8Array, alpha: Uint8Array, pi: Uint8Array): Uint8Array {
    const k = Buffer.from(concat(publicKey, pi, alpha)).toString("base64");
    const hit = this.cache.get(k);
    if (hit !== undefined) {
      this.cache.delete(k);
      this.cache.set(k, hit);
      return hit;
    }
    const out = vrfVerify(publicKey, alpha, pi).slice(0, 32);
    this.cache.set(k, out);
    if (this.cache.size > this.capacity) this.cache.delete(this.cache.keys().next().value!);
    return out;
  }
}
