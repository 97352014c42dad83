"""The pure core: hashing, Merkle proofs, signed notes, envelopes and consent rules. No I/O."""
