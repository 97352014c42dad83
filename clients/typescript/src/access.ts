// Verifying a CheckAccess answer (clients/consent_ledger_client/consent.py, ConsentClient.verify_access): the
// receipt and its binding to the checkpoint, that the decision answers the question asked, every evidence entry,
// the requester's registration and its party-key map proof, the StateCommit the checkpoint names (signed by the log
// key, fresh, not from the future, no rollback), each selector's map proof with the VRF proof of its key, that the
// evidence is exactly the in-force set the map commits to, the delegations behind delegate-signed grants, and
// that the decision re-computed from the evidence (src/decide.ts, core/decision.decide) is byte for byte the signed
// one, and that the decision was made for now.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { equal } from "./bytes.ts";
import type { Checkpoint } from "./checkpoint.ts";
import { verifyEntry, type VerifiedEntry } from "./entry.ts";
import {
  DecisionMismatch,
  DecisionTimeMismatch,
  ExpiredDecision,
  IncompleteEvidence,
  InvalidInput,
  StaleEvidence,
  StaleRegistration,
  StateCommitNotNamed,
  StateFromTheFuture,
  StateRollback,
  VerificationError,
  WrongMapVrfKey,
} from "./errors.ts";
import {
  DecisionPolicySchema,
  DecisionSchema,
  type CheckAccessRequest,
  type CheckAccessResponse,
  type Decision,
  type DecisionPolicy,
} from "./gen/consent_ledger/v1/access_pb.ts";
import type { Delegation, PartyRegistration, StateCommit } from "./gen/consent_ledger/v1/payloads_pb.ts";
import {
  CONSENT_GRANT,
  DELEGATION,
  PARTY_REGISTRATION,
  STATE_COMMIT,
  consentId,
  parsePayload,
  type Payload,
} from "./payloads.ts";
import { openReceipt } from "./receipt.ts";
import { decide, type GrantEvidence } from "./decide.ts";
import { valueHash, verifyMapProof } from "./smt.ts";
import { consentAlpha, partyAlpha, VerifiedMapKeys } from "./vrf.ts";

export const MAX_IN_FORCE = 256;
export const MAX_CLOCK_SKEW_MS = 5_000;
export const DEFAULT_MAX_STATE_AGE_MS = 120_000;
const ATTEST_GUARDIANSHIP = "attest-guardianship";

/** What a verification reads and updates: pinned keys, the clock, and the marks that only move forward. */
export interface AccessVerifier {
  /** The log's Ed25519 public key (also an operator key). */
  logPublicKey: Uint8Array;
  /** Keys trusted to register parties besides the log's own. */
  operatorKeys: readonly Uint8Array[];
  /** The pinned map VRF public key, or null to take the one the first verified StateCommit names (then held). */
  mapVrfPublicKey: Uint8Array | null;
  /** This client's party id: a decision made for anyone else is refused (empty: not checked). */
  partyId: string;
  /** If set, decisions made under any other policy are refused. */
  policy: DecisionPolicy | null;
  clockMs: () => number;
  maxStateAgeMs: number;
  maxClockSkewMs: number;
  mapKeys: VerifiedMapKeys;
  /** The newest StateCommit this client verified (index and batch time), or null. */
  newestStateCommit: { index: bigint; batchTimeMs: bigint } | null;
}

export function newAccessVerifier(
  init: Pick<AccessVerifier, "logPublicKey"> & Partial<AccessVerifier>,
): AccessVerifier {
  return {
    operatorKeys: [],
    mapVrfPublicKey: null,
    partyId: "",
    policy: null,
    clockMs: () => Date.now(),
    maxStateAgeMs: DEFAULT_MAX_STATE_AGE_MS,
    maxClockSkewMs: MAX_CLOCK_SKEW_MS,
    mapKeys: new VerifiedMapKeys(),
    newestStateCommit: null,
    ...init,
  };
}

interface Evidence {
  entry: VerifiedEntry;
  payload: Payload;
  signers: Uint8Array[];
  consentId: string;
}

