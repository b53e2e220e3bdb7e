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
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from catalog.models import CATEGORIES
from worker.config import Settings

BUNDLED_MODEL = Path(__file__).parent / "model" / "model.tflite"
CARD_FILENAME = "model_card.json"


class ModelError(RuntimeError):
    """The model artifact is missing, does not match its card, or has the wrong shape."""


@dataclass(frozen=True)
class Prediction:
    label: int
    confidence: float
    uncertain: bool
    probabilities: list[float]
    embedding: np.ndarray


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
    """

    def __init__(
        self,
        model_path: Path,
        *,
        num_threads: int = 1,
        uncertain_threshold: float | None = None,
    ) -> None:
        card_path = model_path.with_name(CARD_FILENAME)
        if not model_path.is_file():
            raise ModelError(f"model file {model_path} does not exist")
        if not card_path.is_file():
            raise ModelError(f"model card {card_path} does not exist")
        self.card: dict[str, Any] = json.loads(card_path.read_text())
        content = model_path.read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        if digest != self.card.get("sha256"):
            raise ModelError(
                f"{model_path} has sha256 {digest}, its model card says {self.card.get('sha256')}"
            )
        if self.card.get("classes") != list(CATEGORIES):
            raise ModelError(
                f"{card_path} lists classes {self.card.get('classes')}, expected {list(CATEGORIES)}"
            )
        self.version: str = self.card["version"]
        if not 0 <= self.card.get("uncertain_threshold", -1) <= 1:
            raise ModelError(f"{card_path} has no uncertain_threshold in [0, 1]")
        #: Below this calibrated confidence a result is flagged ``uncertain``;
        #: chosen on validation data at training time (FASHION_UNCERTAIN_THRESHOLD overrides).
        self.uncertain_threshold = float(
            self.card["uncertain_threshold"] if uncertain_threshold is None else uncertain_threshold
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

    def predict(self, images: np.ndarray) -> list[Prediction]:
        outputs = self.run(images)
        return [
            Prediction(
                label=int(row.argmax()),
                confidence=float(row.max()),
                uncertain=bool(row.max() < self.uncertain_threshold),
                probabilities=[float(p) for p in row],
                embedding=embedding,
            )
            for row, embedding in zip(outputs.probabilities, outputs.embeddings, strict=True)
        ]


def model_path(settings: Settings) -> Path:
    return settings.model_uri or BUNDLED_MODEL


def model_version(settings: Settings) -> str:
    """The configured model's version, read from its card without loading the model."""
    card_path = model_path(settings).with_name(CARD_FILENAME)
    try:
        return json.loads(card_path.read_text())["version"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the model version from {card_path}: {exc}") from exc


@cache
def _classifier_for(
    path: Path, num_threads: int, uncertain_threshold: float | None, pid: int
) -> Classifier:
    return Classifier(path, num_threads=num_threads, uncertain_threshold=uncertain_threshold)


def get_classifier(settings: Settings) -> Classifier:
    """This process's classifier, loaded on first use (after fork in a worker child)."""
    return _classifier_for(
        model_path(settings),
        settings.inference_threads,
        settings.uncertain_threshold,
        os.getpid(),
    )
