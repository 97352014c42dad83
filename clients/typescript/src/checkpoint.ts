// C2SP tlog-checkpoint bodies with the ledger's one extension line "consent-state <index>".
// Mirrors consent_ledger/core/checkpoint.py: only the canonical text is accepted.
import { fromBase64, toBase64, utf8 } from "./bytes.ts";
import { InvalidInput, VerificationError } from "./errors.ts";
import { openNote, type Note, type Verifier } from "./note.ts";

export const MAX_CHECKPOINT_SIZE = 4096;
export const MAX_EXTENSION_LINES = 16;
export const CONSENT_STATE = "consent-state";
const MAX_TREE_SIZE = (1n << 63n) - 1n;
const DECIMAL = /^(?:0|[1-9][0-9]{0,18})$/;
const CONTROL = /[\x00-\x1f]/;

export interface Checkpoint {
  origin: string;
  size: bigint;
  rootHash: Uint8Array;
  extensions: string[];
  /** The index of the latest StateCommit at this size (the consent-state line), or null without one. */
  consentState: bigint | null;
}

export function formatCheckpoint(cp: Pick<Checkpoint, "origin" | "size" | "rootHash" | "extensions">): string {
  return [cp.origin, cp.size.toString(), toBase64(cp.rootHash), ...cp.extensions].map((l) => `${l}\n`).join("");
}

/** The index named by the one canonical "consent-state <index>" line, or null; other lines are opaque. */
export function parseConsentState(extensions: readonly string[]): bigint | null {
  let found: bigint | null = null;
  for (const line of extensions) {
    const sp = line.indexOf(" ");
    const word = sp < 0 ? line : line.slice(0, sp);
    if (word !== CONSENT_STATE) continue;
    if (found !== null) throw new InvalidInput(`checkpoint has more than one ${CONSENT_STATE} line`);
    const rest = sp < 0 ? "" : line.slice(sp + 1);
    if (!DECIMAL.test(rest)) throw new InvalidInput(`checkpoint ${CONSENT_STATE} index is not a canonical decimal number`);
    found = BigInt(rest);
    if (found > MAX_TREE_SIZE) throw new InvalidInput(`checkpoint ${CONSENT_STATE} index is out of range`);
  }
  return found;
}

function checkLine(line: string, what: string): void {
  if (line === "") throw new InvalidInput(`checkpoint ${what} must be a non-empty line`);
  if (CONTROL.test(line)) throw new InvalidInput(`checkpoint ${what} contains a control character or newline`);
}

/** Parse a checkpoint body, accepting only its canonical form. */
export function parseCheckpoint(text: string): Checkpoint {
  if (text.length > MAX_CHECKPOINT_SIZE || utf8.encode(text).length > MAX_CHECKPOINT_SIZE) {
    throw new InvalidInput(`checkpoint is larger than ${MAX_CHECKPOINT_SIZE} bytes`);
  }
  if (!text.endsWith("\n")) throw new InvalidInput("checkpoint must end in a newline");
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) throw new InvalidInput("checkpoint needs origin, size and root hash lines");
  const [origin, sizeText, rootText, ...extensions] = lines as [string, string, string, ...string[]];
  checkLine(origin, "origin");
  if (!DECIMAL.test(sizeText)) throw new InvalidInput("checkpoint size is not a canonical decimal number");
  const size = BigInt(sizeText);
  if (size > MAX_TREE_SIZE) throw new InvalidInput("checkpoint size must be an integer in [0, 2**63)");
  let rootHash: Uint8Array;
  try {
    rootHash = fromBase64(rootText, "checkpoint root hash");
  } catch (e) {
    throw new InvalidInput(e instanceof Error && e.message.includes("canonical") ? e.message : "checkpoint root hash is not valid base64");
  }
  if (rootHash.length !== 32) throw new InvalidInput("checkpoint root hash is not 32 bytes");
  if (extensions.length > MAX_EXTENSION_LINES) {
    throw new InvalidInput(`checkpoint has more than ${MAX_EXTENSION_LINES} extension lines`);
  }
  for (const line of extensions) checkLine(line, "extension line");
  const consentState = parseConsentState(extensions);
  if (consentState !== null && consentState >= size) {
    throw new InvalidInput(`checkpoint names consent state ${consentState}, not an entry of a tree of size ${size}`);
  }
  const cp: Checkpoint = { origin, size, rootHash, extensions, consentState };
  if (formatCheckpoint(cp) !== text) throw new InvalidInput("checkpoint is not in canonical form");
  return cp;
}

export interface OpenedCheckpoint {
  checkpoint: Checkpoint;
  note: Note;
  /** The exact signed note bytes. */
  raw: Uint8Array;
}

/** Verify a signed checkpoint with the log's key and parse its body; other signature lines are kept unverified. */
export function openCheckpoint(raw: Uint8Array, verifier: Verifier): OpenedCheckpoint {
  const note = openNote(raw, [verifier]);
  const checkpoint = parseCheckpoint(note.text);
  if (checkpoint.origin !== verifier.name) {
    throw new VerificationError("checkpoint origin does not match the log's key name");
  }
  return { checkpoint, note, raw };
}
