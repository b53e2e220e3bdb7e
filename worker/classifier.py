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

from worker.config import Settings

BUNDLED_MODEL = Path(__file__).parent / "model" / "model.tflite"
CARD_FILENAME = "model_card.json"


class ModelError(RuntimeError):
    """The model artifact is missing, does not match its card, or has the wrong shape."""


@dataclass(frozen=True)
class Prediction:
    label: int
    confidence: float
    probabilities: list[float]


class Classifier:
    """A LiteRT interpreter for one model file; ``predict`` takes a batch.

    One interpreter is not thread-safe, so calls are serialised with a lock; run
    one ``Classifier`` per process (or per thread) for parallelism.
    """

    def __init__(self, model_path: Path, *, num_threads: int = 1) -> None:
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
        self.version: str = self.card["version"]
        self._interpreter = Interpreter(model_content=content, num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._batch_size = 0
        self._lock = threading.Lock()

    def _resize(self, batch_size: int) -> None:
        if batch_size != self._batch_size:
            shape = [batch_size, *self._input["shape"][1:]]
            self._interpreter.resize_tensor_input(self._input["index"], shape)
            self._interpreter.allocate_tensors()
            self._batch_size = batch_size

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """float32 ``(n, 28, 28, 1)`` in ``[0, 1]`` → class probabilities ``(n, 10)``."""
        if images.ndim != 4 or images.shape[1:] != tuple(self._input["shape"][1:]):
            raise ValueError(
                f"expected images of shape (n, {', '.join(map(str, self._input['shape'][1:]))}),"
                f" got {images.shape}"
            )
        with self._lock:
            self._resize(len(images))
            self._interpreter.set_tensor(self._input["index"], images.astype(np.float32))
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output["index"]).copy()

    def predict(self, images: np.ndarray) -> list[Prediction]:
        probabilities = self.predict_proba(images)
        return [
            Prediction(int(row.argmax()), float(row.max()), [float(p) for p in row])
            for row in probabilities
        ]


def model_path(settings: Settings) -> Path:
    return settings.model_uri or BUNDLED_MODEL


@cache
def _classifier_for(path: Path, num_threads: int, pid: int) -> Classifier:
    return Classifier(path, num_threads=num_threads)


def get_classifier(settings: Settings) -> Classifier:
    """This process's classifier, loaded on first use (after fork in a worker child)."""
    return _classifier_for(model_path(settings), settings.inference_threads, os.getpid())
