"""Decisions are made for now (docs/design.md section 4): the time rules the server, the client and the audit share.

A request names no time (0: the server's clock) or a time at most ``MAX_CLOCK_SKEW_MS`` from the server's clock.
A client accepts a decision whose time is within its skew of its own clock, a StateCommit whose batch time is not
after its clock plus the skew, and a ``valid_until`` after its clock. A StateCommit's batch time is the
integration time of the batch it closes (its own leaf's), and integration times never decrease along the log.
"""

from __future__ import annotations

from consent_ledger.core.errors import InvalidInput

__all__ = [
    "MAX_CLOCK_SKEW_MS",
    "check_request_time",
    "integration_time_problem",
    "is_ahead",
    "is_within_skew",
    "state_commit_time_problem",
]

MAX_CLOCK_SKEW_MS = 5_000


def is_within_skew(t_ms: int, now_ms: int, skew_ms: int = MAX_CLOCK_SKEW_MS) -> bool:
    """Whether ``t_ms`` is at most ``skew_ms`` from ``now_ms``, either way."""
    return abs(t_ms - now_ms) <= skew_ms


def is_ahead(t_ms: int, now_ms: int, skew_ms: int = MAX_CLOCK_SKEW_MS) -> bool:
    """Whether ``t_ms`` is after ``now_ms`` plus the skew: a time that has not come yet."""
    return t_ms > now_ms + skew_ms


def check_request_time(time_ms: int, now_ms: int, skew_ms: int = MAX_CLOCK_SKEW_MS) -> None:
    """A request's decision time: 0 (now) or within ``skew_ms`` of ``now_ms``. Raises InvalidInput."""
    if time_ms and not is_within_skew(time_ms, now_ms, skew_ms):
        raise InvalidInput(
            f"decisions are made for now: the request time is {(time_ms - now_ms) / 1000:+.3f} s from the server's "
            f"clock (at most {skew_ms / 1000:g} s accepted); send 0 for now"
        )


def integration_time_problem(leaf_time_ms: int, previous_leaf_time_ms: int | None) -> str | None:
    """Integration times never decrease along the log (the sequencer stamps each batch with max(clock, last)).
    So a StateCommit dated ahead of the entries it closes shows up at the next entry an honest clock stamps."""
    if previous_leaf_time_ms is not None and leaf_time_ms < previous_leaf_time_ms:
        return (
            f"the integration time {leaf_time_ms} is before the integration time {previous_leaf_time_ms} of the entry "
            "before it (times decrease)"
        )
    return None


def state_commit_time_problem(batch_time_ms: int, leaf_time_ms: int, now_ms: int, skew_ms: int = MAX_CLOCK_SKEW_MS) -> str | None:
    """What is wrong with a StateCommit's batch time, or None: it must equal its leaf's integration time (the time
    of the batch it closes) and not be after ``now_ms`` plus the skew."""
    if batch_time_ms != leaf_time_ms:
        return (
            f"the StateCommit's batch time {batch_time_ms} differs from the integration time {leaf_time_ms} of the "
            "batch it closes"
        )
    if is_ahead(batch_time_ms, now_ms, skew_ms):
        return f"the StateCommit is dated {(batch_time_ms - now_ms) / 1000:g} s ahead of the auditor's clock"
    return None
