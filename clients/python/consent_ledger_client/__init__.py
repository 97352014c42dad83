"""consent-ledger client SDK: a client that verifies every signature and proof the ledger returns."""

from consent_ledger.core.errors import (
    ConsentLedgerError,
    InconsistentCheckpoints,
    InvalidInput,
    UnknownVerifier,
    VerificationError,
)
from consent_ledger_client.client import (
    LedgerClient,
    SubmitReceipt,
    UnrecordedErasure,
    VerifiedCheckpoint,
    WrongMapVrfKey,
)
from consent_ledger_client.errors import (
    DecisionTimeMismatch,
    EntryFromTheFuture,
    ExpiredDecision,
    MissingAccessEvent,
    StateCommitNotNamed,
    StateFromTheFuture,
    StateRollback,
)
from consent_ledger_client.verify import VerifiedEntry, verify_entry
from consent_ledger.core.witness_policy import (
    NotCosigned,
    StaleCosignatures,
    UnderCosigned,
    WitnessedCheckpoint,
    WitnessPolicy,
    WrongCosignature,
)

__all__ = [
    "ConsentLedgerError",
    "DecisionTimeMismatch",
    "EntryFromTheFuture",
    "ExpiredDecision",
    "MissingAccessEvent",
    "StateCommitNotNamed",
    "StateFromTheFuture",
    "StateRollback",
    "InconsistentCheckpoints",
    "InvalidInput",
    "LedgerClient",
    "SubmitReceipt",
    "UnknownVerifier",
    "UnrecordedErasure",
    "VerificationError",
    "VerifiedCheckpoint",
    "VerifiedEntry",
    "WrongMapVrfKey",
    "verify_entry",
    "NotCosigned",
    "StaleCosignatures",
    "UnderCosigned",
    "WitnessedCheckpoint",
    "WitnessPolicy",
    "WrongCosignature",
]

from consent_ledger_client.consent import (  # noqa: E402
    AccessEventListing,
    AccessEventView,
    ConsentClient,
    ConsentListing,
    ConsentView,
    DecisionMismatch,
    DelegationView,
    IncompleteEvidence,
    SignedBy,
    ReviewQueue,
    ReviewView,
    StaleEvidence,
    StaleRegistration,
    VerifiedDecision,
)

__all__ += [
    "AccessEventListing",
    "AccessEventView",
    "ConsentClient",
    "ConsentListing",
    "ConsentView",
    "DecisionMismatch",
    "DelegationView",
    "IncompleteEvidence",
    "SignedBy",
    "ReviewQueue",
    "ReviewView",
    "StaleEvidence",
    "StaleRegistration",
    "VerifiedDecision",
]
