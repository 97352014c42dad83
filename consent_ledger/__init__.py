"""consent-ledger: patient consent as a verifiable ledger."""
