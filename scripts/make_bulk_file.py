#!/usr/bin/env python3
"""Write a bulk file of signed consent grants for `consent-ledger import` (and benchmarks).

Each grant is signed by its own patient key, derived from --seed and the entry's number (so the same command
writes the same file), grants ``org:<--grantee>`` (or, with --grantee any, anyone) TREAT access to laboratory
results. The format is consent_ledger.bulk_import's (JSON Lines, one {"envelope": BASE64} per line).

    .venv/bin/python scripts/make_bulk_file.py --out grants.jsonl --count 10000
    consent-ledger import grants.jsonl --as operator $C
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consent_ledger.bulk_import import write_envelopes
from consent_ledger.core import payloads
from consent_ledger.core.crypto import Ed25519PrivateKey
from consent_ledger.core.envelope import sign_envelope


def grants(count: int, seed: str, grantee: str) -> Iterator[bytes]:
    """``count`` grants, each signed by its own patient key derived from ``seed``."""
    for i in range(count):
        key = Ed25519PrivateKey.from_seed(hashlib.sha256(f"{seed}/{i}".encode()).digest())
        payload = payloads.build_grant(
            patient=key.public_key,
            grantee=grantee if grantee == "any" else f"org:{grantee}",
            actions=["access"],
            purposes=["TREAT"],
            data_classes=["laboratory-results"],
        )
        yield sign_envelope(payloads.CONSENT_GRANT, payload, [key])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the bulk file to write")
    ap.add_argument("--count", type=int, default=1000, help="how many grants (default %(default)s)")
    ap.add_argument("--seed", default="bulk", help="derives the patient keys (default %(default)s)")
    ap.add_argument("--grantee", default="hospital-1", help="party id granted to, or 'any' (default %(default)s)")
    args = ap.parse_args()
    n = write_envelopes(Path(args.out), grants(args.count, args.seed, args.grantee))
    print(f"wrote {n:,} signed grants to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
