"""``python -m worker.cli``: the ``fashion`` command without its console script."""

from worker.cli import main

main()
