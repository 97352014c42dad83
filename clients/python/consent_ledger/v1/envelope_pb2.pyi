from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("payload", "payload_type", "signatures")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    payload_type: str
    signatures: _containers.RepeatedCompositeFieldContainer[Signature]
    def __init__(self, payload: _Optional[bytes] = ..., payload_type: _Optional[str] = ..., signatures: _Optional[_Iterable[_Union[Signature, _Mapping]]] = ...) -> None: ...

class Signature(_message.Message):
    __slots__ = ("sig", "keyid")
    SIG_FIELD_NUMBER: _ClassVar[int]
    KEYID_FIELD_NUMBER: _ClassVar[int]
    sig: bytes
    keyid: str
    def __init__(self, sig: _Optional[bytes] = ..., keyid: _Optional[str] = ...) -> None: ...

class LogLeaf(_message.Message):
    __slots__ = ("integrated_time_ms", "payload_type", "envelope_sha256")
    INTEGRATED_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_SHA256_FIELD_NUMBER: _ClassVar[int]
    integrated_time_ms: int
    payload_type: str
    envelope_sha256: bytes
    def __init__(self, integrated_time_ms: _Optional[int] = ..., payload_type: _Optional[str] = ..., envelope_sha256: _Optional[bytes] = ...) -> None: ...
