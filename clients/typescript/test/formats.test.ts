// Formats the verifier parses: DSSE PAE, envelopes, checkpoints with the consent-state line, signed notes.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ed25519 } from "@noble/curves/ed25519.js";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  formatCheckpoint,
  InvalidInput,
  openCheckpoint,
  openNote,
  pae,
  parseCheckpoint,
  parseEnvelope,
  toBase64,
  utf8,
  VerificationError,
  Verifier,
  verifyEnvelope,
  keyidFor,
  concat,
} from "../src/index.ts";
import { EnvelopeSchema } from "../src/gen/consent_ledger/v1/envelope_pb.ts";

const seed = new Uint8Array(32).fill(9);
const pub = ed25519.getPublicKey(seed);

function signNote(text: string, name: string): Uint8Array {
  const v = new Verifier(name, pub);
  const sig = ed25519.sign(utf8.encode(text), seed);
  const hash = new Uint8Array(4);
  new DataView(hash.buffer).setUint32(0, v.keyHash, false);
  return utf8.encode(`${text}\n\u2014 ${name} ${toBase64(concat(hash, sig))}\n`);
}

describe("DSSE", () => {
  it("PAE is the DSSE spec's encoding", () => {
    assert.equal(
      Buffer.from(pae("http://example.com/HelloWorld", utf8.encode("hello world"))).toString(),
      "DSSEv1 29 http://example.com/HelloWorld 11 hello world",
    );
  });

  it("an envelope verifies over PAE; a changed payload, signature or keyid does not", () => {
    const payloadType = "consent_ledger.v1.ConsentGrant";
    const payload = utf8.encode("payload");
    const sig = ed25519.sign(pae(payloadType, payload), seed);
    const env = (s: Uint8Array, keyid = keyidFor(pub), p = payload) =>
      toBinary(EnvelopeSchema, create(EnvelopeSchema, { payload: p, payloadType, signatures: [{ sig: s, keyid }] }));
    verifyEnvelope(parseEnvelope(env(sig)));
    const bad = sig.slice();
    bad[3]! ^= 1;
    assert.throws(() => verifyEnvelope(parseEnvelope(env(bad))), VerificationError);
    assert.throws(() => verifyEnvelope(parseEnvelope(env(sig, keyidFor(new Uint8Array(32).fill(1))))), VerificationError);
    assert.throws(() => verifyEnvelope(parseEnvelope(env(sig, keyidFor(pub), utf8.encode("payloaD")))), VerificationError);
    // Not canonical: trailing unknown field, or keyid in upper case.
    assert.throws(() => parseEnvelope(concat(env(sig), Uint8Array.of(0x28, 0x01))), InvalidInput);
    assert.throws(() => parseEnvelope(env(sig, keyidFor(pub).toUpperCase())), InvalidInput);
  });
});

describe("checkpoints", () => {
  const root = toBase64(new Uint8Array(32).fill(3));
  const body = (ext: string[] = []) => ["log.example", "10", root, ...ext].map((l) => `${l}\n`).join("");

  it("the consent-state line names the latest StateCommit; other extension lines are opaque", () => {
    assert.equal(parseCheckpoint(body(["consent-state 7"])).consentState, 7n);
    assert.equal(parseCheckpoint(body(["other line", "consent-state 0"])).consentState, 0n);
    assert.equal(parseCheckpoint(body()).consentState, null);
    const cp = parseCheckpoint(body(["consent-state 9"]));
    assert.equal(formatCheckpoint(cp), body(["consent-state 9"]));
  });

  it("only the canonical text is accepted", () => {
    for (const ext of [["consent-state 07"], ["consent-state +7"], ["consent-state 7 "], ["consent-state"], ["consent-state 1", "consent-state 2"], ["consent-state 10"], [""]]) {
      assert.throws(() => parseCheckpoint(body(ext)), InvalidInput, JSON.stringify(ext));
    }
    assert.throws(() => parseCheckpoint("log.example\n010\n" + root + "\n"), InvalidInput);
    assert.throws(() => parseCheckpoint("log.example\n10\n" + root.replace(/=$/, "") + "\n"), InvalidInput);
    assert.throws(() => parseCheckpoint("log.example\n10\n" + root), InvalidInput);
  });

  it("a signed checkpoint opens with its key, and refuses another origin or a changed line", () => {
    const note = signNote(body(["consent-state 3"]), "log.example");
    const v = new Verifier("log.example", pub);
    assert.equal(openCheckpoint(note, v).checkpoint.consentState, 3n);
    const changed = utf8.encode(Buffer.from(note).toString().replace("consent-state 3", "consent-state 4"));
    assert.throws(() => openCheckpoint(changed, v), VerificationError);
    const other = signNote(body().replace("log.example", "other.example"), "log.example");
    assert.throws(() => openCheckpoint(other, v), VerificationError);
  });

  it("signed notes: unknown signers are kept unverified, malformed notes refused", () => {
    const note = signNote("hello\n", "a.example");
    const known = new Verifier("a.example", pub);
    const extra = concat(note, utf8.encode(`\u2014 b.example ${toBase64(new Uint8Array(68))}\n`));
    const opened = openNote(extra, [known]);
    assert.equal(opened.sigs.length, 1);
    assert.equal(opened.unverifiedSigs.length, 1);
    assert.throws(() => openNote(utf8.encode("hello\n"), [known]), InvalidInput);
    assert.throws(() => openNote(concat(note.slice(0, -1)), [known]), InvalidInput);
    assert.throws(() => openNote(utf8.encode("he\x01llo\n\n" + Buffer.from(note).toString().split("\n\n")[1]), [known]), InvalidInput);
  });
});

describe("Ed25519 as libsodium", () => {
  it("the small-order encodings are exactly the points of order dividing 8 (checked with @noble/curves)", async () => {
    const { isSmallOrderEncoding } = await import("../src/note.ts");
    const { ed25519: ed } = await import("@noble/curves/ed25519.js");
    const list = [
      "0000000000000000000000000000000000000000000000000000000000000000",
      "0100000000000000000000000000000000000000000000000000000000000000",
      "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
      "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
      "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];
    for (const h of list) {
      const b = Buffer.from(h, "hex");
      assert.ok(isSmallOrderEncoding(b));
      assert.ok(ed.Point.fromBytes(b, true).isSmallOrder(), h);
    }
    assert.ok(!isSmallOrderEncoding(pub));
  });

  it("a signature under a small-order key, or with a small-order R, is refused", () => {
    const zero = Buffer.from("0100000000000000000000000000000000000000000000000000000000000000", "hex");
    const msg = utf8.encode("m");
    // With A = identity and R = identity, S = 0 satisfies the cofactorless equation for every message.
    const forged = new Uint8Array(64);
    forged.set(zero, 0);
    assert.throws(() => verifyEnvelope({ payloadType: "t", payload: msg, signers: [new Uint8Array(zero)], signatures: [forged], raw: msg, sha256: msg }), VerificationError);
  });
});
