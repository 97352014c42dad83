"""The patient's disclosure report: who asked about the patient, when, for what, the decision and the consent it
rested on, and break-glass accesses with their review, in the spirit of HIPAA 45 CFR 164.528 (accounting of
disclosures).

Pure: it renders rows the CLI built from entries the client library verified (cli_disclosures.py); it fetches and
verifies nothing itself. The HTML page is self-contained (inline CSS and an inline SVG timeline, no script, a
Content-Security-Policy that forbids scripts and every network load), and every text that came from the log is
escaped: party ids, reasons and review notes are chosen by whoever wrote them.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ConsentRef", "DisclosureReport", "DisclosureRow", "Review", "render_html", "report_json"]

# Decision colours: also what tests look for in a screenshot (solid fills).
COLOURS = {"PERMIT": "#2e7d32", "PARTIAL": "#f9a825", "DENY": "#c62828", "ERASED": "#757575"}
BREAK_GLASS_COLOUR = "#6a1b9a"


@dataclass(frozen=True)
class ConsentRef:
    """A consent an access decision rested on: its id and, when it is in the patient's verified listing, its log
    index, what it says and its state now."""

    consent_id: str
    index: int | None = None
    summary: str = ""
    state: str = ""


@dataclass(frozen=True)
class Review:
    """The privacy officer's review of a break-glass access (a verified BreakGlassReview entry)."""

    index: int
    outcome: str
    notes: str
    reviewed_ms: int


@dataclass(frozen=True)
class DisclosureRow:
    """One verified access event. ``erased``: its body was erased (the verified Erasure record says so): only its
    index and time remain."""

    index: int
    logged_ms: int
    accessed_ms: int
    party_id: str
    action: str
    purpose: str
    purpose_display: str
    data: tuple[str, ...]
    decision: str
    consents: tuple[ConsentRef, ...] = ()
    break_glass: bool = False
    break_glass_reason: str = ""
    review_state: str = "not-required"
    review: Review | None = None
    erased: bool = False


@dataclass(frozen=True)
class DisclosureReport:
    patient_hex: str
    generated_ms: int
    origin: str
    checkpoint_size: int
    root_hash_hex: str
    rows: tuple[DisclosureRow, ...]
    verified: tuple[str, ...] = ()
    caveats: tuple[str, ...] = field(default_factory=tuple)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def report_json(report: DisclosureReport) -> dict[str, Any]:
    out = asdict(report)
    out["generated"] = _iso(report.generated_ms)
    for row, data in zip(report.rows, out["rows"], strict=True):
        data["accessed"] = _iso(row.accessed_ms)
        data["logged"] = _iso(row.logged_ms)
    return out


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1b1b1b;
       background: #ffffff; }
