from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConsentDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_DECISION_UNSPECIFIED: _ClassVar[ConsentDecision]
    CONSENT_DECISION_PERMIT: _ClassVar[ConsentDecision]
    CONSENT_DECISION_DENY: _ClassVar[ConsentDecision]

class AccessDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_DECISION_UNSPECIFIED: _ClassVar[AccessDecision]
    ACCESS_DECISION_PERMIT: _ClassVar[AccessDecision]
    ACCESS_DECISION_DENY: _ClassVar[AccessDecision]
    ACCESS_DECISION_PARTIAL: _ClassVar[AccessDecision]
CONSENT_DECISION_UNSPECIFIED: ConsentDecision
CONSENT_DECISION_PERMIT: ConsentDecision
CONSENT_DECISION_DENY: ConsentDecision
ACCESS_DECISION_UNSPECIFIED: AccessDecision
ACCESS_DECISION_PERMIT: AccessDecision
ACCESS_DECISION_DENY: AccessDecision
ACCESS_DECISION_PARTIAL: AccessDecision

class Period(_message.Message):
    __slots__ = ("start_ms", "end_ms")
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    start_ms: int
    end_ms: int
    def __init__(self, start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ...) -> None: ...

class LegalBasis(_message.Message):
    __slots__ = ("code", "text")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    code: str
    text: str
    def __init__(self, code: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class DataItem(_message.Message):
    __slots__ = ("data_class", "sensitivity_labels")
    DATA_CLASS_FIELD_NUMBER: _ClassVar[int]
    SENSITIVITY_LABELS_FIELD_NUMBER: _ClassVar[int]
    data_class: str
    sensitivity_labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, data_class: _Optional[str] = ..., sensitivity_labels: _Optional[_Iterable[str]] = ...) -> None: ...

