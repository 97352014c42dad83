"""Make tests/data/legacy_map_log.db: a log written by the code before map keys were VRF outputs (commit f2f72cc,
map key = SHA-256(patient || 0x00 || selector), no party keys), for tests/test_rebuild_map.py.

Run from a checkout of that commit: ``PYTHONPATH=.:clients python tests/data/make_legacy_map_log.py OUT.db``
(it uses the test suite's log key, tests/server_support.py).
"""

from __future__ import annotations

import sys
import time

from consent_ledger.core.crypto import Ed25519PrivateKey
from tests.server_support import OPERATOR, connect, log_signer, running_server

ALICE = Ed25519PrivateKey.from_seed(b"\x61" * 32)
ORG = Ed25519PrivateKey.from_seed(b"\x62" * 32)


def main(out: str) -> None:
    with running_server(f"sqlite:///{out}") as server:
        op = connect(server, party=OPERATOR)
        key = log_signer().private_key
        op.register_party(key, party_id="insurer-1", roles=["insurer"], public_keys=[ORG.public_key], display_name="I1")
        op.register_party(key, party_id="hospital-1", roles=["hospital"], public_keys=[ORG.public_key], display_name="H1")
        alice = connect(server, patient=ALICE)
        alice.grant(ALICE, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
        alice.grant(ALICE, grantee="role:hospital", actions=["access"], purposes=["TREAT"], data_classes=["imaging"])
        gone, _ = alice.grant(ALICE, grantee="any", actions=["access"], purposes=["HRESCH"], data_classes=["imaging"])
        revoked = alice.revoke(ALICE, gone)
        op.erase(key, revoked.index - 2, reason="entered in error")  # the grant (then its StateCommit, the revocation)
        time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1])
