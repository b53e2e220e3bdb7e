"""Real photos as training data: their 28×28 pixels, their *set* targets, the set loss.

A photo of shoes may be any of Sandal, Sneaker or Ankle boot, so a photo's target
is a 0/1 mask over the ten classes (``PHOTO_TARGETS``), scored by ``set_loss``;
a one-hot mask makes that plain cross-entropy, so Fashion-MNIST images and photos
share one loss. Used by the photo fine-tuning (``training.photo_finetune``) and by
training with photos from the start (``fashion train --photos``). The pixels
come from the worker's own pipeline, once per folder if it is packed
(``pack_photos``, ``fashion pack-photos``); the loss is ``keras.ops``, so it runs
on any Keras backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from training.data import NUM_CLASSES
from training.photo_folders import (
    DEFAULT_MAPPING,
    PhotoFolderError,
    load_mapping,
    mapping_for,
    photo_files,
)
from worker.errors import ImageError
from worker.pipeline.preprocess import PREPROCESS_VERSION, preprocess

#: Photo class → acceptable Fashion-MNIST classes; None: not in the catalog (uniform
#: target). The scoring mapping, plus longsleeve: not scored (ambiguous) but still a
#: top of one of four kinds, which is worth learning.
PHOTO_TARGETS: dict[str, list[int] | None] = {
    **{name: target for name, target in DEFAULT_MAPPING.items() if target != "skip"},
    "longsleeve": [0, 2, 4, 6],
}


def photo_targets(mapping: Mapping[str, list[int] | str | None]) -> dict[str, list[int] | None]:
    """Training targets from a scoring mapping (``training.photo_folders``): its classes less
    the ``"skip"`` ones; the development photos' mapping gives ``PHOTO_TARGETS``."""
    if dict(mapping) == DEFAULT_MAPPING:
        return dict(PHOTO_TARGETS)
    return {name: target for name, target in mapping.items() if target != "skip"}


def targets_for_folder(folder: Path, mapping: Path | None = None) -> dict[str, list[int] | None]:
    """Training targets of a photo folder, or of a pack of one (``pack_photos``):
    ``mapping``, else the folder's own ``mapping.json`` (recorded in a pack), else
    the development photos' (``training.photo_folders.mapping_for``)."""
    if not Path(folder).is_file():
        return photo_targets(mapping_for(folder, mapping))
    if mapping is not None:
        return photo_targets(load_mapping(mapping))
    return photo_targets(json.loads(str(_read_pack(Path(folder), "mapping")["mapping"])))


LIMITS = {"max_bytes": 50 * 1024 * 1024, "max_pixels": 100_000_000}

#: What a photo pack's file name ends with (``pack_photos``).
PACK_SUFFIX = ".npz"


def pack_photos(folder: Path, out: Path, mapping: Path | None = None) -> dict[str, Any]:
    """Put every readable photo of ``folder`` through the worker's pipeline once and
    write the 28×28 pixels, their classes and the folder's mapping to ``out``
    (``.npz``), which ``load_photos`` and ``fashion train --photos`` then take in the
    folder's place: minutes of decoding and cutting out saved on each training run,
    and a training machine needs no photos. The pack records the pipeline's
    ``PREPROCESS_VERSION``; ``load_photos`` refuses a pack another version made.
    Returns what it wrote (photos per class, unreadable files)."""
    if out.suffix != PACK_SUFFIX:
        raise PhotoFolderError(f"{out}: a photo pack's name ends with {PACK_SUFFIX}")
    chosen = mapping_for(folder, mapping)
    pixels, classes, unreadable = _preprocessed(folder, set(photo_files(folder)))
    if not pixels:
        raise PhotoFolderError(f"{folder}: no readable photo")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        pixels=np.stack(pixels),
        classes=np.array(classes),
        mapping=np.array(json.dumps(chosen)),
        folder=np.array(str(folder.resolve())),
        preprocess_version=np.array(PREPROCESS_VERSION),
    )
    names, counts = np.unique(classes, return_counts=True)
    return {
        "pack": str(out),
        "folder": str(folder.resolve()),
        "preprocess_version": PREPROCESS_VERSION,
        "photos": len(pixels),
        "per_class": dict(zip(names.tolist(), counts.tolist(), strict=True)),
        "unreadable": unreadable,
    }


def load_photos(
    source: Path, targets: Mapping[str, list[int] | None] = PHOTO_TARGETS
) -> tuple[np.ndarray, np.ndarray]:
    """28×28 pixels and target masks (n × 10) of every readable photo of a class in
    ``targets``, from a photo folder or from a pack of one (``pack_photos``)."""
    source = Path(source)
    if source.is_file():
        pack = _read_pack(source, "pixels", "classes", "preprocess_version")
        _check_pack_version(source, int(pack["preprocess_version"]))
        keep = np.isin(pack["classes"], list(targets))
        pixels, classes = list(pack["pixels"][keep]), pack["classes"][keep].tolist()
    else:
        pixels, classes, _ = _preprocessed(source, set(targets))
    if not pixels:
        raise ValueError(f"{source}: no readable photo of the classes {sorted(targets)}")
    masks = np.zeros((len(classes), NUM_CLASSES), np.float32)
    for row, name in zip(masks, classes, strict=True):
        chosen = targets[name]
        row[chosen if chosen is not None else slice(None)] = 1.0
    return np.stack(pixels), masks