export interface VerifiedAccess {
  decision: Decision;
  /** "PERMIT", "DENY" or "PARTIAL". */
  outcome: string;
  permitted: boolean;
  evidence: VerifiedEntry[];
  checkpoint: Checkpoint;
  checkpointNote: Uint8Array;
  receipt: Uint8Array;
  stateCommitIndex: bigint;
  stateMapRoot: Uint8Array;
  stateTimeMs: bigint;
  mapVrfPublicKey: Uint8Array;
  /** The selectors whose map proofs were checked, with the consent ids in force for each. */
  selectors: { selector: string; inForce: string[] }[];
  /** Set when the response says an access event was recorded (the client then checks the entry itself). */
  accessEventIndex: bigint | null;
}

const OUTCOMES: Record<number, string> = { 1: "PERMIT", 2: "DENY", 3: "PARTIAL" };

function hasKey(keys: readonly Uint8Array[], k: Uint8Array): boolean {
  return keys.some((x) => equal(x, k));
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** org:<id>, role:<r> for each role (sorted, once), any: the grantee selectors that name a requester. */
export function granteeSelectors(requesterId: string, roles: readonly string[]): string[] {
  return [`org:${requesterId}`, ...[...new Set(roles)].sort().map((r) => `role:${r}`), "any"];
}

function operatorKeysOf(v: AccessVerifier): Uint8Array[] {
  return [v.logPublicKey, ...v.operatorKeys];
}

/** Is `t` more than `skew` ms from `now`? */
function outsideSkew(t: bigint, now: number, skew: number): boolean {
  const d = t - BigInt(now);
  return d > BigInt(skew) || d < -BigInt(skew);
}

/**
 * Verify a CheckAccess answer to `req` against a checkpoint the caller has already accepted (its signature and its
 * consistency with what the caller saw before): `checkpoint` must be the opened `resp.checkpoint.note`. On success
 * the verifier's newest StateCommit mark moves forward (and a learned map VRF key is held).
 */
export function verifyAccessResponse(
  v: AccessVerifier,
  req: CheckAccessRequest,
  resp: CheckAccessResponse,
  checkpoint: Checkpoint,
): VerifiedAccess {
  const note = resp.checkpoint?.note ?? new Uint8Array(0);
  const receipt = openReceipt(resp.receipt, v.logPublicKey);
  if (!equal(receipt.checkpointNote, note)) {
    throw new VerificationError("the receipt is bound to another checkpoint than the one returned");
  }
  const decision = receipt.decision;
  if (resp.decision === undefined || !equal(toBinary(DecisionSchema, resp.decision), receipt.decisionBytes)) {
    throw new VerificationError("the decision in the response differs from the signed receipt's");
  }
  const r = decision.request!;
  const items = (d: { dataClass: string; sensitivityLabels: string[] }[]) =>
    JSON.stringify(d.map((i) => [i.dataClass, i.sensitivityLabels]));
  const period = (p: { startMs: bigint; endMs: bigint } | undefined) => `${p?.startMs ?? 0n}/${p?.endMs ?? 0n}`;
  if (
    !equal(req.patient, r.patient) ||
    req.action !== r.action ||
    req.purpose !== r.purpose ||
    items(req.data) !== items(r.data) ||
    period(req.dataPeriod) !== period(r.dataPeriod) ||
    req.breakGlass !== r.breakGlass ||
    req.breakGlassReason !== r.breakGlassReason ||
    (req.timeMs !== 0n && r.timeMs !== req.timeMs)
  ) {
    throw new VerificationError("the decision answers another question than the one asked");
  }
  if (v.partyId && r.requesterId !== v.partyId) {
    throw new VerificationError(`the decision was made for ${r.requesterId}, not for ${v.partyId}`);
  }
  if (v.policy !== null && !equal(toBinary(DecisionPolicySchema, decision.policy!), toBinary(DecisionPolicySchema, v.policy))) {
    throw new VerificationError("the decision was made under another policy than the pinned one");
  }

  // An entry's inclusion proof may go on with the tail of the whole proof of an entry listed before it
  // (access.proto, inclusion_proof_tail): rebuild the whole proof and verify it like any other.
  const listed = new Set(resp.evidence.map((e) => e.entry?.index));
  const whole = new Map<bigint, readonly Uint8Array[]>();
  const evidence: Evidence[] = resp.evidence.map((e) => {
    const entry = e.entry;
    if (entry === undefined) throw new VerificationError("an evidence item holds no entry");
    const proof = [...e.inclusionProof];
    if (e.inclusionProofTail !== 0) {
      const source = e.inclusionProofTailFrom;
      const base = whole.get(source);
      if (base === undefined) {
        if (!listed.has(source)) {
          throw new IncompleteEvidence(
            `the inclusion proof of entry ${entry.index} goes on with that of entry ${source}, which is missing from the evidence`,
          );
        }
        throw new VerificationError(`the inclusion proof of entry ${entry.index} goes on with that of a later entry`);
      }
      if (e.inclusionProofTail > base.length) {
        throw new VerificationError(`the inclusion proof of entry ${entry.index} takes more hashes than entry ${source}'s has`);
      }
      proof.push(...base.slice(base.length - e.inclusionProofTail));
    }
    const ve = verifyEntry(entry.index, entry.leaf, entry.bodyErased ? null : entry.envelope, proof, checkpoint);
    if (!whole.has(ve.index)) whole.set(ve.index, ve.proof);
    if (ve.envelope === null) throw new VerificationError(`entry ${ve.index} is evidence but its body was withheld or erased`);
    let payload: Payload;
    try {
      payload = parsePayload(ve.envelope.payloadType, ve.envelope.payload);
    } catch (err) {
      if (err instanceof InvalidInput) throw new VerificationError(`entry ${ve.index} does not hold a valid payload: ${err.message}`);
      throw err;
    }
    return { entry: ve, payload, signers: ve.envelope.signers, consentId: consentId(ve.envelope.payload) };
  });

  checkRegistration(v, evidence, r.requesterId, r.requesterRoles);
  const complete = checkComplete(v, resp, evidence, r.patient, r.requesterId, r.requesterRoles, r.timeMs, note, checkpoint);
  const recomputed = toBinary(DecisionSchema, decide(complete.grants, r, decision.policy!));
  if (!equal(recomputed, receipt.decisionBytes)) {
    const again = fromBinary(DecisionSchema, recomputed);
    throw new DecisionMismatch(
      `the server decided ${OUTCOMES[decision.decision]}, but its evidence gives ${OUTCOMES[again.decision]}` +
        (again.decision === decision.decision ? " (with other details: reasons, consents or times)" : ""),
    );
  }
  const now = v.clockMs();
  if (outsideSkew(r.timeMs, now, v.maxClockSkewMs)) {
    throw new DecisionTimeMismatch(
      `the decision was made for ${r.timeMs}, ${Number(r.timeMs - BigInt(now)) / 1000} s from this client's clock (at most ${v.maxClockSkewMs / 1000} s)`,
    );
  }
  if (decision.validUntilMs <= BigInt(now)) {
    throw new ExpiredDecision(`the decision expired at ${decision.validUntilMs} (now ${now})`);
  }
  if (decision.breakGlassUntilMs !== 0n && !resp.accessEventRecorded) {
    throw new VerificationError("a break-glass permit must come with the access event the ledger recorded for it");
  }
  if (req.recordAccessEvent && !resp.accessEventRecorded) {
    throw new VerificationError("an access event was asked for and not recorded");
  }
  const sc = complete.stateCommit;
  v.newestStateCommit = { index: sc.index, batchTimeMs: sc.batchTimeMs };
  if (v.mapVrfPublicKey === null) v.mapVrfPublicKey = complete.vrfKey;
  return {
    decision,
    outcome: OUTCOMES[decision.decision]!,
    permitted: decision.decision === 1,
    evidence: evidence.map((e) => e.entry),
    checkpoint,
    checkpointNote: note,
    receipt: resp.receipt,
    stateCommitIndex: sc.index,
    stateMapRoot: sc.mapRoot,
    stateTimeMs: sc.batchTimeMs,
    mapVrfPublicKey: complete.vrfKey,
    selectors: complete.selectors,
    accessEventIndex: resp.accessEventRecorded ? resp.accessEventIndex : null,
  };
}

function registrationsOf(evidence: Evidence[], partyId: string): (Evidence & { reg: PartyRegistration })[] {
  const out: (Evidence & { reg: PartyRegistration })[] = [];
  for (const e of evidence) {
    if (e.payload.type === PARTY_REGISTRATION && e.payload.message.partyId === partyId) out.push({ ...e, reg: e.payload.message });
  }
  return out.sort((a, b) => (a.entry.index < b.entry.index ? -1 : 1));
}

/** The requester's roles must be those of its latest registration in the evidence, signed by an operator key. */
function checkRegistration(v: AccessVerifier, evidence: Evidence[], partyId: string, roles: readonly string[]): void {
  const regs = registrationsOf(evidence, partyId);
  const latest = regs[regs.length - 1];
  if (latest === undefined) throw new VerificationError(`the evidence holds no registration of ${partyId}`);
  if (!latest.signers.some((k) => hasKey(operatorKeysOf(v), k))) {
    throw new VerificationError(`the registration of ${partyId} is not signed by an operator key`);
  }
  if (!sameStrings([...new Set(latest.reg.roles)].sort(), [...roles].sort())) {
    throw new VerificationError(`the decision used roles ${JSON.stringify(roles)}, the registration gives ${JSON.stringify(latest.reg.roles)}`);
  }
}

interface Complete {
  stateCommit: StateCommit & { index: bigint };
  vrfKey: Uint8Array;
  inForceIds: Set<string>;
  grants: GrantEvidence[];
  selectors: { selector: string; inForce: string[] }[];
}

/** The evidence is exactly the in-force set, per selector, that the signed consent state commits to, and fresh. */
function checkComplete(
  v: AccessVerifier,
  resp: CheckAccessResponse,
  evidence: Evidence[],
  patient: Uint8Array,
  requesterId: string,
  roles: readonly string[],
  decisionTimeMs: bigint,
  note: Uint8Array,
  checkpoint: Checkpoint,
): Complete {
  const scEvidence = evidence.find((e) => e.entry.index === resp.stateCommitIndex);
  if (scEvidence === undefined || scEvidence.payload.type !== STATE_COMMIT) {
    throw new IncompleteEvidence("the evidence holds no state commit");
  }
  const sc = { ...scEvidence.payload.message, index: scEvidence.entry.index };
  if (!hasKey(scEvidence.signers, v.logPublicKey)) throw new VerificationError("the state commit is not signed by the log's key");
  if (checkpoint.consentState !== sc.index) {
    throw new StateCommitNotNamed(
      `the evidence rests on the state commit at ${sc.index}, but its checkpoint names ${checkpoint.consentState ?? "none"} (note ${note.length} bytes)`,
    );
  }
  const now = v.clockMs();
  if (sc.batchTimeMs - BigInt(now) > BigInt(v.maxClockSkewMs)) {
    throw new StateFromTheFuture(`the state commit at ${sc.index} is dated ${sc.batchTimeMs}, after this client's clock ${now} plus ${v.maxClockSkewMs} ms`);
  }
  const newest = v.newestStateCommit;
  if (newest !== null && (sc.index < newest.index || sc.batchTimeMs < newest.batchTimeMs)) {
    throw new StateRollback(`the state commit at ${sc.index} is older than the newest one this client verified (${newest.index})`);
  }
  const age = BigInt(now) - sc.batchTimeMs;
  if (age > BigInt(v.maxStateAgeMs)) {
    throw new StaleEvidence(`the consent state is ${Number(age) / 1000} s old (at most ${v.maxStateAgeMs / 1000} s accepted)`);
  }
  if (decisionTimeMs < sc.batchTimeMs) throw new VerificationError("the decision's time is before the consent state it rests on");

  const selectors = granteeSelectors(requesterId, roles);
  const proofs = new Map(resp.selectorProofs.map((p) => [p.selector, p]));
  if (proofs.size !== resp.selectorProofs.length || proofs.size !== selectors.length || !selectors.every((s) => proofs.has(s))) {
    throw new IncompleteEvidence(`expected one map proof for each of ${JSON.stringify(selectors)}`);
  }
  const grants = new Map<string, Evidence[]>(selectors.map((s) => [s, []]));
  const support: Evidence[] = [];
  for (const e of evidence) {
    const p = e.payload;
    if (p.type === CONSENT_GRANT) {
      const mine = grants.get(p.message.grantee);
      if (!equal(p.message.patient, patient) || mine === undefined || e.entry.index >= sc.index) {
        throw new IncompleteEvidence(`entry ${e.entry.index} is not an in-force grant for the requester`);
      }
      if (mine.length >= MAX_IN_FORCE) {
        throw new IncompleteEvidence(`the evidence holds more than ${MAX_IN_FORCE} grants for ${p.message.grantee}`);
      }
      mine.push(e);
    } else if (p.type === STATE_COMMIT) {
      if (e.entry.index !== sc.index) throw new IncompleteEvidence(`entry ${e.entry.index} is a second state commit in the evidence`);
    } else if (p.type === DELEGATION) {
      if (!equal(p.message.patient, patient) || e.entry.index >= sc.index) {
        throw new IncompleteEvidence(`entry ${e.entry.index} is not a delegation of this patient`);
      }
      support.push(e);
    } else if (p.type === PARTY_REGISTRATION) {
      if (!e.signers.some((k) => hasKey(operatorKeysOf(v), k))) {
        throw new VerificationError(`the registration at ${e.entry.index} is not signed by an operator key`);
      }
      support.push(e);
    } else {
      throw new IncompleteEvidence(`entry ${e.entry.index} (${p.type}) does not belong in the evidence`);
    }
  }
  for (const mine of grants.values()) {
    for (const e of mine) checkSignedBy(e, support, evidence);
  }

  // Map keys are VRF outputs: a proof's key is used only once its pi verifies for the alpha this client expects.
  const named = sc.mapVrfPublicKey;
  const held = v.mapVrfPublicKey;
  if (named.length === 0 || (held !== null && !equal(named, held))) {
    throw new WrongMapVrfKey(
      `the state commit names map VRF key ${named.length ? Buffer.from(named).toString("hex") : "(none)"}, expected ${held ? Buffer.from(held).toString("hex") : "(any)"}`,
    );
  }
  const vrfKey = held ?? named;
  checkPartyKey(v, resp, evidence, requesterId, sc.mapRoot, vrfKey, sc.index);
  const inForceIds = new Set<string>();
  const out: { selector: string; inForce: string[] }[] = [];
  for (const sel of selectors) {
    const sp = proofs.get(sel)!;
    const key = v.mapKeys.key(vrfKey, consentAlpha(patient, sel), sp.vrfProof);
    const mine = grants.get(sel)!;
    const ids = mine.map((e) => e.consentId);
    if (new Set(ids).size !== ids.length) throw new IncompleteEvidence(`the evidence for ${sel} lists a consent twice`);
    const got = mine.length ? valueHash(mine.map((e) => [e.entry.index, e.entry.leafHash] as const)) : null;
    let proven: Uint8Array | null;
    if (sp.leafDerived) {
      // The walk ends at this key's own pair, whose value must be the evidence's set: derive the leaf.
      if (sp.leafKey.length !== 0 || sp.leafValueHash.length !== 0 || got === null) {
        throw new IncompleteEvidence(`the map proof for ${sel} ends at its own pair, but the evidence holds no grant for it`);
      }
      try {
        proven = verifyMapProof(sc.mapRoot, key, { siblings: sp.siblings, leaf: { key, valueHash: got } });
      } catch (err) {
        if (!(err instanceof VerificationError)) throw err;
        throw new IncompleteEvidence(
          `the evidence for ${sel} with its map proof does not give the consent state's map root: the evidence is not the in-force set the state commits to (or the proof was altered)`,
        );
      }
    } else {
      const leaf = sp.leafKey.length !== 0 ? { key: sp.leafKey, valueHash: sp.leafValueHash } : null;
      proven = verifyMapProof(sc.mapRoot, key, { siblings: sp.siblings, leaf });
    }
    if (!(got === null ? proven === null : proven !== null && equal(got, proven))) {
      throw new IncompleteEvidence(`the evidence for ${sel} is not the in-force set the consent state commits to`);
    }
    ids.forEach((id) => inForceIds.add(id));
    out.push({ selector: sel, inForce: ids });
  }
  const grantEvidence: GrantEvidence[] = [];
  for (const sel of selectors) {
    for (const e of grants.get(sel)!) {
      if (e.payload.type !== CONSENT_GRANT) continue;
      grantEvidence.push({ index: e.entry.index, integratedTimeMs: e.entry.leaf.integratedTimeMs, consentId: e.consentId, grant: e.payload.message });
    }
  }
  return { stateCommit: sc, vrfKey, inForceIds, grants: grantEvidence, selectors: out };
}

/** The requester's latest registration in the evidence must be the one its party key holds in the consent state. */
function checkPartyKey(
  v: AccessVerifier,
  resp: CheckAccessResponse,
  evidence: Evidence[],
  partyId: string,
  mapRoot: Uint8Array,
  vrfKey: Uint8Array,
  scIndex: bigint,
): void {
  const pp = resp.partyProof;
  if (pp === undefined || pp.partyId !== partyId) {
    throw new IncompleteEvidence(`the evidence holds no map proof of the party key of ${partyId}`);
  }
  const key = v.mapKeys.key(vrfKey, partyAlpha(partyId), pp.vrfProof);
  const regs = registrationsOf(evidence, partyId);
  const latest = regs[regs.length - 1]!;
  const expected = valueHash([[latest.entry.index, latest.entry.leafHash]]);
  let proven: Uint8Array | null;
  if (pp.leafDerived) {
    // The walk ends at the party key's own pair, whose value must be this registration's: derive the leaf.
    if (pp.leafKey.length !== 0 || pp.leafValueHash.length !== 0) {
      throw new VerificationError("the party key's map proof both gives and derives its leaf");
    }
    try {
      proven = verifyMapProof(mapRoot, key, { siblings: pp.siblings, leaf: { key, valueHash: expected } });
    } catch (err) {
      if (!(err instanceof VerificationError)) throw err;
      throw new StaleRegistration(partyId, latest.entry.index);
    }
  } else {
    const leaf = pp.leafKey.length !== 0 ? { key: pp.leafKey, valueHash: pp.leafValueHash } : null;
    proven = verifyMapProof(mapRoot, key, { siblings: pp.siblings, leaf });
  }
  if (latest.entry.index >= scIndex || proven === null || !equal(proven, expected)) {
    throw new StaleRegistration(partyId, latest.entry.index);
  }
}

/** A grant not signed by its patient needs a delegation in the evidence that let a signer grant then
 * (core/delegation.py: signed by the patient, or attested by an organisation with attest-guardianship whose
 * registration in the evidence holds the signing key, while the patient key had signed nothing before; logged
 * before; valid at the grant's integration time; before the majority date; a scope covering the grant). */
function checkSignedBy(grant: Evidence, support: Evidence[], evidence: Evidence[]): void {
  if (grant.payload.type !== CONSENT_GRANT) return;
  const g = grant.payload.message;
  if (hasKey(grant.signers, g.patient)) return;
  const t = grant.entry.leaf.integratedTimeMs;
  const needed = g.supersedes ? ["grant", "revoke"] : ["grant"];
  const ok = support.some((e) => {
    if (e.payload.type !== DELEGATION) return false;
    const d: Delegation = e.payload.message;
    if (!equal(d.patient, g.patient) || !hasKey(grant.signers, d.delegate)) return false;
    if (!delegationSignedValidly(d, e, evidence)) return false;
    if (e.entry.leaf.integratedTimeMs > t) return false;
    const validity = d.validity;
    if (validity !== undefined && validity.startMs !== 0n && t < validity.startMs) return false;
    if (validity !== undefined && validity.endMs !== 0n && t >= validity.endMs) return false;
    if (d.majorityDateMs !== 0n && t >= d.majorityDateMs) return false;
    return needed.every((a) => d.scope.includes("*") || d.scope.includes(a));
  });
  if (!ok) {
    throw new IncompleteEvidence(
      `grant ${grant.entry.index} is signed by a delegate, and the evidence holds no delegation in force that let it sign`,
    );
  }
}

function delegationSignedValidly(d: Delegation, e: Evidence, evidence: Evidence[]): boolean {
  if (!d.attestedBy) return hasKey(e.signers, d.patient);
  const regs = registrationsOf(evidence, d.attestedBy).filter((r) => r.entry.index < e.entry.index);
  const reg = regs[regs.length - 1];
  if (reg === undefined) return false;
  if (!e.signers.some((k) => hasKey(reg.reg.publicKeys, k))) return false;
  if (!reg.reg.capabilities.includes(ATTEST_GUARDIANSHIP)) return false;
  return !evidence.some((x) => x.entry.index < e.entry.index && hasKey(x.signers, d.patient));
}
