"""Generated protobuf and gRPC code for consent_ledger.v1. Do not edit: run scripts/gen_protos.py."""