def photo_sources(card: Mapping[str, Any]) -> list[str]:
    """The photo folders or packs a model's card says it trained on: photos from the
    first epoch (``fashion train --photos``), photo fine-tuning (``fashion
    finetune-photos``) and, for an ensemble, any of its members'."""
    sources = [
        (card.get("photos_in_training") or {}).get("dir"),
        (card.get("photo_finetune") or {}).get("dir"),
        *card.get("member_photo_sources", []),
    ]
    return list(dict.fromkeys(source for source in sources if source))


def photo_source(path: Path) -> Path:
    """The photo folder behind ``path``: a pack's recorded folder, else ``path``."""
    path = Path(path)
    if path.is_file():
        return Path(str(_read_pack(path, "folder")["folder"]))
    return path


def _preprocessed(folder: Path, classes: set[str]) -> tuple[list[np.ndarray], list[str], int]:
    """Pixels and class of each readable photo of ``classes``; how many were not."""
    pixels, names, unreadable = [], [], 0
    for name, paths in photo_files(folder).items():
        if name not in classes:
            continue
        for path in paths:
            try:
                pixels.append(preprocess(path.read_bytes(), **LIMITS))
            except ImageError:
                unreadable += 1
                continue
            names.append(name)
    return pixels, names, unreadable


def _check_pack_version(path: Path, version: int) -> None:
    """Refuse a pack whose pixels another version of the pipeline made: a model trained
    on them would learn inputs the worker no longer produces."""
    if version != PREPROCESS_VERSION:
        folder = photo_source(path)
        raise PhotoFolderError(
            f"{path} was packed by version {version} of the image pipeline; the pipeline is "
            f"now version {PREPROCESS_VERSION}, so its photos would reach the model "
            f"differently: pack them again (fashion pack-photos {folder} --out {path})"
        )


#: Arrays a pack may lack: packs from before the pipeline's version was recorded were
#: made by version 1.
_PACK_DEFAULTS = {"preprocess_version": np.array(1)}


def _read_pack(path: Path, *keys: str) -> dict[str, np.ndarray]:
    """Only the arrays asked for: the pixels are the bulk of a pack."""
    try:
        with np.load(path, allow_pickle=False) as pack:
            return {key: pack[key] if key in pack else _PACK_DEFAULTS[key] for key in keys}
    except (OSError, ValueError, KeyError) as exc:
        raise PhotoFolderError(f"{path} is not a photo pack (fashion pack-photos): {exc}") from exc


#: How a photo with several acceptable classes is scored (``--set-loss``).
SET_LOSSES = ("sum", "max")


def set_loss(targets: Any, logits: Any, *, reduce: str = "sum", from_logits: bool = True) -> Any:
    """Loss of a photo whose target is a *set* of classes (``targets``: 0/1 mask).

    ``reduce="sum"``: −log Σ p over the set, so the probability may spread over
    the set's classes; ``"max"``: −log max p over the set, so the network commits
    to whichever class of the set it already favours and its confidence is not
    split (a split confidence reads as ``uncertain``). An all-ones target (out of
    catalog): cross-entropy to the uniform distribution. A one-hot target is plain
    cross-entropy either way. ``from_logits=False``: ``logits`` are probabilities
    (a model ending in its softmax), clipped like Keras's cross-entropy clips them.
    Written in ``keras.ops``: it runs on any backend.
    """
    if reduce not in SET_LOSSES:
        raise ValueError(f"reduce must be one of {SET_LOSSES}, not {reduce!r}")
    targets = ops.cast(targets, "float32")
    outputs = ops.cast(logits, "float32")
    if from_logits:
        log_p = ops.log_softmax(outputs, axis=1)
    else:
        log_p = ops.log(ops.clip(outputs, 1e-7, 1.0))
    uniform = ops.cast(ops.sum(targets, axis=1) > NUM_CLASSES - 0.5, "float32")
    masked = log_p + ops.log(targets + 1e-12)
    in_set = -(ops.logsumexp(masked, axis=1) if reduce == "sum" else ops.max(masked, axis=1))
    to_uniform = -ops.mean(log_p, axis=1)
    return uniform * to_uniform + (1.0 - uniform) * in_set


@keras.saving.register_keras_serializable(package="fashion")
class SetLoss(keras.losses.Loss):
    """``set_loss`` as a Keras loss, for a model compiled on Fashion-MNIST images
    (one-hot targets) and photos (set targets) together; saved with the model."""

    def __init__(self, reduce: str = "max", from_logits: bool = False, **kwargs: Any) -> None:
        if reduce not in SET_LOSSES:
            raise ValueError(f"reduce must be one of {SET_LOSSES}, not {reduce!r}")
        super().__init__(name=kwargs.pop("name", f"set_loss_{reduce}"), **kwargs)
        self.reduce = reduce
        self.from_logits = from_logits

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return set_loss(y_true, y_pred, reduce=self.reduce, from_logits=self.from_logits)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "reduce": self.reduce, "from_logits": self.from_logits}
