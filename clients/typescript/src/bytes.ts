// Byte helpers shared by every verifier module: hex and base64 (canonical only), concatenation, comparison.
import { InvalidInput } from "./errors.ts";

export function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString("hex");
}

const HEX = /^(?:[0-9a-f]{2})*$/;

/** Lower-case hex only (what the ledger writes). */
export function fromHex(text: string): Uint8Array {
  if (!HEX.test(text)) throw new InvalidInput("not lower-case hex");
  return new Uint8Array(Buffer.from(text, "hex"));
}

export function toBase64(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString("base64");
}

const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Standard base64 with padding, accepting only the canonical encoding (as the Python core does). */
export function fromBase64(text: string, what: string): Uint8Array {
  if (!B64.test(text)) throw new InvalidInput(`${what} is not valid base64`);
  const raw = new Uint8Array(Buffer.from(text, "base64"));
  if (toBase64(raw) !== text) throw new InvalidInput(`${what} is not canonical base64`);
  return raw;
}

export const utf8 = new TextEncoder();

/** Strict UTF-8 decoding: a malformed sequence throws instead of becoming U+FFFD. */
export function decodeUtf8(b: Uint8Array, what: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(b);
  } catch {
    throw new InvalidInput(`${what} is not valid UTF-8`);
  }
}

/** 8-byte big-endian encoding of an unsigned 64-bit integer. */
export function u64be(n: bigint): Uint8Array {
  if (n < 0n || n >= 1n << 64n) throw new InvalidInput(`${n} is not in 0 .. 2**64-1`);
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, n, false);
  return out;
}
