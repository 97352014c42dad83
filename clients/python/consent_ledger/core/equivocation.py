"""Whether split-view evidence (core.splitview) proves equivocation, with the log's verifier key alone.

Equal sizes: both checkpoints signed by the log key, with different roots. Different sizes: the consistency proof
the log served from the smaller size to the larger implies the larger checkpoint's root (so, the hashes being
collision resistant, it shows that tree's root at the smaller size), and that root differs from the smaller
checkpoint's. When the smaller size is a power of two a consistency proof holds no hash of the smaller tree (RFC 9162
seeds it with the smaller root), so it cannot prove a split: such evidence is refused as not proving one.
"""

from __future__ import annotations

from consent_ledger.core.checkpoint import Checkpoint, open_checkpoint
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.merkle import roots_from_consistency_proof
from consent_ledger.core.note import Verifier
from consent_ledger.core.splitview import SplitView

__all__ = ["verify_split_view"]


def _open(note: bytes, verifier: Verifier, what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, verifier)
    except InvalidInput as e:
        raise VerificationError(f"the {what} checkpoint is malformed: {e}") from e
    except VerificationError as e:
        raise VerificationError(f"the {what} checkpoint is not signed by the log key: {e}") from e


def verify_split_view(sv: SplitView, log_verifier: Verifier) -> None:
    """Return when ``sv`` proves, with the log's verifier key alone, that the log signed two checkpoints that
    cannot both be true. Raises VerificationError (saying why) when it does not prove it."""
    smaller = _open(sv.smaller_note, log_verifier, "smaller")
    larger = _open(sv.larger_note, log_verifier, "larger")
    if sv.origin != log_verifier.name or smaller.origin != sv.origin or larger.origin != sv.origin:
        raise VerificationError("the evidence names another log than the verifier key's")
    if smaller.size > larger.size:
        raise VerificationError("the smaller note is the larger tree")
    if smaller.size == larger.size:
        if sv.proof:
            raise VerificationError("two checkpoints of one size need no proof")
        if smaller.root_hash == larger.root_hash:
            raise VerificationError(f"both checkpoints have the same root at size {smaller.size}: no split view")
        return
    if smaller.size == 0:
        raise VerificationError("every tree extends the empty tree: no split view")
    if smaller.size & (smaller.size - 1) == 0:
        raise VerificationError(
            f"a consistency proof from size {smaller.size} (a power of two) holds no hash of the smaller tree: "
            "it cannot prove a split view"
        )
    fr, sr = roots_from_consistency_proof(smaller.size, larger.size, smaller.root_hash, list(sv.proof))
    if sr != larger.root_hash:
        raise VerificationError("the proof does not lead to the larger checkpoint's root: it proves nothing")
    if fr == smaller.root_hash:
        raise VerificationError("the proof shows the checkpoints are consistent: no split view")
