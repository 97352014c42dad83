// CheckAccess answers the Python ledger produced (fixtures/access_fixtures.json, made by make_access_fixtures.py):
// the TypeScript client must reach the Python client's verdict on each (two honest answers, two lies signed with the
// log key), must parse and re-serialize the Python bytes identically, and must refuse every tampered variant.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { clone, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  DecisionMismatch,
  DecisionTimeMismatch,
  ExpiredDecision,
  IncompleteEvidence,
  newAccessVerifier,
  openCheckpoint,
  openReceipt,
  parseVerifierKey,
  StaleEvidence,
  StateCommitNotNamed,
  StateFromTheFuture,
  StateRollback,
  VerificationError,
  verifyAccessResponse,
  WrongMapVrfKey,
  type AccessVerifier,
  type VerifiedAccess,
} from "../src/index.ts";
import {
  CheckAccessRequestSchema,
  CheckAccessResponseSchema,
  DecisionSchema,
  ReceiptBodySchema,
  SignedReceiptSchema,
  type CheckAccessResponse,
} from "../src/gen/consent_ledger/v1/access_pb.ts";
import { CONSENT_GRANT, parsePayload } from "../src/payloads.ts";
import { parseEnvelope } from "../src/envelope.ts";

const fx = JSON.parse(readFileSync(new URL("fixtures/access_fixtures.json", import.meta.url), "utf8"));
const logVerifier = parseVerifierKey(fx.log_key);
const vrfKey = parseVerifierKey(fx.map_vrf_key).publicKey;
const b = (s: string) => new Uint8Array(Buffer.from(s, "base64"));

interface Case {
  name: string;
  party: string;
  clockMs: number;
  requestBytes: Uint8Array;
  responseBytes: Uint8Array;
  python: string;
}
const cases: Case[] = fx.cases.map((c: Record<string, unknown>) => ({
  name: c.name,
  party: c.party,
  clockMs: Number(c.clock_ms),
  requestBytes: b(c.request as string),
  responseBytes: b(c.response as string),
  python: c.python,
}));
const byName = (n: string) => cases.find((c) => c.name === n)!;

function verifierFor(c: Case, over: Partial<AccessVerifier> = {}): AccessVerifier {
  return newAccessVerifier({
    logPublicKey: logVerifier.publicKey,
    mapVrfPublicKey: vrfKey,
    partyId: c.party,
    clockMs: () => c.clockMs,
    ...over,
  });
}

function run(c: Case, resp?: CheckAccessResponse, over: Partial<AccessVerifier> = {}): VerifiedAccess {
  const req = fromBinary(CheckAccessRequestSchema, c.requestBytes);
  const r = resp ?? fromBinary(CheckAccessResponseSchema, c.responseBytes);
  const cp = openCheckpoint(r.checkpoint!.note, logVerifier).checkpoint;
  return verifyAccessResponse(verifierFor(c, over), req, r, cp);
}

function verdict(f: () => VerifiedAccess): string {
  try {
    return `verified: ${f().outcome}`;
  } catch (e) {
    return `refused: ${(e as Error).name}`;
  }
}

function flip(x: Uint8Array, i = 0): Uint8Array {
  const c = x.slice();
  c[i]! ^= 1;
  return c;
}

function mutated(c: Case, f: (r: CheckAccessResponse) => void): CheckAccessResponse {
  const r = clone(CheckAccessResponseSchema, fromBinary(CheckAccessResponseSchema, c.responseBytes));
  f(r);
  return r;
}

