"""Run artifacts: history CSV and curves (the confusion matrix plot lives in fer_export.evaluate)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from fer_export.evaluate import plot_confusion

__all__ = ["plot_confusion", "plot_history", "write_history_csv"]


def write_history_csv(history: Sequence[dict], path: str | Path) -> Path:
    """One row per epoch; columns are the union of the rows' keys, in first-seen order."""
    path = Path(path)
    columns = list(dict.fromkeys(k for row in history for k in row))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)
    return path


def plot_history(history: Sequence[dict], path: str | Path) -> Path:
    """Loss and accuracy curves (train and val, and val with TTA when recorded) as a PNG."""
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(11, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for split in ("train", "val"):
        loss_ax.plot(epochs, [row[f"{split}_loss"] for row in history], marker=".", label=split)
        acc_ax.plot(epochs, [row[f"{split}_acc"] for row in history], marker=".", label=split)
    if history and "val_acc_tta" in history[0]:
        acc_ax.plot(epochs, [row["val_acc_tta"] for row in history], marker=".", label="val (flip TTA)")
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="Accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
