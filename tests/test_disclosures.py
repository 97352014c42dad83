"""`consent-ledger disclosures`: the patient's accounting of disclosures, every row verified by the client, rendered
as one self-contained HTML page; headless Chromium shows the rows, and a break-glass reason carrying HTML and script
stays text."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from consent_ledger.cli import EXIT_OK, main
from consent_ledger.disclosures import (
    BREAK_GLASS_COLOUR,
    COLOURS,
    ConsentRef,
    DisclosureReport,
    DisclosureRow,
    Review,
    render_html,
    report_json,
)

from .test_cli import (  # noqa: F401
    AS_OPERATOR,
    clean_env,
    conn,
    log_key_file,
    operator_key,
    parties,
    patient_key,
    run_json,
    server,
)

INJECTION = (
    "unconscious</td></tr></table><script>document.title='pwned';fetch('http://127.0.0.1:9/x')</script>"
    "<img src=x onerror=\"document.title='pwned'\"><svg onload=alert(1)>"
)


def make_events(conn: list[str], patient_key: Path, operator_key: Path, capsys: pytest.CaptureFixture[str]) -> dict:  # noqa: F811
    """A permit (hospital-1, under a consent), a refusal (insurer-1), a break-glass access (ed-1) whose reason tries
    an injection, reviewed by the operator, and a second break-glass access left unreviewed."""
    pub = f"{patient_key}.pub"
    grant = run_json(capsys, "grant", "--key", str(patient_key), "--grantee", "org:hospital-1", "--action", "access",
                     "--purpose", "TREAT", "--data-class", "laboratory-results", *conn)
    permit = run_json(capsys, "check-access", "--patient-key-file", pub, "--as", "hospital-1", "--action", "access",
                      "--purpose", "TREAT", "--data", "laboratory-results", "--record", *conn)
    deny = run_json(capsys, "check-access", "--patient-key-file", pub, "--as", "insurer-1", "--action", "access",
                    "--purpose", "HPAYMT", "--data", "laboratory-results", "--record", *conn)
    glass = run_json(capsys, "check-access", "--patient-key-file", pub, "--as", "ed-1", "--action", "access",
                     "--purpose", "ETREAT", "--data", "clinical-notes:MH", "--break-glass", "--reason", INJECTION, *conn)
    review = run_json(capsys, "review", str(glass["access_event_index"]), "--outcome", "justified", "--notes",
                      "<b>overdose</b> & confirmed", "--key", str(operator_key), *conn, *AS_OPERATOR)
    second = run_json(capsys, "check-access", "--patient-key-file", pub, "--as", "ed-1", "--action", "access",
                      "--purpose", "ETREAT", "--data", "imaging", "--break-glass", "--reason", "trauma bay", *conn)
    return {"grant": grant, "permit": permit["access_event_index"], "deny": deny["access_event_index"],
            "glass": glass["access_event_index"], "review": review["index"], "second": second["access_event_index"]}


def test_disclosure_report_json_and_html(
    parties: dict, conn: list[str], patient_key: Path, operator_key: Path, tmp_path: Path,  # noqa: F811 (fixtures imported from test_cli)
    capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    ev = make_events(conn, patient_key, operator_key, capsys)
    page = tmp_path / "report.html"
    report = run_json(capsys, "disclosures", "--patient-key-file", str(patient_key), "--html", str(page), *conn)
    rows = {r["index"]: r for r in report["rows"]}
    assert sorted(rows) == sorted([ev["permit"], ev["deny"], ev["glass"], ev["second"]])
    permit = rows[ev["permit"]]
    assert (permit["party_id"], permit["decision"], permit["purpose"]) == ("hospital-1", "PERMIT", "TREAT")
    (cited,) = permit["consents"]
    assert cited["consent_id"] == ev["grant"]["consent_id"] and cited["index"] == ev["grant"]["index"]
    assert cited["state"] == "active" and "hospital-1" in cited["summary"]
    assert rows[ev["deny"]]["decision"] == "DENY" and rows[ev["deny"]]["consents"] == []
    glass = rows[ev["glass"]]
    assert glass["break_glass"] and glass["break_glass_reason"] == INJECTION
    assert glass["review"]["index"] == ev["review"] and glass["review"]["outcome"] == "justified"
    assert rows[ev["second"]]["review"] is None and rows[ev["second"]]["review_state"] == "unreviewed"

    text = page.read_text()
    assert "<script" not in text.lower() and "<img" not in text and "<svg onload" not in text
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;" in text
    assert "&lt;b&gt;overdose&lt;/b&gt; &amp; confirmed" in text
    assert not re.search(r"<[a-zA-Z][^>]*\s(src|href)=", text)  # no element loads anything
    assert len(re.findall(r'<tr class="row ', text)) == 4

    # The plain text form names the unreviewed access.
    assert main(["disclosures", "--patient-key-file", str(patient_key), *conn]) == EXIT_OK
    assert "2 break-glass accesses (1 not yet reviewed)" in capsys.readouterr().out

    # Rendered by a real browser: the rows are in the DOM, the script never ran, and the screenshot shows them.
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing under CI (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    dom = run_chromium(chromium, tmp_path, page, "--dump-dom")
    assert "<title>Accounting of disclosures</title>" in dom  # document.title was never set to 'pwned'
    dom_rows = re.findall(r'<tr class="row d-row-(\w+)" id="event-(\d+)"', dom)
    assert sorted((int(i), d) for d, i in dom_rows) == sorted(
        [(ev["permit"], "PERMIT"), (ev["deny"], "DENY"), (ev["glass"], glass["decision"]),
         (ev["second"], rows[ev["second"]]["decision"])]
    )
    assert "&lt;script&gt;document.title='pwned'" in dom  # shown as text
    shot = tmp_path / "report.png"
    run_chromium(chromium, tmp_path, page, f"--screenshot={shot}", "--window-size=1280,1600")
    width, height, pixels = read_png(shot)
    counts = colour_counts(pixels, {COLOURS["PERMIT"], COLOURS["DENY"], BREAK_GLASS_COLOUR})
    # Solid badge fills: the PERMIT and DENY badges (and the timeline marks), the BREAK-GLASS labels.
    assert counts[COLOURS["PERMIT"]] > 300, counts
    assert counts[COLOURS["DENY"]] > 300, counts
    assert counts[BREAK_GLASS_COLOUR] > 300, counts
    non_white = sum(1 for p in pixels if p != (255, 255, 255))
    assert non_white > width * height // 50  # text, table and timeline drawn, not a blank page


def run_chromium(chromium: str, tmp_path: Path, page: Path, *what: str) -> str:
    profile = tmp_path / "chromium-profile"
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *what, page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def read_png(path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) into RGB pixels."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    pixels = [(r[i], r[i + 1], r[i + 2]) for r in rows for i in range(0, stride, bpp)]
    return width, height, pixels


def colour_counts(pixels: list[tuple[int, int, int]], colours: set[str]) -> dict[str, int]:
    wanted = {tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)): c for c in colours}
    counts = dict.fromkeys(colours, 0)
    for p in pixels:
        name = wanted.get(p)
        if name is not None:
            counts[name] += 1
    return counts


def test_report_json_is_one_document(
    parties: dict, conn: list[str], patient_key: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811 (fixtures imported from test_cli)
) -> None:
    capsys.readouterr()
    out = run_json(capsys, "disclosures", "--patient-key-file", f"{patient_key}.pub", *conn,
                   "--sign-with", str(patient_key))
    assert out["rows"] == [] and out["patient_hex"] and json.dumps(out)


def test_render_escapes_every_text_and_marks_every_row() -> None:
    """The renderer alone: an erased event, a hostile party id and review notes, one timeline mark per row."""
    evil = '"><script>alert(1)</script>'
    rows = (
        DisclosureRow(index=3, logged_ms=1_700_000_000_000, accessed_ms=1_700_000_000_000, party_id="hospital-1",
                      action="access", purpose="TREAT", purpose_display="treatment", data=("imaging",),
                      decision="PERMIT", consents=(ConsentRef("ab" * 32, 1, f"grant {evil}", "active"), ConsentRef("cd" * 32))),
        DisclosureRow(index=5, logged_ms=1_700_000_100_000, accessed_ms=1_700_000_100_000, party_id=evil, action="use",
                      purpose="ETREAT", purpose_display=evil, data=(evil,), decision="PARTIAL", break_glass=True,
                      break_glass_reason=evil, review_state="unjustified",
                      review=Review(7, "unjustified", evil, 1_700_000_200_000)),
        DisclosureRow(index=6, logged_ms=1_700_000_300_000, accessed_ms=1_700_000_300_000, party_id="(erased)",
                      action="", purpose="", purpose_display="", data=(), decision="ERASED", erased=True),
    )
    report = DisclosureReport(patient_hex="00" * 32, generated_ms=1_700_000_400_000, origin=f"log {evil}",
                              checkpoint_size=9, root_hash_hex="11" * 32, rows=rows, verified=(evil,), caveats=(evil,))
    page = render_html(report)
    assert "<script" not in page and evil not in page
    assert page.count("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;") >= 8
    assert re.findall(r'<tr class="row d-row-(\w+)" id="event-(\d+)"', page) == [
        ("PERMIT", "3"), ("PARTIAL", "5"), ("ERASED", "6")
    ]
    assert "not in your verified consent listing" in page and "UNJUSTIFIED" in page
    assert page.count("<title>#") == 3  # one timeline mark per event
    assert f'stroke="{BREAK_GLASS_COLOUR}"' in page  # the break-glass ring
    assert report_json(report)["rows"][1]["review"]["outcome"] == "unjustified"
