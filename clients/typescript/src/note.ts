// C2SP signed notes (https://c2sp.org/signed-note) as Go's golang.org/x/mod/sumdb/note writes them, Go-compatible
// verifier keys "<name>+<8 hex key hash>+<base64(0x01 || public key)>", and tlog-cosignature/v1 lines.
// Mirrors consent_ledger/core/note.py: as strict as Go's note.Open, and canonical base64/hex only.
import { ed25519 } from "@noble/curves/ed25519.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { createPublicKey, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { concat, decodeUtf8, fromBase64, toBase64, utf8 } from "./bytes.ts";
import { InvalidInput, UnknownVerifier, VerificationError } from "./errors.ts";

export const ALG_ED25519 = 0x01;
export const ALG_COSIGNATURE_V1 = 0x04;
export const MAX_NOTE_SIZE = 1_000_000;
export const MAX_SIGNATURES = 100;
const SIG_PREFIX = "\u2014 "; // em dash, space

// Go's unicode.IsSpace.
const GO_SPACE = /[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;
// ASCII control characters other than newline.
const CONTROL = /[\x00-\x09\x0b-\x1f]/;
const HEX8 = /^[0-9a-f]{8}$/;

const SPKI_ED25519 = Buffer.from("302a300506032b6570032100", "hex");
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
// Public keys that passed the checks below, as node:crypto key objects (bounded; keys repeat: the log's, patients').
const checkedKeys = new Map<string, KeyObject>();

// libsodium's list of small-order point encodings (ge25519_has_small_order), compared ignoring the sign bit, as it
// does: 0 and 1 (and their non-canonical forms p and p + 1), -1, and the two points of order 8.
const SMALL_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
].map((h) => Buffer.from(h, "hex"));

export function isSmallOrderEncoding(b: Uint8Array): boolean {
  return SMALL_ORDER.some((x) => {
    for (let i = 0; i < 31; i++) if (x[i] !== b[i]) return false;
    return (x[31]! & 0x7f) === (b[31]! & 0x7f);
  });
}

function keyObject(publicKey: Uint8Array): KeyObject | null {
  const id = Buffer.from(publicKey).toString("hex");
  let k = checkedKeys.get(id);
  if (k !== undefined) return k;
  // As libsodium (the Python side): a canonical encoding of a point that is not of small order.
  try {
    if (isSmallOrderEncoding(publicKey) || ed25519.Point.fromBytes(publicKey, false).isSmallOrder()) return null;
  } catch {
    return null;
  }
  k = createPublicKey({ key: Buffer.concat([SPKI_ED25519, publicKey]), format: "der", type: "spki" });
  if (checkedKeys.size >= 10_000) checkedKeys.delete(checkedKeys.keys().next().value!);
  checkedKeys.set(id, k);
  return k;
}

/**
 * Ed25519 verification (RFC 8032) with libsodium's extra refusals, so that it accepts what PyNaCl does on the Python
 * side: a non-canonical or small-order public key, a small-order R and a non-reduced S are refused. The signature
 * equation itself is checked by node:crypto (OpenSSL); point decoding for the checks comes from @noble/curves.
 */
export function verifySignature(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): void {
  let ok = false;
  if (publicKey.length === 32 && signature.length === 64) {
    const key = keyObject(publicKey);
    const sInt = signature.slice(32).reduceRight((n, byte) => (n << 8n) | BigInt(byte), 0n);
    if (key !== null && sInt < L && !isSmallOrderEncoding(signature.slice(0, 32))) {
      try {
        ok = cryptoVerify(null, message, key, signature);
      } catch {
        ok = false;
      }
    }
  }
  if (!ok) throw new VerificationError("signature does not verify");
}

export function isValidName(name: string): boolean {
  return name !== "" && !name.includes("+") && !GO_SPACE.test(name) && name.isWellFormed();
}

function checkName(name: string): void {
  if (!isValidName(name)) throw new InvalidInput(`invalid key name ${JSON.stringify(name)}`);
}

/** SHA-256(name || "\n" || alg || public key)[:4], big-endian. */
export function keyHash(name: string, publicKey: Uint8Array, alg = ALG_ED25519): number {
  const d = sha256(concat(utf8.encode(name), Uint8Array.of(0x0a, alg), publicKey));
  return new DataView(d.buffer, d.byteOffset).getUint32(0, false);
}

/** An Ed25519 note verifier key; construction checks that the hash belongs to the name and key. */
export class Verifier {
  readonly keyHash: number;
  constructor(
    readonly name: string,
    readonly publicKey: Uint8Array,
  ) {
    checkName(name);
    if (publicKey.length !== 32) throw new InvalidInput("an Ed25519 public key must be 32 bytes");
    this.keyHash = keyHash(name, publicKey);
  }

  verify(message: Uint8Array, signature: Uint8Array): void {
    verifySignature(this.publicKey, message, signature);
  }

  /** The Go verifier key text. */
  toString(): string {
    return `${this.name}+${this.keyHash.toString(16).padStart(8, "0")}+${toBase64(concat(Uint8Array.of(ALG_ED25519), this.publicKey))}`;
  }
}

/** Parse "<name>+<8 hex>+<base64(0x01 || public key)>" as Go's note.NewVerifier does (lower-case hex only). */
export function parseVerifierKey(text: string): Verifier {
  const first = text.indexOf("+");
  const second = first < 0 ? -1 : text.indexOf("+", first + 1);
  if (first < 0 || second < 0) throw new InvalidInput("verifier key is not name+hash+key");
  const name = text.slice(0, first);
  const hash16 = text.slice(first + 1, second);
  const key64 = text.slice(second + 1);
  checkName(name);
  if (!HEX8.test(hash16)) throw new InvalidInput("verifier key hash is not 8 lower-case hex digits");
  const key = fromBase64(key64, "verifier key");
  if (key.length === 0) throw new InvalidInput("verifier key is empty");
  if (key[0] !== ALG_ED25519) throw new InvalidInput(`verifier key has unknown algorithm ${key[0]}`);
  if (key.length !== 33) throw new InvalidInput("verifier key is not 32 bytes");
  const v = new Verifier(name, key.slice(1));
  if (v.keyHash !== parseInt(hash16, 16)) throw new InvalidInput("verifier key hash does not match the key");
  return v;
}

