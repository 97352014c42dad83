// The HL7 vocabularies the decision rules match by subsumption (consent_ledger/core/vocab.py): v3-ActReason
// PurposeOfUse and v3-ActCode _ActInformationSensitivityPolicy, read from data/hl7_codes.json (the same file as
// consent_ledger/data/hl7_codes.json; test/decide.test.ts checks they are equal).
import { readFileSync } from "node:fs";

export const WILDCARD = "*";
export const TREATMENT_PURPOSE = "TREAT";
export const EMERGENCY_PURPOSE = "ETREAT";
const PURPOSE_ROOT = "PurposeOfUse";
const LABEL_GROUP = "_ActInformationSensitivityPolicy";

interface RawCode {
  code: string;
  parent: string;
  status: string;
  group?: string;
}

const raw = JSON.parse(readFileSync(new URL("../data/hl7_codes.json", import.meta.url), "utf8")) as {
  purpose_of_use: RawCode[];
  sensitivity: RawCode[];
};

function ancestorTable(codes: Map<string, string | null>): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const code of codes.keys()) {
    const chain = new Set([code]);
    let parent = codes.get(code) ?? null;
    while (parent !== null) {
      if (chain.has(parent)) throw new Error(`hl7_codes.json: cycle through ${parent}`);
      if (!codes.has(parent)) throw new Error(`hl7_codes.json: ${code} has unknown parent ${parent}`);
      chain.add(parent);
      parent = codes.get(parent) ?? null;
    }
    out.set(code, chain);
  }
  return out;
}

const purposes = new Map<string, string | null>();
for (const c of raw.purpose_of_use) {
  if (c.status === "active") purposes.set(c.code, c.parent === PURPOSE_ROOT ? null : c.parent);
}
const labels = new Map<string, string | null>();
for (const c of raw.sensitivity) {
  if (c.group === LABEL_GROUP && c.status === "active") labels.set(c.code, c.parent === LABEL_GROUP ? null : c.parent);
}
const PURPOSE_ANCESTORS = ancestorTable(purposes);
const LABEL_ANCESTORS = ancestorTable(labels);

/** A consent naming purpose `granted` covers a request for `requested`: the same code or an ancestor of it. */
export function purposeCovers(granted: string, requested: string): boolean {
  return PURPOSE_ANCESTORS.get(requested)?.has(granted) ?? false;
}

/** A consent naming label `granted` covers data labelled `requested`: the same code or an ancestor of it. */
export function labelCovers(granted: string, requested: string): boolean {
  return LABEL_ANCESTORS.get(requested)?.has(granted) ?? false;
}

export function labelsRelated(a: string, b: string): boolean {
  return labelCovers(a, b) || labelCovers(b, a);
}

export function isTreatmentPurpose(code: string): boolean {
  return purposeCovers(TREATMENT_PURPOSE, code);
}

export function isEmergencyPurpose(code: string): boolean {
  return purposeCovers(EMERGENCY_PURPOSE, code);
}
