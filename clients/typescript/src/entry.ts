// One log entry, proven: its exact leaf bytes included under a verified checkpoint, its body (unless erased)
// hashing to the leaf's commitment, its envelope's signatures verified (clients/consent_ledger_client/verify.py).
import { equal } from "./bytes.ts";
import type { Checkpoint } from "./checkpoint.ts";
import { parseEnvelope, parseLeaf, verifyEnvelope, type LogLeaf, type ParsedEnvelope } from "./envelope.ts";
import { InvalidInput, VerificationError } from "./errors.ts";
import { hashLeaf, verifyInclusion } from "./merkle.ts";
import { sha256 } from "@noble/hashes/sha2.js";

export interface VerifiedEntry {
  index: bigint;
  leaf: LogLeaf;
  leafBytes: Uint8Array;
  leafHash: Uint8Array;
  /** null when the server says the body was erased. */
  envelope: ParsedEnvelope | null;
  checkpoint: Checkpoint;
  proof: readonly Uint8Array[];
}

/** Check inclusion of the exact leaf bytes, then the body against the commitment, then the envelope's signatures. */
export function verifyEntry(
  index: bigint,
  leafBytes: Uint8Array,
  envelopeBytes: Uint8Array | null,
  proof: readonly Uint8Array[],
  checkpoint: Checkpoint,
): VerifiedEntry {
  const leafHash = hashLeaf(leafBytes);
  verifyInclusion(index, checkpoint.size, leafHash, proof, checkpoint.rootHash);
  let leaf: LogLeaf;
  try {
    leaf = parseLeaf(leafBytes);
  } catch (e) {
    throw new VerificationError(`entry ${index}: the proven leaf is malformed: ${(e as Error).message}`);
  }
  let envelope: ParsedEnvelope | null = null;
  if (envelopeBytes !== null) {
    if (!equal(sha256(envelopeBytes), leaf.envelopeSha256)) {
      throw new VerificationError(`entry ${index}: the body does not hash to the leaf's commitment`);
    }
    try {
      envelope = parseEnvelope(envelopeBytes);
    } catch (e) {
      if (e instanceof InvalidInput) throw new VerificationError(`entry ${index}: the committed body is malformed: ${e.message}`);
      throw e;
    }
    verifyEnvelope(envelope);
    if (envelope.payloadType !== leaf.payloadType) {
      throw new VerificationError(`entry ${index}: the body's payload type differs from the leaf's`);
    }
  }
  return { index, leaf, leafBytes, leafHash, envelope, checkpoint, proof };
}
