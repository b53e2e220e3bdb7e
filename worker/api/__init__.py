"""The HTTP API (``fashion api``): the door for a web backend in any language.

``app.py`` builds the FastAPI application from ``Settings``; ``auth.py`` knows API
keys; ``limits.py`` holds backpressure (queue depth) and the per-key rate limit;
``uploads.py`` reads an upload from a request without holding more than the limit;
``observability.py`` answers ``/readyz`` and adds the queue and review figures to
``/metrics``; ``review.py`` is the review page (``/review``).
It stores, records and enqueues through ``worker.client.submit_upload``, the same
code a Python backend calls, and never loads the model or OpenCV.
"""

from __future__ import annotations
