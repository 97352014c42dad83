// Witness policies (consent_ledger/core/witness_policy.py): which witnesses a client trusts, how many of them must
// have cosigned a checkpoint (C2SP tlog-cosignature/v1 lines appended to the log's signed note), and how recently.
// A witness key is written as Go's cosignature verifier key: <name>+<8 hex key hash>+<base64(0x04 || key)>.
import { concat, fromBase64, toBase64 } from "./bytes.ts";
import { openCheckpoint, type Checkpoint } from "./checkpoint.ts";
import { InvalidInput, UnknownVerifier, VerificationError } from "./errors.ts";
import { verifyConsistency } from "./merkle.ts";
import { ALG_COSIGNATURE_V1, cosignatureKeyHash, isValidName, verifyCosignature, type NoteSignature, type Verifier } from "./note.ts";

export const DEFAULT_MAX_SKEW_S = 5;
export const MAX_WITNESSES = 64;

export class NotCosigned extends VerificationError {}
export class UnderCosigned extends VerificationError {}
export class WrongCosignature extends VerificationError {}
export class StaleCosignatures extends VerificationError {}

export class WitnessKey {
  readonly keyHash: number;
  constructor(
    readonly name: string,
    readonly publicKey: Uint8Array,
  ) {
    if (!isValidName(name)) throw new InvalidInput(`invalid witness name ${JSON.stringify(name)}`);
    if (publicKey.length !== 32) throw new InvalidInput("a witness key is 32 bytes");
    this.keyHash = cosignatureKeyHash(name, publicKey);
  }

  toString(): string {
    return `${this.name}+${this.keyHash.toString(16).padStart(8, "0")}+${toBase64(concat(Uint8Array.of(ALG_COSIGNATURE_V1), this.publicKey))}`;
  }
}

/** Parse a witness key, only in its canonical form. */
export function parseWitnessKey(text: string): WitnessKey {
  const parts = text.split("+");
  if (parts.length < 3) throw new InvalidInput("witness key is not name+hash+key");
  const [name, hashHex] = parts as [string, string];
  const raw = fromBase64(parts.slice(2).join("+"), "witness key");
  if (raw.length !== 33 || raw[0] !== ALG_COSIGNATURE_V1) throw new InvalidInput("witness key is not a cosignature/v1 (0x04) Ed25519 key");
  const key = new WitnessKey(name, raw.slice(1));
  if (key.toString() !== text || key.keyHash.toString(16).padStart(8, "0") !== hashHex) {
    throw new InvalidInput("witness key is not canonical or its hash does not match");
  }
  return key;
}

export interface WitnessedCheckpoint {
  checkpoint: Checkpoint;
  note: Uint8Array;
  /** Each counted cosigner and its cosignature time (Unix seconds), sorted by name. */
  cosignatures: [string, bigint][];
}

export class WitnessPolicy {
  constructor(
    readonly witnesses: readonly WitnessKey[],
    readonly quorum: number,
    readonly maxAgeS: number,
    readonly maxSkewS = DEFAULT_MAX_SKEW_S,
  ) {
    if (witnesses.length < 1 || witnesses.length > MAX_WITNESSES) throw new InvalidInput(`a witness policy pins 1 to ${MAX_WITNESSES} witnesses`);
    if (new Set(witnesses.map((w) => w.name)).size !== witnesses.length) throw new InvalidInput("a witness policy's witnesses must have distinct names");
    if (!Number.isInteger(quorum) || quorum < 1 || quorum > witnesses.length) {
      throw new InvalidInput(`a witness quorum must be between 1 and ${witnesses.length}`);
    }
    if (!Number.isInteger(maxAgeS) || maxAgeS <= 0) throw new InvalidInput("a witness policy's maximum cosignature age must be a positive number of seconds");
    if (!Number.isInteger(maxSkewS) || maxSkewS < 0) throw new InvalidInput("a witness policy's clock skew must be 0 or more seconds");
  }

  static fromKeys(keys: Iterable<string>, opts: { quorum: number; maxAgeS: number; maxSkewS?: number }): WitnessPolicy {
    return new WitnessPolicy([...keys].map(parseWitnessKey), opts.quorum, opts.maxAgeS, opts.maxSkewS ?? DEFAULT_MAX_SKEW_S);
  }

  /**
   * Verify the log's signature on `note` and that `quorum` pinned witnesses cosigned its body, dated within maxAgeS
   * before nowS and at most maxSkewS after it (nowS null: no age check). Throws NotCosigned, WrongCosignature,
   * UnderCosigned or StaleCosignatures, in that order of precedence, as the Python policy does.
   */
  verify(note: Uint8Array, logVerifier: Verifier, nowS: number | null): WitnessedCheckpoint {
    const opened = openCheckpoint(note, logVerifier);
    const body = opened.note.text;
    const pinned = new Map(this.witnesses.map((w) => [`${w.name}\u0000${w.keyHash}`, w]));
    const lines: NoteSignature[] = opened.note.unverifiedSigs.filter((s) => pinned.has(`${s.name}\u0000${s.keyHash}`));
    if (lines.length === 0) throw new NotCosigned(`the checkpoint carries no cosignature by a pinned witness (${this.quorum} needed)`);
    const timestamps = new Map<string, bigint>();
    for (const sig of lines) {
      const w = pinned.get(`${sig.name}\u0000${sig.keyHash}`)!;
      if (timestamps.has(w.name)) continue;
      let t: bigint;
      try {
        t = verifyCosignature(body, sig, w.name, w.publicKey);
      } catch (e) {
        if (e instanceof UnknownVerifier) throw e;
        throw new WrongCosignature(`the cosignature by witness ${w.name}+${w.keyHash.toString(16).padStart(8, "0")} does not verify over this checkpoint`);
      }
      if (nowS !== null && t > BigInt(nowS + this.maxSkewS)) {
        throw new WrongCosignature(`the cosignature by witness ${w.name}+${w.keyHash.toString(16).padStart(8, "0")} is dated ${t - BigInt(nowS)} s after this client's clock (at most ${this.maxSkewS} s accepted)`);
      }
      timestamps.set(w.name, t);
    }
    if (timestamps.size < this.quorum) {
      throw new UnderCosigned(`the checkpoint is cosigned by ${timestamps.size} pinned witness(es) (${[...timestamps.keys()].join(", ")}), ${this.quorum} needed`);
    }
    let counted = [...timestamps];
    if (nowS !== null) {
      counted = counted.filter(([, t]) => BigInt(nowS) - t <= BigInt(this.maxAgeS));
      if (counted.length < this.quorum) {
        const newest = [...timestamps.values()].reduce((a, b) => (a > b ? a : b));
        throw new StaleCosignatures(`the checkpoint's cosignatures are stale: the newest is ${BigInt(nowS) - newest} s old, and ${this.quorum} within ${this.maxAgeS} s are needed`);
      }
    }
    counted.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return { checkpoint: opened.checkpoint, note, cosignatures: counted };
  }
}

/** `cp` and the witnessed checkpoint are one history: `proof` proves the smaller consistent with the larger. */
export function verifyWitnessedExtension(witnessed: Checkpoint, cp: Checkpoint, proof: readonly Uint8Array[]): void {
  if (cp.origin !== witnessed.origin) throw new VerificationError("the checkpoint and the witnessed checkpoint are of different logs");
  const [small, large] = witnessed.size <= cp.size ? [witnessed, cp] : [cp, witnessed];
  verifyConsistency(small.size, large.size, small.rootHash, large.rootHash, proof);
}
