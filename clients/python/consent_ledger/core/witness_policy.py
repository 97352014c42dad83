"""Witness policies (docs/design.md section 2, witness policies): which witnesses a client trusts, how many of them
must have cosigned a checkpoint, and how recently.

A witnessed checkpoint is the log's signed checkpoint note with C2SP tlog-cosignature/v1 lines appended. A client
holding a `WitnessPolicy` accepts a checkpoint only when ``quorum`` of its pinned witnesses cosigned it, each
cosignature dated within ``max_age_s`` of the client's clock (and not more than ``max_skew_s`` after it): that
bound, not the operator's clock, is what makes "current" mean current, and a fork shown to a client that has never
seen the log is refused at once, since an operator holding the log key cannot make honest witnesses cosign it.

A witness key is written as Go's cosignature verifier key: ``<name>+<8 hex key hash>+<base64(0x04 || key)>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from consent_ledger.core.checkpoint import Checkpoint, open_checkpoint
from consent_ledger.core.errors import InvalidInput, UnknownVerifier, VerificationError
from consent_ledger.core.merkle import verify_consistency
# One witness-key format for the witness service and the clients' policies.
from consent_ledger.core.witness import WitnessKey, format_witness_key, parse_witness_key
from consent_ledger.core.note import (
    NoteSignature,
    Verifier,
    open_note,
    verify_cosignature,
)

__all__ = [
    "DEFAULT_MAX_SKEW_S",
    "MAX_WITNESSES",
    "NotCosigned",
    "StaleCosignatures",
    "UnderCosigned",
    "WitnessKey",
    "WitnessPolicy",
    "WitnessedCheckpoint",
    "WrongCosignature",
    "format_witness_key",
    "parse_witness_key",
    "verify_witnessed_extension",
]

DEFAULT_MAX_SKEW_S = 5
MAX_WITNESSES = 64


# -- typed outcomes, each with its evidence ---------------------------------------------------------------------


class NotCosigned(VerificationError):
    """The checkpoint ``note`` carries no cosignature by any pinned witness."""

    def __init__(self, note: bytes, quorum: int) -> None:
        super().__init__(f"the checkpoint carries no cosignature by a pinned witness ({quorum} needed)")
        self.note = note
        self.quorum = quorum


class UnderCosigned(VerificationError):
    """Fewer than ``quorum`` pinned witnesses cosigned the checkpoint ``note``; ``cosigners`` names those who did."""

    def __init__(self, note: bytes, cosigners: tuple[str, ...], quorum: int) -> None:
        super().__init__(
            f"the checkpoint is cosigned by {len(cosigners)} pinned witness(es) ({', '.join(cosigners)}), "
            f"{quorum} needed"
        )
        self.note = note
        self.cosigners = cosigners
        self.quorum = quorum


class WrongCosignature(VerificationError):
    """A cosignature line by a pinned witness (``name``, ``key_hash``) in ``note`` does not verify over its body, or
    is dated too far ahead of the client's clock: ``problem`` says which."""

    def __init__(self, note: bytes, name: str, key_hash: int, problem: str) -> None:
        super().__init__(f"the cosignature by witness {name}+{key_hash:08x} {problem}")
        self.note = note
        self.name = name
        self.key_hash = key_hash
        self.problem = problem


class StaleCosignatures(VerificationError):
    """Enough pinned witnesses cosigned ``note``, but fewer than ``quorum`` within ``max_age_s`` of ``now_s``:
    ``timestamps`` maps each cosigner to its cosignature time (Unix seconds)."""

    def __init__(self, note: bytes, timestamps: dict[str, int], now_s: int, max_age_s: int, quorum: int) -> None:
        newest = max(timestamps.values())
        super().__init__(
            f"the checkpoint's cosignatures are stale: the newest is {now_s - newest} s old, and {quorum} within "
            f"{max_age_s} s are needed"
        )
        self.note = note
        self.timestamps = dict(timestamps)
        self.now_s = now_s
        self.max_age_s = max_age_s
        self.quorum = quorum