export interface NoteSignature {
  name: string;
  keyHash: number;
  /** The bytes after the 4-byte key hash (64 for Ed25519, 8 + 64 for a cosignature). */
  signature: Uint8Array;
}

export interface Note {
  text: string;
  sigs: NoteSignature[];
  unverifiedSigs: NoteSignature[];
}

/** Parse one signature line "— <name> <base64>" (with or without its newline). Verifies nothing. */
export function parseSignatureLine(line: string): NoteSignature {
  if (line.endsWith("\n")) line = line.slice(0, -1);
  if (!line.startsWith(SIG_PREFIX)) throw new InvalidInput("signature line does not start with an em dash and a space");
  const rest = line.slice(SIG_PREFIX.length);
  const sp = rest.indexOf(" ");
  if (sp < 0 || sp === rest.length - 1) throw new InvalidInput("signature line has no signature");
  const name = rest.slice(0, sp);
  checkName(name);
  const raw = fromBase64(rest.slice(sp + 1), "signature");
  if (raw.length < 5) throw new InvalidInput("signature is too short");
  return {
    name,
    keyHash: new DataView(raw.buffer, raw.byteOffset).getUint32(0, false),
    signature: raw.slice(4),
  };
}

/**
 * Parse a signed note and verify its signatures by the known verifiers (Go's note.Open). Signatures by unknown keys
 * are returned unverified; a second signature by one key is ignored. Throws InvalidInput for a malformed note,
 * VerificationError when a known key's signature fails, UnknownVerifier when no known key signed it.
 */
export function openNote(msg: Uint8Array, verifiers: readonly Verifier[]): Note {
  if (msg.length > MAX_NOTE_SIZE) throw new InvalidInput("note is too large");
  const all = decodeUtf8(msg, "note");
  if (CONTROL.test(all)) throw new InvalidInput("note contains a control character");
  const split = all.lastIndexOf("\n\n");
  if (split < 0) throw new InvalidInput("note has no blank line before its signatures");
  const text = all.slice(0, split + 1);
  const block = all.slice(split + 2);
  if (block === "" || !block.endsWith("\n")) throw new InvalidInput("note signatures must end in a newline");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) throw new InvalidInput(`note has more than ${MAX_SIGNATURES} signatures`);
  const parsed = lines.map((line) => [line, parseSignatureLine(line)] as const);

  const known = new Map<string, Verifier | null>();
  for (const v of verifiers) {
    const k = `${v.name}\u0000${v.keyHash}`;
    const had = known.get(k);
    known.set(k, had === undefined || (had !== null && had.toString() === v.toString()) ? v : null);
  }
  const textBytes = utf8.encode(text);
  const verified: NoteSignature[] = [];
  const unverified: NoteSignature[] = [];
  const seen = new Set<string>();
  const seenUnverified = new Set<string>();
  for (const [line, sig] of parsed) {
    const k = `${sig.name}\u0000${sig.keyHash}`;
    if (!known.has(k)) {
      if (!seenUnverified.has(line)) {
        seenUnverified.add(line);
        unverified.push(sig);
      }
      continue;
    }
    const v = known.get(k);
    const id = `${sig.name}+${sig.keyHash.toString(16).padStart(8, "0")}`;
    if (v === null || v === undefined) throw new VerificationError(`ambiguous key ${id}`);
    if (seen.has(k)) continue;
    seen.add(k);
    try {
      v.verify(textBytes, sig.signature);
    } catch {
      throw new VerificationError(`invalid signature for key ${id}`);
    }
    verified.push(sig);
  }
  if (verified.length === 0) {
    const first = unverified[0]!;
    throw new UnknownVerifier(first.name, first.keyHash);
  }
  return { text, sigs: verified, unverifiedSigs: unverified };
}

/** Key hash of an Ed25519 cosigner (tlog-cosignature/v1): SHA-256(name || "\n" || 0x04 || key)[:4]. */
export function cosignatureKeyHash(name: string, publicKey: Uint8Array): number {
  return keyHash(name, publicKey, ALG_COSIGNATURE_V1);
}

/** Verify a witness's cosignature of a checkpoint body; returns its timestamp (Unix seconds). */
export function verifyCosignature(body: string, sig: NoteSignature, name: string, publicKey: Uint8Array): bigint {
  if (sig.name !== name || sig.keyHash !== cosignatureKeyHash(name, publicKey)) {
    throw new UnknownVerifier(sig.name, sig.keyHash);
  }
  if (sig.signature.length !== 72) throw new InvalidInput("cosignature is not 8 + 64 bytes");
  const ts = new DataView(sig.signature.buffer, sig.signature.byteOffset).getBigUint64(0, false);
  if (ts > (1n << 63n) - 1n) throw new InvalidInput("cosignature timestamp exceeds 2**63 - 1");
  const message = utf8.encode(`cosignature/v1\ntime ${ts}\n${body}`);
  try {
    verifySignature(publicKey, message, sig.signature.slice(8));
  } catch {
    throw new VerificationError(`invalid cosignature for key ${name}+${sig.keyHash.toString(16).padStart(8, "0")}`);
  }
  return ts;
}