describe("Python-made CheckAccess answers", () => {
  it("the TypeScript client reaches the Python client's verdict on every answer", () => {
    assert.ok(cases.length >= 6);
    for (const c of cases) assert.equal(verdict(() => run(c)), c.python, c.name);
  });

  it("protobuf-es re-serializes the Python bytes exactly (response, decision, receipt, envelopes, payloads)", () => {
    for (const c of cases) {
      const r = fromBinary(CheckAccessResponseSchema, c.responseBytes);
      assert.deepEqual(toBinary(CheckAccessResponseSchema, r), c.responseBytes, c.name);
      assert.deepEqual(toBinary(CheckAccessRequestSchema, fromBinary(CheckAccessRequestSchema, c.requestBytes)), c.requestBytes);
      const signed = fromBinary(SignedReceiptSchema, r.receipt);
      assert.deepEqual(toBinary(SignedReceiptSchema, signed), r.receipt);
      const body = fromBinary(ReceiptBodySchema, signed.body);
      assert.deepEqual(toBinary(ReceiptBodySchema, body), signed.body);
      assert.deepEqual(toBinary(DecisionSchema, body.decision!), toBinary(DecisionSchema, r.decision!));
      for (const e of r.evidence) {
        const env = parseEnvelope(e.entry!.envelope); // canonical: re-serializes to the same bytes
        parsePayload(env.payloadType, env.payload);
      }
    }
  });

  it("the honest answers: what was verified", () => {
    const permit = run(byName("hospital-permit"));
    assert.equal(permit.outcome, "PERMIT");
    assert.deepEqual(permit.selectors.map((s) => s.selector), ["org:hospital-1", "role:hospital", "any"]);
    assert.equal(permit.selectors[0]!.inForce.length, 1);
    assert.deepEqual(permit.decision.consentIds, permit.selectors[0]!.inForce);
    const deny = run(byName("insurer-deny"));
    assert.equal(deny.outcome, "DENY");
    assert.ok(deny.selectors.every((s) => s.inForce.length === 0));
    const receipt = openReceipt(deny.receipt, logVerifier.publicKey);
    assert.deepEqual(receipt.checkpointNote, deny.checkpointNote);
  });
});

