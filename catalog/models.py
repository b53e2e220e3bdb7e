"""The catalog schema: products, classification jobs and the similar items of a job.

Alembic migrations in ``catalog/migrations`` create these tables; a change here
needs a new migration (``alembic revision --autogenerate``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    and_,
    func,
    select,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship

from catalog.codes import (
    CATEGORIES,
    OUT_OF_CATALOG,
    JobStatus,
    KeyScope,
    ModelState,
    ReclassifyMode,
    ReviewAnswer,
)
from catalog.embeddings import Embedding

JOB_STATUSES = tuple(status.value for status in JobStatus)
RECLASSIFY_MODES = tuple(mode.value for mode in ReclassifyMode)
KEY_SCOPES = tuple(scope.value for scope in KeyScope)
REVIEW_ANSWERS = tuple(answer.value for answer in ReviewAnswer)
MODEL_STATES = tuple(state.value for state in ModelState)


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join("'" + value.replace("'", "''") + "'" for value in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    pass


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC time: SQLite hands back naive datetimes, and every
    time stored here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class Product(Base):
    """A catalog item and what the worker keeps of its photo. What a model said of the
    photo is a ``ProductPrediction`` per model version."""

    __tablename__ = "products"
    __table_args__ = (
        Index("ix_products_category_stock", "category", "stock_quantity"),
        Index("ix_products_category_updated", "category", "updated_at"),
        CheckConstraint(_in("category", CATEGORIES), name="ck_products_category"),
        CheckConstraint(
            _in("reviewed_category", (*CATEGORIES, OUT_OF_CATALOG)),
            name="ck_products_reviewed_category",
        ),
        CheckConstraint("stock_quantity >= 0", name="ck_products_stock_nonnegative"),
        CheckConstraint("price >= 0", name="ck_products_price_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(32), index=True)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    stock_quantity: Mapped[int] = mapped_column(Integer, default=0)
    image_key: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=func.now()
    )
    #: What the model needs of the photo, kept so that a new model re-classifies the
    #: catalog without fetching or decoding a photo again: the 28×28 uint8 input
    #: (784 bytes), its busy-background flag, the ``image_key`` and content sha256 it
    #: was made from, and the preprocessing version that made it. Valid while the
    #: key and the version are unchanged (a changed photo gets a new key).
    model_input: Mapped[bytes | None] = mapped_column(LargeBinary)
    model_input_busy: Mapped[bool | None]
    model_input_key: Mapped[str | None] = mapped_column(String(512))
    model_input_sha256: Mapped[str | None] = mapped_column(String(64))
    preprocess_version: Mapped[int | None] = mapped_column(Integer)
    #: The version tag (S3 ETag) ``image_key`` had when a worker last read it, ``None``
    #: if it was missing: a nightly run compares it with a bucket listing to find
    #: the photos that changed (``worker.service.changes``).
    photo_etag: Mapped[str | None] = mapped_column(String(128))
    #: What a reviewer said ``image_key`` shows (one of ``CATEGORIES`` or
    #: ``OUT_OF_CATALOG``; the latest answer wins); the audit takes it over the
    #: model's prediction. Cleared when the photo changes.
    reviewed_category: Mapped[str | None] = mapped_column(String(32))

    @hybrid_property
    def in_stock(self) -> bool:
        """What callers are shown and similar items are filtered by (SQL on the class)."""
        return self.stock_quantity > 0


class ApiKey(Base):
    """A caller of the HTTP API. Only a SHA-256 of the key is kept: keys are 256
    random bits, so a fast hash is as safe as a slow one and costs a microsecond per
    request. ``webhook_secret`` signs the callbacks of this key's jobs."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(_in("scope", KEY_SCOPES), name="ck_api_keys_scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    webhook_secret: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16), default=KeyScope.BACKEND.value)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ProductPrediction(Base):
    """What one model version said of one product's photo: a row per (product, version).

    Several versions' outputs live side by side, so a candidate model can fill its
    catalog while the live one keeps answering with its own (docs/rollout.md).
    ``category`` is the product's, copied so that a partial HNSW index can be per
    (version, category) (``catalog.vector_indexes``); ``upsert_product`` keeps it in step.
    """

    __tablename__ = "product_predictions"
    __table_args__ = (
        Index("ix_product_predictions_version_category", "model_version", "category"),
        CheckConstraint(_in("category", CATEGORIES), name="ck_product_predictions_category"),
    )

    product_id: Mapped[int] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), primary_key=True
    )
    model_version: Mapped[str] = mapped_column(String(100), primary_key=True)
    category: Mapped[str] = mapped_column(String(32))
    label: Mapped[int | None] = mapped_column(Integer)
    confidence: Mapped[float | None]
    #: The ten calibrated probabilities (4 decimals).
    probabilities: Mapped[list[float] | None] = mapped_column(JSON)
    #: L2-normalised, float16 (``catalog.embeddings``): ``halfvec`` on PostgreSQL.
    embedding: Mapped[bytes | None] = mapped_column(Embedding)
    classified_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    #: An error code (``catalog.codes.ErrorCode``) instead of a prediction.
    error: Mapped[str | None] = mapped_column(String(64))

    @property
    def predicted_category(self) -> str | None:
        return CATEGORIES[self.label] if self.label is not None else None


