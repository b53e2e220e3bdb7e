"""The HTTP API (``fashion api``): the door for a web backend in any language.

``app.py`` assembles the FastAPI application from ``Settings`` and joins one router
per resource: ``routes/classifications.py``, ``routes/products.py``,
``routes/health.py`` and the review page, ``review.py`` (``/review``). ``deps.py``
gives a route what it may ask for (the shared parts, the caller, the ownership
rule); ``auth.py`` knows API keys; ``limits.py`` holds backpressure (queue depth)
and the per-key rate limit; ``edge.py`` refuses control characters in paths and
queries; ``uploads.py`` reads an upload from a request without holding more than
the limit; ``errors.py`` holds the error codes and body; ``observability.py``
answers ``/readyz`` and adds the queue and review figures to ``/metrics``. Every
answer's shape is declared (``catalog.public``), so ``/openapi.json`` types it. It
stores, records and enqueues through ``worker.client.submit_upload``, the same code
a Python backend calls, and never loads the model or OpenCV.
"""

from __future__ import annotations
