"""The vocabulary every part of the system shares: categories, job states, error codes.

One place, so that the database's CHECK constraints, the worker, the client, the
CLI, the README's error table and ``worker/errors.py`` cannot drift apart (tests
hold them to it). Plain ``StrEnum`` values: they compare equal to, and are stored
as, the strings the database, the JSON output and a non-Python backend see, so
these names can change but the values never may.

This module imports nothing, so the light client and the image pipeline can use it
without loading SQLAlchemy.
"""

from __future__ import annotations

from enum import StrEnum, unique

#: The ten Fashion-MNIST classes; a label is an index into this tuple.
CATEGORIES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Categories judged together by the ``uncertain`` flag (issue 20): when the most
#: likely class is one of a family's, the flag looks at the family's summed
#: probability, so a photo that is surely a shoe but could be a sneaker or an ankle
#: boot is "footwear", not "uncertain"; its similar items then come from every
#: category of the family. Tops (T-shirt/top, Pullover, Shirt) were measured as a
#: family too and rejected: it hid wrong answers (docs/model.md).
FAMILIES: dict[str, tuple[int, ...]] = {"footwear": (5, 7, 9)}


def family_of(label: int) -> str | None:
    """The family of class ``label``, or ``None``."""
    return next((name for name, members in FAMILIES.items() if label in members), None)


@unique
class JobStatus(StrEnum):
    """Where an upload's job is: ``queued`` → ``running`` → ``done`` | ``failed``.

    ``running`` may go back to ``running`` (a redelivery, a retry); the sweeper
    sends a ``queued`` or ``running`` job again without changing its state. Only
    the two terminal states are final.
    """

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


TERMINAL_STATUSES = frozenset({JobStatus.DONE, JobStatus.FAILED})
#: The stages of a ``done`` upload, in order, as ``classification_jobs.timings`` keeps
#: them (ms): row created → claimed by a worker, the photo's fetch, its decode and
#: preparation, its share of the batch's inference, its similar-item search, and the
#: write of its result and similar items.
JOB_STAGES = ("queued", "fetch", "preprocess", "inference", "similar", "write")


@unique
class ErrorCode(StrEnum):
    """Every code a failed job, a catalog product or ``fashion classify`` can carry.

    Part of the public contract (the web backend may branch on them): never rename one.
    """

    # The upload itself is bad: permanent, never retried.
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_SMALL = "too_small"
    UNSUPPORTED_FORMAT = "unsupported_format"
    CORRUPT = "corrupt"
    BLANK = "blank"
    UNREADABLE = "unreadable"
    # Storage and catalog.
    OBJECT_MISSING = "object_missing"
    NO_PHOTO = "no_photo"
    JOB_NOT_FOUND = "job_not_found"
    # The system gave up.
    ENQUEUE_FAILED = "enqueue_failed"
    EXPIRED = "expired"
    RETRIES_EXHAUSTED = "retries_exhausted"
    INTERNAL_ERROR = "internal_error"
    POISON = "poison"


@unique
class ReclassifyMode(StrEnum):
    """What a bulk run re-classifies: every photo; those the current model has not done;
    or those that changed since they were last read (new photos, photos whose
    version tag changed, products of another model), found from a bucket listing."""

    ALL = "all"
    STALE = "stale"
    CHANGED = "changed"


@unique
class ModelState(StrEnum):
    """A registered model version: a ``candidate`` fills its catalog predictions beside
    the ``live`` one, which answers uploads (exactly one at a time); ``promote`` makes a
    candidate live and the old live one a candidate again (kept filled, so a rollback
    is instant); a ``retired`` version has no predictions or indexes left."""

    CANDIDATE = "candidate"
    LIVE = "live"
    RETIRED = "retired"


@unique
class KeyScope(StrEnum):
    """What an API key may do: call the HTTP API as a ``backend``, or log in to the
    review page as a ``reviewer``. Neither can do the other's work."""

    BACKEND = "backend"
    REVIEWER = "reviewer"


@unique
class ReviewQueue(StrEnum):
    """The review page's two queues: uploads the model flagged ``uncertain``, and
    catalog products whose photo the model puts in another category than listed."""

    UPLOADS = "uploads"
    AUDIT = "audit"


@unique
class ReviewAnswer(StrEnum):
    """A reviewer's answer: one of the ten categories (the review's ``label``), the
    photo shows nothing the catalog sells, or no answer (skipped)."""

    LABEL = "label"
    OUT_OF_CATALOG = "out_of_catalog"
    SKIP = "skip"


#: ``products.reviewed_category`` when a reviewer said the photo shows nothing the
#: catalog sells (otherwise one of ``CATEGORIES``).
OUT_OF_CATALOG = "out of catalog"
