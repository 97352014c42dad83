"""The client's memory: the last checkpoint it verified, kept in a small local file.

Written atomically (temporary file, fsync, rename) with mode 0600, so a crash never leaves a half-written
state, and the client can prove consistency with what it saw before, across restarts.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from consent_ledger.core.errors import InvalidInput

FORMAT = "consent-ledger-client-state/v1"


@dataclass(frozen=True)
class TrustState:
    """The pinned log, the latest checkpoint verified against it, and the newest StateCommit verified (its index
    and batch time; both only move forward, so an answer resting on an older consent state is a rollback)."""

    verifier_key: str
    checkpoint_note: bytes | None = None
    state_commit_index: int | None = None
    state_commit_time_ms: int | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "verifier_key": self.verifier_key,
                "checkpoint": self.checkpoint_note.decode("utf-8") if self.checkpoint_note else None,
                "state_commit": None
                if self.state_commit_index is None
                else {"index": self.state_commit_index, "batch_time_ms": self.state_commit_time_ms},
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> TrustState:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise InvalidInput(f"state file is not in format {FORMAT}")
            note = data.get("checkpoint")
            # Absent in files written before StateCommits were remembered: nothing verified yet.
            sc = data.get("state_commit")
            index = time_ms = None
            if sc is not None:
                index, time_ms = sc["index"], sc["batch_time_ms"]
                if type(index) is not int or type(time_ms) is not int or index < 0:
                    raise InvalidInput("state file: state_commit must hold a non-negative index and a batch time")
            return cls(str(data["verifier_key"]), note.encode("utf-8") if note else None, index, time_ms)
        except (ValueError, KeyError, AttributeError, TypeError) as e:
            raise InvalidInput(f"state file is malformed: {e}") from None


def load_state(path: Path) -> TrustState | None:
    """The state saved at ``path``, or None if there is none yet."""
    try:
        return TrustState.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def save_state(path: Path, state: TrustState) -> None:
    """Replace the state at ``path`` atomically, readable only by the owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".state-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(state.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
