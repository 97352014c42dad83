"""The whole witness story with real parts: a ledger sending its checkpoints to two real witness services (C2SP
tlog-witness over HTTP), and verifying clients holding a 2-of-2 witness policy that accept the witnessed
checkpoint and a CheckAccess answer proven against it (through a consistency proof when the answer's checkpoint
is newer than the witnessed one)."""

from pathlib import Path

from consent_ledger.core.payloads import DataItem
from consent_ledger.core.witness_policy import WitnessPolicy, format_witness_key

from .server_support import OPERATOR, connect, ledger_client, log_signer, running_server
from .test_witness_policy import PATIENT
from .test_witnessed_ledger import _endpoint, _wait_witnessed, _witness


def test_client_policy_against_real_witnesses(database_url: str, tmp_path: Path) -> None:
    w1, w2 = _witness("witness.test/one", tmp_path), _witness("witness.test/two", tmp_path)
    with w1, w2, running_server(database_url, witnesses=(_endpoint(w1), _endpoint(w2)), witness_quorum=2) as server:
        policy = WitnessPolicy.from_keys([format_witness_key(w1.key), format_witness_key(w2.key)], quorum=2, max_age_s=60)
        op = connect(server, party=OPERATOR)
        op.register_party(
            log_signer().private_key, party_id="insurer-1", roles=["insurer"], public_keys=[PATIENT.public_key], display_name="I"
        )
        patient = connect(server, patient=PATIENT)
        patient.grant(PATIENT, grantee="org:insurer-1", actions=["access"], purposes=["HPAYMT"], data_classes=["laboratory-results"])
        size = ledger_client(server).checkpoint().checkpoint.size
        _wait_witnessed(server, size)

        vc = ledger_client(server, party=OPERATOR, witness_policy=policy).checkpoint()
        assert vc.witnessed is not None and vc.witnessed.checkpoint.size >= size

        vd = connect(server, party="insurer-1", witness_policy=policy).check_access(
            PATIENT.public_key, action="access", purpose="HPAYMT", data=[DataItem("laboratory-results")]
        )
        assert vd.permitted
        assert vd.witnessed is not None
        assert vd.witnessed.checkpoint.size <= vd.checkpoint.size
        assert (len(vd.witnessed_consistency) > 0) == (vd.witnessed.checkpoint.size < vd.checkpoint.size)
        assert {name for name, _ in vd.witnessed.cosignatures} == {"witness.test/one", "witness.test/two"}
