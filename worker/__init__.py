"""The fashion classifier's worker side. One folder per role (docs/architecture.md):

- ``pipeline/``: validate, decode, cut out, prepare, classify (LiteRT);
- ``service/``: the Celery app, messages, tasks, retry policy, jobs, bulk chunks;
- ``client.py``: what a Python web backend imports (light: no OpenCV, no LiteRT);
- ``cli/``: the ``fashion`` command; ``tools/``: benchmarks, never imported by the product;
- ``config.py``, ``errors.py``, ``files.py``, ``storage.py``: shared by all of them.
"""