class ModelVersion(Base):
    """A model version the catalog knows: which one answers uploads is this table's
    one ``live`` row, not a setting, so a promote or a rollback is one UPDATE that
    every worker sees within ``FASHION_MODEL_REFRESH_SECONDS`` (docs/rollout.md).

    ``artifact`` says where its files are: ``bundled`` (the model shipped in the
    wheel, which every worker has) or a folder of the object store
    (``models/<version>/``), from which a worker loads it on first use.
    """

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(_in("state", MODEL_STATES), name="ck_model_versions_state"),
        # One live version at a time: a second promote racing the first fails here.
        Index(
            "uq_model_versions_one_live",
            "state",
            unique=True,
            postgresql_where=text("state = 'live'"),
            sqlite_where=text("state = 'live'"),
        ),
    )

    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    engine: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=ModelState.CANDIDATE.value)
    artifact: Mapped[str] = mapped_column(String(512))
    #: The model card (``model_card.json``) as registered.
    card: Mapped[dict] = mapped_column(JSON)
    #: Its embeddings' size, known once it has classified something.
    dimensions: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: When its similar-item indexes were built (PostgreSQL), after its fill.
    indexed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: When it last became live, and by whom; a rollback goes back to the version
    #: that was promoted before the live one.
    promoted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    promoted_by: Mapped[str | None] = mapped_column(String(100))
    retired_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: What ``fashion model stage`` measured on the serving host: each engine's
    #: images/s and whether it kept the card's parity bounds (``None``: not timed).
    engine_timings: Mapped[dict | None] = mapped_column(JSON)


class ShadowPrediction(Base):
    """What the staged candidate said of an upload the live version answered: its
    label, confidence, flag and top similar SKUs (``FASHION_SHADOW_SHARE`` of uploads)."""

    __tablename__ = "shadow_predictions"
    __table_args__ = (Index("ix_shadow_predictions_version", "model_version", "created_at"),)

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("classification_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    model_version: Mapped[str] = mapped_column(String(100), primary_key=True)
    label: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[float]
    uncertain: Mapped[bool]
    similar_skus: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def live_version_name():  # type: ignore[no-untyped-def]
    """SQL: the live version's name (a scalar subquery), so a reader joins a product
    to the live version's prediction in the same query."""
    return (
        select(ModelVersion.version)
        .where(ModelVersion.state == ModelState.LIVE.value)
        .scalar_subquery()
    )


#: What the live model version said of the product's photo (``None``: not yet
#: classified by it). Read-only; ``catalog.predictions`` writes the rows.
Product.live_prediction = relationship(
    ProductPrediction,
    primaryjoin=lambda: and_(
        foreign(ProductPrediction.product_id) == Product.id,
        ProductPrediction.model_version == live_version_name(),
    ),
    viewonly=True,
    uselist=False,
)


class ClassificationJob(Base):
    __tablename__ = "classification_jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="ck_jobs_status"),
        UniqueConstraint("api_key_id", "idempotency_key", name="uq_jobs_idempotency"),
        Index("ix_jobs_created_at", "created_at"),
        # The review page's queue of flagged uploads, newest first.
        Index(
            "ix_jobs_flagged",
            "created_at",
            postgresql_where=text("status = 'done' AND uncertain"),
            sqlite_where=text("status = 'done' AND uncertain"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    image_key: Mapped[str] = mapped_column(String(512))
    filename: Mapped[str | None] = mapped_column(String(255))
    content_sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value, index=True)
    label: Mapped[int | None] = mapped_column(Integer)
    confidence: Mapped[float | None]
    uncertain: Mapped[bool | None]
    #: The family of ``label`` (``catalog.codes.FAMILIES``: ``"footwear"``) or ``None``;
    #: ``uncertain`` judged the family's summed probability then.
    family: Mapped[str | None] = mapped_column(String(32))
    probabilities: Mapped[list[float] | None] = mapped_column(JSON)
    model_version: Mapped[str | None] = mapped_column(String(100))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Milliseconds per stage of a ``done`` upload (``catalog.codes.JOB_STAGES``):
    #: they add up to ``created_at`` → ``finished_at``.
    timings: Mapped[dict[str, float] | None] = mapped_column(JSON)
    #: Set when the sweeper queued the job again; cleared when a worker claims it.
    requeued_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Not started by then, the job ends ``failed`` with code ``expired``: the
    #: customer who uploaded it has left (``FASHION_JOB_DEADLINE_SECONDS``).
    deadline_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: The HTTP API key that submitted it (``None``: submitted from Python); a key
    #: sees only its own jobs.
    api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), index=True
    )
    #: The caller's ``Idempotency-Key``: the same key and bytes give the same job.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    #: Where the finished result is POSTed (``worker.service.webhooks``).
    callback_url: Mapped[str | None] = mapped_column(Text)

    similar_items: Mapped[list[SimilarItem]] = relationship(
        back_populates="job",
        cascade="all, delete-orphan",
        order_by="SimilarItem.rank",
    )

    @property
    def label_name(self) -> str | None:
        return CATEGORIES[self.label] if self.label is not None else None


