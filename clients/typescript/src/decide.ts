// The decision function re-run on verified evidence (consent_ledger/core/decision.py, decide): the client computes
// the decision the evidence gives and compares its canonical bytes with the signed receipt's.
//
// Scope: the evidence of a CheckAccess answer, which verifyAccessResponse has already proven to be the in-force
// grants the consent state commits to (plus registrations and the delegations behind delegate-signed grants). Of the
// one rule of what ends a grant (core/state_rules.py), what can apply among such grants is supersession (a grant
// naming an earlier grant of the same patient in `supersedes`); revocations are not evidence.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  DecisionSchema,
  type AccessRequest,
  type Decision,
  type DecisionPolicy,
} from "./gen/consent_ledger/v1/access_pb.ts";
import type { ConsentGrant, DataItem, Period } from "./gen/consent_ledger/v1/payloads_pb.ts";
import { equal } from "./bytes.ts";
import { isEmergencyPurpose, isTreatmentPurpose, labelCovers, labelsRelated, purposeCovers, WILDCARD } from "./vocab.ts";

const PERMIT = 1;
const DENY = 2;
const PARTIAL = 3;
const CONSENT_PERMIT_DECISION = 1; // ConsentDecision.PERMIT
const CONSENT_DENY_DECISION = 2;
const BREAK_GLASS_ROLE = "hospital";
const FOREVER = 253_402_300_799_999n + 1n;

export interface GrantEvidence {
  index: bigint;
  integratedTimeMs: bigint;
  consentId: string;
  grant: ConsentGrant;
}

type Reason = { code: string; text: string };

function contains(p: Period | undefined, t: bigint): boolean {
  const s = p?.startMs ?? 0n;
  const e = p?.endMs ?? 0n;
  return (s === 0n || s <= t) && (e === 0n || t < e);
}

function within(inner: Period | undefined, outer: Period | undefined): boolean {
  const is = inner?.startMs ?? 0n;
  const ie = inner?.endMs ?? 0n;
  const os = outer?.startMs ?? 0n;
  const oe = outer?.endMs ?? 0n;
  return (os === 0n || (is !== 0n && is >= os)) && (oe === 0n || (ie !== 0n && ie <= oe));
}

function overlaps(a: Period | undefined, b: Period | undefined): boolean {
  const as = a?.startMs ?? 0n;
  const ae = a?.endMs ?? 0n;
  const bs = b?.startMs ?? 0n;
  const be = b?.endMs ?? 0n;
  return (as === 0n || be === 0n || as < be) && (bs === 0n || ae === 0n || bs < ae);
}

function covers(g: ConsentGrant, r: AccessRequest, item: DataItem, labels = true): boolean {
  if (!g.actions.includes(r.action)) return false;
  if (!g.purposes.some((p) => purposeCovers(p, r.purpose))) return false;
  if (!g.dataClasses.includes(WILDCARD) && !g.dataClasses.includes(item.dataClass)) return false;
  if (g.decision === CONSENT_PERMIT_DECISION) {
    if (labels && !item.sensitivityLabels.every((dl) => g.sensitivityLabels.some((gl) => labelCovers(gl, dl)))) return false;
    return within(r.dataPeriod, g.dataPeriod);
  }
  if (
    labels &&
    g.sensitivityLabels.length > 0 &&
    !g.sensitivityLabels.some((gl) => item.sensitivityLabels.some((dl) => labelsRelated(gl, dl)))
  ) {
    return false;
  }
  return overlaps(r.dataPeriod, g.dataPeriod);
}

function breakGlassProblems(r: AccessRequest, policy: DecisionPolicy): string[] {
  const problems: string[] = [];
  if (!policy.breakGlassEnabled) problems.push("break-glass is disabled by the deployment's policy");
  if (!r.requesterRoles.includes(BREAK_GLASS_ROLE)) problems.push(`the requester is not registered with role ${BREAK_GLASS_ROLE}`);
  if (!isEmergencyPurpose(r.purpose)) problems.push(`purpose ${r.purpose} is not emergency treatment (ETREAT, BTG, ERTREAT)`);
  if (r.breakGlassReason.trim() === "") problems.push("no reason was given");
  return problems;
}

function refusal(r: AccessRequest, item: DataItem, permits: GrantEvidence[], policy: DecisionPolicy): Reason {
  const labelBlind = permits.filter((g) => covers(g.grant, r, item, false));
  if (item.sensitivityLabels.length > 0 && labelBlind.length > 0) {
    const missing = item.sensitivityLabels
      .filter((dl) => !labelBlind.some((g) => g.grant.sensitivityLabels.some((gl) => labelCovers(gl, dl))))
      .sort();
    const text = missing.length
      ? "sensitive data needs a consent that names its label: " + missing.join(", ")
      : "sensitive data needs one consent that names all its labels: " + [...item.sensitivityLabels].sort().join(", ");
    return { code: "LABEL_NOT_NAMED", text };
  }
  if (policy.implicit === "break-glass-only") {
    return { code: "BREAK_GLASS_REQUIRED", text: "no consent covers this; without one only break-glass access is allowed" };
  }
  return { code: "NO_MATCHING_CONSENT", text: `no consent covers this (implicit policy ${policy.implicit})` };
}

const min = (a: bigint, b: bigint) => (a < b ? a : b);
const max = (a: bigint, b: bigint) => (a > b ? a : b);

/**
 * The decision `grants` give for `request` under `policy`, as core/decision.py's decide computes it. `grants` are the
 * patient's grants the evidence holds for the requester's selectors (each signed validly: verifyAccessResponse has
 * checked it). Returns the Decision message, whose deterministic bytes equal the server's when they agree.
 */