describe("tampering is refused", () => {
  const permit = byName("hospital-permit");
  const grantIndex = () => {
    const r = fromBinary(CheckAccessResponseSchema, permit.responseBytes);
    return r.evidence.findIndex((e) => parseEnvelope(e.entry!.envelope).payloadType === CONSENT_GRANT);
  };

  const refusals: [string, Case, (r: CheckAccessResponse) => void, new (...a: never[]) => Error][] = [
    ["a receipt signature byte", permit, (r) => {
      const s = fromBinary(SignedReceiptSchema, r.receipt);
      s.signature = flip(s.signature, 5);
      r.receipt = toBinary(SignedReceiptSchema, s);
    }, VerificationError],
    ["the receipt's body (decision) byte", permit, (r) => {
      const s = fromBinary(SignedReceiptSchema, r.receipt);
      s.body = flip(s.body, s.body.length - 1);
      r.receipt = toBinary(SignedReceiptSchema, s);
    }, VerificationError],
    ["the response's decision (PERMIT -> DENY), receipt kept", permit, (r) => {
      r.decision!.decision = 2;
    }, VerificationError],
    ["the checkpoint note's signature", permit, (r) => {
      // Flip one byte of the log's signature (decoded, changed, encoded again: the note stays well formed).
      const text = Buffer.from(r.checkpoint!.note).toString();
      const line = text.split("\n").find((l) => l.startsWith("\u2014 demo.consent-ledger.local/log "))!;
      const raw = Buffer.from(line.split(" ")[2]!, "base64");
      raw[20]! ^= 1;
      r.checkpoint!.note = new Uint8Array(Buffer.from(text.replace(line, `\u2014 demo.consent-ledger.local/log ${raw.toString("base64")}`)));
    }, VerificationError],
    ["an inclusion proof hash", permit, (r) => {
      const e = r.evidence[0]!;
      e.inclusionProof[0] = flip(e.inclusionProof[0]!);
    }, VerificationError],
    ["an evidence envelope byte (body no longer matches its leaf)", permit, (r) => {
      const e = r.evidence[grantIndex()]!.entry!;
      e.envelope = flip(e.envelope, 20);
    }, VerificationError],
    ["an evidence leaf byte", permit, (r) => {
      const e = r.evidence[0]!.entry!;
      e.leaf = flip(e.leaf, e.leaf.length - 1);
    }, VerificationError],
    ["the in-force grant left out of the evidence", permit, (r) => {
      r.evidence.splice(grantIndex(), 1);
    }, IncompleteEvidence],
    ["a map proof sibling", permit, (r) => {
      const p = r.selectorProofs[0]!;
      if (p.siblings.length) p.siblings[0] = flip(p.siblings[0]!);
      else p.leafValueHash = flip(p.leafValueHash);
    }, VerificationError],
    ["a map proof's value hash (given, or given where the client derives it)", permit, (r) => {
      const p = r.selectorProofs[0]!;
      p.leafValueHash = p.leafValueHash.length ? flip(p.leafValueHash) : new Uint8Array(32).fill(7);
    }, VerificationError],
    ["a derived map leaf neither given nor derived", permit, (r) => {
      const p = r.selectorProofs.find((x) => x.leafDerived)!;
      p.leafDerived = false;
    }, VerificationError],
    ["an inclusion proof going on with one hash more of another's", permit, (r) => {
      r.evidence.find((e) => e.inclusionProofTail !== 0)!.inclusionProofTail += 1;
    }, VerificationError],
    ["an inclusion proof going on with an entry missing from the evidence", permit, (r) => {
      const e = r.evidence.find((x) => x.inclusionProofTail !== 0)!;
      e.inclusionProofTailFrom = e.inclusionProofTailFrom + 1000n;
    }, IncompleteEvidence],
    ["a map key's VRF proof pi", permit, (r) => {
      r.selectorProofs[1]!.vrfProof = flip(r.selectorProofs[1]!.vrfProof, 40);
    }, VerificationError],
    ["one selector's map proof dropped", permit, (r) => {
      r.selectorProofs.pop();
    }, IncompleteEvidence],
    ["the party key's map proof for another party", permit, (r) => {
      r.partyProof!.partyId = "insurer-1";
    }, IncompleteEvidence],
    ["the party key's value hash (a stale registration)", permit, (r) => {
      const p = r.partyProof!;
      if (p.leafDerived) p.siblings[p.siblings.length - 1] = flip(p.siblings[p.siblings.length - 1]!);
      else p.leafValueHash = flip(p.leafValueHash);
    }, VerificationError],
    ["the state commit index pointing elsewhere", permit, (r) => {
      r.stateCommitIndex = r.stateCommitIndex - 1n;
    }, IncompleteEvidence],
  ];
  for (const [what, c, f, kind] of refusals) {
    it(what, () => {
      assert.throws(() => run(c, mutated(c, f)), kind);
    });
  }

  it("the question answered must be the one asked", () => {
    const req = fromBinary(CheckAccessRequestSchema, permit.requestBytes);
    req.purpose = "HPAYMT";
    const r = fromBinary(CheckAccessResponseSchema, permit.responseBytes);
    const cp = openCheckpoint(r.checkpoint!.note, logVerifier).checkpoint;
    assert.throws(() => verifyAccessResponse(verifierFor(permit), req, r, cp), /another question/);
  });

  it("a decision for another party is refused", () => {
    assert.throws(() => run(permit, undefined, { partyId: "insurer-1" }), /made for hospital-1/);
  });

  it("time: stale state, expired decision, a clock behind, rollback, another VRF key", () => {
    const t = permit.clockMs;
    assert.throws(() => run(permit, undefined, { clockMs: () => t + 121_000 }), StaleEvidence);
    assert.throws(() => run(permit, undefined, { clockMs: () => t + 6_000 }), DecisionTimeMismatch);
    assert.throws(() => run(permit, undefined, { clockMs: () => t + 400_000, maxStateAgeMs: 10 ** 9, maxClockSkewMs: 10 ** 9 }), ExpiredDecision);
    assert.throws(() => run(permit, undefined, { clockMs: () => t - 600_000 }), StateFromTheFuture);
    assert.throws(() => run(permit, undefined, { newestStateCommit: { index: 10n ** 6n, batchTimeMs: 0n } }), StateRollback);
    assert.throws(() => run(permit, undefined, { mapVrfPublicKey: logVerifier.publicKey }), WrongMapVrfKey);
  });

  it("the lies signed with the log key are refused for the reason Python gives", () => {
    assert.throws(() => run(byName("lie-checkpoint-names-other-state")), StateCommitNotNamed);
    assert.throws(() => run(byName("lie-cites-absent-consent")), (e) => e instanceof DecisionMismatch && /evidence gives DENY/.test(e.message));
    assert.throws(() => run(byName("lie-deny-made-permit")), (e) => e instanceof DecisionMismatch && /decided PERMIT, but its evidence gives DENY/.test(e.message));
    assert.throws(() => run(byName("lie-permit-lasts-longer")), (e) => e instanceof DecisionMismatch && /other details/.test(e.message));
  });

  it("an unmodified copy still verifies (the mutations above are what fails)", () => {
    assert.equal(run(permit, mutated(permit, () => {})).outcome, "PERMIT");
    void create;
  });
});
