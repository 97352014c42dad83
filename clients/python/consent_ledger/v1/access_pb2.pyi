from consent_ledger.v1 import log_pb2 as _log_pb2
from consent_ledger.v1 import payloads_pb2 as _payloads_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccessRequest(_message.Message):
    __slots__ = ("patient", "requester_id", "requester_roles", "action", "purpose", "data", "data_period", "time_ms", "break_glass", "break_glass_reason")
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_ROLES_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DATA_PERIOD_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_REASON_FIELD_NUMBER: _ClassVar[int]
    patient: bytes
    requester_id: str
    requester_roles: _containers.RepeatedScalarFieldContainer[str]
    action: str
    purpose: str
    data: _containers.RepeatedCompositeFieldContainer[_payloads_pb2.DataItem]
    data_period: _payloads_pb2.Period
    time_ms: int
    break_glass: bool
    break_glass_reason: str
    def __init__(self, patient: _Optional[bytes] = ..., requester_id: _Optional[str] = ..., requester_roles: _Optional[_Iterable[str]] = ..., action: _Optional[str] = ..., purpose: _Optional[str] = ..., data: _Optional[_Iterable[_Union[_payloads_pb2.DataItem, _Mapping]]] = ..., data_period: _Optional[_Union[_payloads_pb2.Period, _Mapping]] = ..., time_ms: _Optional[int] = ..., break_glass: _Optional[bool] = ..., break_glass_reason: _Optional[str] = ...) -> None: ...

