"""Tools, not the product: the benchmarks (``fashion bench``, ``fashion bench-photos``,
``python -m worker.tools.bench_preprocess``, ``python -m worker.tools.bench_similar``),
the naive baseline they measure against, and the harness they share with the tests
(throw-away databases, S3 servers, ports, worker processes, synthetic images).

They may import anything; the product never imports them (tests/test_architecture.py).
"""
