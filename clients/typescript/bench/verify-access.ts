// How fast the TypeScript client verifies a CheckAccess answer, in process (no network): the hospital's PERMIT from
// test/fixtures/access_fixtures.json (3 evidence entries, 3 selector proofs and a party proof, each with its VRF
// proof). "cold": a new verifier each time (every VRF proof verified); "warm": one verifier (verified map keys
// cached, as a long-lived client has them). Run: node --import tsx bench/verify-access.ts [seconds]
import { readFileSync } from "node:fs";
import { fromBinary } from "@bufbuild/protobuf";
import { newAccessVerifier, openCheckpoint, parseVerifierKey, verifyAccessResponse } from "../src/index.ts";
import { CheckAccessRequestSchema, CheckAccessResponseSchema } from "../src/gen/consent_ledger/v1/access_pb.ts";

const fx = JSON.parse(readFileSync(new URL("../test/fixtures/access_fixtures.json", import.meta.url), "utf8"));
const c = fx.cases.find((x: { name: string }) => x.name === "hospital-permit");
const log = parseVerifierKey(fx.log_key);
const vrf = parseVerifierKey(fx.map_vrf_key).publicKey;
const req = fromBinary(CheckAccessRequestSchema, Buffer.from(c.request, "base64"));
const respBytes = Buffer.from(c.response, "base64");
const seconds = Number(process.argv[2] ?? 5);
const make = () =>
  newAccessVerifier({ logPublicKey: log.publicKey, mapVrfPublicKey: vrf, partyId: c.party, clockMs: () => Number(c.clock_ms) });

function rate(label: string, shared: boolean): void {
  const v = make();
  const end = performance.now() + seconds * 1000;
  let n = 0;
  while (performance.now() < end) {
    const resp = fromBinary(CheckAccessResponseSchema, respBytes);
    const cp = openCheckpoint(resp.checkpoint!.note, log).checkpoint;
    verifyAccessResponse(shared ? v : make(), req, resp, cp);
    if (shared) v.newestStateCommit = null;
    n++;
  }
  console.log(`${label}: ${(n / seconds).toFixed(0)} verifications/s (${n} in ${seconds} s)`);
}
rate("cold (every VRF proof verified)", false);
rate("warm (verified map keys cached)", true);
