// Canonical protobuf parsing: the ledger commits to exact bytes, so a message is accepted only when protobuf-es
// serializes what it parsed back to the very same bytes (no unknown, repeated or misordered fields). protobuf-es
// writes fields in field-number order and leaves out proto3 defaults, as Python's deterministic serialization does;
// the cross-tests (test/python-fixtures.test.ts and the live example test) check this on the ledger's own bytes.
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { equal } from "./bytes.ts";
import { InvalidInput } from "./errors.ts";

export function parseCanonical<Desc extends DescMessage>(schema: Desc, data: Uint8Array, what: string): MessageShape<Desc> {
  let message: MessageShape<Desc>;
  try {
    message = fromBinary(schema, data, { readUnknownFields: false });
  } catch {
    throw new InvalidInput(`${what} is not a valid protobuf message`);
  }
  if (!equal(toBinary(schema, message), data)) {
    throw new InvalidInput(`${what} is not in canonical form (unknown, repeated or misordered fields)`);
  }
  return message;
}