h1 { font-size: 24px; margin: 0 0 4px 0; }
h2 { font-size: 18px; margin: 24px 0 8px 0; }
.meta { color: #444; font-size: 13px; margin: 2px 0; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; word-break: break-all; }
.summary span { display: inline-block; margin-right: 16px; font-size: 14px; }
.alert { background: #fff3e0; border-left: 6px solid #e65100; padding: 8px 12px; margin: 12px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th { text-align: left; background: #eceff1; padding: 6px; border-bottom: 2px solid #90a4ae; }
td { padding: 6px; border-bottom: 1px solid #cfd8dc; vertical-align: top; }
.badge { display: inline-block; min-width: 64px; text-align: center; padding: 4px 8px; color: #ffffff;
         font-weight: bold; border-radius: 3px; }
.d-PERMIT { background: #2e7d32; } .d-PARTIAL { background: #f9a825; color: #1b1b1b; }
.d-DENY { background: #c62828; } .d-ERASED { background: #757575; }
.bg { display: inline-block; background: #6a1b9a; color: #ffffff; padding: 3px 6px; border-radius: 3px;
      font-weight: bold; }
.reason { white-space: pre-wrap; }
.unreviewed { color: #b71c1c; font-weight: bold; }
.verified { font-size: 12px; color: #33691e; }
footer { margin-top: 24px; font-size: 12px; color: #444; }
"""


def _timeline(rows: tuple[DisclosureRow, ...]) -> str:
    """An inline SVG: one lane per organisation, one mark per event at its time, coloured by decision; break-glass
    accesses ringed in purple."""
    if not rows:
        return '<p class="meta">No one asked about you.</p>'
    parties: list[str] = []
    for r in rows:
        if r.party_id not in parties:
            parties.append(r.party_id)
    left, right, top, lane = 160, 940, 30, 32
    width, height = 960, top + lane * len(parties) + 40
    t0 = min(r.accessed_ms for r in rows)
    t1 = max(r.accessed_ms for r in rows)
    if t1 == t0:
        t0, t1 = t0 - 3_600_000, t1 + 3_600_000

    def x(ms: int) -> float:
        return left + (right - left) * (ms - t0) / (t1 - t0)

    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="timeline of access events" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'),
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa" stroke="#cfd8dc"/>',
    ]
    for i, party in enumerate(parties):
        y = top + lane * i + lane / 2
        parts.append(f'<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="#cfd8dc"/>')
        parts.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end" font-size="12" fill="#1b1b1b">'
                     f"{_e(party[:22])}</text>")
    base = top + lane * len(parties) + 4
    parts.append(f'<line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="#546e7a"/>')
    for k in range(3):
        ms = t0 + (t1 - t0) * k // 2
        anchor = ("start", "middle", "end")[k]
        parts.append(f'<text x="{x(ms):.1f}" y="{base + 18}" text-anchor="{anchor}" font-size="11" fill="#444">'
                     f"{_e(_when(ms))}</text>")
    for r in rows:
        cx, cy = x(r.accessed_ms), top + lane * parties.index(r.party_id) + lane / 2
        colour = COLOURS["ERASED" if r.erased else r.decision] if (r.erased or r.decision in COLOURS) else "#000000"
        tip = f"#{r.index} {_when(r.accessed_ms)} {r.party_id} {r.purpose} {'ERASED' if r.erased else r.decision}"
        ring = (f'<circle cx="{cx:.1f}" cy="{cy}" r="11" fill="none" stroke="{BREAK_GLASS_COLOUR}" stroke-width="3"/>'
                if r.break_glass else "")
        parts.append(f'<g><title>{_e(tip)}</title>{ring}<circle cx="{cx:.1f}" cy="{cy}" r="7" fill="{colour}"/></g>')
    parts.append("</svg>")
    return "".join(parts)


def _consents_cell(r: DisclosureRow) -> str:
    if not r.consents:
        why = "break-glass (emergency) access" if r.break_glass else "no consent covered it, or a refusal"
        return f'<span class="meta">none ({why})</span>'
    items = []
    for c in r.consents:
        head = f'<span class="mono">{_e(c.consent_id[:16])}…</span>'
        if c.index is None:
            items.append(f"<li>{head} <span class=\"meta\">not in your verified consent listing</span></li>")
        else:
            items.append(f"<li>{head} entry #{c.index} ({_e(c.state)}): {_e(c.summary)}</li>")
    return f'<ul style="margin:0;padding-left:16px">{"".join(items)}</ul>'


def _review_cell(r: DisclosureRow) -> str:
    if not r.break_glass:
        return '<span class="meta">not break-glass</span>'
    out = ['<span class="bg">BREAK-GLASS</span>']
    if r.break_glass_reason:
        out.append(f'<div class="reason">reason: {_e(r.break_glass_reason)}</div>')
    if r.review is not None:
        notes = f": {_e(r.review.notes)}" if r.review.notes else ""
        out.append(f"<div>reviewed {_e(_when(r.review.reviewed_ms))} (entry #{r.review.index}): "
                   f"<b>{_e(r.review.outcome.upper())}</b>{notes}</div>")
    else:
        out.append('<div class="unreviewed">NOT YET REVIEWED by the privacy officer</div>')
    return "".join(out)


def _row(r: DisclosureRow) -> str:
    if r.erased:
        return (
            f'<tr class="row d-row-ERASED" id="event-{r.index}" data-index="{r.index}">'
            f"<td>{_e(_when(r.logged_ms))}</td><td colspan=\"5\">this access event's content was erased "
            f'(the erasure is recorded in the log)</td><td><span class="badge d-ERASED">ERASED</span></td>'
            f"<td>#{r.index}</td></tr>"
        )
    decision = r.decision if r.decision in COLOURS else "DENY"
    return (
        f'<tr class="row d-row-{_e(decision)}" id="event-{r.index}" data-index="{r.index}">'
        f"<td>{_e(_when(r.accessed_ms))}</td>"
        f'<td class="who">{_e(r.party_id)}</td>'
        f"<td>{_e(r.purpose)}<br><span class=\"meta\">{_e(r.purpose_display)}</span></td>"
        f"<td>{_e(r.action)}: {_e(', '.join(r.data))}</td>"
        f"<td>{_consents_cell(r)}</td>"
        f"<td>{_review_cell(r)}</td>"
        f'<td><span class="badge d-{_e(decision)}">{_e(r.decision)}</span></td>'
        f"<td>#{r.index}</td></tr>"
    )


def render_html(report: DisclosureReport) -> str:
    """The report as one self-contained HTML page."""
    rows = report.rows
    counts = {d: sum(1 for r in rows if not r.erased and r.decision == d) for d in ("PERMIT", "PARTIAL", "DENY")}
    glass = [r for r in rows if r.break_glass]
    unreviewed = [r for r in glass if r.review is None]
    alert = ""
    if unreviewed:
        alert = (f'<div class="alert">{len(unreviewed)} break-glass access(es) not yet reviewed by the privacy officer: '
                 f"{_e(', '.join(f'#{r.index}' for r in unreviewed))}</div>")
    body = "".join(_row(r) for r in rows) or '<tr><td colspan="8">No one asked about you.</td></tr>'
    verified = "".join(f"<li>{_e(v)}</li>" for v in report.verified)
    caveats = "".join(f"<li>{_e(c)}</li>" for c in report.caveats)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Accounting of disclosures</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Accounting of disclosures</h1>
<p class="meta">Patient key <span class="mono">{_e(report.patient_hex)}</span></p>
<p class="meta">Generated {_e(_when(report.generated_ms))} from the consent ledger <b>{_e(report.origin)}</b>,
checkpoint of size {report.checkpoint_size}, root <span class="mono">{_e(report.root_hash_hex)}</span></p>
<p class="summary"><span>{len(rows)} access event(s)</span><span>{counts['PERMIT']} permitted</span>
<span>{counts['PARTIAL']} partly permitted</span><span>{counts['DENY']} refused</span>
<span>{len(glass)} break-glass</span></p>
{alert}
<h2>Timeline</h2>
{_timeline(rows)}
<h2>Who asked about you</h2>
<table id="disclosures">
<thead><tr><th>When</th><th>Who asked</th><th>Purpose</th><th>Action and data</th><th>Consent it rested on</th>
<th>Break-glass and review</th><th>Decision</th><th>Log entry</th></tr></thead>
<tbody>
{body}
</tbody>
</table>
<footer>
<p class="verified">What your app verified before writing this page:</p>
<ul class="verified">{verified}</ul>
<p>What it could not verify:</p>
<ul>{caveats}</ul>
<p>In the spirit of HIPAA 45 CFR 164.528 (accounting of disclosures): every request about you that an organisation
made to the ledger, whether it was permitted or not.</p>
</footer>
</body>
</html>
"""
