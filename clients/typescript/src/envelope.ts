// DSSE envelopes signed with Ed25519 (consent_ledger/core/envelope.py) and log leaves (core/leaf.py).
import { sha256 } from "@noble/hashes/sha2.js";
import { concat, fromHex, toHex, utf8 } from "./bytes.ts";
import { InvalidInput, VerificationError } from "./errors.ts";
import { EnvelopeSchema, LogLeafSchema } from "./gen/consent_ledger/v1/envelope_pb.ts";
import { verifySignature } from "./note.ts";
import { parseCanonical } from "./proto.ts";

export const DEFAULT_MAX_ENVELOPE_SIZE = 64 * 1024;
export const MAX_ENVELOPE_SIGNATURES = 8;
export const MAX_LEAF_SIZE = 512;
const KEYID = /^ed25519:[0-9a-f]{64}$/;
const PAYLOAD_TYPE = /^[\x21-\x7e]{1,128}$/;

/** DSSE pre-authentication encoding: "DSSEv1 <len> <type> <len> <payload>" (ASCII decimal byte lengths). */
export function pae(payloadType: string, payload: Uint8Array): Uint8Array {
  const t = utf8.encode(payloadType);
  return concat(utf8.encode(`DSSEv1 ${t.length} `), t, utf8.encode(` ${payload.length} `), payload);
}

/** "ed25519:" + 64 lower-case hex digits. */
export function keyidFor(publicKey: Uint8Array): string {
  if (publicKey.length !== 32) throw new InvalidInput("an Ed25519 public key must be 32 bytes");
  return `ed25519:${toHex(publicKey)}`;
}

export function checkPayloadType(payloadType: string): void {
  if (!PAYLOAD_TYPE.test(payloadType)) throw new InvalidInput("payload type must be 1 to 128 visible ASCII characters");
}

export interface ParsedEnvelope {
  payloadType: string;
  payload: Uint8Array;
  /** signers[i] is the public key signatures[i] claims to be from. */
  signers: Uint8Array[];
  signatures: Uint8Array[];
  raw: Uint8Array;
  sha256: Uint8Array;
}

/** Parse envelope bytes strictly (canonical encoding, 1 to 8 signatures by distinct ed25519 keyids). */
export function parseEnvelope(data: Uint8Array, maxSize = DEFAULT_MAX_ENVELOPE_SIZE): ParsedEnvelope {
  if (data.length > maxSize) throw new InvalidInput(`envelope is larger than ${maxSize} bytes`);
  const env = parseCanonical(EnvelopeSchema, data, "envelope");
  checkPayloadType(env.payloadType);
  if (env.payload.length === 0) throw new InvalidInput("envelope payload is empty");
  if (env.signatures.length < 1 || env.signatures.length > MAX_ENVELOPE_SIGNATURES) {
    throw new InvalidInput(`envelope must carry 1 to ${MAX_ENVELOPE_SIGNATURES} signatures`);
  }
  const signers: Uint8Array[] = [];
  const signatures: Uint8Array[] = [];
  for (const s of env.signatures) {
    if (!KEYID.test(s.keyid)) throw new InvalidInput("signature keyid is not ed25519:<64 lower-case hex digits>");
    if (s.sig.length !== 64) throw new InvalidInput("signature is not 64 bytes");
    signers.push(fromHex(s.keyid.slice("ed25519:".length)));
    signatures.push(s.sig);
  }
  if (new Set(env.signatures.map((s) => s.keyid)).size !== signers.length) {
    throw new InvalidInput("envelope is signed twice by the same key");
  }
  return { payloadType: env.payloadType, payload: env.payload, signers, signatures, raw: data, sha256: sha256(data) };
}

/** Verify every signature over PAE(type, payload); which keys must sign is the caller's policy. */
export function verifyEnvelope(env: ParsedEnvelope): void {
  if (env.signers.length === 0 || env.signers.length !== env.signatures.length) {
    throw new VerificationError("envelope carries no signatures");
  }
  const message = pae(env.payloadType, env.payload);
  env.signers.forEach((pk, i) => {
    try {
      verifySignature(pk, message, env.signatures[i]!);
    } catch {
      throw new VerificationError(`envelope signature by ${keyidFor(pk)} does not verify`);
    }
  });
}

export interface LogLeaf {
  integratedTimeMs: bigint;
  payloadType: string;
  envelopeSha256: Uint8Array;
}

/** Parse leaf bytes, accepting only the canonical encoding of a LogLeaf with every field set. */
export function parseLeaf(data: Uint8Array): LogLeaf {
  if (data.length > MAX_LEAF_SIZE) throw new InvalidInput(`leaf is larger than ${MAX_LEAF_SIZE} bytes`);
  const m = parseCanonical(LogLeafSchema, data, "leaf");
  if (m.integratedTimeMs <= 0n) throw new InvalidInput("leaf integration time must be a positive int64 (milliseconds)");
  checkPayloadType(m.payloadType);
  if (m.envelopeSha256.length !== 32) throw new InvalidInput("leaf envelope hash must be 32 bytes");
  return { integratedTimeMs: m.integratedTimeMs, payloadType: m.payloadType, envelopeSha256: m.envelopeSha256 };
}
