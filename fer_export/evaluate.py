"""Evaluation on labelled folders, one code path for every model format (torch-free).

``evaluate(predictor, items)`` reads each image with :func:`fer_export.preprocess.read_gray`,
resizes it to the predictor's ``spec.input_size`` and takes the argmax of ``predictor.logits``.
:class:`EvalResult` holds the predictions and derives the confusion matrix, per-class metrics and
the classification report (sklearn's text layout, computed in numpy). Plotting imports matplotlib
only when a PNG is asked for.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from .errors import InputError
from .folders import labelled_images, resolve_split
from .outputs import cannot_write
from .preprocess import read_gray, resize
from .runtime import softmax

REPORT_HEADERS = ("precision", "recall", "f1-score", "support")
#: Image files :func:`plot_confusion` writes, by suffix (matplotlib's Agg, PDF and SVG writers).
CONFUSION_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``cm[true, pred]`` as an int64 (num_classes, num_classes) array."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (sklearn's ``zero_division`` default, without the warning)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def per_class_metrics(cm: np.ndarray, labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{label: {precision, recall, f1-score, support}}`` from a confusion matrix."""
    tp = np.diag(cm)
    precision = _ratio(tp, cm.sum(0))
    recall = _ratio(tp, cm.sum(1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1-score": float(f1[i]),
                    "support": int(cm[i].sum())} for i, label in enumerate(labels)}


def classification_report(cm: np.ndarray, labels: Sequence[str], digits: int = 2) -> str:
    """The text of ``sklearn.metrics.classification_report(y_true, y_pred, target_names=labels)``."""
    metrics = per_class_metrics(cm, labels)
    rows = [[label, *(m[h] for h in REPORT_HEADERS)] for label, m in metrics.items()]
    support = np.array([r[4] for r in rows], dtype=np.float64)
    values = np.array([r[1:4] for r in rows], dtype=np.float64)
    total = int(support.sum())
    width = max(max(len(label) for label in labels), len("weighted avg"), digits)
    head_fmt = "{:>{width}s} " + " {:>9}" * len(REPORT_HEADERS)
    row_fmt = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}\n"
    report = head_fmt.format("", *REPORT_HEADERS, width=width) + "\n\n"
    for row in rows:
        report += row_fmt.format(*row, width=width, digits=digits)
    report += "\n"
    accuracy = np.trace(cm) / total if total else 0.0
    report += ("{:>{width}s} " + " {:>9.{digits}}" * 2 + " {:>9.{digits}f} {:>9}\n").format(
        "accuracy", "", "", accuracy, total, width=width, digits=digits)
    weighted = (values * support[:, None]).sum(0) / total if total else np.zeros(3)
    for heading, avg in (("macro avg", values.mean(0)), ("weighted avg", weighted)):
        report += row_fmt.format(heading, *avg, total, width=width, digits=digits)
    return report


@dataclass
class EvalResult:
    """Predictions of one model on one labelled set, and everything derived from them."""

    labels: tuple[str, ...]  # class names, in output order
    y_true: np.ndarray  # (N,) int64 true class indices
    probs: np.ndarray  # (N, C) float32 softmax probabilities
    paths: list[str] = field(default_factory=list)  # image files, in the order of y_true
    model: str = ""  # what was evaluated (a path), for the report
    format: str = ""  # the model's format: checkpoint, torchscript or onnx
    self_check: str = ""  # an ONNX model's self-check on this machine (probe.SelfCheck.line()), else ""

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.y_pred == self.y_true)) if len(self.y_true) else 0.0

    @property
    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.y_true, self.y_pred, len(self.labels))

    def per_class(self) -> dict[str, dict[str, float]]:
        return per_class_metrics(self.confusion, self.labels)

    def classification_report(self, digits: int = 2) -> str:
        return classification_report(self.confusion, self.labels, digits)

    def to_dict(self) -> dict:
        return {"model": self.model, "format": self.format, "images": int(len(self.y_true)),
                "accuracy": self.accuracy, "labels": list(self.labels), "per_class": self.per_class(),
                "confusion_matrix": self.confusion.tolist()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def evaluate(predictor, items: Sequence[tuple[Path, int]], batch_size: int = 64,
             progress: bool = False) -> EvalResult:
    """Run ``predictor`` (see :func:`fer_export.predictors.load_predictor`) over ``(path, label)`` items."""
    spec = predictor.spec
    probs = []
    for start in tqdm(range(0, len(items), batch_size), desc="eval", unit="batch", disable=not progress):
        chunk = items[start:start + batch_size]
        batch = np.stack([resize(read_gray(p), spec.input_size, spec.resize) for p, _ in chunk])
        probs.append(softmax(np.asarray(predictor.logits(batch))))
    return EvalResult(labels=tuple(spec.labels), y_true=np.array([c for _, c in items], dtype=np.int64),
                      probs=np.concatenate(probs) if probs else np.zeros((0, spec.num_classes), np.float32),
                      paths=[str(p) for p, _ in items], format=getattr(predictor, "format", ""))


def evaluate_folder(model: str | Path, data: str | Path, split: str = "val", batch_size: int = 64,
                    limit_per_class: int | None = None, provider: str = "cpu", progress: bool = False,
                    self_check: bool = True) -> EvalResult:
    """Load any model file (or a bundled model by name) and evaluate it on ``DATA/split/<emotion>/*``
    (or ``DATA/<emotion>/*``). ``self_check`` goes to an ONNX model's EmotionClassifier."""
    from .predictors import load_predictor

    predictor = load_predictor(model, provider=provider, self_check=self_check)
    items = labelled_images(resolve_split(data, split), predictor.spec.labels, limit_per_class)
    result = evaluate(predictor, items, batch_size, progress)
    result.model = str(getattr(predictor, "path", model))
    result.self_check = predictor.check.line() if hasattr(predictor, "check") else ""
    return result


def check_confusion_path(path: str | Path) -> Path:
    """``path`` when :func:`plot_confusion` can write that kind of image, else an InputError saying which it can."""
    path = Path(path)
    if path.suffix.lower() not in CONFUSION_SUFFIXES:
        kind = repr(path.suffix) if path.suffix else "a file without a suffix"
        raise InputError(f"{path}: cannot write a confusion matrix as {kind}; "
                         f"name it with one of {', '.join(CONFUSION_SUFFIXES)} (e.g. {path.with_suffix('.png').name})")
    return path


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    """Save a confusion-matrix heat map (counts, with row-normalised colour) as an image, by its suffix
    (one of :data:`CONFUSION_SUFFIXES`: a PNG usually)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    path = check_confusion_path(path)

    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if rows[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, label="fraction of true class")
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    except OSError as exc:
        if path.is_file():
            path.unlink(missing_ok=True)  # half an image is worse than none
        raise cannot_write(path, exc) from exc
    return path
