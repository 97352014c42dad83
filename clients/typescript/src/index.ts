// consent-ledger's verifying TypeScript client. See clients/typescript/README.md.
export * from "./errors.ts";
export * from "./bytes.ts";
export * from "./merkle.ts";
export * from "./note.ts";
export * from "./checkpoint.ts";
export * from "./smt.ts";
export * from "./vrf.ts";
export * from "./envelope.ts";
export * from "./payloads.ts";
export * from "./receipt.ts";
export * from "./entry.ts";
export * from "./access.ts";
export * from "./client.ts";
export * from "./witness.ts";
export * from "./decide.ts";
export * from "./vocab.ts";
