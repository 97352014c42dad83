"""`consent-ledger disclosures`: the patient's accounting of disclosures as an HTML page (--html) and/or JSON (--json).

Every row comes from the verifying client library: the access events and their reviews as `who-asked` gets them
(ConsentClient.list_access_events: each event proven in a signed checkpoint and about this patient, each review
proven an operator's review of that event), and the consents they cite from the patient's verified consent listing
(ConsentClient.list_consents). consent_ledger.disclosures renders them; this module only fetches and writes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from consent_ledger import cli
from consent_ledger.core import vocab
from consent_ledger.disclosures import (
    ConsentRef,
    DisclosureReport,
    DisclosureRow,
    Review,
    render_html,
    report_json,
)
from consent_ledger.presentation import (
    access_event_view_line,
    consistency_phrase,
    data_item_text,
    grant_text,
    plural,
    short_key,
)
from consent_ledger_client import ConsentClient


def _rows(events: list[Any], views: dict[str, Any]) -> tuple[DisclosureRow, ...]:
    rows = []
    for v in events:
        logged = v.entry.leaf.integrated_time_ms
        review = None
        if v.review is not None:
            r = v.review
            review = Review(r.entry.index, r.review.outcome, r.review.notes, r.entry.leaf.integrated_time_ms)
        e = v.event
        if e is None:
            rows.append(DisclosureRow(index=v.index, logged_ms=logged, accessed_ms=logged, party_id="(erased)",
                                      action="", purpose="", purpose_display="", data=(), decision="ERASED",
                                      break_glass=v.break_glass, review_state=v.review_state, review=review,
                                      erased=True))
            continue
        refs = []
        for cid in e.consent_ids:
            c = views.get(cid)
            refs.append(ConsentRef(cid) if c is None else ConsentRef(cid, c.entry.index, grant_text(c.grant), c.state))
        purpose = vocab.PURPOSES.get(e.purpose)
        rows.append(
            DisclosureRow(
                index=v.index, logged_ms=logged, accessed_ms=e.accessed_at_ms, party_id=e.party_id, action=e.action,
                purpose=e.purpose, purpose_display=purpose.display if purpose else "", decision=e.decision,
                data=tuple(data_item_text(d) for d in e.data), consents=tuple(refs), break_glass=v.break_glass,
                break_glass_reason=e.break_glass_reason, review_state=v.review_state, review=review,
            )
        )
    return tuple(sorted(rows, key=lambda r: (r.accessed_ms, r.index)))


def cmd_disclosures(args: argparse.Namespace) -> int:
    patient = cli.patient_from_args(args)
    events: list[Any] = []
    views: dict[str, Any] = {}
    with cli.connect(args, signer=cli.patient_signer_from_args(args)) as client:
        previous = client.last_checkpoint
        consents = ConsentClient(client)
        log_key = client.log_public_key
        token = ""
        while True:  # exactly what who-asked verifies
            page = consents.list_access_events(patient, page_token=token)
            events.extend(page.events)
            token = page.next_page_token
            if not token:
                break
        while True:  # the consents the decisions cite, proven and their states re-computed
            listing = consents.list_consents(patient, page_token=token)
            views.update({c.consent_id: c for c in listing.consents})
            token = listing.next_page_token
            if not token:
                break
        cp = client.last_checkpoint
    assert cp is not None
    verified = (
        (f"every access event proven in the checkpoint of size {cp.size} signed by {cp.origin} (inclusion, its body "
        "against the leaf's commitment, its signature) and about you"),
        "every review shown proven a review of its event, signed by an operator key",
        "every consent shown proven in the log, and its state re-computed from the entries",
        consistency_phrase(previous, cp),
    )
    caveats = (
        "that this list is complete, and that a break-glass access is not yet reviewed, is the ledger's word",
        ("an access event is what an organisation recorded when it asked the ledger; access that bypassed the ledger "
        "is not here"),
    )
    report = DisclosureReport(
        patient_hex=patient.hex(), generated_ms=cli._now_ms(), origin=cp.origin, checkpoint_size=cp.size,
        root_hash_hex=cp.root_hash.hex(), rows=_rows(events, views), verified=verified, caveats=caveats,
    )
    if args.html:
        cli._write_output(args.html, render_html(report))
    if args.json:
        print(json.dumps(report_json(report), indent=2))
        return cli.EXIT_OK
    glass = [r for r in report.rows if r.break_glass]
    lines = [
        (f"disclosures about patient {short_key(patient)}: {plural(len(report.rows), 'access event', 'access events')}, "
        f"{plural(len(glass), 'break-glass access', 'break-glass accesses')} "
        f"({sum(1 for r in glass if r.review is None)} not yet reviewed)"),
        *(f"  {access_event_view_line(v, log_key)}" for v in events),
        "verified: " + "; ".join(verified),
    ]
    if args.html and args.html != "-":
        lines.append(f"wrote the report to {args.html} (one self-contained page: open it in any browser, offline)")
    print("\n".join(lines))
    return cli.EXIT_OK


def add_disclosures_command(sub: Any) -> None:
    p = sub.add_parser(
        "disclosures",
        help="a patient's accounting of disclosures: who asked, when, why, the decision, break-glass reviews "
             "(HTML with --html, JSON with --json), every row verified",
    )
    cli.add_patient_options(p)
    p.add_argument("--html", metavar="FILE", help="write the report as one self-contained HTML page ('-': stdout)")
    cli.add_client_options(p)
    p.set_defaults(func=cmd_disclosures)
