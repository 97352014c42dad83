from consent_ledger.v1 import access_pb2 as _access_pb2
from consent_ledger.v1 import log_pb2 as _log_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListConsentsRequest(_message.Message):
    __slots__ = ("patient", "page_size", "page_token", "time_ms")
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    patient: bytes
    page_size: int
    page_token: str
    time_ms: int
    def __init__(self, patient: _Optional[bytes] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., time_ms: _Optional[int] = ...) -> None: ...

class ConsentState(_message.Message):
    __slots__ = ("consent_id", "state", "ended_by_index", "ended")
    CONSENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENDED_BY_INDEX_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    consent_id: str
    state: str
    ended_by_index: int
    ended: bool
    def __init__(self, consent_id: _Optional[str] = ..., state: _Optional[str] = ..., ended_by_index: _Optional[int] = ..., ended: _Optional[bool] = ...) -> None: ...

class ListConsentsResponse(_message.Message):
    __slots__ = ("checkpoint", "entries", "states", "related", "time_ms", "next_page_token")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    RELATED_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    checkpoint: _log_pb2.Checkpoint
    entries: _containers.RepeatedCompositeFieldContainer[_access_pb2.EvidenceEntry]
    states: _containers.RepeatedCompositeFieldContainer[ConsentState]
    related: _containers.RepeatedCompositeFieldContainer[_access_pb2.EvidenceEntry]
    time_ms: int
    next_page_token: str
    def __init__(self, checkpoint: _Optional[_Union[_log_pb2.Checkpoint, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[_access_pb2.EvidenceEntry, _Mapping]]] = ..., states: _Optional[_Iterable[_Union[ConsentState, _Mapping]]] = ..., related: _Optional[_Iterable[_Union[_access_pb2.EvidenceEntry, _Mapping]]] = ..., time_ms: _Optional[int] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListAccessEventsRequest(_message.Message):
    __slots__ = ("patient", "page_size", "page_token")
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    patient: bytes
    page_size: int
    page_token: str
    def __init__(self, patient: _Optional[bytes] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAccessEventsResponse(_message.Message):
    __slots__ = ("checkpoint", "entries", "next_page_token", "reviews")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVIEWS_FIELD_NUMBER: _ClassVar[int]
    checkpoint: _log_pb2.Checkpoint
    entries: _containers.RepeatedCompositeFieldContainer[_access_pb2.EvidenceEntry]
    next_page_token: str
    reviews: _containers.RepeatedCompositeFieldContainer[_access_pb2.EvidenceEntry]
    def __init__(self, checkpoint: _Optional[_Union[_log_pb2.Checkpoint, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[_access_pb2.EvidenceEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., reviews: _Optional[_Iterable[_Union[_access_pb2.EvidenceEntry, _Mapping]]] = ...) -> None: ...

class ListBreakGlassReviewsRequest(_message.Message):
    __slots__ = ("unreviewed_only", "page_size", "page_token")
    UNREVIEWED_ONLY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    unreviewed_only: bool
    page_size: int
    page_token: str
    def __init__(self, unreviewed_only: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class BreakGlassReviewItem(_message.Message):
    __slots__ = ("event", "review")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    REVIEW_FIELD_NUMBER: _ClassVar[int]
    event: _access_pb2.EvidenceEntry
    review: _access_pb2.EvidenceEntry
    def __init__(self, event: _Optional[_Union[_access_pb2.EvidenceEntry, _Mapping]] = ..., review: _Optional[_Union[_access_pb2.EvidenceEntry, _Mapping]] = ...) -> None: ...

class ListBreakGlassReviewsResponse(_message.Message):
    __slots__ = ("checkpoint", "items", "next_page_token")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    checkpoint: _log_pb2.Checkpoint
    items: _containers.RepeatedCompositeFieldContainer[BreakGlassReviewItem]
    next_page_token: str
    def __init__(self, checkpoint: _Optional[_Union[_log_pb2.Checkpoint, _Mapping]] = ..., items: _Optional[_Iterable[_Union[BreakGlassReviewItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchPatientRequest(_message.Message):
    __slots__ = ("patient",)
    PATIENT_FIELD_NUMBER: _ClassVar[int]
    patient: bytes
    def __init__(self, patient: _Optional[bytes] = ...) -> None: ...

class WatchRevocationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("checkpoint", "entry")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    checkpoint: _log_pb2.Checkpoint
    entry: _access_pb2.EvidenceEntry
    def __init__(self, checkpoint: _Optional[_Union[_log_pb2.Checkpoint, _Mapping]] = ..., entry: _Optional[_Union[_access_pb2.EvidenceEntry, _Mapping]] = ...) -> None: ...
