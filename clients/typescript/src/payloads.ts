// The payload kinds the verifier reads, parsed canonically (consent_ledger/core/payloads.py holds every rule of
// their content; this client checks the fields its proofs rest on).
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { sha256 } from "@noble/hashes/sha2.js";
import { toHex } from "./bytes.ts";
import { InvalidInput } from "./errors.ts";
import {
  AccessEventSchema,
  BreakGlassReviewSchema,
  ConsentGrantSchema,
  ConsentRevocationSchema,
  DelegationSchema,
  ErasureSchema,
  PartyRegistrationSchema,
  StateCommitSchema,
} from "./gen/consent_ledger/v1/payloads_pb.ts";
import { parseCanonical } from "./proto.ts";

export const CONSENT_GRANT = "consent_ledger.v1.ConsentGrant";
export const CONSENT_REVOCATION = "consent_ledger.v1.ConsentRevocation";
export const ACCESS_EVENT = "consent_ledger.v1.AccessEvent";
export const PARTY_REGISTRATION = "consent_ledger.v1.PartyRegistration";
export const DELEGATION = "consent_ledger.v1.Delegation";
export const ERASURE = "consent_ledger.v1.Erasure";
export const STATE_COMMIT = "consent_ledger.v1.StateCommit";
export const BREAK_GLASS_REVIEW = "consent_ledger.v1.BreakGlassReview";

const SCHEMAS = {
  [CONSENT_GRANT]: ConsentGrantSchema,
  [CONSENT_REVOCATION]: ConsentRevocationSchema,
  [ACCESS_EVENT]: AccessEventSchema,
  [PARTY_REGISTRATION]: PartyRegistrationSchema,
  [DELEGATION]: DelegationSchema,
  [ERASURE]: ErasureSchema,
  [STATE_COMMIT]: StateCommitSchema,
  [BREAK_GLASS_REVIEW]: BreakGlassReviewSchema,
} as const;

type Schemas = typeof SCHEMAS;
export type PayloadType = keyof Schemas;
export type Payload = { [K in PayloadType]: { type: K; message: MessageShape<Schemas[K]> } }[PayloadType];

/** The consent (or delegation) id: hex SHA-256 of the payload bytes. */
export function consentId(payload: Uint8Array): string {
  return toHex(sha256(payload));
}

/** Parse a payload of a known type, accepting only its canonical encoding. */
export function parsePayload(payloadType: string, payload: Uint8Array): Payload {
  if (!(payloadType in SCHEMAS)) throw new InvalidInput(`unknown payload type ${JSON.stringify(payloadType)}`);
  const type = payloadType as PayloadType;
  const schema: DescMessage = SCHEMAS[type];
  const message = parseCanonical(schema, payload, `${type} payload`);
  const parsed = { type, message } as Payload;
  if (parsed.type === STATE_COMMIT) {
    const m = parsed.message;
    if (m.mapRoot.length !== 32) throw new InvalidInput("state commit: the map root is 32 bytes");
    if (m.batchTimeMs <= 0n) throw new InvalidInput("state commit: the batch time must be positive");
    if (m.mapVrfPublicKey.length !== 0 && m.mapVrfPublicKey.length !== 32) {
      throw new InvalidInput("state commit: the map VRF public key is 32 bytes");
    }
  } else if (parsed.type === CONSENT_GRANT || parsed.type === DELEGATION) {
    if (parsed.message.patient.length !== 32) throw new InvalidInput(`${type}: the patient key is 32 bytes`);
  }
  return parsed;
}
