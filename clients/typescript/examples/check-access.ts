// Check access against a consent-ledger server (for instance the demo: `scripts/demo` or `consent-ledger demo`) and
// print what was verified. Every line after "decision" is a check this client made itself, with only the log's
// public key (and the map VRF key) pinned.
//
//   node --import tsx examples/check-access.ts [--dir DEMO_DIR] [--server HOST:PORT] [--party hospital-1]
//        [--purpose TREAT] [--action access] [--data laboratory-results[:LABEL,...]]... [--patient-key-file F]
//        [--witness-quorum K]   (pin the demo's two witnesses, require K of them within 600 s)
//
// Defaults come from the environment the demo prints (CONSENT_LEDGER_SERVER, CONSENT_LEDGER_LOG_KEY_FILE,
// CONSENT_LEDGER_MAP_VRF_PUBLIC_KEY_FILE), else from the demo directory (--dir, default ../../.consent-ledger/demo):
// its log.key.pub, map-vrf.key.pub and alice.key.pub. The server address must be given (--server or the env).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { LedgerClient, parseVerifierKey, toHex, VerificationError, WitnessKey, WitnessPolicy } from "../src/index.ts";

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    dir: { type: "string" },
    server: { type: "string" },
    party: { type: "string", default: "hospital-1" },
    purpose: { type: "string", default: "TREAT" },
    action: { type: "string", default: "access" },
    data: { type: "string", multiple: true },
    "patient-key-file": { type: "string" },
    "log-key-file": { type: "string" },
    "map-vrf-key-file": { type: "string" },
    // Pin the demo's witnesses (witness-N.key.pub in the demo directory) and require this many of them.
    "witness-quorum": { type: "string" },
  },
});
const env = process.env;
const dir = values.dir ?? (env.CONSENT_LEDGER_LOG_KEY_FILE ? dirname(env.CONSENT_LEDGER_LOG_KEY_FILE) : join(here, "../../../.consent-ledger/demo"));
const server = values.server ?? env.CONSENT_LEDGER_SERVER;
if (!server) {
  console.error("check-access: give the server address (--server HOST:PORT, or CONSENT_LEDGER_SERVER as the demo prints it)");
  process.exit(2);
}
const read = (f: string) => readFileSync(f, "utf8").trim();
const logKey = read(values["log-key-file"] ?? env.CONSENT_LEDGER_LOG_KEY_FILE ?? join(dir, "log.key.pub"));
const mapVrfKey = read(values["map-vrf-key-file"] ?? env.CONSENT_LEDGER_MAP_VRF_PUBLIC_KEY_FILE ?? join(dir, "map-vrf.key.pub"));
const patient = parseVerifierKey(read(values["patient-key-file"] ?? join(dir, "alice.key.pub"))).publicKey;
const data = (values.data ?? ["laboratory-results"]).map((d) => {
  const [dataClass, labels] = d.split(":", 2);
  return { dataClass: dataClass!, sensitivityLabels: labels ? labels.split(",") : [] };
});

const quorum = values["witness-quorum"] ? Number(values["witness-quorum"]) : 0;
const witnessPolicy = quorum
  ? new WitnessPolicy(
      ["witness-1", "witness-2"].map((n) => new WitnessKey(n, parseVerifierKey(read(join(dir, `${n}.key.pub`))).publicKey)),
      quorum,
      600,
    )
  : undefined;
const client = new LedgerClient({
  ...(witnessPolicy ? { witnessPolicy } : {}),
  baseUrl: server.includes("://") ? server : `http://${server}`,
  logKey,
  mapVrfKey,
  partyId: values.party,
});
const short = (b: Uint8Array) => `${toHex(b).slice(0, 16)}...`;
const when = (ms: bigint) => new Date(Number(ms)).toISOString().replace(".000Z", "Z");

try {
  const cp = await client.checkpoint();
  const w = client.lastWitnessed;
  if (w !== null) {
    const ages = w.cosignatures.map(([n, t]) => `${n} ${Math.round(Date.now() / 1000 - Number(t))} s ago`).join(", ");
    console.log(`witnessed: checkpoint of size ${w.checkpoint.size} cosigned by ${w.cosignatures.length} pinned witnesses (${ages}), quorum ${quorum}`);
  }
  console.log(`checkpoint: size ${cp.size} of ${cp.origin}, signature by the pinned log key verifies; names consent state #${cp.consentState}`);
  const v = await client.checkAccess(patient, { action: values.action, purpose: values.purpose, data });
  const r = v.decision.request!;
  console.log(`decision: ${v.outcome}  (${r.requesterId} asks to ${r.action} data of patient ed25519:${short(r.patient)} for ${r.purpose})`);
  for (const o of v.decision.outcomes) {
    const labels = o.data!.sensitivityLabels.length ? ` [${o.data!.sensitivityLabels.join(",")}]` : "";
    const reasons = o.reasons.map((x) => x.code).join(", ");
    const ids = o.consentIds.length ? `  consent ${o.consentIds.map((c) => c.slice(0, 12) + "...").join(", ")}` : "";
    console.log(`  ${o.data!.dataClass}${labels}  ${o.decision === 1 ? "PERMIT" : "DENY"}  ${reasons}${ids}`);
  }
  console.log(`verified: checkpoint of size ${v.checkpoint.size} signed by ${v.checkpoint.origin} and consistent with the one fetched before`);
  console.log(`verified: receipt signed by the log key over the decision, bound to that checkpoint; the response's decision is the receipt's`);
  console.log(`verified: ${v.evidence.length} evidence entries: each leaf included in the checkpoint (RFC 9162), its body hashing to the leaf, its DSSE signatures verified`);
  console.log(`verified: StateCommit #${v.stateCommitIndex} (map root ${short(v.stateMapRoot)}, ${when(v.stateTimeMs)}) signed by the log key, named by the checkpoint's consent-state line, ${Math.round((Date.now() - Number(v.stateTimeMs)) / 1000)} s old`);
  for (const s of v.selectors) {
    console.log(`verified: map proof for ${s.selector}: key proven by its ECVRF proof under map VRF key ${short(v.mapVrfPublicKey)}; the evidence is exactly its in-force set (${s.inForce.length} consent${s.inForce.length === 1 ? "" : "s"})`);
  }
  console.log(`verified: ${r.requesterId}'s registration in the evidence is its latest (party-key map proof), roles ${JSON.stringify(r.requesterRoles)}`);
  console.log(`verified: decision made for now (${when(r.timeMs)}), valid until ${when(v.decision.validUntilMs)}; cited consents are in force by the evidence`);
} catch (e) {
  if (e instanceof VerificationError) {
    console.error(`NOT VERIFIED: ${e.name}: ${e.message}`);
    process.exit(1);
  }
  throw e;
}
