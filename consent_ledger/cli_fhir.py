"""`consent-ledger fhir import|export`: FHIR R4/R5 Consent resources in and out of the ledger (docs/fhir.md).

The mapping is consent_ledger.fhir (pure); this module reads files, signs, submits and verifies through the same
helpers as `grant` and `export-consent` in cli.py. fhir.resources is imported only when a fhir command runs, so the
rest of the CLI works without the `fhir` extra.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from consent_ledger import cli
from consent_ledger.core import payloads
from consent_ledger.core.decision import STATE_ACTIVE, STATE_PENDING
from consent_ledger.core.errors import InvalidInput
from consent_ledger.presentation import (
    entry_verification,
    format_time,
    short_id,
    short_key,
)
from consent_ledger_client import ConsentClient
from consent_ledger_client.bundle import export_consent_bundle, verify_consent_bundle


def _fhir() -> Any:
    try:
        from consent_ledger import fhir
    except ImportError as e:  # the optional dependency
        raise cli.CliError(
            f"FHIR support needs the fhir extra: pip install 'consent-ledger[fhir]' ({e})"
        ) from None
    return fhir


def _version(args: argparse.Namespace) -> str | None:
    return None if args.fhir_version == "auto" else args.fhir_version


def _period_text(p: payloads.Period) -> str:
    if p.unbounded:
        return "unbounded"
    start = format_time(p.start_ms) if p.start_ms else "(open)"
    end = format_time(p.end_ms) if p.end_ms else "(open)"
    return f"{start} to {end}"


def cmd_fhir_import(args: argparse.Namespace) -> int:
    fhir = _fhir()
    raw = cli._read_file(args.file, "FHIR Consent")
    try:
        imported = fhir.parse_consent(raw, _version(args))
    except fhir.FhirRefused as e:
        raise cli.CliError(f"{args.file}: refused: {e}") from None
    if not args.patient_key_file:
        raise cli.CliError("fhir import signs as the patient: pass --patient-key-file PATIENT.key (the private key)")
    args.key = args.patient_key_file
    signer = cli.read_patient_key(args)
    if imported.patient_key is not None and imported.patient_key != signer.public_key:
        raise cli.CliError(
            f"{args.file} is the Consent of patient {short_key(imported.patient_key)}, but "
            f"{args.patient_key_file} is the key of {short_key(signer.public_key)}: only the patient signs"
        )
    t = imported.terms
    try:
        payload = t.build(signer.public_key, issued_at_ms=cli._now_ms())
    except InvalidInput as e:
        raise cli.CliError(f"{args.file}: {e}") from None
    notes = [
        f"  from             FHIR {imported.version} Consent {imported.resource_id or '(no id)'} ({args.file})",
        f"  rule             {t.decision} {t.grantee}: {','.join(t.actions)} for {','.join(t.purposes)} on "
        f"{','.join(t.data_classes)}" + (f" labelled {','.join(t.sensitivity_labels)}" if t.sensitivity_labels else ""),
        f"  valid            {_period_text(t.validity)}",
    ]
    extra = {"fhir_version": imported.version, "fhir_id": imported.resource_id, "grantee": t.grantee}
    return cli.submit_and_report(args, payloads.CONSENT_GRANT, payload, signer, extra, notes)


def cmd_fhir_export(args: argparse.Namespace) -> int:
    fhir = _fhir()
    consent_id = payloads.check_consent_id(args.consent_id, "CONSENT_ID")
    patient = cli.patient_from_args(args)
    verifier_key = cli.log_key_from_args(args)
    view = None
    with cli.connect(args, signer=cli.patient_signer_from_args(args)) as client:
        consents = ConsentClient(client)
        token = ""
        while view is None:
            page = consents.list_consents(patient, page_token=token)  # every entry proven, every state re-computed
            view = next((v for v in page.consents if v.consent_id == consent_id), None)
            token = page.next_page_token
            if not token:
                break
        if view is None:
            raise cli.CliError(f"patient {short_key(patient)} has no consent grant {consent_id} (see: consent-ledger consents)")
        entry, note = client.get_entry_with_note(view.entry.index)
        witnessed = None
        if client.witness_policy is not None:
            wc, w_proof = client.witness_proof(entry.checkpoint)
            witnessed = (wc.note, w_proof)
    bundle = export_consent_bundle(entry, note, verifier_key, witnessed)
    verify_consent_bundle(bundle, verifier_key, witness_policy=cli.witness_policy_from_args(args))
    cp = entry.checkpoint
    pointer = fhir.LogPointer(
        origin=cp.origin, index=entry.index, checkpoint_size=cp.size, root_hash=cp.root_hash, checkpoint_note=note,
        bundle_json=json.dumps(bundle, sort_keys=True),
    )
    active = view.state in (STATE_ACTIVE, STATE_PENDING)
    resource = fhir.consent_to_fhir(view.grant, version=args.fhir_version, consent_id=consent_id, active=active,
                                    log=pointer)
    text = json.dumps(resource, indent=2) + "\n"
    cli._write_output(args.out, text)
    if args.out == "-":
        return cli.EXIT_OK
    human = "\n".join(
        [
            (f"wrote FHIR {args.fhir_version} Consent for consent {short_id(consent_id)} (entry #{entry.index}, state "
            f"{view.state}, FHIR status {resource['status']}) to {args.out}"),
            entry_verification(entry, None, with_previous=False),
            (f"the Consent carries the log origin, index {entry.index}, the signed checkpoint of size {cp.size} and the "
            f"consent bundle (extension {fhir.EXT_LOG_ENTRY}); the bundle was verified offline before writing"),
        ]
    )
    cli.emit(args, human, {"file": args.out, "index": entry.index, "consent_id": consent_id, "state": view.state,
                           "fhir_version": args.fhir_version, "checkpoint": {"origin": cp.origin, "size": cp.size}})
    return cli.EXIT_OK


def add_fhir_commands(sub: Any) -> None:
    """Register `fhir import` and `fhir export` under the CLI's subcommands."""
    p = sub.add_parser("fhir", help="import and export FHIR R4/R5 Consent resources (JSON)")
    fsub = p.add_subparsers(dest="fhir_command", metavar="import|export", required=True)

    q = fsub.add_parser("import", help="map a FHIR Consent onto a grant, sign it as the patient, submit and verify it")
    q.add_argument("file", metavar="FILE", help="the Consent (JSON)")
    q.add_argument("--patient-key-file", metavar="KEY", default=cli._env(cli.ENV_PATIENT_KEY_FILE),
                   help=f"the patient's private key file, which signs the grant (default: ${cli.ENV_PATIENT_KEY_FILE})")
    q.add_argument("--fhir-version", choices=("auto", "R4", "R5"), default="auto",
                   help="the Consent's FHIR version (default: told from its elements)")
    cli.add_client_options(q)
    q.set_defaults(func=cmd_fhir_import, for_patient=None)

    q = fsub.add_parser("export", help="write a patient's grant as a FHIR Consent pointing back to its log entry")
    q.add_argument("consent_id", metavar="CONSENT_ID")
    cli.add_patient_options(q)
    q.add_argument("--fhir-version", choices=("R4", "R5"), default="R5", help="default: %(default)s")
    q.add_argument("--out", default="-", metavar="FILE", help="file to write (default '-': stdout)")
    cli.add_client_options(q)
    q.set_defaults(func=cmd_fhir_export)
