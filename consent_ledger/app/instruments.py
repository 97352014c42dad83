"""The ledger's tracer, meter and instruments, declared once (OpenTelemetry API only; entry points pick the SDK)."""

from __future__ import annotations

from opentelemetry import metrics, trace

tracer = trace.get_tracer("consent_ledger")
meter = metrics.get_meter("consent_ledger")

appends = meter.create_counter(
    "ledger.appends", unit="{entry}", description="Entries appended to the log (duplicates not counted)"
)
duplicates = meter.create_counter(
    "ledger.duplicates", unit="{entry}", description="Submissions answered with an existing entry"
)
batch_size = meter.create_histogram(
    "ledger.batch.size", unit="{entry}", description="Submissions integrated per group commit"
)
integration_latency = meter.create_histogram(
    "ledger.integration.duration", unit="ms", description="Time to integrate one batch, commit included"
)
tree_size = meter.create_gauge("ledger.tree.size", unit="{entry}", description="Leaves in the log")
rpc_requests = meter.create_counter(
    "ledger.rpc.requests", unit="{request}", description="RPCs handled, by method and status code"
)
rpc_duration = meter.create_histogram("ledger.rpc.duration", unit="ms", description="RPC handling time by method")
batch_failures = meter.create_counter(
    "ledger.batch.failures", unit="{batch}", description="Batches that failed in storage, by outcome read back"
)
database_available = meter.create_gauge(
    "ledger.database.available", unit="1", description="1 while the health probe reaches the database, else 0"
)
sequencer_leader = meter.create_gauge(
    "ledger.replica.leader", description="1 while this replica holds the sequencer lease and integrates, else 0"
)
fenced_batches = meter.create_counter(
    "ledger.replica.fenced_batches", unit="{batch}",
    description="Batches the database refused because this replica's sequencer lease had been taken over",
)
