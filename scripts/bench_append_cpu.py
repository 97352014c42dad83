#!/usr/bin/env python3
"""CPU per appended grant in process (no gRPC): Ledger.validate + Sequencer.integrate_batch on SQLite, the way
the service wires them, in batches of --batch, grants from 10,000 patients at random; CPU time of this process
(time.process_time) per entry, which other load on a shared machine moves far less than rates.

    .venv/bin/python scripts/bench_append_cpu.py --batch 64
    .venv/bin/python scripts/bench_append_cpu.py --code /path/to/other/checkout   # the same on other code
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--batch", type=int, default=64)
p.add_argument("--entries", type=int, default=1024)
p.add_argument("--code", default=str(Path(__file__).resolve().parent.parent), help="checkout whose code to run")
args = p.parse_args()
sys.path.insert(0, args.code)

from consent_ledger.app.consent_state import ConsentState, StatePolicy  # noqa: E402
from consent_ledger.app.consents import ConsentLedger  # noqa: E402
from consent_ledger.app.ledger import Ledger  # noqa: E402
from consent_ledger.core import vrf  # noqa: E402
from consent_ledger.core.crypto import Ed25519PrivateKey  # noqa: E402
from consent_ledger.keys import read_key, write_new_key  # noqa: E402
from consent_ledger.storage import open_store  # noqa: E402
from consent_ledger.storage.consent_index import SqlConsentIndex  # noqa: E402
from consent_ledger.storage.map_store import SqlMapStore  # noqa: E402
from tests.entries_support import grant_envelope  # noqa: E402

d = Path(tempfile.mkdtemp(prefix="bench-append-cpu-"))
write_new_key(d / "log.key", "bench.test/log")
signer = read_key(d / "log.key")
store = open_store(f"sqlite:///{d / 'ledger.db'}")
index = SqlConsentIndex(store)
state = ConsentState(index, SqlMapStore(store), signer, StatePolicy(), vrf.MapKeyProver(vrf.VrfPrivateKey.generate()))
consents = ConsentLedger(index, state, signer)
ledger = Ledger(store, signer, check_payload=consents.check, prepare_batch=consents.prepare_batch,
                on_integrated=consents.on_integrated, admit=consents.admit, on_reset=consents.reset)  # fmt: skip
consents.attach(ledger.reader, lambda: ledger.sequencer.latest, ledger.sequencer.append, None)
ledger.open()
rng = random.Random(0)
patients = [Ed25519PrivateKey.from_seed(rng.randbytes(32)) for _ in range(10_000)]
B, N = args.batch, args.entries
raws = [grant_envelope(rng.choice(patients)) for _ in range(N + 5 * B)]
for i in range(5):  # warm-up batches
    ledger.sequencer.integrate_batch([ledger.validate(r) for r in raws[i * B : (i + 1) * B]])
raws = raws[5 * B :]
c0, w0 = time.process_time(), time.perf_counter()
for i in range(0, N, B):
    ledger.sequencer.integrate_batch([ledger.validate(r) for r in raws[i : i + B]])
c1, w1 = time.process_time(), time.perf_counter()
store.close()
print(f"{args.code}: batches of {B}: {(c1 - c0) / N * 1e6:,.0f} us CPU per entry, {N / (w1 - w0):,.0f} entries/s wall")
