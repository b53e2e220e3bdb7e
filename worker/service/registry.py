"""Which model a worker runs: the registry's live version, loaded from wherever its
artifact is (docs/rollout.md).

- The configured model (``FASHION_MODEL_URI`` or the bundled one, with
  ``FASHION_MODEL_ENGINE``) registers itself on a worker's or the CLI's first
  start: live when no version is, else a candidate (beat then fills it).
- ``live_version`` re-reads the live row at most every ``FASHION_MODEL_REFRESH_SECONDS``
  (one primary-key-sized SELECT), so a promote or a rollback reaches every worker
  within that without a restart. A job is classified and searched with one
  ``Classifier``, whose ``version`` the job records.
- Every version's artifact is a folder of the object store, ``models/<version>/``
  (its card and its engine's model file), written when it registers: a worker
  whose wheel ships another model (a package upgrade) still loads the live one. A
  worker loads a version from its own files when the configured or bundled model
  is that version, else copies it to ``<data_dir>/models/<version>/`` on first
  use; the card's sha256 is checked on load either way.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from catalog.db import get_sessionmaker
from catalog.versions import get_version, live_version, register_version
from worker.config import Settings
from worker.pipeline.classifier import (
    BUNDLED_MODEL,
    CARD_FILENAME,
    Classifier,
    ModelError,
    engine_version,
    engines_of,
    model_path,
    read_card,
)
from worker.storage import get_store


def artifact_prefix(version: str) -> str:
    """Where a staged version's files live in the object store."""
    return f"models/{version}/"


@dataclass(frozen=True)
class ModelFiles:
    """One version's artifact on this machine: its card, engine and float path."""

    version: str
    engine: str
    card: dict[str, Any]
    path: Path


def configured_model(settings: Settings) -> ModelFiles:
    """The model the settings name (``FASHION_MODEL_URI`` or the bundled one)."""
    path = model_path(settings)
    card = read_card(path)
    engine, version = engine_version(card, settings.model_engine)
    return ModelFiles(version, engine, card, path)


def register_configured(settings: Settings, *, upload: bool = True) -> str:
    """Register the configured model (live if none is, else a candidate); returns
    the live version. With ``upload``, its artifact is copied to the store if it is
    not there yet, so any worker can load it.

    A worker registers without ``upload``: a worker must start while the store is
    slow or down (its own files serve it); beat's model check and the ``fashion
    model`` commands copy the artifact.
    """
    files = configured_model(settings)
    artifact = artifact_prefix(files.version)
    if upload and not get_store(settings).exists(artifact + CARD_FILENAME):
        upload_artifact(settings, files)
    try:
        return _register(settings, files, artifact)
    except IntegrityError:
        # Another process registered it, or made another version live, at the same
        # moment: read what it did.
        return _register(settings, files, artifact)


def _register(settings: Settings, files: ModelFiles, artifact: str) -> str:
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        if (
            get_version(session=session, version=files.version) is None
            or live_version(session=session) is None
        ):
            register_version(
                session=session,
                version=files.version,
                engine=files.engine,
                artifact=artifact,
                card=files.card,
                live_if_none=True,
            )
        live = live_version(session=session)
        return live.version if live is not None else files.version


def upload_artifact(settings: Settings, files: ModelFiles) -> str:
    """Copy the engine's model file and the card to ``models/<version>/``."""
    prefix = artifact_prefix(files.version)
    store = get_store(settings)
    name = files.path.name if files.engine == "float" else files.card[files.engine]["file"]
    source = files.path.with_name(name)
    if not source.is_file():
        raise ModelError(f"model file {source} does not exist")
    store.put(prefix + name, source.read_bytes(), content_type="application/octet-stream")
    store.put(
        prefix + CARD_FILENAME,
        json.dumps(files.card, indent=2).encode(),
        content_type="application/json",
    )
    return prefix


@dataclass
class _LiveRead:
    """This process's last read of a catalog's live version, and when it was read."""

    version: str | None = None
    read_at: float = -float("inf")


