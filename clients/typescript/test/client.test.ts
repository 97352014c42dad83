// LedgerClient against a lying log (an in-memory Connect router serving LogService): checkpoints signed with the
// key of tlog_vectors.json (its seed is in the file, so this test can sign what a server holding the log key could).
// A checkpoint that extends the last one by a valid consistency proof is accepted; a bad proof, or a second root for
// the same size, is a split view (InconsistentCheckpoints, carrying both notes); a note by another key is refused.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { createRouterTransport } from "@connectrpc/connect";
import { ed25519 } from "@noble/curves/ed25519.js";
import { InconsistentCheckpoints, LedgerClient, UnknownVerifier, VerificationError, concat, fromBase64, toBase64, utf8, Verifier } from "../src/index.ts";
import { LogService } from "../src/gen/consent_ledger/v1/log_pb.ts";

const tlog = JSON.parse(readFileSync(new URL("../../../tests/data/tlog_vectors.json", import.meta.url), "utf8"));
const seed = fromBase64(tlog.ed25519_seed_b64, "seed");
const name: string = tlog.signer_name;
const roots: Uint8Array[] = tlog.roots_b64.map((r: string) => fromBase64(r, "root"));
const consistency = (a: number, b: number): Uint8Array[] =>
  tlog.consistency.find((c: { old_size: number; new_size: number }) => c.old_size === a && c.new_size === b).proof.map((h: string) => fromBase64(h, "hash"));

function sign(size: number, root: Uint8Array, key = seed, keyName = name): Uint8Array {
  const body = `${name}\n${size}\n${toBase64(root)}\n`;
  const v = new Verifier(keyName, ed25519.getPublicKey(key));
  const hash = new Uint8Array(4);
  new DataView(hash.buffer).setUint32(0, v.keyHash, false);
  const sig = ed25519.sign(utf8.encode(body), key);
  return utf8.encode(`${body}\n\u2014 ${keyName} ${toBase64(concat(hash, sig))}\n`);
}

/** A log that serves the given checkpoints in turn and answers consistency proofs with `proof`. */
function lyingLog(notes: Uint8Array[], proof: (first: bigint, second: bigint) => Uint8Array[]) {
  let i = 0;
  return createRouterTransport(({ service }) => {
    service(LogService, {
      getCheckpoint: () => ({ checkpoint: { note: notes[Math.min(i++, notes.length - 1)]! } }),
      getConsistencyProof: (req) => ({ hashes: proof(req.first, req.second) }),
    });
  });
}

const client = (transport: ReturnType<typeof createRouterTransport>) =>
  new LedgerClient({ baseUrl: "http://unused", logKey: tlog.verifier_key, transport });

describe("LedgerClient and a lying log", () => {
  it("a checkpoint extending the last one by a valid proof is accepted and remembered", async () => {
    const c = client(lyingLog([sign(2, roots[1]!), sign(7, roots[6]!)], (a, b) => consistency(Number(a), Number(b))));
    assert.equal((await c.checkpoint()).size, 2n);
    assert.equal((await c.checkpoint()).size, 7n);
    assert.equal(c.lastCheckpoint!.checkpoint.size, 7n);
  });

  it("a consistency proof that does not hold is a split view, with both notes", async () => {
    const first = sign(2, roots[1]!);
    const forked = new Uint8Array(32).fill(1);
    const second = sign(7, forked);
    const c = client(lyingLog([first, second], (a, b) => consistency(Number(a), Number(b))));
    await c.checkpoint();
    await assert.rejects(c.checkpoint(), (e) => e instanceof InconsistentCheckpoints && Buffer.from(e.oldNote).equals(Buffer.from(first)) && Buffer.from(e.newNote).equals(Buffer.from(second)));
    assert.equal(c.lastCheckpoint!.checkpoint.size, 2n); // the fork was not remembered
  });

  it("two roots for one size are a split view", async () => {
    const c = client(lyingLog([sign(7, roots[6]!), sign(7, roots[5]!)], () => []));
    await c.checkpoint();
    await assert.rejects(c.checkpoint(), InconsistentCheckpoints);
  });

  it("an older checkpoint must be consistent too (no rollback to another history)", async () => {
    const c = client(lyingLog([sign(7, roots[6]!), sign(3, new Uint8Array(32).fill(2))], (a, b) => consistency(Number(a), Number(b))));
    await c.checkpoint();
    await assert.rejects(c.checkpoint(), InconsistentCheckpoints);
  });

  it("a checkpoint signed by another key is refused", async () => {
    const other = new Uint8Array(32).fill(8);
    const c = client(lyingLog([sign(2, roots[1]!, other, name)], () => []));
    await assert.rejects(c.checkpoint(), VerificationError);
    const c2 = client(lyingLog([sign(2, roots[1]!, other, "other.example")], () => []));
    await assert.rejects(c2.checkpoint(), UnknownVerifier);
  });
});