@dataclass(frozen=True)
class WitnessedCheckpoint:
    """A log-signed checkpoint that a quorum of pinned witnesses cosigned: the note as received and each counted
    cosigner's timestamp (Unix seconds)."""

    checkpoint: Checkpoint
    note: bytes
    cosignatures: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class WitnessPolicy:
    """Pinned witnesses, a quorum of them, and how old the quorum's cosignatures may be.

    Requires 1 <= quorum <= len(witnesses), distinct witness names, max_age_s > 0 and max_skew_s >= 0. An empty
    policy cannot be built: it would accept everything.
    """

    witnesses: tuple[WitnessKey, ...]
    quorum: int
    max_age_s: int
    max_skew_s: int = DEFAULT_MAX_SKEW_S

    def __post_init__(self) -> None:
        if not isinstance(self.witnesses, tuple) or not all(isinstance(w, WitnessKey) for w in self.witnesses):
            raise InvalidInput("a witness policy needs a tuple of witness keys")
        if not self.witnesses or len(self.witnesses) > MAX_WITNESSES:
            raise InvalidInput(f"a witness policy pins 1 to {MAX_WITNESSES} witnesses")
        if len({w.name for w in self.witnesses}) != len(self.witnesses):
            raise InvalidInput("a witness policy's witnesses must have distinct names")
        if type(self.quorum) is not int or not 1 <= self.quorum <= len(self.witnesses):
            raise InvalidInput(f"a witness quorum must be between 1 and {len(self.witnesses)}")
        if type(self.max_age_s) is not int or self.max_age_s <= 0:
            raise InvalidInput("a witness policy's maximum cosignature age must be a positive number of seconds")
        if type(self.max_skew_s) is not int or self.max_skew_s < 0:
            raise InvalidInput("a witness policy's clock skew must be 0 or more seconds")

    @classmethod
    def from_keys(
        cls, keys: Iterable[str], *, quorum: int, max_age_s: int, max_skew_s: int = DEFAULT_MAX_SKEW_S
    ) -> WitnessPolicy:
        """A policy from witness key texts (see `parse_witness_key`)."""
        return cls(tuple(parse_witness_key(k) for k in keys), quorum, max_age_s, max_skew_s)

    def verify(self, note: bytes, log_verifier: Verifier, now_s: int | None) -> WitnessedCheckpoint:
        """Verify the log's signature on ``note`` and that ``quorum`` pinned witnesses cosigned its body, dated
        within ``max_age_s`` before ``now_s`` (Unix seconds) and at most ``max_skew_s`` after it. ``now_s`` None
        checks the cosignatures and the quorum but not their age (what a consent bundle proves: that the log was
        witnessed, not that it is current).

        Raises InvalidInput (malformed note), VerificationError or UnknownVerifier (the log's signature), and
        NotCosigned, WrongCosignature, UnderCosigned or StaleCosignatures, in that order of precedence.
        """
        note = bytes(note)
        cp = open_checkpoint(note, log_verifier)
        opened = open_note(note, [log_verifier])
        body = opened.text
        pinned = {(w.name, w.key_hash): w for w in self.witnesses}
        timestamps: dict[str, int] = {}
        lines: list[NoteSignature] = [s for s in opened.unverified_sigs if (s.name, s.key_hash) in pinned]
        if not lines:
            raise NotCosigned(note, self.quorum)
        for sig in lines:
            w = pinned[(sig.name, sig.key_hash)]
            if w.name in timestamps:
                continue  # a repeated line by one witness counts once
            try:
                t = verify_cosignature(body, sig, w.name, w.public_key)
            except (VerificationError, InvalidInput) as e:
                if isinstance(e, UnknownVerifier):  # cannot happen: name and hash were matched above
                    raise
                raise WrongCosignature(note, w.name, sig.key_hash, "does not verify over this checkpoint") from None
            if now_s is not None and t > now_s + self.max_skew_s:
                raise WrongCosignature(
                    note, w.name, sig.key_hash,
                    f"is dated {t - now_s} s after this client's clock (at most {self.max_skew_s} s accepted)",
                )  # fmt: skip
            timestamps[w.name] = t
        if len(timestamps) < self.quorum:
            raise UnderCosigned(note, tuple(timestamps), self.quorum)
        counted = timestamps
        if now_s is not None:
            counted = {n: t for n, t in timestamps.items() if now_s - t <= self.max_age_s}
            if len(counted) < self.quorum:
                raise StaleCosignatures(note, timestamps, now_s, self.max_age_s, self.quorum)
        return WitnessedCheckpoint(cp, note, tuple(sorted(counted.items())))


def verify_witnessed_extension(witnessed: Checkpoint, cp: Checkpoint, proof: Sequence[bytes]) -> None:
    """Check that ``cp`` and the witnessed checkpoint are one history: ``proof`` is the consistency proof from the
    smaller of the two to the larger (empty when their sizes are equal). A checkpoint consistent with a fresh
    witnessed one is as safe as it. Raises VerificationError."""
    if cp.origin != witnessed.origin:
        raise VerificationError("the checkpoint and the witnessed checkpoint are of different logs")
    small, large = (witnessed, cp) if witnessed.size <= cp.size else (cp, witnessed)
    verify_consistency(small.size, large.size, small.root_hash, large.root_hash, list(proof))
