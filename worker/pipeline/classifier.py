"""Run the exported model with the LiteRT interpreter, without importing TensorFlow.

``import tensorflow`` costs ~530 MB of RSS and seconds of start-up per process and
is not fork-safe; the LiteRT runtime costs ~35 MB. The artifact and its model
card ship as package data in ``worker/model``; ``FASHION_MODEL_URI`` may point at
another ``.tflite`` with its ``model_card.json`` beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from catalog.codes import CATEGORIES, FAMILIES, family_of
from worker.config import ENGINES, QUANTIZED_ENGINES, Settings
from worker.pipeline.preprocess import ModelInput, normalize

BUNDLED_MODEL = Path(__file__).parents[1] / "model" / "model.tflite"
CARD_FILENAME = "model_card.json"


def engine_version(card: dict[str, Any], engine: str | None) -> tuple[str, str]:
    """``(engine, model version)`` for ``engine`` (``None``: the card's ``default_engine``).

    A quantized artifact's version is the float one's plus ``-<engine>`` (``-int8``):
    its embeddings differ a little, and similar items only compare embeddings of
    one version.
    """
    chosen = engine or card.get("default_engine", "float")
    if chosen not in ENGINES:
        raise ModelError(f"unknown model engine {chosen!r}; choose one of {', '.join(ENGINES)}")
    return chosen, card["version"] + ("" if chosen == "float" else f"-{chosen}")


class ModelError(RuntimeError):
    """The model artifact is missing, does not match its card, or has the wrong shape."""


def read_card(model_path: Path) -> dict[str, Any]:
    """The model card beside ``model_path``, without loading the model."""
    card_path = model_path.with_name(CARD_FILENAME)
    if not card_path.is_file():
        raise ModelError(f"model card {card_path} does not exist")
    return json.loads(card_path.read_text())


def engines_of(path: Path) -> list[str]:
    """``float``, and each quantized engine the card beside ``path`` lists whose file is
    beside the model (what ``fashion bench-inference`` and ``fashion model stage`` time)."""
    card = read_card(path)
    return ["float"] + [
        engine
        for engine in QUANTIZED_ENGINES
        if engine in card and path.with_name(card[engine]["file"]).is_file()
    ]


def judged_confidence(probabilities: np.ndarray) -> np.ndarray:
    """What the ``uncertain`` flag compares with the threshold, per row of ``(n, 10)``:
    the top class's probability, or its family's summed probability when the top
    class belongs to one (``catalog.codes.FAMILIES``). The worker, ``fashion
    evaluate --photos`` and the photo-threshold fit all judge with this."""
    probabilities = np.asarray(probabilities)
    top = probabilities.argmax(axis=1)
    judged = probabilities.max(axis=1)
    for members in FAMILIES.values():
        in_family = np.isin(top, members)
        judged = np.where(in_family, probabilities[:, list(members)].sum(axis=1), judged)
    return judged


@dataclass(frozen=True)
class Prediction:
    label: int
    confidence: float
    uncertain: bool
    probabilities: list[float]
    embedding: np.ndarray
    #: The family of ``label`` (``"footwear"``) or ``None``.
    family: str | None = None
    #: Sure of the family, not of the class: similar items come from all its categories.
    family_only: bool = False


@dataclass(frozen=True)
class Outputs:
    """A batch's calibrated class probabilities ``(n, 10)`` and unit embeddings ``(n, d)``."""

    probabilities: np.ndarray
    embeddings: np.ndarray


class Classifier:
    """A LiteRT interpreter for one model file; ``predict`` takes a batch.

    The artifact's ``serving_default`` signature takes ``image`` (float32
    ``(n, 28, 28, 1)`` in ``[0, 1]``, any ``n``) and returns ``probabilities``
    (already temperature-calibrated) and ``embedding`` (L2-normalised). One
    interpreter is not thread-safe, so calls are serialised with a lock; run one
    ``Classifier`` per process (or per thread) for parallelism.

    A result is ``uncertain`` when its judged confidence (``judged_confidence``:
    the top class's, or its family's summed probability) is below one of two
    thresholds from the card: ``uncertain_threshold`` for product-style images (fitted on
    Fashion-MNIST validation images) and ``photo_uncertain_threshold`` for
    photos on a busy background (fitted on real photos; a card without it uses
    the first for both).
    """

    def __init__(
        self,
        model_path: Path,
        *,
        num_threads: int = 1,
        uncertain_threshold: float | None = None,
        photo_uncertain_threshold: float | None = None,
        engine: str | None = None,
    ) -> None:
        card_path = model_path.with_name(CARD_FILENAME)
        self.card: dict[str, Any] = read_card(model_path)
        #: One of ``ENGINES``: which artifact runs (``FASHION_MODEL_ENGINE``).
        self.engine, self.version = engine_version(self.card, engine)
        expected_digest = self.card.get("sha256")
        if self.engine != "float":
            if self.engine not in self.card:
                raise ModelError(
                    f"{card_path} lists no {self.engine} artifact "
                    f"(fashion quantize --scheme {self.engine})"
                )
            expected_digest = self.card[self.engine]["sha256"]
            model_path = model_path.with_name(self.card[self.engine]["file"])
        if not model_path.is_file():
            raise ModelError(f"model file {model_path} does not exist")
        #: The artifact that runs (``model.tflite``, ``model-int8.tflite``, …).
        self.path = model_path
        content = model_path.read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        if digest != expected_digest:
            raise ModelError(
                f"{model_path} has sha256 {digest}, its model card says {expected_digest}"
            )
        if self.card.get("classes") != list(CATEGORIES):
            raise ModelError(
                f"{card_path} lists classes {self.card.get('classes')}, expected {list(CATEGORIES)}"
            )
        if not 0 <= self.card.get("uncertain_threshold", -1) <= 1:
            raise ModelError(f"{card_path} has no uncertain_threshold in [0, 1]")
        #: Below this calibrated confidence a result is flagged ``uncertain``;
        #: chosen on validation data at training time (FASHION_UNCERTAIN_THRESHOLD overrides).
        self.uncertain_threshold = float(
            self.card["uncertain_threshold"] if uncertain_threshold is None else uncertain_threshold
        )
        card_photo_threshold = self.card.get("photo_uncertain_threshold", self.uncertain_threshold)
        if not 0 <= card_photo_threshold <= 1:
            raise ModelError(f"{card_path} has a photo_uncertain_threshold outside [0, 1]")
        #: The same for photos on a busy background (FASHION_PHOTO_UNCERTAIN_THRESHOLD overrides).
        self.photo_uncertain_threshold = float(
            card_photo_threshold if photo_uncertain_threshold is None else photo_uncertain_threshold
        )
        self._interpreter = Interpreter(model_content=content, num_threads=num_threads)
        signatures = self._interpreter.get_signature_list()
        expected = {"inputs": ["image"], "outputs": ["embedding", "probabilities"]}
        if signatures.get("serving_default", {}) != expected:
            raise ModelError(f"{model_path} has signatures {signatures}, expected {expected}")
        self._runner = self._interpreter.get_signature_runner("serving_default")
        self._lock = threading.Lock()

    def run(self, images: np.ndarray) -> Outputs:
        """float32 ``(n, 28, 28, 1)`` in ``[0, 1]`` → probabilities and embeddings."""
        if images.ndim != 4 or images.shape[1:] != (28, 28, 1):
            raise ValueError(f"expected images of shape (n, 28, 28, 1), got {images.shape}")
        with self._lock:
            outputs = self._runner(image=np.ascontiguousarray(images, dtype=np.float32))
        return Outputs(outputs["probabilities"].copy(), outputs["embedding"].copy())

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.run(images).probabilities

    def thresholds(self, busy_background: Sequence[bool] | np.ndarray) -> np.ndarray:
        """Each image's ``uncertain`` threshold: the photo one where the background was busy."""
        return np.where(
            np.asarray(busy_background, dtype=bool),
            self.photo_uncertain_threshold,
            self.uncertain_threshold,
        )

    def predict(
        self, images: np.ndarray, *, busy_background: Sequence[bool] | np.ndarray | None = None
    ) -> list[Prediction]:
        """Predictions for a batch; ``busy_background`` (one flag per image, default
        all False) picks each image's ``uncertain`` threshold."""
        flags = np.zeros(len(images), bool) if busy_background is None else busy_background
        thresholds = self.thresholds(flags)
        if len(thresholds) != len(images):
            raise ValueError(f"{len(thresholds)} busy_background flags for {len(images)} images")
        outputs = self.run(images)
        judged = judged_confidence(outputs.probabilities)
        return [
            Prediction(
                label=int(row.argmax()),
                confidence=float(row.max()),
                uncertain=bool(sure < threshold),
                probabilities=[float(p) for p in row],
                embedding=embedding,
                family=family_of(int(row.argmax())),
                family_only=bool(row.max() < threshold <= sure),
            )
            for row, embedding, threshold, sure in zip(
                outputs.probabilities, outputs.embeddings, thresholds, judged, strict=True
            )
        ]

    def classify(self, inputs: Sequence[ModelInput]) -> list[Prediction]:
        """``predict`` for prepared uploads (``worker.pipeline.preprocess.prepare``)."""
        if not inputs:
            return []
        return self.predict(
            normalize(np.stack([item.pixels for item in inputs])),
            busy_background=[item.busy_background for item in inputs],
        )


def model_path(settings: Settings) -> Path:
    return settings.model_uri or BUNDLED_MODEL


def model_version(settings: Settings) -> str:
    """The configured model's version (its engine's), read from its card without
    loading the model."""
    card_path = model_path(settings).with_name(CARD_FILENAME)
    try:
        card = json.loads(card_path.read_text())
        return engine_version(card, settings.model_engine)[1]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the model version from {card_path}: {exc}") from exc


@cache
def _classifier_for(
    path: Path,
    num_threads: int,
    uncertain_threshold: float | None,
    photo_uncertain_threshold: float | None,
    engine: str | None,
    pid: int,
) -> Classifier:
    return Classifier(
        path,
        num_threads=num_threads,
        uncertain_threshold=uncertain_threshold,
        photo_uncertain_threshold=photo_uncertain_threshold,
        engine=engine,
    )


def get_classifier(settings: Settings) -> Classifier:
    """This process's classifier, loaded on first use (after fork in a worker child)."""
    return _classifier_for(
        model_path(settings),
        settings.inference_threads,
        settings.uncertain_threshold,
        settings.photo_uncertain_threshold,
        settings.model_engine,
        os.getpid(),
    )
