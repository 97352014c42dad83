// The error types of the verifying client. Every failed check is a VerificationError (or a subclass naming what
// failed); malformed input that could not even be parsed is InvalidInput. Both mirror consent_ledger.core.errors.

export class ConsentLedgerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Malformed input: bytes or text that are not in the one canonical form the ledger writes. */
export class InvalidInput extends ConsentLedgerError {}

/** A proof, signature or binding that does not hold. */
export class VerificationError extends ConsentLedgerError {}

/** A signed note that no known key signed; names the first key that did sign it. */
export class UnknownVerifier extends VerificationError {
  constructor(
    readonly keyName: string,
    readonly keyHash: number,
  ) {
    super(`note is not signed by a known key (first signer ${keyName}+${keyHash.toString(16).padStart(8, "0")})`);
  }
}

/** A new checkpoint that cannot extend the one this client verified before: a split view. */
export class InconsistentCheckpoints extends VerificationError {
  constructor(
    message: string,
    readonly oldNote: Uint8Array,
    readonly newNote: Uint8Array,
    readonly proof: readonly Uint8Array[],
  ) {
    super(message);
  }
}

/** The evidence is not exactly the in-force set the signed consent state commits to. */
export class IncompleteEvidence extends VerificationError {}

/** The requester's registration in the evidence is not its latest one in the consent state. */
export class StaleRegistration extends VerificationError {
  constructor(
    readonly partyId: string,
    readonly index: bigint,
  ) {
    super(`the registration of ${partyId} at entry ${index} is not its latest one in the consent state`);
  }
}

/** The consent state is older than the client accepts. */
export class StaleEvidence extends VerificationError {}

/** The evidence's StateCommit is not the one the checkpoint's consent-state line names. */
export class StateCommitNotNamed extends VerificationError {}

/** A StateCommit dated after the client's clock plus the allowed skew. */
export class StateFromTheFuture extends VerificationError {}

/** A StateCommit older than the newest one this client verified. */
export class StateRollback extends VerificationError {}

/** A decision whose time is not within the allowed skew of the client's clock. */
export class DecisionTimeMismatch extends VerificationError {}

/** A decision whose valid_until is not after the client's clock. */
export class ExpiredDecision extends VerificationError {}

/** The decision does not follow from its evidence (here: it cites a consent not in force by the evidence, or its
 * overall outcome disagrees with its items'). The Python client raises it when re-running decide differs. */
export class DecisionMismatch extends VerificationError {}

/** The StateCommit names another map VRF key than the pinned (or first learned) one, or none. */
export class WrongMapVrfKey extends VerificationError {}