#: Per (process, catalog URL): a forked child reads for itself.
_LIVE: dict[tuple[int, str], _LiveRead] = {}
_LIVE_LOCK = threading.Lock()
_CLASSIFIERS: dict[tuple[int, str, int, float | None, float | None], Classifier] = {}
_LOAD_LOCK = threading.Lock()


def live_version_name(settings: Settings) -> str:
    """The live version, as of at most ``FASHION_MODEL_REFRESH_SECONDS`` ago (the
    configured model registers itself when the registry is empty)."""
    url = settings.resolved_database_url
    with _LIVE_LOCK:
        read = _LIVE.setdefault((os.getpid(), url), _LiveRead())
        if read.version is None or time.monotonic() - read.read_at >= (
            settings.model_refresh_seconds
        ):
            with get_sessionmaker(url)() as session:
                live = live_version(session=session)
                version = live.version if live is not None else None
            read.version = version or register_configured(settings, upload=False)
            read.read_at = time.monotonic()
        return read.version


def live_classifier(settings: Settings) -> Classifier:
    """The classifier of the live version (loaded once per version and process)."""
    return classifier_for(settings, live_version_name(settings))


def classifier_for(settings: Settings, version: str) -> Classifier:
    """The classifier of registered ``version``, loaded on first use in this process."""
    # Not by catalog: a version names one artifact (its card's sha256), wherever it is
    # registered; loading one costs ~0.2 s, once per process.
    key = (
        os.getpid(),
        version,
        settings.inference_threads,
        settings.uncertain_threshold,
        settings.photo_uncertain_threshold,
    )
    with _LOAD_LOCK:
        if key not in _CLASSIFIERS:
            _CLASSIFIERS[key] = _load(settings, version)
        return _CLASSIFIERS[key]


def _load(settings: Settings, version: str) -> Classifier:
    with get_sessionmaker(settings.resolved_database_url)() as session:
        row = get_version(session=session, version=version)
        if row is None:
            raise ModelError(f"model version {version!r} is not registered (fashion model list)")
        artifact, engine, card = row.artifact, row.engine, dict(row.card)
    local = _local_files(settings, version)
    if local is not None:
        path, engine = local
    elif not get_store(settings).exists(artifact + CARD_FILENAME):
        raise ModelError(
            f"model version {version} is not among this worker's files and its artifact is "
            f"not in the store ({artifact}): run `fashion model list` (or beat's model "
            "check) where that model is configured, to copy it"
        )
    else:
        path = _fetch_artifact(settings, version, artifact, engine, card)
    classifier = Classifier(
        path,
        num_threads=settings.inference_threads,
        uncertain_threshold=settings.uncertain_threshold,
        photo_uncertain_threshold=settings.photo_uncertain_threshold,
        engine=engine,
    )
    if classifier.version != version:
        raise ModelError(f"the artifact of {version} loads as {classifier.version}")
    return classifier


def _local_files(settings: Settings, version: str) -> tuple[Path, str] | None:
    """The configured or the bundled model's path and engine, if it is ``version``."""
    for path in (model_path(settings), BUNDLED_MODEL):
        try:
            card = read_card(path)
            for engine in engines_of(path):
                if engine_version(card, engine)[1] == version:
                    return path, engine
        except (ModelError, OSError, ValueError, KeyError):
            continue
    return None


def _fetch_artifact(
    settings: Settings, version: str, prefix: str, engine: str, card: dict[str, Any]
) -> Path:
    """Copy a staged version's card and model file from the store (once per machine;
    the sha256 in the card is checked when the classifier loads it)."""
    folder = settings.data_dir / "models" / version
    name = card["file"] if engine == "float" else card[engine]["file"]
    store = get_store(settings)
    folder.mkdir(parents=True, exist_ok=True)
    for filename in (CARD_FILENAME, name):
        target = folder / filename
        if not target.is_file():
            partial = target.with_suffix(f".{os.getpid()}.part")
            partial.write_bytes(store.get(prefix + filename))
            partial.replace(target)  # atomic: another process may be copying it too
    return folder / card["file"]
