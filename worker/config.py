"""All settings, read from ``FASHION_*`` environment variables, defaults in one place.

The embedded defaults need no server: the catalog is a SQLite file, objects live
in a local folder and Celery talks through kombu's filesystem transport, all
under ``FASHION_DATA_DIR``. Production sets ``FASHION_BROKER_URL=redis://…``,
``FASHION_DATABASE_URL=postgresql+psycopg://…`` and
``FASHION_STORAGE_URL=s3://bucket/prefix`` (plus ``FASHION_S3_ENDPOINT_URL`` for
MinIO or another S3-compatible server). One variable is not ours and keeps its
name: ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's). Nothing else in the code
base reads ``os.environ``; boto3 still finds AWS credentials its usual way when
``FASHION_S3_ACCESS_KEY_ID`` is unset.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "fashion"


#: Which artifact of a model runs: ``float`` (``model.tflite``) or one of its quantized
#: forms (``QUANTIZED_ENGINES``).
ModelEngine = Literal["float", "int8", "dynamic"]
#: Every engine ``FASHION_MODEL_ENGINE`` accepts (one list: the setting's type).
ENGINES: tuple[str, ...] = get_args(ModelEngine)
#: Quantized artifacts a card may list beside ``model.tflite``, each under its own key:
#: ``int8``, full-integer (weights and activations calibrated int8); ``dynamic``,
#: dynamic-range (weights int8, activations quantized per batch at run time).
QUANTIZED_ENGINES = tuple(engine for engine in ENGINES if engine != "float")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FASHION_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        DEFAULT_DATA_DIR, description="Folder for the embedded SQLite, objects and broker."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file in the data dir."
    )
    broker_url: str | None = Field(
        None, description="Celery broker URL; default: kombu filesystem transport."
    )
    storage_url: str | None = Field(
        None, description="file:///dir or s3://bucket/prefix; default: data_dir/objects."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto); unset for AWS."
    )
    s3_region: str = Field("us-east-1", description="Region sent to the S3 endpoint.")
    s3_access_key_id: SecretStr | None = Field(
        None, description="S3 access key; unset: boto3's credential chain."
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret key; unset: boto3's credential chain."
    )
    model_uri: Path | None = Field(
        None,
        description="A .tflite file with model_card.json beside it; default: the bundled one. "
        "It registers itself on a catalog's first start: live when no version is, else a "
        "candidate (which version answers uploads is the registry's live row).",
    )
    model_engine: ModelEngine | None = Field(
        None,
        description=(
            "Which artifact of the model runs: float (model.tflite), int8 (its "
            "full-integer quantization) or dynamic (its dynamic-range quantization: "
            "int8 weights); default: the model card's default_engine."
        ),
    )
    uncertain_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "Confidence below which a result on a product-style image (plain background) "
            "is uncertain; default: the model card's."
        ),
    )
    photo_uncertain_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "Confidence below which a result on a photo with a busy background is "
            "uncertain; default: the model card's photo threshold."
        ),
    )
    mnist_dir: Path | None = Field(
        None, description="Folder with the four Fashion-MNIST IDX .gz files (training only)."
    )
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest accepted upload.")
    inline_photo_bytes: int = Field(
        256 * 1024,
        ge=0,
        le=1024 * 1024,
        description="Uploads up to this size travel in their queue message too, so the "
        "worker skips fetching them from storage (which still keeps the photo); 0: never.",
    )
    max_image_pixels: int = Field(
        40_000_000, gt=0, description="Largest accepted width × height, checked before decoding."
    )
    similar_top_k: int = Field(5, ge=1, le=100, description="Similar items recorded per job.")
    similar_ef_search: int = Field(
        100,
        ge=10,
        le=1000,
        description="PostgreSQL: HNSW candidate list per similar-item lookup (recall vs time).",
    )
    inference_threads: int = Field(1, ge=1, description="LiteRT interpreter threads per process.")
    bulk_nice: int = Field(
        10,
        ge=0,
        le=19,
        description=(
            "Niceness of a worker that consumes only the bulk queue (its pool inherits it), "
            "so uploads come first where both kinds share cores; 0: off."
        ),
    )
    fetch_threads: int = Field(
        8, ge=1, le=64, description="Concurrent photo fetches per bulk chunk (and S3 pool size)."
    )
    reclassify_cron: str = Field(
        "0 2 * * *",
        description="When beat starts the nightly re-classification (crontab, UTC); '' disables.",
    )
    reclassify_nightly_mode: str = Field(
        "changed",
        pattern="^(all|stale|changed)$",
        description=(
            "What the nightly run re-classifies: 'changed' (new and changed photos, "
            "products of another model), 'stale' or 'all'."
        ),
    )
    model_check_seconds: float = Field(
        300,
        gt=0,
        description="How often beat registers a newly configured model as a candidate, "
        "fills it and builds the indexes of a candidate whose fill is complete.",
    )
    shadow_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of uploads the staged candidate model classifies too, after the "
        "live answer is committed (fashion model list compares them); 0 turns it off.",
    )
    model_refresh_seconds: float = Field(
        5,
        gt=0,
        le=60,
        description="How often a worker re-reads which model version is live: a promote "
        "or a rollback reaches every worker within this.",
    )
    batch_max_size: int = Field(
        16, ge=1, le=256, description="Most uploads one interactive micro-batch holds."
    )
    batch_max_wait_ms: float = Field(
        2.0,
        gt=0,
        le=1000,
        description="Longest an upload waits for its micro-batch to fill (with "
        "FASHION_BATCH_EAGER, only while every pool process is busy).",
    )
    batch_eager: bool = Field(
        True,
        description="An upload that finds a pool process free starts at once; those that "
        "arrive while every process is busy share the next batch.",
    )
    interactive_queue: str = Field("interactive", description="Queue for single uploads.")
    bulk_queue: str = Field("bulk", description="Queue for bulk re-classification.")
    webhook_queue: str = Field("webhooks", description="Queue for result callbacks (webhooks).")
    job_deadline_seconds: float = Field(
        60,
        ge=0,
        description=(
            "An upload not started this many seconds after it was submitted ends failed "
            "with code 'expired' (its customer has left); 0: no deadline."
        ),
    )
    api_max_queue_depth: int = Field(
        1000,
        ge=1,
        description="HTTP API: answer 429 (Retry-After) while more uploads than this wait.",
    )
    api_rate_limit: int = Field(
        600, ge=0, description="HTTP API: requests per minute per API key; 0: no limit."
    )
    api_docs: bool = Field(
        False,
        description=(
            "HTTP API: serve /docs and /redoc (their scripts load from a CDN, so they show "
            "nothing on a machine without internet); /openapi.json is always served."
        ),
    )
    webhook_timeout: float = Field(
        5, gt=0, description="Seconds one webhook POST may take (connect and read)."
    )
    webhook_max_attempts: int = Field(
        8, ge=1, description="Attempts to deliver one webhook (exponential backoff between)."
    )
    webhook_concurrency: int = Field(
        8,
        ge=1,
        le=256,
        description=(
            "Webhook deliveries at once per worker (threads of the webhook pool, apart "
            "from the processes that classify uploads)."
        ),
    )
    webhook_allow_private: bool = Field(
        False,
        description=(
            "Allow callback URLs on loopback or private addresses (tests, a backend on "
            "the same network); off: refused, so a caller cannot make us reach inside."
        ),
    )
    retention_days: float = Field(
        30,
        ge=0,
        description="Uploads and their jobs older than this are erased by beat; 0: kept.",
    )
    purge_cron: str = Field(
        "30 3 * * *", description="When beat erases expired uploads (crontab, UTC); '' disables."
    )
    s3_timeout: float = Field(
        10, gt=0, description="Connect and read timeout of one S3 request, in seconds."
    )
    s3_max_attempts: int = Field(
        3, ge=1, description="Attempts per S3 request (botocore's standard retry mode)."
    )
    task_max_retries: int = Field(5, ge=0, description="Retries for transient failures.")
    retry_backoff_max: float = Field(
        60, gt=0, description="Longest delay before a retry (exponential backoff, full jitter)."
    )
    task_soft_time_limit: float = Field(
        60, gt=0, description="Seconds a task may run before it is interrupted (then retried)."
    )
    task_time_limit: float = Field(
        90, gt=0, description="Seconds before a task's process is killed and replaced."
    )
    visibility_timeout: float = Field(
        900,
        gt=0,
        description=(
            "Redis: seconds after which a message taken by a worker that died unacknowledged "
            "is delivered again; must exceed task_time_limit + retry_backoff_max."
        ),
    )
    max_attempts: int = Field(
        5, ge=1, description="Deliveries of one job before it ends failed with code 'poison'."
    )
    stuck_after_seconds: float = Field(
        300,
        gt=0,
        description=(
            "A job queued or running this long is queued again by the sweeper; a bulk "
            "run that classified nothing this long, with nothing queued, is resumed."
        ),
    )
    sweep_seconds: float = Field(60, gt=0, description="How often beat runs the sweeper.")
    log_format: str = Field(
        "text", pattern="^(text|json)$", description="Worker log lines: text, or JSON with job ids."
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Serve Prometheus metrics from each worker; unset: off."
    )
    metrics_bind: str = Field(
        "127.0.0.1", description="Address the metrics port binds (0.0.0.0 in a container)."
    )
    prometheus_multiproc_dir: Path | None = Field(
        None,
        # prometheus_client's own variable, read here like every other setting.
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"),
        description=(
            "Folder where pool processes write their metrics (prometheus_client's "
            "multiprocess mode); unset: a temporary folder per worker, removed at shutdown."
        ),
    )

    @field_validator("reclassify_cron", "purge_cron")
    @classmethod
    def _valid_crontab(cls, value: str) -> str:
        if value.strip():
            from celery.schedules import crontab

            try:
                crontab.from_string(value)
            except (ValueError, IndexError) as exc:
                raise ValueError(
                    f"not a crontab line (minute hour day month weekday): {value!r}"
                ) from exc
        return value

    @model_validator(mode="after")
    def _time_limits_in_order(self) -> Settings:
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError("task_soft_time_limit must be below task_time_limit")
        # A worker holds a retry (an ETA message) unacknowledged until it runs: were
        # the visibility timeout shorter, Redis would hand the same message out twice.
        if self.visibility_timeout <= self.task_time_limit + self.retry_backoff_max:
            raise ValueError(
                f"visibility_timeout ({self.visibility_timeout:g} s) must exceed "
                f"task_time_limit + retry_backoff_max ({self.task_time_limit:g} + "
                f"{self.retry_backoff_max:g} s)"
            )
        return self

    def as_environment(self) -> dict[str, str]:
        """These settings as ``FASHION_*`` variables, for a worker process started from here."""
        env = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            alias = field.validation_alias
            variable = alias.choices[0] if isinstance(alias, AliasChoices) else f"FASHION_{name}"
            env[variable.upper()] = str(value)
        return env

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'catalog.sqlite3'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.data_dir / 'objects'}"

    @property
    def filesystem_broker(self) -> bool:
        """The embedded kombu filesystem transport (no Redis)."""
        return self.resolved_broker_url.startswith("filesystem://")

    @property
    def micro_batch_size(self) -> int:
        """``batch_max_size``, except 1 (no micro-batching) on the filesystem transport:
        its worker loop runs timers only every 2 s, which a batch would wait for."""
        return 1 if self.filesystem_broker else self.batch_max_size

    def prefetch_multiplier(self, queues: list[str]) -> int:
        """Messages a worker process consuming ``queues`` may hold unacknowledged.

        Micro-batching needs the uploads in hand, so an interactive-only worker
        holds a batch's worth; on the embedded filesystem transport the worker
        loop fetches only every 2 s once its prefetch is used up, so there every
        worker holds a few. Anything consuming the bulk queue holds one chunk.
        """
        if queues == [self.interactive_queue] or self.filesystem_broker:
            return self.batch_max_size
        return 1

    @property
    def _broker_folders(self) -> tuple[Path, Path]:
        return self.data_dir / "broker" / "queue", self.data_dir / "broker" / "control"

    def ensure_folders(self) -> None:
        """Create the filesystem broker's folders (embedded defaults only); called when
        a Celery app is built, never at import."""
        if self.filesystem_broker:
            for folder in self._broker_folders:
                folder.mkdir(parents=True, exist_ok=True)

    @property
    def broker_transport_options(self) -> dict[str, Any]:
        """Folders for the filesystem transport; the visibility timeout for Redis."""
        if not self.filesystem_broker:
            return {
                "visibility_timeout": self.visibility_timeout,
                # Look for messages of dead workers every few seconds (kombu's
                # default scans every 100 s), so they return soon after the timeout.
                "unacked_restore_interval": max(1.0, min(10.0, self.visibility_timeout / 4)),
                "unacked_restore_throttle": 1,
                "socket_connect_timeout": 5,
                "socket_keepalive": True,
            }
        queue_dir, control_dir = self._broker_folders
        return {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(control_dir),
            "store_processed": False,
            "polling_interval": 0.1,
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
