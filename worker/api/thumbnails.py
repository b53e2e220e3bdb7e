"""Thumbnails for the review page, made once, and never in the API process.

A photo's thumbnail is kept beside it in the store (``storage.thumbnail_key``): the
worker writes one for each upload it flags ``uncertain``. A photo without one (a
catalog product in the audit queue, an upload from before) is shrunk here once, in
a short-lived child (``python -m worker.pipeline.thumbnail``: the worker's bounded
decode, its address space capped), one child at a time per API process, and what it
makes is stored for every later view. The API process never decodes an upload: one
6324×6324 TIFF of 286 KB decoded here raised it from 217 to 708 MB, nine at once
to 3.2 GB, kept until restart.
"""

from __future__ import annotations

import threading

from worker.config import Settings
from worker.errors import ObjectMissingError
from worker.files import ChildFailed, run_child
from worker.storage import ObjectStore, thumbnail_key

CHILD_TIMEOUT_S = 30
_one_child_at_a_time = threading.Semaphore(1)


class ThumbnailError(ValueError):
    """The photo cannot be shown (not an image the worker accepts, or its decode failed)."""


def thumbnail(store: ObjectStore, image_key: str, settings: Settings) -> bytes:
    """The review thumbnail of the photo at ``image_key``: the stored one, else one made
    in a child and stored. ``ObjectMissingError`` when the photo itself is gone."""
    key = thumbnail_key(image_key)
    try:
        return store.get(key)
    except ObjectMissingError:
        pass
    made = _make_in_a_child(store.get(image_key, max_bytes=settings.max_upload_bytes), settings)
    store.put(key, made, content_type="image/jpeg")
    return made


def _make_in_a_child(data: bytes, settings: Settings) -> bytes:
    limits = (str(settings.max_upload_bytes), str(settings.max_image_pixels))
    with _one_child_at_a_time:
        try:
            return run_child("worker.pipeline.thumbnail", data, *limits, timeout=CHILD_TIMEOUT_S)
        except ChildFailed as exc:
            raise ThumbnailError(f"no thumbnail: {exc}") from exc
