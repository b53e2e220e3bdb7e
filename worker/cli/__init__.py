"""The ``fashion`` command: one group, joined here from one module per command group.

Every command reads its configuration from ``FASHION_*`` environment variables
(see ``worker.config``); with none set it runs on the embedded defaults. Command
modules import what they need inside the command, so ``fashion --help`` loads
neither the model nor TensorFlow.
"""

from __future__ import annotations

import click

from worker.cli import (
    api,
    bench,
    catalog,
    evaluation,
    models,
    ops,
    photos,
    reviews,
    training,
    uploads,
)
from worker.cli.errors import FashionGroup


@click.group(cls=FashionGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Classify clothing photos and offer similar in-stock items.

    Uploads are stored in object storage, queued on Celery, classified by a
    Fashion-MNIST CNN and written to the product catalog. Configure with
    FASHION_* environment variables; with none set, everything runs locally
    (SQLite, a folder, a filesystem queue).
    """


for group in (uploads, api, ops, catalog, models, training, evaluation, photos, reviews, bench):
    for command in group.COMMANDS:
        main.add_command(command)
