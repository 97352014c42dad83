"""Spans for every RPC and batch, and the ledger's metrics, asserted with the in-memory exporters."""

from __future__ import annotations

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consent_ledger_client import LedgerClient

from .entries_support import grant_envelope
from .server_support import running_server, log_verifier_key

_spans = InMemorySpanExporter()
_metrics = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def sdk():
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_spans))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[_metrics]))
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        pytest.skip("another test installed a global tracer provider first")
    yield


def _metric_points() -> dict[str, list]:
    out: dict[str, list] = {}
    data = _metrics.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def test_rpc_and_batch_spans_and_metrics(tmp_path):
    _spans.clear()
    with running_server(f"sqlite:///{tmp_path / 'log.db'}") as server:
        with LedgerClient.connect(server.target, verifier_key=log_verifier_key(), insecure=True) as c:
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

    points = _metric_points()
    # Two grants, each batch closed by a StateCommit.
    assert sum(p.value for p in points["ledger.appends"]) == 4
    assert sum(p.count for p in points["ledger.batch.size"]) >= 2
    assert sum(p.count for p in points["ledger.integration.duration"]) >= 2
    assert max(p.value for p in points["ledger.tree.size"]) == 4
    by_method = {
        (p.attributes["rpc.method"], p.attributes["rpc.grpc.status_code"]): p.value for p in points["ledger.rpc.requests"]
    }
    assert by_method[("Submit", "OK")] == 2
    assert by_method[("GetEntry", "OK")] == 1
