// The decision function's TypeScript port (src/decide.ts) against the Python one: 400 random cases decided by
// consent_ledger/core/decision.decide (fixtures/decide_fixtures.json, made by make_decide_fixtures.py) must come out
// byte for byte the same; and the vocabulary file is the one the Python package ships.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { consentId, parsePayload, CONSENT_GRANT } from "../src/payloads.ts";
import { decide, type GrantEvidence } from "../src/decide.ts";
import { AccessRequestSchema, DecisionPolicySchema, DecisionSchema } from "../src/gen/consent_ledger/v1/access_pb.ts";
import { purposeCovers, labelCovers } from "../src/vocab.ts";

const fx = JSON.parse(readFileSync(new URL("fixtures/decide_fixtures.json", import.meta.url), "utf8"));
const b = (s: string) => new Uint8Array(Buffer.from(s, "base64"));

describe("decide: the TypeScript port against Python's decide", () => {
  it("every case gives the same decision bytes", () => {
    const codes = new Map<string, number>();
    let n = 0;
    for (const c of fx.cases) {
      const grants: GrantEvidence[] = c.grants.map((g: { index: number; integrated_time_ms: number; payload: string }) => {
        const payload = b(g.payload);
        const p = parsePayload(CONSENT_GRANT, payload);
        assert.equal(p.type, CONSENT_GRANT);
        return { index: BigInt(g.index), integratedTimeMs: BigInt(g.integrated_time_ms), consentId: consentId(payload), grant: p.message };
      });
      const request = fromBinary(AccessRequestSchema, b(c.request));
      const policy = fromBinary(DecisionPolicySchema, b(c.policy));
      const got = toBinary(DecisionSchema, decide(grants, request, policy));
      const want = b(c.decision);
      if (Buffer.compare(Buffer.from(got), Buffer.from(want)) !== 0) {
        assert.deepEqual(fromBinary(DecisionSchema, got), fromBinary(DecisionSchema, want), `case ${n}`);
      }
      for (const r of fromBinary(DecisionSchema, want).reasons) codes.set(r.code, (codes.get(r.code) ?? 0) + 1);
      n++;
    }
    assert.equal(n, 400);
    // The cases reach every rule: consent permits and denials, labels not named, the implicit policies, break-glass.
    for (const code of ["CONSENT_PERMIT", "CONSENT_DENY", "NO_MATCHING_CONSENT", "LABEL_NOT_NAMED", "IMPLICIT_PERMIT", "BREAK_GLASS", "BREAK_GLASS_REQUIRED", "BREAK_GLASS_NOT_ALLOWED"]) {
      assert.ok((codes.get(code) ?? 0) > 0, `no case reaches ${code}: ${JSON.stringify([...codes])}`);
    }
  });

  it("the vocabulary file is the Python package's, and subsumption goes one way", () => {
    const mine = readFileSync(new URL("../data/hl7_codes.json", import.meta.url));
    const python = readFileSync(new URL("../../python/consent_ledger/data/hl7_codes.json", import.meta.url));
    assert.ok(mine.equals(python), "clients/typescript/data/hl7_codes.json differs from clients/python/consent_ledger/data/hl7_codes.json");
    assert.ok(purposeCovers("HPAYMT", "COVAUTH") && !purposeCovers("COVAUTH", "HPAYMT"));
    assert.ok(purposeCovers("TREAT", "BTG") && purposeCovers("TREAT", "ETREAT"));
    assert.ok(labelCovers("SPI", "MH") && !labelCovers("MH", "SPI") && !labelCovers("SPI", "ETH"));
  });
});
