"""The database schema of one log, as SQLAlchemy Core tables in one MetaData.

The tree is kept as tiles (docs/design.md section 2) and the envelope bodies beside it (section 3):

- ``leaves``: one row per entry: the leaf bytes (a commitment, no health data), its RFC 6962 leaf hash and the
  SHA-256 of the envelope, each unique; looked up by index, by leaf hash and by envelope hash (dedup).
- ``bodies``: the envelope bytes by index; ``envelope`` is NULL once erased, with the reason kept.
- ``tiles``: tile rows of up to 256 hashes, keyed by (tile level, tile index); a partial tile is overwritten as
  it grows; a full tile also keeps its interior hashes.
- ``checkpoints``: every published signed checkpoint, keyed by tree size.

The schema is created and changed only by the Alembic migrations in ``migrations/versions``; a test checks that
the migrated database matches this MetaData on every backend. Later features add their tables to ``metadata``
(and a migration); :class:`~consent_ledger.storage.sql.SqlLogStore` then writes rows into them through
``IntegrationBatch.extra`` in the same transaction as the batch. Put ``info={UPSERT: True}`` on such a table to
have its rows inserted or, when the primary key exists, updated.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql

__all__ = [
    "BODY",
    "CORE_TABLES",
    "HASH",
    "UPSERT",
    "access_events",
    "bodies",
    "checkpoints",
    "consents",
    "leaves",
    "metadata",
    "parties",
    "tiles",
]

# Names of constraints and indexes do not depend on the backend, so migrations and comparisons agree.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# A SHA-256 hash. MySQL and MariaDB cannot put a unique index on a BLOB, so it is VARBINARY(32) there;
# BYTEA on PostgreSQL, BLOB on SQLite.
HASH = LargeBinary().with_variant(mysql.VARBINARY(32), "mysql", "mariadb")

# An envelope body, capped at 64 KiB by the API: a MySQL BLOB holds 65,535 bytes at most, so MEDIUMBLOB there.
BODY = LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")

# Set ``info={UPSERT: True}`` on an extra table whose rows replace existing rows with the same primary key.
UPSERT = "consent_ledger.upsert"

# InnoDB and utf8mb4 whatever the server's defaults are.
_MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}

leaves = Table(
    "leaves",
    metadata,
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    Column("leaf_hash", HASH, nullable=False),
    Column("leaf", LargeBinary, nullable=False),
    Column("envelope_sha256", HASH, nullable=False),
    Column("payload_type", String(128), nullable=False),
    Column("integrated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("idx"),
    UniqueConstraint("leaf_hash"),
    UniqueConstraint("envelope_sha256"),
    **_MYSQL,
)

# No foreign key to leaves: a body is written in the same transaction as its leaf, and the key would only cost.
bodies = Table(
    "bodies",
    metadata,
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    Column("envelope", BODY, nullable=True),
    Column("erased_reason", Text, nullable=True),
    PrimaryKeyConstraint("idx"),
    **_MYSQL,
)

tiles = Table(
    "tiles",
    metadata,
    Column("level", Integer, nullable=False, autoincrement=False),
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    Column("hashes", LargeBinary, nullable=False),
    # A full tile's interior hashes (core.tiles.tile_interior: levels 1..8 of its subtree, 255 hashes), so a proof
    # that reads a full tile from storage hashes nothing (docs/storage.md "Tiles"); NULL for a partial tile and for
    # tiles written before migration 0011, which are hashed when read.
    Column("interior", LargeBinary, nullable=True),
    PrimaryKeyConstraint("level", "idx"),
    **_MYSQL,
)

# The signed note is UTF-8 text but is kept as bytes: what was signed comes back byte for byte, whatever the
# connection's character set.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("size", BigInteger, nullable=False, autoincrement=False),
    Column("root_hash", HASH, nullable=False),
    Column("note", LargeBinary, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("size"),
    **_MYSQL,
)

CORE_TABLES = frozenset({"leaves", "bodies", "tiles", "checkpoints"})

# --- consent index (written with each batch through IntegrationBatch.extra; migration 0002) -----------------
# Look-up tables over the log's consent entries, so an access check or a patient's view reads a few rows by
# index instead of scanning the log. Each row points at its entry by index; the entry itself stays the evidence.

# Grants and revocations. For a grant, consent_id is its own id, grantee its selector and target the consent it
# supersedes; for a revocation, consent_id is the revocation's id, target the revoked consent and grantee the
# revoked grant's selector (so revocations that concern a grantee are found by selector too).
consents = Table(
    "consents",
    metadata,
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    Column("patient", HASH, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("consent_id", String(64), nullable=False),
    Column("grantee", String(80), nullable=True),
    Column("target", String(64), nullable=True),
    Column("integrated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("idx"),
    Index(None, "patient", "grantee"),
    Index(None, "consent_id"),
    Index(None, "target"),
    **_MYSQL,
)

# Party registrations: the latest one for a party id is in force.
parties = Table(
    "parties",
    metadata,
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    Column("party_id", String(64), nullable=False),
    Column("roles", String(255), nullable=False),
    PrimaryKeyConstraint("idx"),
    Index(None, "party_id"),
    **_MYSQL,
)

# Access events by patient, for the patient's "who asked" view.
access_events = Table(
    "access_events",
    metadata,
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    Column("patient", HASH, nullable=False),
    Column("party_id", String(64), nullable=False),
    PrimaryKeyConstraint("idx"),
    Index(None, "patient", "idx"),
    **_MYSQL,
)

# --- consent-state map (docs/design.md section 5; written with each batch through IntegrationBatch.extra; migration 0003)
# The sparse Merkle map's nodes by position (consent_ledger.core.smt: node_path is the key's first `depth` bits,
# a 1 bit, then 0 bits to the byte's end, 1 to 33 bytes). A branch row holds its children's hashes (left_hash,
# right_hash), a leaf row its pair (leaf_key, value_hash). A position that no longer holds a node is overwritten
# with all four columns NULL, so a batch only ever upserts (see consent_ledger.storage.map_store).

# A map node position: up to 33 bytes, so VARBINARY(33) on MySQL and MariaDB (a BLOB cannot be a primary key).
MAP_PATH = LargeBinary().with_variant(mysql.VARBINARY(33), "mysql", "mariadb")

map_nodes = Table(
    "map_nodes",
    metadata,
    Column("path", MAP_PATH, nullable=False),
    Column("left_hash", HASH, nullable=True),
    Column("right_hash", HASH, nullable=True),
    Column("leaf_key", HASH, nullable=True),
    Column("value_hash", HASH, nullable=True),
    PrimaryKeyConstraint("path"),
    info={UPSERT: True},
    **_MYSQL,
)

__all__ += ["MAP_PATH", "map_nodes"]

# --- state commits (migration 0004) -------------------------------------------------------------------------
# Where the StateCommit entries are, so start-up finds the latest one with one indexed read.
state_commits = Table(
    "state_commits",
    metadata,
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    Column("map_root", HASH, nullable=False),
    Column("batch_time_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("idx"),
    **_MYSQL,
)
__all__ += ["state_commits"]

# --- delegations (migration 0005) ---------------------------------------------------------------------------
# Delegation entries by (patient, delegate), so "may this key sign for this patient?" reads a few rows. The
# entry itself holds the terms (scope, validity, majority date, attesting organisation); its revocations are
# consents rows whose target is delegation_id. Each delegation also has a consents row (kind "delegation"), so
# it shows in the patient's listing and is found by id.
delegations = Table(
    "delegations",
    metadata,
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    Column("patient", HASH, nullable=False),
    Column("delegate", HASH, nullable=False),
    Column("delegation_id", String(64), nullable=False),
    Column("integrated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("idx"),
    Index(None, "patient", "delegate"),
    **_MYSQL,
)
__all__ += ["delegations"]

# --- break-glass review queue and erasures (migration 0006) ------------------------------------------------
# Break-glass accesses (AccessEvents with break_glass set whose decision permitted something), for the privacy
# officer's review queue.
break_glass_events = Table(
    "break_glass_events",
    metadata,
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    Column("patient", HASH, nullable=False),
    Column("party_id", String(64), nullable=False),
    Column("integrated_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("idx"),
    **_MYSQL,
)

# The review of each reviewed break-glass event: event_idx is the event's index, idx the BreakGlassReview entry's.
# One review per event (the primary key); the ledger indexes only the first.
break_glass_reviews = Table(
    "break_glass_reviews",
    metadata,
    Column("event_idx", BigInteger, nullable=False, autoincrement=False),
    Column("idx", BigInteger, nullable=False),
    Column("outcome", String(32), nullable=False),
    PrimaryKeyConstraint("event_idx"),
    UniqueConstraint("idx"),
    **_MYSQL,
)

# Erased bodies: idx is the entry whose body was erased, erasure_idx the Erasure entry recording it. Written in the
# same transaction that sets the body to NULL (IntegrationBatch.erasures).
erasures = Table(
    "erasures",
    metadata,
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    Column("erasure_idx", BigInteger, nullable=False),
    PrimaryKeyConstraint("idx"),
    UniqueConstraint("erasure_idx"),
    **_MYSQL,
)
__all__ += ["break_glass_events", "break_glass_reviews", "erasures"]

# --- signed-request nonces (migration 0007) -------------------------------------------------------------
# Every (signer key, nonce) pair of a signed request accepted within the freshness window, shared by every server
# process on the database so that neither a restart nor another replica accepts a replay (docs/design.md section 7). The
# primary key makes claiming a nonce atomic; rows are deleted once expired (expires_ms, in ms since the epoch).
request_nonces = Table(
    "request_nonces",
    metadata,
    Column("signer", HASH, nullable=False),
    Column("nonce", HASH, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("signer", "nonce"),
    Index(None, "expires_ms"),
    **_MYSQL,
)
__all__ += ["request_nonces"]

# --- signers (migration 0008) --------------------------------------------------------------------
# Every key that signed an entry, with the first entry it signed (StateCommits aside: only the log key signs
# them). An attested delegation is refused once its patient key is here (core.delegation.check_attestation).
# Upserted, so a key written twice (a batch replayed after a lost COMMIT) is no conflict.
signers = Table(
    "signers",
    metadata,
    Column("signer", HASH, nullable=False),
    Column("idx", BigInteger, nullable=False, autoincrement=False),
    PrimaryKeyConstraint("signer"),
    info={UPSERT: True},
    **_MYSQL,
)
__all__ += ["signers"]

# --- witnessed checkpoint (migration 0009) ------------------------------------------------------------------
# The newest checkpoint that collected cosignatures from a quorum of the configured witnesses: the log's signed
# note with those cosignature lines (app.witnessing), so a restart serves it. One row (id 1), replaced by larger sizes.
witnessed_checkpoint = Table(
    "witnessed_checkpoint",
    metadata,
    Column("id", BigInteger, nullable=False, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("note", LargeBinary, nullable=False),
    PrimaryKeyConstraint("id"),
    **_MYSQL,
)
__all__ += ["witnessed_checkpoint"]

# The sequencer lease (storage/lease.py): the one replica that integrates (``holder``, reachable at ``address``),
# until ``expires_ms`` unless renewed, and its fencing token, which only grows; every integration transaction of a
# replica updates this row where the token is still its own (``commits`` counts them), or writes nothing. One row
# (id 1).
sequencer_lease = Table(
    "sequencer_lease",
    metadata,
    Column("id", BigInteger, nullable=False, autoincrement=False),
    Column("holder", String(128), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("address", String(255), nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("commits", BigInteger, nullable=False),
    PrimaryKeyConstraint("id"),
    **_MYSQL,
)
__all__ += ["sequencer_lease"]
