"""Typed verification failures about time and state (docs/design.md section 4, "Decisions are made for now"). Each is a
VerificationError and carries the evidence: the times compared (ms since the epoch), the indices, the notes."""

from __future__ import annotations

from consent_ledger.core.errors import VerificationError

__all__ = [
    "DecisionTimeMismatch",
    "EntryFromTheFuture",
    "ExpiredDecision",
    "MissingAccessEvent",
    "StateCommitNotNamed",
    "StateFromTheFuture",
    "StateRollback",
]


class DecisionTimeMismatch(VerificationError):
    """The decision was made for another time than now: ``decision_time_ms`` is more than ``skew_ms`` from the
    client's clock ``clock_ms``."""

    def __init__(self, decision_time_ms: int, clock_ms: int, skew_ms: int) -> None:
        super().__init__(
            f"the decision was made for {(decision_time_ms - clock_ms) / 1000:+g} s from this client's clock (at most "
            f"{skew_ms / 1000:g} s accepted): decisions are made for now"
        )
        self.decision_time_ms = decision_time_ms
        self.clock_ms = clock_ms
        self.skew_ms = skew_ms


class ExpiredDecision(VerificationError):
    """The decision's ``valid_until_ms`` is not after the client's clock ``clock_ms``."""

    def __init__(self, valid_until_ms: int, clock_ms: int) -> None:
        super().__init__(f"the decision expired {(clock_ms - valid_until_ms) / 1000:g} s ago (valid until {valid_until_ms})")
        self.valid_until_ms = valid_until_ms
        self.clock_ms = clock_ms


class StateFromTheFuture(VerificationError):
    """The StateCommit at ``index`` is dated ``batch_time_ms``, after the client's clock ``clock_ms`` plus
    ``skew_ms``: a state age below zero would void the freshness bound."""

    def __init__(self, index: int, batch_time_ms: int, clock_ms: int, skew_ms: int) -> None:
        super().__init__(
            f"the StateCommit at {index} is dated {(batch_time_ms - clock_ms) / 1000:g} s ahead of this client's clock "
            f"(at most {skew_ms / 1000:g} s accepted)"
        )
        self.index = index
        self.batch_time_ms = batch_time_ms
        self.clock_ms = clock_ms
        self.skew_ms = skew_ms


class StateRollback(VerificationError):
    """The answer rests on the StateCommit at ``index`` (dated ``batch_time_ms``; for a listing, the StateCommit its
    checkpoint names, time unknown: None), older than the newest one this client already verified for the log
    (``newest_index``, ``newest_time_ms``): a revoked grant could be honoured again."""

    def __init__(self, index: int, batch_time_ms: int | None, newest_index: int, newest_time_ms: int) -> None:
        super().__init__(
            f"the answer rests on the StateCommit at {index}, older than the StateCommit at {newest_index} this client "
            "already verified (no rollback)"
        )
        self.index = index
        self.batch_time_ms = batch_time_ms
        self.newest_index = newest_index
        self.newest_time_ms = newest_time_ms


class StateCommitNotNamed(VerificationError):
    """The evidence's StateCommit (``index``) is not the one the verified checkpoint (``checkpoint_note``) names in
    its ``consent-state`` line (``named``; None when the checkpoint names none)."""

    def __init__(self, index: int, named: int | None, checkpoint_note: bytes) -> None:
        names = f"names StateCommit {named}" if named is not None else "names no StateCommit"
        super().__init__(f"the evidence rests on the StateCommit at {index}, but its checkpoint {names}")
        self.index = index
        self.named = named
        self.checkpoint_note = checkpoint_note


class MissingAccessEvent(VerificationError):
    """The access event was asked for (record_access_event) but the answer comes without one. Carries the signed
    receipt of the decision it should have recorded."""

    def __init__(self, receipt: bytes) -> None:
        super().__init__("the access event was asked for, but the answer records none")
        self.receipt = receipt


class EntryFromTheFuture(VerificationError):
    """The entry at ``index`` was integrated at ``integrated_time_ms``, after the verifier's clock ``clock_ms`` plus
    ``skew_ms``: the log key signed a time that has not come yet."""

    def __init__(self, index: int, integrated_time_ms: int, clock_ms: int, skew_ms: int) -> None:
        super().__init__(
            f"entry {index} is dated {(integrated_time_ms - clock_ms) / 1000:g} s ahead of this verifier's clock "
            f"(at most {skew_ms / 1000:g} s accepted)"
        )
        self.index = index
        self.integrated_time_ms = integrated_time_ms
        self.clock_ms = clock_ms
        self.skew_ms = skew_ms