export function decide(grants: readonly GrantEvidence[], request: AccessRequest, policy: DecisionPolicy): Decision {
  const t = request.timeMs;
  const mine = grants.filter((g) => g.integratedTimeMs <= t && equal(g.grant.patient, request.patient));
  // The one rule, among grants: a later grant of the same patient superseding an earlier one ends it.
  const byId = new Map(mine.map((g) => [g.consentId, g]));
  const ended = new Set<string>();
  for (const g of mine) {
    const target = g.grant.supersedes ? byId.get(g.grant.supersedes) : undefined;
    if (target !== undefined && target.index < g.index) ended.add(target.consentId);
  }
  const live = mine.filter((g) => !ended.has(g.consentId)).sort((a, b) => (a.consentId < b.consentId ? -1 : a.consentId > b.consentId ? 1 : 0));
  const inForce = live.filter((g) => contains(g.grant.validity, t));
  const pending = live.filter((g) => (g.grant.validity?.startMs ?? 0n) > t);
  const permits = inForce.filter((g) => g.grant.decision === CONSENT_PERMIT_DECISION);
  const denies = inForce.filter((g) => g.grant.decision === CONSENT_DENY_DECISION);
  const pendingDenies = pending.filter((g) => g.grant.decision === CONSENT_DENY_DECISION);

  const bgProblems = request.breakGlass ? breakGlassProblems(request, policy) : [];
  const bgEligible = request.breakGlass && bgProblems.length === 0;
  const bgUntil = t + policy.breakGlassWindowMs;
  let validUntil = t + policy.decisionTtlMs;

  type Outcome = { data: DataItem; decision: number; reasons: Reason[]; consentIds: string[]; breakGlass: boolean };
  const outcomes: Outcome[] = [];
  for (const item of request.data) {
    const denyIds = denies.filter((g) => covers(g.grant, request, item)).map((g) => g.consentId);
    const permitHits = permits.filter((g) => covers(g.grant, request, item));
    let o: Outcome;
    if (denyIds.length) {
      const reasons: Reason[] = [{ code: "CONSENT_DENY", text: "refused by a consent" }];
      if (bgEligible) {
        reasons.push({ code: "BREAK_GLASS_DENIED_BY_CONSENT", text: "break-glass does not override a consent that refuses this" });
      }
      o = { data: item, decision: DENY, reasons, consentIds: denyIds, breakGlass: false };
    } else if (permitHits.length) {
      o = {
        data: item,
        decision: PERMIT,
        reasons: [{ code: "CONSENT_PERMIT", text: "permitted by consent" }],
        consentIds: permitHits.map((g) => g.consentId),
        breakGlass: false,
      };
      validUntil = min(validUntil, permitHits.reduce((m, g) => max(m, g.grant.validity?.endMs || FOREVER), 0n));
    } else if (policy.implicit === "basic-normal" && isTreatmentPurpose(request.purpose) && item.sensitivityLabels.length === 0) {
      o = {
        data: item,
        decision: PERMIT,
        reasons: [{ code: "IMPLICIT_PERMIT", text: "no consent matched; the basic-normal policy allows treatment use of unlabelled data" }],
        consentIds: [],
        breakGlass: false,
      };
    } else if (bgEligible) {
      o = {
        data: item,
        decision: PERMIT,
        reasons: [{ code: "BREAK_GLASS", text: `emergency access (break-glass) for ${policy.breakGlassWindowMs / 60000n} minutes` }],
        consentIds: [],
        breakGlass: true,
      };
      validUntil = min(validUntil, bgUntil);
    } else {
      o = { data: item, decision: DENY, reasons: [refusal(request, item, permits, policy)], consentIds: [], breakGlass: false };
    }
    if (o.decision === PERMIT) {
      for (const g of pendingDenies) {
        if (covers(g.grant, request, item)) validUntil = min(validUntil, g.grant.validity?.startMs ?? 0n);
      }
    }
    outcomes.push(o);
  }
  const nPermit = outcomes.filter((o) => o.decision === PERMIT).length;
  const overall = nPermit === outcomes.length ? PERMIT : nPermit === 0 ? DENY : PARTIAL;
  const reasons: Reason[] = outcomes.flatMap((o) => o.reasons);
  if (bgProblems.length) reasons.push({ code: "BREAK_GLASS_NOT_ALLOWED", text: "break-glass not allowed: " + bgProblems.join("; ") });
  const seen = new Set<string>();
  const unique = reasons.filter((r) => {
    const k = JSON.stringify([r.code, r.text]);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  const usedBg = outcomes.some((o) => o.breakGlass);
  const obligations = usedBg
    ? [
        { code: "record-access-event", text: "record an AccessEvent with the break-glass reason for every access" },
        { code: "notify-patient", text: "the patient is notified of the emergency access" },
        { code: "review-queue", text: "the access enters the break-glass review queue" },
      ]
    : [];
  const init: MessageInitShape<typeof DecisionSchema> = {
    request,
    policy,
    decision: overall,
    outcomes: outcomes.map((o) => ({
      data: o.data,
      decision: o.decision,
      reasons: o.reasons,
      consentIds: o.consentIds,
      breakGlass: o.breakGlass,
    })),
    consentIds: [...new Set(outcomes.flatMap((o) => o.consentIds))].sort(),
    reasons: unique,
    obligations,
    validUntilMs: validUntil,
    breakGlassUntilMs: usedBg ? bgUntil : 0n,
  };
  return create(DecisionSchema, init);
}
