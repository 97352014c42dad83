"""Audit a ledger from the outside: replay the log from the start (or a saved point), verify every entry's
inclusion, body and signatures and every checkpoint seen, check every entry is signed by whom it must be, re-check
the admission of every grant, revocation and delegation with the core rules the ledger applies (core.state_rules:
signed by the patient or a delegate then in force with the right scope, a revocation or supersession of the same
patient's logged grant, a consent id logged once), recompute the consent-state map by the one rule of what ends a
grant and compare its root with every StateCommit. Erasures and break-glass reviews are checked against
the rules the ledger applies: every erased body is recorded by an operator's Erasure entry (and every recorded
erasure really withholds the body); no erasure takes a body that is still evidence; every review is an operator's
only review of a break-glass access. Times (core.timing): integration times never decrease, each StateCommit's
batch time is the integration time of the batch it closes and not after the auditor's clock; and every checkpoint
the audit is shown names, in its ``consent-state`` line, the latest StateCommit at its size. Stops at the first
mismatch and reports it with the evidence; an entry that only breaks an admission rule is reported (index, rule,
entry) and the replay goes on. Resumable.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from consent_ledger.core import delegation, payloads, smt, state_rules, vrf
from consent_ledger.core.checkpoint import Checkpoint, format_checkpoint
from consent_ledger.core.envelope import ParsedEnvelope
from consent_ledger.core.errors import InvalidInput, VerificationError
from consent_ledger.core.rfc6962 import hash_leaf
from consent_ledger.core.state_rules import ErasureFacts, InForceSets
from consent_ledger.core.timing import MAX_CLOCK_SKEW_MS, integration_time_problem, state_commit_time_problem
from consent_ledger_client.client import LedgerClient, UnrecordedErasure
from consent_ledger_client.verify import VerifiedEntry

FORMAT = "consent-ledger-audit/v2"  # v2: the in-force sets carry the consent ids logged (core.state_rules)
PAGE = 256

Progress = Callable[[int, int], None]


class _AuditKeys:
    """Map keys as an auditor replays them: each from the VRF proof the server gave with its entry
    (``use(pi)`` before the entry is replayed). The key is the proof's output at once; the proof itself is
    verified for the alpha the entry gives, under the map VRF key (pinned, or named by the StateCommit), before
    the next StateCommit's root is compared (``verify_pending``)."""

    def __init__(self) -> None:
        self.pi = b""
        self.pending: list[tuple[bytes, bytes, bytes]] = []  # (alpha, pi, key used)

    def _key(self, alpha: bytes) -> bytes:
        if not self.pi:
            raise VerificationError("the server gave no VRF proof of the map key of this entry")
        key = vrf.map_key(vrf.proof_to_hash(self.pi))
        self.pending.append((alpha, self.pi, key))
        return key

    def consent_key(self, patient: bytes, selector: str) -> bytes:
        return self._key(vrf.consent_alpha(patient, selector))

    def party_key(self, party_id: str) -> bytes:
        return self._key(vrf.party_alpha(party_id))

    def verify_pending(self, cache: vrf.VerifiedMapKeys, public_key: bytes) -> None:
        for alpha, pi, key in self.pending:
            if cache.key(public_key, alpha, pi) != key:
                raise VerificationError("a map key differs from its VRF output")
        self.pending = []


@dataclass
class Finding:
    """The first thing that did not hold, and where."""

    index: int
    problem: str
    evidence: dict[str, str] = field(default_factory=dict)


@dataclass
class AuditReport:
    start: int
    end: int
    entries: int = 0
    state_commits: int = 0
    signatures: int = 0
    erased: int = 0
    # StateCommits written before map keys were VRF outputs (no map VRF key named): not compared.
    legacy_state_commits: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    checkpoint_size: int = 0
    finding: Finding | None = None
    # Entries an honest ledger would have refused at admission (core.state_rules): the replay goes on past them,
    # applying the one rule to them as the ledger's map must; the first is also ``finding``.
    refusals: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.finding is None


