// Witness policies on the witnessed checkpoints the Python ledger's demo served (two witnesses cosigned them):
// a quorum of pinned witnesses within the age accepted; too few, none, a changed cosignature, stale or future-dated
// cosignatures refused with the Python policy's typed errors; the checkpoint must extend the witnessed one.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import {
  InvalidInput,
  NotCosigned,
  openCheckpoint,
  parseVerifierKey,
  parseWitnessKey,
  StaleCosignatures,
  UnderCosigned,
  utf8,
  VerificationError,
  verifyWitnessedExtension,
  WitnessKey,
  WitnessPolicy,
  WrongCosignature,
} from "../src/index.ts";
import { CheckAccessResponseSchema } from "../src/gen/consent_ledger/v1/access_pb.ts";

const fx = JSON.parse(readFileSync(new URL("fixtures/access_fixtures.json", import.meta.url), "utf8"));
const log = parseVerifierKey(fx.log_key);
const keys: string[] = fx.witness_keys;
const c = fx.cases.find((x: { name: string }) => x.name === "hospital-permit");
const resp = fromBinary(CheckAccessResponseSchema, Buffer.from(c.response, "base64"));
const witnessed = resp.witnessedCheckpoint!.note;
const nowS = Math.floor(Number(c.clock_ms) / 1000);

describe("witness policies", () => {
  it("witness keys parse in their canonical form only", () => {
    for (const k of keys) assert.equal(parseWitnessKey(k).toString(), k);
    assert.throws(() => parseWitnessKey(keys[0]!.replace(/\+([0-9a-f]{8})\+/, "+00000000+")), InvalidInput);
    assert.throws(() => parseWitnessKey(log.toString()), InvalidInput); // an 0x01 (signing) key is not a witness key
  });

  it("two of two pinned witnesses, cosigned within the age: accepted, with their times", () => {
    const wc = WitnessPolicy.fromKeys(keys, { quorum: 2, maxAgeS: 600 }).verify(witnessed, log, nowS);
    assert.deepEqual(wc.cosignatures.map(([n]) => n), ["witness-1", "witness-2"]);
    assert.ok(wc.cosignatures.every(([, t]) => BigInt(nowS) - t <= 600n));
    const cp = openCheckpoint(resp.checkpoint!.note, log).checkpoint;
    verifyWitnessedExtension(wc.checkpoint, cp, resp.witnessedConsistency);
  });

  it("refusals: none pinned cosigned, too few, a changed cosignature, stale, from the future", () => {
    const other = new WitnessKey("witness-9", new Uint8Array(32).fill(4));
    assert.throws(() => new WitnessPolicy([other], 1, 600).verify(witnessed, log, nowS), NotCosigned);
    const one = parseWitnessKey(keys[0]!);
    assert.throws(() => new WitnessPolicy([one, other], 2, 600).verify(witnessed, log, nowS), UnderCosigned);
    assert.throws(() => WitnessPolicy.fromKeys(keys, { quorum: 2, maxAgeS: 600 }).verify(witnessed, log, nowS + 3600), StaleCosignatures);
    assert.throws(() => WitnessPolicy.fromKeys(keys, { quorum: 2, maxAgeS: 600 }).verify(witnessed, log, nowS - 3600), WrongCosignature);
    // Flip one byte of witness-1's signature (inside its base64): WrongCosignature.
    const text = Buffer.from(witnessed).toString();
    const line = text.split("\n").find((l) => l.startsWith("\u2014 witness-1 "))!;
    const raw = Buffer.from(line.split(" ")[2]!, "base64");
    raw[40]! ^= 1;
    const bad = utf8.encode(text.replace(line, `\u2014 witness-1 ${raw.toString("base64")}`));
    assert.throws(() => WitnessPolicy.fromKeys(keys, { quorum: 1, maxAgeS: 600 }).verify(bad, log, nowS), WrongCosignature);
    // The checkpoint with its cosignature lines removed is not cosigned.
    const bare = utf8.encode(text.split("\n\u2014 witness-1")[0]! + "\n");
    assert.throws(() => WitnessPolicy.fromKeys(keys, { quorum: 1, maxAgeS: 600 }).verify(bare, log, nowS), NotCosigned);
  });

  it("policies that would accept everything cannot be made", () => {
    assert.throws(() => new WitnessPolicy([], 1, 600), InvalidInput);
    assert.throws(() => WitnessPolicy.fromKeys(keys, { quorum: 3, maxAgeS: 600 }), InvalidInput);
    assert.throws(() => WitnessPolicy.fromKeys(keys, { quorum: 0, maxAgeS: 600 }), InvalidInput);
    assert.throws(() => WitnessPolicy.fromKeys(keys, { quorum: 1, maxAgeS: 0 }), InvalidInput);
  });

  it("a checkpoint of another tree than the witnessed one is refused", () => {
    const wc = WitnessPolicy.fromKeys(keys, { quorum: 2, maxAgeS: 600 }).verify(witnessed, log, nowS);
    const fake = { ...wc.checkpoint, rootHash: new Uint8Array(32) };
    assert.throws(() => verifyWitnessedExtension(wc.checkpoint, fake, []), VerificationError);
  });
});
