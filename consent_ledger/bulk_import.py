"""`consent-ledger import FILE`: bulk-load signed envelopes through SubmitStream (or SubmitBatch), every answer
verified by the client library, with a progress bar and a summary.

The file format, "consent-ledger bulk envelopes v1", is JSON Lines (UTF-8): one JSON object per line,
``{"envelope": "<standard base64 of the serialized Envelope>"}``; other members are ignored (kept for the user's own
notes, such as a source record id), and blank lines and lines starting with ``#`` are skipped. Each envelope is
submitted as its exact bytes, in file order. ``write_envelopes`` writes such a file;
``scripts/make_bulk_file.py`` signs synthetic consent grants into one.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from consent_ledger_client import EntryRefused, LedgerClient, SubmitReceipt

from consent_ledger.core.errors import InvalidInput

FORMAT = "consent-ledger bulk envelopes v1"
# Refusals listed in the text summary (all go to --errors-out).
SHOWN_REFUSALS = 20


def write_envelopes(path: Path, envelopes: Iterable[bytes], notes: Iterable[dict[str, Any]] | None = None) -> int:
    """Write envelopes as a bulk file (one JSON line each, with optional extra members); returns how many."""
    extra = iter(notes) if notes is not None else None
    n = 0
    with path.open("w", encoding="utf-8") as out:
        out.write(f"# {FORMAT}\n")
        for env in envelopes:
            line = {"envelope": base64.b64encode(env).decode("ascii"), **(next(extra) if extra is not None else {})}
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
            n += 1
    return n


def read_envelopes(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, envelope bytes) for each entry of a bulk file, in order. Raises InvalidInput naming the line
    of a malformed one (nothing is sent for a file that does not parse: check_file reads it first)."""
    with path.open("r", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                obj = json.loads(text)
                raw = obj["envelope"] if isinstance(obj, dict) else None
                if not isinstance(raw, str):
                    raise ValueError('no "envelope" member holding base64 text')
                yield number, base64.b64decode(raw, validate=True)
            except (ValueError, KeyError, binascii.Error) as e:
                raise InvalidInput(f"{path}:{number}: not a bulk-file line ({FORMAT}): {e}") from None


def check_file(path: Path) -> int:
    """Read the whole file once: how many envelopes it holds (InvalidInput for a malformed line)."""
    return sum(1 for _ in read_envelopes(path))


@dataclass
class ImportReport:
    total: int
    appended: int = 0
    duplicates: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    first_index: int | None = None
    last_index: int | None = None
    checkpoint_size: int = 0
    seconds: float = 0.0

    def add(self, line: int, result: SubmitReceipt | EntryRefused) -> None:
        if isinstance(result, EntryRefused):
            self.refused[result.code.name] += 1
            self.refusals.append({"line": line, "code": result.code.name, "details": result.details})
            return
        if result.duplicate:
            self.duplicates += 1
        else:
            self.appended += 1
        self.first_index = result.index if self.first_index is None else min(self.first_index, result.index)
        self.last_index = result.index if self.last_index is None else max(self.last_index, result.index)
        self.checkpoint_size = max(self.checkpoint_size, result.entry.checkpoint.size)

    @property
    def answered(self) -> int:
        return self.appended + self.duplicates + sum(self.refused.values())


class _Progress:
    """A tqdm bar on a terminal; plain lines (about every 10%) otherwise; nothing with --json or --no-progress."""

    def __init__(self, total: int, stream: TextIO, mode: str) -> None:
        self._bar: Any = None
        self._stream = stream
        self._total = total
        self._mode = mode
        self._next = max(total // 10, 1)
        self._done = 0
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="entry", unit_scale=True, file=stream, desc="import", dynamic_ncols=True)

    def update(self, n: int, refused: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
            if refused:
                self._bar.set_postfix(refused=refused, refresh=False)
        elif self._mode == "lines" and (self._done >= self._next or self._done == self._total):
            print(f"import: {self._done:,}/{self._total:,} entries answered ({refused:,} refused)", file=self._stream)
            self._next = self._done + max(self._total // 10, 1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_import(client: LedgerClient, path: Path, *, via: str, per_message: int, progress: _Progress | None,
               report: ImportReport) -> None:  # fmt: skip
    """Submit every envelope of the file, in order, through the client (which verifies every answer)."""
    lines: list[int] = []

    def envelopes() -> Iterator[bytes]:
        for number, env in read_envelopes(path):
            lines.append(number)
            yield env

    started = time.monotonic()
    refused = 0
    try:
        for position, result in enumerate(client.submit_iter(envelopes(), via=via, per_message=per_message)):
            report.add(lines[position], result)
            refused += isinstance(result, EntryRefused)
            if progress is not None:
                progress.update(1, refused)
    finally:
        report.seconds = time.monotonic() - started


def cmd_import(
    args: argparse.Namespace,
    *,
    connect: Callable[[argparse.Namespace], AbstractContextManager[LedgerClient]],
    emit: Callable[[argparse.Namespace, str, dict[str, Any]], None],
) -> int:
    """The command: 0 when every entry is in the log (appended or already there), 1 when some were refused (listed,
    and written to --errors-out), 3 when an answer did not verify (raised to the CLI's handler)."""
    path = Path(args.file)
    if not 1 <= args.per_message <= 1024:
        raise InvalidInput("--per-message must be between 1 and 1024")
    total = check_file(path)
    if args.json or args.no_progress:
        mode = "none"
    else:
        mode = "bar" if sys.stderr.isatty() else "lines"
    report = ImportReport(total)
    progress = _Progress(total, sys.stderr, mode)
    try:
        with connect(args) as client:
            run_import(client, path, via=args.via, per_message=args.per_message, progress=progress, report=report)
    finally:
        progress.close()
        if args.errors_out and report.refusals:
            Path(args.errors_out).write_text("".join(json.dumps(r) + "\n" for r in report.refusals), encoding="utf-8")
    rate = report.answered / report.seconds if report.seconds > 0 else 0.0
    refused_total = sum(report.refused.values())
    lines = [
        f"imported {path}: {report.total:,} entries in {report.seconds:.1f} s ({rate:,.0f} entries/s, via {args.via})",
        f"  appended         {report.appended:,}"
        + (f" (indices {report.first_index:,}..{report.last_index:,})" if report.first_index is not None else ""),
        f"  already logged   {report.duplicates:,} (answered with their first index)",
        f"  refused          {refused_total:,}"
        + (" (" + ", ".join(f"{n:,} {code}" for code, n in sorted(report.refused.items())) + ")" if refused_total else ""),
    ]
    if report.checkpoint_size:
        lines.append(
            f"verified: every logged entry's inclusion in a checkpoint signed by the log (up to size "
            f"{report.checkpoint_size:,}), consistent with the ones before, and its leaf commits to the envelope sent"
        )
    for r in report.refusals[:SHOWN_REFUSALS]:
        lines.append(f"  line {r['line']}: {r['code']}: {r['details']}")
    if len(report.refusals) > SHOWN_REFUSALS:
        lines.append(f"  ... {len(report.refusals) - SHOWN_REFUSALS:,} more refusals" + (
            f" (all in {args.errors_out})" if args.errors_out else " (--errors-out FILE lists them all)"))  # fmt: skip
    data = {
        "file": str(path),
        "via": args.via,
        "entries": report.total,
        "appended": report.appended,
        "duplicates": report.duplicates,
        "refused": dict(report.refused),
        "refusals": report.refusals,
        "first_index": report.first_index,
        "last_index": report.last_index,
        "checkpoint_size": report.checkpoint_size,
        "seconds": round(report.seconds, 3),
        "entries_per_second": round(rate, 1),
    }
    emit(args, "\n".join(lines), data)
    return 1 if refused_total else 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The import command's own options (the CLI adds the client options)."""
    p.add_argument("file", metavar="FILE", help=f"the bulk file: JSON Lines, one {{\"envelope\": BASE64}} per line ({FORMAT})")
    p.add_argument("--via", choices=("stream", "batch"), default="stream",
                   help="SubmitStream (default: messages pipelined on one stream) or SubmitBatch (one call per message)")
    p.add_argument("--per-message", type=int, default=256, metavar="N",
                   help="envelopes per message (default %(default)s; the server takes at most 1,024 and 256 KiB)")
    p.add_argument("--errors-out", metavar="FILE", help="write every refusal (line, code, details) as JSON Lines")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines on stderr")