class Auditor:
    """Replays one log through a verifying client. ``operator_keys`` (besides the log key) may register parties.

    With ``resume_file``, progress is saved after each page at the last verified StateCommit (the map and the
    in-force sets are complete there), and a new Auditor on the same file resumes from that point.
    """

    def __init__(
        self,
        client: LedgerClient,
        *,
        operator_keys: tuple[bytes, ...] = (),
        resume_file: Path | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        max_clock_skew_ms: int = MAX_CLOCK_SKEW_MS,
    ) -> None:
        """``clock_ms``: the auditor's clock, which no StateCommit may be dated after (by more than the skew)."""
        self._client = client
        self._clock_ms = clock_ms
        self._max_skew_ms = max_clock_skew_ms
        # The latest StateCommit replayed and the integration time of the last entry replayed.
        self._last_state_commit: int | None = None
        self._last_time_ms: int | None = None
        # Checkpoints shown to the audit beyond the replayed point, by size: checked once replay reaches the size.
        self._pending_checkpoints: dict[int, Checkpoint] = {}
        client.trust_operator_keys(operator_keys)
        self._operators = client.operator_keys
        self._resume_file = resume_file
        self._keys = _AuditKeys()
        self._book = delegation.DelegationBook()
        self._sets = InForceSets(self._keys, self._book)
        self._map = smt.MemoryMapNodes()
        # Map VRF proofs the server gave with the current page, by entry index.
        self._pis: dict[int, bytes] = {}
        self._vrf_seen = False
        self._next = 0
        self._party_keys: dict[str, frozenset[bytes]] = {}
        self._party_capabilities: dict[str, frozenset[str]] = {}
        # Every key that signed an entry so far: an attested delegation of a patient whose key is among them breaks
        # core.delegation.check_attestation.
        self._signed: set[bytes] = set()
        self._delegation_payloads: dict[str, bytes] = {}
        # Break-glass accesses not reviewed yet (a review must name one of them, once).
        self._unreviewed: set[int] = set()
        self._reviewed: set[int] = set()
        self._saved: dict[str, object] | None = None
        if resume_file is not None and resume_file.exists():
            self._load(resume_file)

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT or data.get("verifier_key_hash") != self._client.log_public_key.hex():
            raise InvalidInput(f"{path} is not an audit state of this log")
        self._next = int(data["next_index"])
        self._party_keys = {p: frozenset(bytes.fromhex(k) for k in ks) for p, ks in data["party_keys"].items()}
        self._party_capabilities = {p: frozenset(cs) for p, cs in data.get("party_capabilities", {}).items()}
        self._signed = {bytes.fromhex(k) for k in data.get("signed", [])}
        self._keys.pending = [
            (bytes.fromhex(a), bytes.fromhex(p), bytes.fromhex(k)) for a, p, k in data.get("pending_map_keys", [])
        ]
        for did, d in data.get("delegations", {}).items():
            raw = bytes.fromhex(d["payload"])
            p = payloads.parse_payload(payloads.DELEGATION, raw)
            assert isinstance(p, payloads.DelegationPayload)
            self._book.add(
                delegation.Delegate(did, int(d["index"]), int(d["integrated_ms"]), p, d["revoked_ms"], d.get("revoked_index"))
            )
            self._delegation_payloads[did] = raw
        self._vrf_seen = bool(data.get("vrf_seen", False))
        self._sets = InForceSets.from_json(data["in_force"], self._keys, self._book)
        self._unreviewed = {int(i) for i in data.get("break_glass_unreviewed", [])}
        # Saved right after a StateCommit (files without these keys: that StateCommit is the entry before).
        sc = data.get("state_commit_index", self._next - 1 if self._next else None)
        self._last_state_commit = None if sc is None else int(sc)
        t = data.get("integrated_time_ms")
        self._last_time_ms = None if t is None else int(t)
        self._reviewed = {int(i) for i in data.get("break_glass_reviewed", [])}
        root, changed, _ = smt.apply_batch(self._map, self._sets.all_values())
        self._map.apply(changed, ())
        if root.hex() != data["map_root"]:
            raise InvalidInput(f"{path} is corrupt: its in-force sets do not give its map root")

    def _snapshot(self, next_index: int) -> None:
        """Remember the state right after a verified StateCommit: the point a later run resumes from."""
        self._saved = {
            "format": FORMAT,
            "verifier_key_hash": self._client.log_public_key.hex(),
            "next_index": next_index,
            "map_root": self._map.root().hex(),
            "in_force": self._sets.to_json(),
            "party_keys": {p: sorted(k.hex() for k in ks) for p, ks in self._party_keys.items()},
            "party_capabilities": {p: sorted(cs) for p, cs in self._party_capabilities.items()},
            "signed": sorted(k.hex() for k in self._signed),
            "delegations": {
                did: {"index": d.index, "integrated_ms": d.integrated_ms, "revoked_ms": d.revoked_ms,
                      "revoked_index": d.revoked_index, "payload": self._delegation_payloads[did].hex()}
                for did, d in self._book.by_id.items()
            },
            "break_glass_unreviewed": sorted(self._unreviewed),
            "break_glass_reviewed": sorted(self._reviewed),
            "state_commit_index": self._last_state_commit,
            "integrated_time_ms": self._last_time_ms,
            "vrf_seen": self._vrf_seen,
            "pending_map_keys": [[a.hex(), p.hex(), k.hex()] for a, p, k in self._keys.pending],
        }

    def _save(self) -> None:
        if self._resume_file is None or self._saved is None:
            return
        data = self._saved
        tmp = self._resume_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._resume_file)

    def run(self, *, end: int | None = None, progress: Progress | None = None) -> AuditReport:
        """Audit entries from the saved point (or 0) to ``end`` (default: the latest checkpoint's size)."""
        latest = self._client.checkpoint().checkpoint
        size = latest.size
        end = size if end is None else min(end, size)
        report = AuditReport(start=self._next, end=end, checkpoint_size=size)
        self._see_checkpoint(latest)
        try:
            while self._next < end:
                page, pis = self._client.get_entries_with_map_proofs(self._next, min(end, self._next + PAGE))
                self._pis = {e.index: pi for e, pi in zip(page, pis)}
                for entry in page:
                    self._see_checkpoint(entry.checkpoint)
                    finding = self._time_problem(entry) or self._audit_entry(entry, report)
                    if finding is not None:
                        report.finding = finding
                        return report
                    self._next = entry.index + 1
                    finding = self._checkpoint_problem(self._next)
                    if finding is not None:
                        report.finding = finding
                        return report
                self._save()
                if progress:
                    progress(self._next, end)
        except UnrecordedErasure as e:
            evidence = {"erased_by_index": str(e.named)} if e.named is not None else {}
            report.finding = Finding(e.index, f"an erased body without an Erasure entry recording it: {e}", evidence)
        except VerificationError as e:
            report.finding = Finding(self._next, f"verification failed: {e}")
        if report.finding is None and report.refusals:
            report.finding = report.refusals[0]
        return report

    def _see_checkpoint(self, cp: Checkpoint) -> None:
        if cp.size > self._next:
            self._pending_checkpoints.setdefault(cp.size, cp)

    def _checkpoint_problem(self, size: int) -> Finding | None:
        """A checkpoint of ``size`` (every entry below it replayed) must name the latest StateCommit below it."""
        cp = self._pending_checkpoints.pop(size, None)
        if cp is None or cp.consent_state == self._last_state_commit:
            return None
        return Finding(
            size - 1,
            f"the checkpoint of size {size} names consent state {cp.consent_state}, but the latest StateCommit at "
            f"that size is {self._last_state_commit}",
            {"checkpoint": format_checkpoint(cp), "latest_state_commit": str(self._last_state_commit)},
        )

    def _time_problem(self, entry: VerifiedEntry) -> Finding | None:
        """Integration times never decrease; a StateCommit is dated by its batch, not ahead of the auditor's clock."""
        t = entry.leaf.integrated_time_ms
        problem = integration_time_problem(t, self._last_time_ms)
        if problem:
            return Finding(
                entry.index,
                problem + (f" (the StateCommit at {self._last_state_commit} was dated ahead of the entries it closes)"
                           if self._last_state_commit == entry.index - 1 else ""),
                {"integrated_time_ms": str(t), "previous_integrated_time_ms": str(self._last_time_ms),
                 "leaf": entry.leaf_bytes.hex()},
            )
        self._last_time_ms = t
        env = entry.envelope
        if entry.leaf.payload_type == payloads.STATE_COMMIT and env is not None:
            try:
                p = payloads.parse_payload(env.payload_type, env.payload)
            except InvalidInput:
                return None  # reported as a malformed payload by _audit_entry
            assert isinstance(p, payloads.StateCommitPayload)
            now = self._clock_ms()
            problem = state_commit_time_problem(p.batch_time_ms, t, now, self._max_skew_ms)
            if problem:
                return Finding(
                    entry.index,
                    problem,
                    {"batch_time_ms": str(p.batch_time_ms), "integrated_time_ms": str(t),
                     "auditor_clock_ms": str(now), "leaf": entry.leaf_bytes.hex()},
                )
            self._last_state_commit = entry.index
        return None

    def _audit_entry(self, entry: VerifiedEntry, report: AuditReport) -> Finding | None:
        report.entries += 1
        kind = entry.leaf.payload_type
        report.by_kind[kind] = report.by_kind.get(kind, 0) + 1
        env = entry.envelope
        if env is None:
            # The commitment is still proven, and the client checked the Erasure entry the server named as the
            # record (a forged "erased" raises UnrecordedErasure before we get here). Its facts stand in for the
            # body when the consent state is replayed.
            report.erased += 1
            e = entry.erasure
            assert e is not None
            facts = ErasureFacts(e.consent_id, e.map_key, e.ends)
            if (kind == payloads.CONSENT_GRANT) != bool(facts.map_key) or (
                kind == payloads.CONSENT_REVOCATION and not facts.ends
            ):
                return Finding(entry.index, f"the erasure of this {kind} does not record what replaying the consent state needs")
            self._sets.add_erased(entry.index, hash_leaf(entry.leaf_bytes), facts, entry.leaf.integrated_time_ms)
            return None
        report.signatures += len(env.signers)  # verify_entry checked every one of them
        try:
            p = payloads.parse_payload(env.payload_type, env.payload)
        except InvalidInput as e:
            return Finding(entry.index, f"the entry's payload is malformed: {e}")
        problem = self._signer_problem(env, p, entry.leaf.integrated_time_ms)
        if problem:
            return Finding(entry.index, problem)
        self._signed.update(env.signers)
        cid = payloads.consent_id(env.payload)
        refusal = self._admission_refusal(entry.index, entry.leaf.integrated_time_ms, cid, env, p)
        if refusal is not None:
            report.refusals.append(
                Finding(
                    entry.index,
                    f"an entry an honest ledger refuses at admission: {refusal.text}",
                    {"rule": refusal.rule, "entry": entry.leaf_bytes.hex(), "payload_type": env.payload_type,
                     "payload": env.payload.hex()},
                )
            )
        if isinstance(p, payloads.DelegationPayload):
            self._book.add(delegation.Delegate(cid, entry.index, entry.leaf.integrated_time_ms, p))
            self._delegation_payloads.setdefault(cid, env.payload)
        elif isinstance(p, payloads.ConsentRevocationPayload) and p.consent_id in self._book.by_id:
            self._book.revoke(p.consent_id, entry.leaf.integrated_time_ms, entry.index)
        self._keys.pi = self._pis.get(entry.index, b"")
        if isinstance(p, payloads.StateCommitPayload):
            report.state_commits += 1
            updates = self._sets.take_updates()
            root, changed, deleted = smt.apply_batch(self._map, updates)
            self._map.apply(changed, deleted)
            if not p.map_vrf_public_key and not self._vrf_seen:
                # Written before map keys were VRF outputs (a log whose map was rebuilt since, see
                # `consent-ledger rebuild-map`): its root used other keys, so it is not compared.
                report.legacy_state_commits += 1
                self._snapshot(entry.index + 1)
                return None
            try:
                self._keys.verify_pending(self._client.map_keys, self._client.accept_map_vrf_key(p.map_vrf_public_key))
                self._vrf_seen = True
            except VerificationError as e:
                return Finding(entry.index, f"a map key of the entries before this StateCommit does not verify: {e}")
            if root != p.map_root:
                return Finding(
                    entry.index,
                    "the StateCommit's map root differs from the root recomputed from the log",
                    {"claimed_root": p.map_root.hex(), "recomputed_root": root.hex(), "leaf": entry.leaf_bytes.hex()},
                )
            self._snapshot(entry.index + 1)
            return None
        if isinstance(p, payloads.PartyRegistrationPayload):
            self._party_keys[p.party_id] = frozenset(p.public_keys)
            self._party_capabilities[p.party_id] = frozenset(p.capabilities)
        elif isinstance(p, payloads.AccessEventPayload) and p.break_glass_access:
            self._unreviewed.add(entry.index)
        elif isinstance(p, payloads.BreakGlassReviewPayload):
            problem = self._review_problem(entry.index, p)
            if problem:
                return Finding(entry.index, problem, {"event_index": str(p.event_index)})
            self._unreviewed.discard(p.event_index)
            self._reviewed.add(p.event_index)
        elif isinstance(p, payloads.ErasurePayload):
            problem = self._erasure_problem(entry.index, p)
            if problem:
                return Finding(entry.index, problem, {"erased_index": str(p.index)})
        self._sets.add(entry.index, hash_leaf(entry.leaf_bytes), cid, p, env.signers, entry.leaf.integrated_time_ms)
        return None

    def _admission_refusal(
        self, index: int, integrated_ms: int, cid: str, env: ParsedEnvelope, p: payloads.Payload
    ) -> state_rules.Refusal | None:
        """The core admission rule an entry breaks, judged at its integration time against the entries before it."""
        e = state_rules.ConsentEntry.of(index, integrated_ms, cid, p, env.signers)
        if e is None:
            return None
        facts = self._sets.facts
        if e.kind == state_rules.GRANT:
            return state_rules.grant_refusal(e, facts)
        if e.kind == state_rules.DELEGATION:
            return state_rules.logged_once_refusal(e, facts)
        if e.target in self._book.by_id:
            return None  # a delegation's revocation: checked by _signer_problem (core.delegation.may_revoke)
        return state_rules.revocation_refusal(e, facts)

    def _review_problem(self, index: int, p: payloads.BreakGlassReviewPayload) -> str | None:
        if p.event_index in self._unreviewed:
            return None
        if p.event_index in self._reviewed:
            return f"a second review of the break-glass access {p.event_index}"
        if p.event_index < index:
            # An event met with its body erased: erased after its review (this one), it was an access event.
            event = self._client.get_entry(p.event_index)
            erased_later = event.erased_by is not None and event.erased_by > index
            if event.envelope is None and erased_later and event.leaf.payload_type == payloads.ACCESS_EVENT:
                return None
        return f"a review of entry {p.event_index}, which is not a break-glass access awaiting review"

    def _erasure_problem(self, index: int, p: payloads.ErasurePayload) -> str | None:
        """An erasure must take a body that is no longer evidence, and the body must really be withheld since."""
        if p.index >= index:
            return f"an erasure of entry {p.index}, which is not before it"
        if p.index in self._unreviewed:
            return f"an erasure of the break-glass access {p.index} before its review"
        if any(p.index in members for members in self._sets.sets.values()):
            return f"an erasure of the consent at {p.index} while it is in force"
        target = self._client.get_entry(p.index)  # verified; an erased body must name its Erasure record
        kind = target.leaf.payload_type
        if kind in (payloads.STATE_COMMIT, payloads.PARTY_REGISTRATION, payloads.ERASURE, payloads.BREAK_GLASS_REVIEW):
            return f"an erasure of entry {p.index}, a {kind}, whose body is evidence the ledger keeps"
        if target.envelope is not None:
            return f"entry {index} records the erasure of entry {p.index}, but the server still serves its body"
        if target.erased_by != index:
            return f"entry {index} erases entry {p.index}, which entry {target.erased_by} had erased"
        return None

    def _signer_problem(self, env: ParsedEnvelope, p: payloads.Payload, integrated_ms: int) -> str | None:
        signers = set(env.signers)
        if isinstance(p, payloads.ConsentRevocationPayload) and p.consent_id in self._book.by_id:
            d = self._book.by_id[p.consent_id].payload
            if d.patient != p.patient or not delegation.may_revoke(d, signers, self._party_keys.get(d.attested_by, frozenset())):
                return "a delegation revoked by someone other than its patient or attesting organisation"
        if isinstance(p, payloads.DelegationPayload) and p.attested_by:
            try:
                delegation.check_attestation(
                    p, signers, org_keys=self._party_keys.get(p.attested_by),
                    org_capabilities=self._party_capabilities.get(p.attested_by, frozenset()),
                    patient_signed_before=p.patient in self._signed,
                )
            except delegation.AttestationRefused as e:
                return f"an attested delegation that breaks the attestation rule: {e.reason}"
        elif isinstance(p, payloads.DelegationPayload) and not delegation.signed_validly(p, signers, None):
            return "a delegation not signed by its patient"
        operator_kinds = (
            payloads.PartyRegistrationPayload
            | payloads.StateCommitPayload
            | payloads.ErasurePayload
            | payloads.BreakGlassReviewPayload
        )
        if isinstance(p, operator_kinds) and not self._operators & signers:
            return f"a {type(p).__name__} not signed by the operator"
        if isinstance(p, payloads.AccessEventPayload):
            allowed = self._operators | self._party_keys.get(p.party_id, frozenset())
            if not allowed & signers:
                return f"an access event not signed by {p.party_id} or the operator"
        return None
