from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Checkpoint(_message.Message):
    __slots__ = ("note",)
    NOTE_FIELD_NUMBER: _ClassVar[int]
    note: bytes
    def __init__(self, note: _Optional[bytes] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("index", "leaf", "envelope", "body_erased", "erased_by_index")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    BODY_ERASED_FIELD_NUMBER: _ClassVar[int]
    ERASED_BY_INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    leaf: bytes
    envelope: bytes
    body_erased: bool
    erased_by_index: int
    def __init__(self, index: _Optional[int] = ..., leaf: _Optional[bytes] = ..., envelope: _Optional[bytes] = ..., body_erased: _Optional[bool] = ..., erased_by_index: _Optional[int] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("envelope",)
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    def __init__(self, envelope: _Optional[bytes] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("index", "duplicate", "leaf", "checkpoint", "inclusion_proof")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    index: int
    duplicate: bool
    leaf: bytes
    checkpoint: Checkpoint
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, index: _Optional[int] = ..., duplicate: _Optional[bool] = ..., leaf: _Optional[bytes] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetEntryRequest(_message.Message):
    __slots__ = ("index",)
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    def __init__(self, index: _Optional[int] = ...) -> None: ...

class GetEntryResponse(_message.Message):
    __slots__ = ("entry", "checkpoint", "inclusion_proof")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    entry: Entry
    checkpoint: Checkpoint
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, entry: _Optional[_Union[Entry, _Mapping]] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetEntriesRequest(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class InclusionProof(_message.Message):
    __slots__ = ("hashes",)
    HASHES_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetEntriesResponse(_message.Message):
    __slots__ = ("entries", "checkpoint", "proofs", "map_vrf_proofs")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    PROOFS_FIELD_NUMBER: _ClassVar[int]
    MAP_VRF_PROOFS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    checkpoint: Checkpoint
    proofs: _containers.RepeatedCompositeFieldContainer[InclusionProof]
    map_vrf_proofs: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., proofs: _Optional[_Iterable[_Union[InclusionProof, _Mapping]]] = ..., map_vrf_proofs: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint", "witnessed_checkpoint", "witnessed_consistency")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    WITNESSED_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    WITNESSED_CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    checkpoint: Checkpoint
    witnessed_checkpoint: Checkpoint
    witnessed_consistency: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., witnessed_checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., witnessed_consistency: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("index", "leaf_hash", "tree_size")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    index: int
    leaf_hash: bytes
    tree_size: int
    def __init__(self, index: _Optional[int] = ..., leaf_hash: _Optional[bytes] = ..., tree_size: _Optional[int] = ...) -> None: ...

class GetInclusionProofResponse(_message.Message):
    __slots__ = ("index", "tree_size", "hashes")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    index: int
    tree_size: int
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, index: _Optional[int] = ..., tree_size: _Optional[int] = ..., hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("first", "second")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    first: int
    second: int
    def __init__(self, first: _Optional[int] = ..., second: _Optional[int] = ...) -> None: ...

class GetConsistencyProofResponse(_message.Message):
    __slots__ = ("hashes",)
    HASHES_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...
