"""The worker service: the Celery app, its thin tasks, and the plain functions they
call (upload jobs, catalog chunks, re-classification planning, the sweeper), with
the message helpers, the retry and poison policy, metrics, logs and status.

It runs the exported model through ``worker.pipeline`` and never imports
TensorFlow or ``training``.
"""
