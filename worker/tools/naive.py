"""The naive baseline ``fashion bench`` measures against; never part of a production worker.

It is what a straight port of the training notebooks gives: one Celery task per
image, Keras ``model.predict`` on a batch of one, one UPDATE per product. It
shares everything else with the real worker (object store, preprocessing, the
serving model's weights), so the benchmark's ratio measures the inference
engine, batching and bulk writes and nothing else. It needs TensorFlow (the
``[train]`` extra) and its own Celery app: ``celery -A worker.tools.naive worker``.
"""

from __future__ import annotations

import os
from functools import cache

from celery import Celery
from celery.signals import worker_process_init

from catalog.db import get_sessionmaker
from catalog.embeddings import encode_embedding
from catalog.models import Product, ProductPrediction, utcnow
from worker.config import get_settings
from worker.pipeline.classifier import BUNDLED_MODEL
from worker.pipeline.preprocess import normalize, preprocess
from worker.storage import get_store

NAIVE_TASK = "fashion.bench.naive_classify"
NAIVE_VERSION = "naive-keras-baseline"
KERAS_MODEL = BUNDLED_MODEL.with_name("model.keras")

app = Celery("fashion-naive", broker=get_settings().resolved_broker_url)
# The real worker's message and delivery settings; only the task differs.
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_transport_options=get_settings().broker_transport_options,
)


@cache
def _model(pid: int):  # type: ignore[no-untyped-def]
    import keras

    return keras.models.load_model(KERAS_MODEL, compile=False)


@worker_process_init.connect
def _load(**_kwargs: object) -> None:
    _model(os.getpid())


@app.task(name=NAIVE_TASK, ignore_result=True, acks_late=True)
def naive_classify(product_id: int) -> None:
    settings = get_settings()
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        product = session.get(Product, product_id)
        pixels = preprocess(
            get_store(settings).get(product.image_key),
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
        )
        outputs = _model(os.getpid()).predict(normalize(pixels[None]), verbose=0)
        probabilities = outputs["probabilities"][0]
        session.merge(
            ProductPrediction(
                product_id=product.id,
                model_version=NAIVE_VERSION,
                category=product.category,
                label=int(probabilities.argmax()),
                confidence=float(probabilities.max()),
                embedding=encode_embedding(outputs["embedding"][0]),
                classified_at=utcnow(),
                error=None,
            )
        )