class DecisionPolicy(_message.Message):
    __slots__ = ("implicit", "decision_ttl_ms", "break_glass_enabled", "break_glass_window_ms")
    IMPLICIT_FIELD_NUMBER: _ClassVar[int]
    DECISION_TTL_MS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_ENABLED_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    implicit: str
    decision_ttl_ms: int
    break_glass_enabled: bool
    break_glass_window_ms: int
    def __init__(self, implicit: _Optional[str] = ..., decision_ttl_ms: _Optional[int] = ..., break_glass_enabled: _Optional[bool] = ..., break_glass_window_ms: _Optional[int] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("code", "text")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    code: str
    text: str
    def __init__(self, code: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class Obligation(_message.Message):
    __slots__ = ("code", "text")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    code: str
    text: str
    def __init__(self, code: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class CategoryOutcome(_message.Message):
    __slots__ = ("data", "decision", "reasons", "consent_ids", "break_glass")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_IDS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    data: _payloads_pb2.DataItem
    decision: _payloads_pb2.AccessDecision
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    consent_ids: _containers.RepeatedScalarFieldContainer[str]
    break_glass: bool
    def __init__(self, data: _Optional[_Union[_payloads_pb2.DataItem, _Mapping]] = ..., decision: _Optional[_Union[_payloads_pb2.AccessDecision, str]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., consent_ids: _Optional[_Iterable[str]] = ..., break_glass: _Optional[bool] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("request", "policy", "decision", "outcomes", "consent_ids", "reasons", "obligations", "valid_until_ms", "break_glass_until_ms")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    CONSENT_IDS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    OBLIGATIONS_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    request: AccessRequest
    policy: DecisionPolicy
    decision: _payloads_pb2.AccessDecision
    outcomes: _containers.RepeatedCompositeFieldContainer[CategoryOutcome]
    consent_ids: _containers.RepeatedScalarFieldContainer[str]
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    obligations: _containers.RepeatedCompositeFieldContainer[Obligation]
    valid_until_ms: int
    break_glass_until_ms: int
    def __init__(self, request: _Optional[_Union[AccessRequest, _Mapping]] = ..., policy: _Optional[_Union[DecisionPolicy, _Mapping]] = ..., decision: _Optional[_Union[_payloads_pb2.AccessDecision, str]] = ..., outcomes: _Optional[_Iterable[_Union[CategoryOutcome, _Mapping]]] = ..., consent_ids: _Optional[_Iterable[str]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., obligations: _Optional[_Iterable[_Union[Obligation, _Mapping]]] = ..., valid_until_ms: _Optional[int] = ..., break_glass_until_ms: _Optional[int] = ...) -> None: ...

class ReceiptBody(_message.Message):
    __slots__ = ("decision", "checkpoint_note")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_NOTE_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    checkpoint_note: bytes
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., checkpoint_note: _Optional[bytes] = ...) -> None: ...

class SignedReceipt(_message.Message):
    __slots__ = ("body", "keyid", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    KEYID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    keyid: str
    signature: bytes
    def __init__(self, body: _Optional[bytes] = ..., keyid: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class CheckAccessRequest(_message.Message):
    __slots__ = ("patient", "action", "purpose", "data", "data_period", "time_ms", "break_glass", "break_glass_reason", "record_access_event")
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DATA_PERIOD_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_REASON_FIELD_NUMBER: _ClassVar[int]
    RECORD_ACCESS_EVENT_FIELD_NUMBER: _ClassVar[int]
    patient: bytes
    action: str
    purpose: str
    data: _containers.RepeatedCompositeFieldContainer[_payloads_pb2.DataItem]
    data_period: _payloads_pb2.Period
    time_ms: int
    break_glass: bool
    break_glass_reason: str
    record_access_event: bool
    def __init__(self, patient: _Optional[bytes] = ..., action: _Optional[str] = ..., purpose: _Optional[str] = ..., data: _Optional[_Iterable[_Union[_payloads_pb2.DataItem, _Mapping]]] = ..., data_period: _Optional[_Union[_payloads_pb2.Period, _Mapping]] = ..., time_ms: _Optional[int] = ..., break_glass: _Optional[bool] = ..., break_glass_reason: _Optional[str] = ..., record_access_event: _Optional[bool] = ...) -> None: ...

class EvidenceEntry(_message.Message):
    __slots__ = ("entry", "inclusion_proof", "inclusion_proof_tail", "inclusion_proof_tail_from")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_TAIL_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_TAIL_FROM_FIELD_NUMBER: _ClassVar[int]
    entry: _log_pb2.Entry
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    inclusion_proof_tail: int
    inclusion_proof_tail_from: int
    def __init__(self, entry: _Optional[_Union[_log_pb2.Entry, _Mapping]] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ..., inclusion_proof_tail: _Optional[int] = ..., inclusion_proof_tail_from: _Optional[int] = ...) -> None: ...

class SelectorProof(_message.Message):
    __slots__ = ("selector", "siblings", "leaf_key", "leaf_value_hash", "vrf_proof", "leaf_derived")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    LEAF_KEY_FIELD_NUMBER: _ClassVar[int]
    LEAF_VALUE_HASH_FIELD_NUMBER: _ClassVar[int]
    VRF_PROOF_FIELD_NUMBER: _ClassVar[int]
    LEAF_DERIVED_FIELD_NUMBER: _ClassVar[int]
    selector: str
    siblings: _containers.RepeatedScalarFieldContainer[bytes]
    leaf_key: bytes
    leaf_value_hash: bytes
    vrf_proof: bytes
    leaf_derived: bool
    def __init__(self, selector: _Optional[str] = ..., siblings: _Optional[_Iterable[bytes]] = ..., leaf_key: _Optional[bytes] = ..., leaf_value_hash: _Optional[bytes] = ..., vrf_proof: _Optional[bytes] = ..., leaf_derived: _Optional[bool] = ...) -> None: ...

class PartyProof(_message.Message):
    __slots__ = ("party_id", "siblings", "leaf_key", "leaf_value_hash", "vrf_proof", "leaf_derived")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    LEAF_KEY_FIELD_NUMBER: _ClassVar[int]
    LEAF_VALUE_HASH_FIELD_NUMBER: _ClassVar[int]
    VRF_PROOF_FIELD_NUMBER: _ClassVar[int]
    LEAF_DERIVED_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    siblings: _containers.RepeatedScalarFieldContainer[bytes]
    leaf_key: bytes
    leaf_value_hash: bytes
    vrf_proof: bytes
    leaf_derived: bool
    def __init__(self, party_id: _Optional[str] = ..., siblings: _Optional[_Iterable[bytes]] = ..., leaf_key: _Optional[bytes] = ..., leaf_value_hash: _Optional[bytes] = ..., vrf_proof: _Optional[bytes] = ..., leaf_derived: _Optional[bool] = ...) -> None: ...

class CheckAccessResponse(_message.Message):
    __slots__ = ("decision", "evidence", "checkpoint", "receipt", "access_event_recorded", "access_event_index", "state_commit_index", "selector_proofs", "party_proof", "witnessed_checkpoint", "witnessed_consistency")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    ACCESS_EVENT_RECORDED_FIELD_NUMBER: _ClassVar[int]
    ACCESS_EVENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    STATE_COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_PROOFS_FIELD_NUMBER: _ClassVar[int]
    PARTY_PROOF_FIELD_NUMBER: _ClassVar[int]
    WITNESSED_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    WITNESSED_CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    evidence: _containers.RepeatedCompositeFieldContainer[EvidenceEntry]
    checkpoint: _log_pb2.Checkpoint
    receipt: bytes
    access_event_recorded: bool
    access_event_index: int
    state_commit_index: int
    selector_proofs: _containers.RepeatedCompositeFieldContainer[SelectorProof]
    party_proof: PartyProof
    witnessed_checkpoint: _log_pb2.Checkpoint
    witnessed_consistency: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., evidence: _Optional[_Iterable[_Union[EvidenceEntry, _Mapping]]] = ..., checkpoint: _Optional[_Union[_log_pb2.Checkpoint, _Mapping]] = ..., receipt: _Optional[bytes] = ..., access_event_recorded: _Optional[bool] = ..., access_event_index: _Optional[int] = ..., state_commit_index: _Optional[int] = ..., selector_proofs: _Optional[_Iterable[_Union[SelectorProof, _Mapping]]] = ..., party_proof: _Optional[_Union[PartyProof, _Mapping]] = ..., witnessed_checkpoint: _Optional[_Union[_log_pb2.Checkpoint, _Mapping]] = ..., witnessed_consistency: _Optional[_Iterable[bytes]] = ...) -> None: ...
