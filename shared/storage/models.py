"""SQLModel tables: the per-user event log, cursors, membership, dedupe keys."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Text
from sqlmodel import Field, SQLModel

# The layout these tables describe. A database written by another layout is
# refused at start (ssehub.storage.db.create_schema) instead of failing mid-batch.
SCHEMA_VERSION = 2


class SchemaRow(SQLModel, table=True):
    __tablename__ = "ssehub_schema"
    version: int = Field(primary_key=True)


class DeploymentRow(SQLModel, table=True):
    """The store's deployment id, made once, by whichever process comes first
    (``slot`` is always 1, so a second insert conflicts); RabbitMQ holds the
    same id (ssehub.storage.identity). Created on databases of schema 2 too."""

    __tablename__ = "ssehub_deployment"
    slot: int = Field(primary_key=True)
    deployment: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: float = Field(nullable=False)


class EventRow(SQLModel, table=True):
    """One stored event of one user: the source of truth for replay."""

    __tablename__ = "ssehub_event"
    user_id: str = Field(sa_column=Column(String(128), primary_key=True))
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    sse: str = Field(sa_column=Column(Text, nullable=False))
    key: str | None = Field(default=None, sa_column=Column(String(255), nullable=True))
    created_at: float = Field(nullable=False)
    # The event asked for a receipt: edges publish one when they first write it.
    receipt: bool = Field(default=False, nullable=False)

    __table_args__ = (
        Index("ix_ssehub_event_key", "key"),
        Index("ix_ssehub_event_created", "created_at"),
    )


class UserCursor(SQLModel, table=True):
    """``last_seq``: the user's latest sequence number. ``floor_seq``: the
    highest one pruned away; a Last-Event-ID below it cannot be honoured.
    ``revoked_before``: tokens of the user issued before it are refused (a
    ``control`` revoke); cleared by retention once no such token can be valid."""

    __tablename__ = "ssehub_user"
    user_id: str = Field(sa_column=Column(String(128), primary_key=True))
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    floor_seq: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    revoked_before: float | None = Field(default=None, nullable=True)


class Member(SQLModel, table=True):
    __tablename__ = "ssehub_member"
    conversation_id: str = Field(sa_column=Column(String(128), primary_key=True))
    user_id: str = Field(sa_column=Column(String(128), primary_key=True))

    __table_args__ = (Index("ix_ssehub_member_user", "user_id"),)


class DedupeKey(SQLModel, table=True):
    """Idempotency keys seen within the dedupe window."""

    __tablename__ = "ssehub_dedupe"
    key: str = Field(sa_column=Column(String(255), primary_key=True))
    created_at: float = Field(nullable=False, index=True)


class RedeliveryRow(SQLModel, table=True):
    """How often a message came back without being handled (classic queues
    keep no count; quorum queues do): the dispatcher's redelivery backstop.
    Created on databases of schema 2 too."""

    __tablename__ = "ssehub_redelivery"
    fingerprint: str = Field(sa_column=Column(String(64), primary_key=True))
    deliveries: int = Field(nullable=False)
    last_at: float = Field(nullable=False)


class PresenceRow(SQLModel, table=True):
    """A user has at least one open stream on this edge node."""

    __tablename__ = "ssehub_presence"
    user_id: str = Field(sa_column=Column(String(128), primary_key=True))
    node_id: str = Field(sa_column=Column(String(255), primary_key=True))

    __table_args__ = (Index("ix_ssehub_presence_node", "node_id"),)


class NodeRow(SQLModel, table=True):
    """An edge node and when it last said it is alive."""

    __tablename__ = "ssehub_node"
    node_id: str = Field(sa_column=Column(String(255), primary_key=True))
    last_seen: float = Field(nullable=False)


class OnlineRow(SQLModel, table=True):
    """Users announced online; ``offline_since`` starts the grace period."""

    __tablename__ = "ssehub_online"
    user_id: str = Field(sa_column=Column(String(128), primary_key=True))
    offline_since: float | None = Field(default=None, nullable=True)
