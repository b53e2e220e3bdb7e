"""What the tests share, and only the tests: servers on loopback (``servers``), small
factories for rows and photos (``factories``), jobs and runs driven by hand
(``jobs``), synthetic shop photos (``photos``) and the fault-injection servers and
ledger (``faults``).

It lives under ``tests/`` so it never ships in the wheel; test modules import from
here, never from each other (``tests/test_architecture.py`` checks both).
"""