class WebhookDelivery(Base):
    """One attempt to POST a finished job to its ``callback_url``."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("classification_jobs.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    delivered: Mapped[bool]
    attempted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SimilarItem(Base):
    __tablename__ = "similar_items"
    __table_args__ = (
        UniqueConstraint("job_id", "product_id", name="uq_similar_items_job_product"),
        CheckConstraint("rank >= 1", name="ck_similar_items_rank_positive"),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("classification_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"))
    score: Mapped[float]

    job: Mapped[ClassificationJob] = relationship(back_populates="similar_items")
    product: Mapped[Product] = relationship()


class ReclassifyRun(Base):
    """One bulk re-classification: which products it queued, for which model, since when.

    Progress is read from the products themselves: a product counts as done for
    this run once it carries ``model_version`` with ``classified_at`` at or after
    ``started_at``. ``not_before`` is the run's skip rule: a product already
    classified by ``model_version`` at or after ``not_before`` is skipped (``None``:
    skipped whenever it carries ``model_version`` — the ``stale`` mode).
    """

    __tablename__ = "reclassify_runs"
    __table_args__ = (CheckConstraint(_in("mode", RECLASSIFY_MODES), name="ck_runs_mode"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(100), index=True)
    not_before: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    total: Mapped[int] = mapped_column(Integer)
    chunk_size: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(32), default="cli")
    #: Why its products were queued: counts by reason (``changed`` runs: new,
    #: changed photo, other model, …); ``None`` for ``all`` and ``stale`` runs.
    reasons: Mapped[dict[str, int] | None] = mapped_column(JSON)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Review(Base):
    """One reviewer's answer about one photo: a flagged upload (``job_id``) or a
    catalog product (``product_id``). One answer per item per reviewer; a product's
    answer holds for the photo it was given on (``image_key``).

    A job's reviews go when the job goes (``DELETE``, retention): the export reads
    the photo through the job, so an erased upload is never exported.
    """

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint(_in("answer", REVIEW_ANSWERS), name="ck_reviews_answer"),
        CheckConstraint("(job_id IS NULL) <> (product_id IS NULL)", name="ck_reviews_one_item"),
        CheckConstraint(
            "(answer = 'label') = (label IS NOT NULL)", name="ck_reviews_label_with_answer"
        ),
        UniqueConstraint("job_id", "reviewer_id", name="uq_reviews_job_reviewer"),
        UniqueConstraint("product_id", "image_key", "reviewer_id", name="uq_reviews_product"),
        Index("ix_reviews_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("classification_jobs.id", ondelete="CASCADE"), index=True
    )
    product_id: Mapped[int | None] = mapped_column(
        ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    #: The photo the answer is about (the job's or the product's at the time).
    image_key: Mapped[str] = mapped_column(String(512))
    reviewer_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), index=True
    )
    reviewer_name: Mapped[str] = mapped_column(String(100))
    answer: Mapped[str] = mapped_column(String(16))
    #: The category the reviewer chose (``answer == "label"``).
    label: Mapped[int | None] = mapped_column(Integer)
    #: What the model said when the answer was given: agreement is measured on it.
    model_label: Mapped[int | None] = mapped_column(Integer)
    model_version: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewSession(Base):
    """A reviewer logged in to the review page. The browser holds a random token in
    an HttpOnly cookie; only its SHA-256 is kept, with the session's CSRF token."""

    __tablename__ = "review_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
