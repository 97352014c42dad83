"""Spans for every RPC and batch, and the ledger's metrics, asserted with the in-memory exporters."""

from __future__ import annotations

from .entries_support import PATIENT, grant_envelope
from .otel_support import installed
from .server_support import ledger_client, running_server

_spans, _metrics = installed()


def _metric_points() -> dict[str, list]:
    out: dict[str, list] = {}
    data = _metrics.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def _counts() -> tuple[float, float, float, dict[tuple[str, str], float]]:
    """Cumulative metrics so far (other tests in the session add to them too)."""
    points = _metric_points()
    by_method = {
        (p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p.value
        for p in points.get("ledger.rpc.requests", [])
    }
    return (
        sum(p.value for p in points.get("ledger.appends", [])),
        sum(p.count for p in points.get("ledger.batch.size", [])),
        sum(p.count for p in points.get("ledger.integration.duration", [])),
        by_method,
    )


def test_rpc_and_batch_spans_and_metrics(tmp_path):
    _spans.clear()
    appends0, batches0, durations0, methods0 = _counts()
    with running_server(f"sqlite:///{tmp_path / 'log.db'}") as server:
        with ledger_client(server, patient=PATIENT) as c:  # the patient submits and reads its own grants
            c.submit(grant_envelope())
            c.submit(grant_envelope())
            c.get_entry(0)
            c.checkpoint()
    names = [s.name for s in _spans.get_finished_spans()]
    for rpc in ("Submit", "GetEntry", "GetCheckpoint", "GetConsistencyProof"):
        assert f"/consent_ledger.v1.LogService/{rpc}" in names, names
    assert names.count("ledger.integrate_batch") >= 2
    assert "ledger.sign_checkpoint" in names and "ledger.commit" in names
    batch = next(s for s in _spans.get_finished_spans() if s.name == "ledger.integrate_batch" and s.attributes.get("ledger.batch.appended"))
    assert batch.attributes["ledger.tree.size"] >= 1

    appends, batches, durations, methods = _counts()
    # Two grants, each batch closed by a StateCommit.
    assert appends - appends0 == 4
    assert batches - batches0 >= 2 and durations - durations0 >= 2
    assert 4 in {p.value for p in _metric_points()["ledger.tree.size"]}
    assert methods[("Submit", "OK")] - methods0.get(("Submit", "OK"), 0) == 2
    assert methods[("GetEntry", "OK")] - methods0.get(("GetEntry", "OK"), 0) == 1
