// Signed decision receipts (consent_ledger/core/receipt.py): a SignedReceipt carries the deterministic ReceiptBody
// bytes (the decision and the signed checkpoint note it was made at) and an Ed25519 signature by the log key over
// "consent-ledger/receipt/v1\n" || body. The signature is checked over the exact bytes received; the body must also
// be the canonical serialization of what it holds.
import { toBinary } from "@bufbuild/protobuf";
import { concat, utf8 } from "./bytes.ts";
import { ConsentLedgerError, VerificationError } from "./errors.ts";
import { keyidFor } from "./envelope.ts";
import {
  DecisionSchema,
  ReceiptBodySchema,
  SignedReceiptSchema,
  type Decision,
} from "./gen/consent_ledger/v1/access_pb.ts";
import { verifySignature } from "./note.ts";
import { parseCanonical } from "./proto.ts";

export const RECEIPT_CONTEXT = utf8.encode("consent-ledger/receipt/v1\n");
export const MAX_RECEIPT_SIZE = 256 * 1024;
const MAX_CHECKPOINT_NOTE_SIZE = 16 * 1024;

export interface Receipt {
  decision: Decision;
  /** The decision's canonical bytes (deterministic serialization). */
  decisionBytes: Uint8Array;
  checkpointNote: Uint8Array;
  body: Uint8Array;
  signer: Uint8Array;
  signature: Uint8Array;
}

/** The rules a Decision message must meet to be the encoding of a decision value (core.receipt.decode_decision). */
function checkDecisionShape(d: Decision): void {
  if (d.request === undefined || d.policy === undefined) throw new VerificationError("receipt: decision: request and policy are required");
  const p = d.request.dataPeriod;
  if (p !== undefined && p.startMs === 0n && p.endMs === 0n) {
    throw new VerificationError("receipt: decision is not in canonical form (empty sub-message present)");
  }
  if (d.request.patient.length !== 32) throw new VerificationError("receipt: decision: the patient key is 32 bytes");
  if (![1, 2, 3].includes(d.decision)) throw new VerificationError("receipt: decision: must be PERMIT, DENY or PARTIAL");
  for (const o of d.outcomes) {
    if (o.decision !== 1 && o.decision !== 2) throw new VerificationError("receipt: decision: an item's outcome must be PERMIT or DENY");
  }
}

/** Verify a receipt against the log's public key and return its contents. Throws VerificationError. */
export function openReceipt(receipt: Uint8Array, publicKey: Uint8Array): Receipt {
  const wrap = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if (e instanceof VerificationError) throw e;
      if (e instanceof ConsentLedgerError) throw new VerificationError(`receipt: ${e.message}`);
      throw e;
    }
  };
  if (receipt.length > MAX_RECEIPT_SIZE) throw new VerificationError(`receipt: larger than ${MAX_RECEIPT_SIZE} bytes`);
  const signed = wrap(() => parseCanonical(SignedReceiptSchema, receipt, "receipt"));
  if (signed.keyid !== keyidFor(publicKey)) throw new VerificationError("receipt is not signed by the given ledger key");
  try {
    verifySignature(publicKey, concat(RECEIPT_CONTEXT, signed.body), signed.signature);
  } catch {
    throw new VerificationError("receipt signature does not verify");
  }
  const body = wrap(() => parseCanonical(ReceiptBodySchema, signed.body, "receipt body"));
  if (body.decision === undefined || body.checkpointNote.length === 0) {
    throw new VerificationError("receipt: body needs a decision and a checkpoint note");
  }
  if (body.checkpointNote.length > MAX_CHECKPOINT_NOTE_SIZE) throw new VerificationError("receipt: checkpoint note too large");
  checkDecisionShape(body.decision);
  return {
    decision: body.decision,
    decisionBytes: toBinary(DecisionSchema, body.decision),
    checkpointNote: body.checkpointNote,
    body: signed.body,
    signer: publicKey,
    signature: signed.signature,
  };
}