class ConsentGrant(_message.Message):
    __slots__ = ("patient", "grantee", "decision", "actions", "purposes", "data_classes", "sensitivity_labels", "data_period", "validity", "supersedes", "legal_basis", "issued_at_ms", "nonce")
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    PURPOSES_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASSES_FIELD_NUMBER: _ClassVar[int]
    SENSITIVITY_LABELS_FIELD_NUMBER: _ClassVar[int]
    DATA_PERIOD_FIELD_NUMBER: _ClassVar[int]
    VALIDITY_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDES_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    patient: bytes
    grantee: str
    decision: ConsentDecision
    actions: _containers.RepeatedScalarFieldContainer[str]
    purposes: _containers.RepeatedScalarFieldContainer[str]
    data_classes: _containers.RepeatedScalarFieldContainer[str]
    sensitivity_labels: _containers.RepeatedScalarFieldContainer[str]
    data_period: Period
    validity: Period
    supersedes: str
    legal_basis: LegalBasis
    issued_at_ms: int
    nonce: bytes
    def __init__(self, patient: _Optional[bytes] = ..., grantee: _Optional[str] = ..., decision: _Optional[_Union[ConsentDecision, str]] = ..., actions: _Optional[_Iterable[str]] = ..., purposes: _Optional[_Iterable[str]] = ..., data_classes: _Optional[_Iterable[str]] = ..., sensitivity_labels: _Optional[_Iterable[str]] = ..., data_period: _Optional[_Union[Period, _Mapping]] = ..., validity: _Optional[_Union[Period, _Mapping]] = ..., supersedes: _Optional[str] = ..., legal_basis: _Optional[_Union[LegalBasis, _Mapping]] = ..., issued_at_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class ConsentRevocation(_message.Message):
    __slots__ = ("patient", "consent_id", "reason", "issued_at_ms", "nonce")
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    patient: bytes
    consent_id: str
    reason: str
    issued_at_ms: int
    nonce: bytes
    def __init__(self, patient: _Optional[bytes] = ..., consent_id: _Optional[str] = ..., reason: _Optional[str] = ..., issued_at_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class PartyRegistration(_message.Message):
    __slots__ = ("party_id", "roles", "public_keys", "display_name", "issued_at_ms", "nonce", "capabilities")
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    party_id: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    public_keys: _containers.RepeatedScalarFieldContainer[bytes]
    display_name: str
    issued_at_ms: int
    nonce: bytes
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, party_id: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., public_keys: _Optional[_Iterable[bytes]] = ..., display_name: _Optional[str] = ..., issued_at_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class AccessEvent(_message.Message):
    __slots__ = ("patient", "party_id", "action", "purpose", "data", "decision", "consent_ids", "break_glass", "break_glass_reason", "accessed_at_ms", "receipt_sha256", "issued_at_ms", "nonce")
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    PARTY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    CONSENT_IDS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_REASON_FIELD_NUMBER: _ClassVar[int]
    ACCESSED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    patient: bytes
    party_id: str
    action: str
    purpose: str
    data: _containers.RepeatedCompositeFieldContainer[DataItem]
    decision: AccessDecision
    consent_ids: _containers.RepeatedScalarFieldContainer[str]
    break_glass: bool
    break_glass_reason: str
    accessed_at_ms: int
    receipt_sha256: bytes
    issued_at_ms: int
    nonce: bytes
    def __init__(self, patient: _Optional[bytes] = ..., party_id: _Optional[str] = ..., action: _Optional[str] = ..., purpose: _Optional[str] = ..., data: _Optional[_Iterable[_Union[DataItem, _Mapping]]] = ..., decision: _Optional[_Union[AccessDecision, str]] = ..., consent_ids: _Optional[_Iterable[str]] = ..., break_glass: _Optional[bool] = ..., break_glass_reason: _Optional[str] = ..., accessed_at_ms: _Optional[int] = ..., receipt_sha256: _Optional[bytes] = ..., issued_at_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class Delegation(_message.Message):
    __slots__ = ("patient", "delegate", "relationship", "scope", "validity", "majority_date_ms", "evidence_reference", "issued_at_ms", "nonce", "attested_by")
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    DELEGATE_FIELD_NUMBER: _ClassVar[int]
    RELATIONSHIP_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    VALIDITY_FIELD_NUMBER: _ClassVar[int]
    MAJORITY_DATE_MS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ATTESTED_BY_FIELD_NUMBER: _ClassVar[int]
    patient: bytes
    delegate: bytes
    relationship: str
    scope: _containers.RepeatedScalarFieldContainer[str]
    validity: Period
    majority_date_ms: int
    evidence_reference: str
    issued_at_ms: int
    nonce: bytes
    attested_by: str
    def __init__(self, patient: _Optional[bytes] = ..., delegate: _Optional[bytes] = ..., relationship: _Optional[str] = ..., scope: _Optional[_Iterable[str]] = ..., validity: _Optional[_Union[Period, _Mapping]] = ..., majority_date_ms: _Optional[int] = ..., evidence_reference: _Optional[str] = ..., issued_at_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., attested_by: _Optional[str] = ...) -> None: ...

class Erasure(_message.Message):
    __slots__ = ("index", "reason", "issued_at_ms", "nonce", "consent_id", "map_key", "ends")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    MAP_KEY_FIELD_NUMBER: _ClassVar[int]
    ENDS_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: str
    issued_at_ms: int
    nonce: bytes
    consent_id: str
    map_key: bytes
    ends: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[str] = ..., issued_at_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., consent_id: _Optional[str] = ..., map_key: _Optional[bytes] = ..., ends: _Optional[str] = ...) -> None: ...

class BreakGlassReview(_message.Message):
    __slots__ = ("event_index", "outcome", "notes", "issued_at_ms", "nonce")
    EVENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    event_index: int
    outcome: str
    notes: str
    issued_at_ms: int
    nonce: bytes
    def __init__(self, event_index: _Optional[int] = ..., outcome: _Optional[str] = ..., notes: _Optional[str] = ..., issued_at_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class StateCommit(_message.Message):
    __slots__ = ("map_root", "batch_time_ms", "issued_at_ms", "nonce", "map_vrf_public_key")
    MAP_ROOT_FIELD_NUMBER: _ClassVar[int]
    BATCH_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    MAP_VRF_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    map_root: bytes
    batch_time_ms: int
    issued_at_ms: int
    nonce: bytes
    map_vrf_public_key: bytes
    def __init__(self, map_root: _Optional[bytes] = ..., batch_time_ms: _Optional[int] = ..., issued_at_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., map_vrf_public_key: _Optional[bytes] = ...) -> None: ...
