"""The training run: ``main(config)`` trains, checkpoints every epoch and writes the run's artifacts.

RUN_DIR receives ``best_model.pth`` (seed layout + spec, epoch, metrics), ``last.pth`` (everything
``--resume`` needs), ``history.csv``, ``training_history.png``, ``confusion_matrix.png``,
``classification_report.txt`` and ``metrics.json`` (and ``swa_model.pth``, the averaged weights, with
``swa``: the report, confusion matrix and metrics are then the average's); ``cache/`` holds decoded pixels for
``aug="tensor"`` and a teacher's logits (see :mod:`training.teacher`). Randomness is reseeded from
``(seed, epoch)`` at every epoch start, so a resumed run continues exactly as an uninterrupted one
would, without saving generator states.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from fer_export.errors import CheckpointError, InputError
from fer_export.evaluate import EvalResult
from fer_export.model import build_model, freeze, load_checkpoint, read_checkpoint, save_checkpoint
from fer_export.spec import SEED_SPEC, ModelSpec

from . import engine
from .config import TrainConfig, with_overrides
from .data import epoch_seed, load_data, load_items
from .plots import plot_confusion, plot_history, write_history_csv
from .teacher import AugmentedTeacher, soft_targets

LAST, BEST, SWA = "last.pth", "best_model.pth", "swa_model.pth"


@dataclass
class TrainResult:
    """What a run produced: its folder, metrics (as written to metrics.json) and whether it was cut short."""

    run_dir: Path
    metrics: dict = field(default_factory=dict)
    interrupted: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was requested but torch sees no CUDA device; use --device cpu or auto")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def resolve_bf16(wanted: bool | None, device: torch.device) -> bool:
    """``--bf16`` as given, or (None) whether ``device`` computes bfloat16 natively."""
    if wanted is not None:
        return wanted
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    from fer_export.cpu import cpu_info

    return cpu_info().bf16


def create_model(config: TrainConfig, resumed: dict | None = None) -> tuple[nn.Module, ModelSpec]:
    """The network and its spec: from ``last.pth`` when resuming, else from ``config.weights``."""
    size = (config.img_size, config.img_size)
    if resumed is not None:
        spec = ModelSpec.from_dict(resumed["spec"])
        model = build_model(spec)
        model.load_state_dict(resumed["model_state_dict"])
    elif config.weights in ("none", "imagenet"):
        spec = SEED_SPEC.replace(arch=config.arch, input_size=list(size))
        model = build_model(spec, weights=config.weights)
    else:  # fine-tune one of our (or the seed's) checkpoints; its arch and labels win, the size is ours
        model, spec = load_checkpoint(config.weights)
        spec = spec.replace(input_size=list(size))
    freeze(model, config.resolved_freeze)
    return model, spec


def resume_config(run_dir: str | Path, **overrides) -> TrainConfig:
    """The config saved in ``RUN_DIR/last.pth`` with ``overrides`` (e.g. more epochs) applied."""
    saved = read_checkpoint(Path(run_dir) / LAST)
    if "config" not in saved:
        raise CheckpointError(f"{Path(run_dir) / LAST}: has no training config; it was not written by fer-train")
    config = TrainConfig.from_dict({**saved["config"], "out": str(run_dir), "resume": True})
    planned = {"onecycle", "cosine"}
    if config.schedule in planned and overrides.get("epochs") not in (None, config.epochs):
        raise InputError(f"the {config.schedule} schedule of {run_dir} was planned for {config.epochs} epochs; "
                         f"resume with the same --epochs (only the plateau schedule can be extended)")
    if config.swa and overrides.get("epochs") not in (None, config.epochs):
        raise InputError(f"{run_dir} averages the weights of its last {config.swa} of {config.epochs} epochs (--swa); "
                         f"resume with the same --epochs")
    return with_overrides(config, **overrides)


def _check_out(config: TrainConfig, run_dir: Path) -> dict | None:
    last = run_dir / LAST
    if config.resume:
        return read_checkpoint(last)
    if last.exists():
        raise InputError(f"{run_dir} already holds a run ({last}); continue it with --resume {run_dir} "
                         f"or choose another --out")
    return None


def epoch_row(epoch: int, train: dict, val: dict, optimizer) -> dict:
    row = {"epoch": epoch, "train_loss": train["loss"], "train_acc": train["acc"],
           "val_loss": val["loss"], "val_acc": val["acc"]}
    if "acc_tta" in val:
        row["val_acc_tta"] = val["acc_tta"]
    row.update({f"lr_{g['name']}": g["lr"] for g in optimizer.param_groups})
    row.update(seconds=train["seconds"] + val["seconds"], train_images_per_s=train["images_per_s"])
    return row


def format_row(row: dict, epochs: int) -> str:
    tta = f" (flip TTA {row['val_acc_tta']:.2%})" if "val_acc_tta" in row else ""
    lrs = "/".join(f"{v:.1e}" for k, v in row.items() if k.startswith("lr_"))
    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}  "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}{tta}  lr {lrs}  "
            f"{row['seconds']:.1f}s  {row['train_images_per_s']:.0f} img/s")


def run_epoch(epoch: int, model, criterion, optimizer, scheduler, loaders, device, config: TrainConfig,
              teacher=None) -> dict:
    """Train one epoch and evaluate; ``epoch`` counts from 1; ``teacher``: an :class:`AugmentedTeacher`
    (a teacher whose logits were precomputed travels in the loader). Returns the history row."""
    seed = epoch_seed(config.seed, epoch)
    torch.manual_seed(seed)  # dropout and the seed path's transforms when workers=0
    train_loader, val_loader = loaders
    train_loader.set_epoch(epoch)
    generator = torch.Generator(device=device).manual_seed(seed)
    train = engine.train_one_epoch(model, criterion, optimizer, scheduler, train_loader, device, config, generator,
                                   desc=f"epoch {epoch}/{config.epochs}", teacher=teacher)
    val = engine.evaluate(model, nn.CrossEntropyLoss(), val_loader, device, config)
    if not engine.steps_per_batch(scheduler):
        scheduler.step(val["loss"])
    return epoch_row(epoch, train, val, optimizer)


def check_finite(row: dict, run_dir: Path, kept: bool, config: TrainConfig) -> None:
    """Stop a run whose loss became NaN or infinite (a too-high learning rate): its weights are lost, and
    saving them would make a NaN model the "best" one. ``kept``: earlier epochs were saved."""
    bad = next((k for k in ("train_loss", "val_loss") if not math.isfinite(row[k])), None)
    if bad is None:
        return
    saved = (f"the last good epoch is kept in {run_dir / LAST}" if kept else "nothing was saved")
    raise InputError(f"training diverged in epoch {row['epoch']}: the {bad.replace('_', ' ')} became {row[bad]}; "
                     f"{saved}. Lower --lr (now {config.lr:g}) or clip gradients (--grad-clip), and rerun")


def main(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Train as ``config`` says (or continue ``config.out`` when ``config.resume``)."""
    run_dir = Path(config.out)
    resumed = _check_out(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.freeze == "seed" and config.weights == "none":
        log("warning: --freeze seed with --weights none trains only layer3/layer4/fc on top of random features")
    device = resolve_device(config.device)
    config = with_overrides(config, bf16=resolve_bf16(config.bf16, device))
    torch.manual_seed(config.seed)
    model, spec = create_model(config, resumed)
    config = with_overrides(config, arch=spec.arch)  # a fine-tuned checkpoint brings its own arch
    model.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    items = load_items(config, spec.labels)
    teacher = online = None
    if config.teacher:
        expect = resumed and resumed.get("teacher_sha256")
        if config.teacher_views == "augmented":
            teacher = online = AugmentedTeacher.load(config, spec, device, expect)
        else:
            teacher = soft_targets(config, spec, items[0], run_dir, expect, log)
        log(f"distilling (alpha {config.kd_alpha:g}, T {config.kd_temperature:g}) from {teacher.describe()}")
    train_loader, val_loader, val_items = load_data(config, spec, device, run_dir, items,
                                                    teacher.logits if teacher and not online else None, log)
    optimizer = engine.build_optimizer(model, config)
    scheduler = engine.build_scheduler(optimizer, config, len(train_loader))
    state = {"history": [], "best_acc": -1.0, "best_epoch": 0, "elapsed": 0.0, "swa_count": 0}
    average = None
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer_state_dict"])
        scheduler.load_state_dict(resumed["scheduler_state_dict"])
        state = {k: resumed.get(k, v) for k, v in state.items()}
        average = resumed.get("swa_state_dict")
        log(f"resuming {run_dir} after epoch {resumed['epoch']}/{config.epochs}")
    log(f"training {spec.arch} at {spec.input_size[0]}x{spec.input_size[1]} on {device}: "
        f"{train_loader.num_images} train / {len(val_items)} val images, recipe {config.recipe}, aug {config.aug}, "
        f"freeze {config.resolved_freeze}, {config.optimizer} lr {config.lr:g} {config.schedule}, "
        f"{'bf16' if config.bf16 else 'float32'}" + (f", trained on {config.train_on}, validated on a held-out "
                                                     f"{config.holdout:.0%} of train" if config.holdout else ""))
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    interrupted = False
    try:
        for epoch in range(len(state["history"]) + 1, config.epochs + 1):
            start = time.perf_counter()
            row = run_epoch(epoch, model, criterion, optimizer, scheduler, (train_loader, val_loader), device, config,
                            online)
            check_finite(row, run_dir, bool(state["history"]), config)
            state["history"].append(row)
            state["elapsed"] += time.perf_counter() - start
            if row["val_acc"] > state["best_acc"]:
                state.update(best_acc=row["val_acc"], best_epoch=epoch)
                save_checkpoint(run_dir / BEST, model, spec, epoch=epoch, metrics=row)
            if epoch > config.epochs - config.swa:
                average = engine.average_weights(average, model, state["swa_count"])
                state["swa_count"] += 1
            save_checkpoint(run_dir / LAST, model, spec, epoch=epoch, config=config.to_dict(),
                            optimizer_state_dict=optimizer.state_dict(),
                            scheduler_state_dict=scheduler.state_dict(), **state,
                            **({"teacher_sha256": teacher.sha256} if teacher else {}),
                            **({"swa_state_dict": average} if average is not None else {}))
            write_history_csv(state["history"], run_dir / "history.csv")
            log(format_row(row, config.epochs))
    except KeyboardInterrupt:
        interrupted = True
        log(f"interrupted: {len(state['history'])} completed epochs kept in {run_dir / LAST}; "
            f"continue with: fer-train --resume {run_dir}")
    if not state["history"]:
        return TrainResult(run_dir, interrupted=interrupted)
    if average is not None and not interrupted and len(state["history"]) == config.epochs:
        save_average(run_dir, model, spec, average, train_loader, device, config, state, log)
    metrics = finish(run_dir, model, spec, config, val_loader, val_items, device, state)
    metrics["interrupted"] = interrupted
    metrics["data"] = {"train_on": config.train_on, "train_images": train_loader.num_images,
                       "val_images": len(val_items),
                       "validated_on": f"{config.holdout:g} of train, held out" if config.holdout else "the val folder"}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return TrainResult(run_dir, metrics, interrupted)


def save_average(run_dir: Path, model, spec: ModelSpec, average: dict, train_loader, device, config: TrainConfig,
                 state: dict, log: Callable[[str], None]) -> Path:
    """Load the averaged weights into ``model``, recompute its BatchNorm statistics over the training
    images (augmented as in training, seeded after the last epoch) and write ``swa_model.pth``."""
    model.load_state_dict({**model.state_dict(), **average})
    train_loader.set_epoch(config.epochs + 1)
    torch.manual_seed(epoch_seed(config.seed, config.epochs + 1))
    engine.update_batchnorm(model, train_loader, config)
    first = config.epochs - state["swa_count"] + 1
    log(f"averaged the weights of epochs {first}-{config.epochs} and recomputed BatchNorm: {run_dir / SWA}")
    return save_checkpoint(run_dir / SWA, model, spec, epoch=config.epochs, swa_epochs=[first, config.epochs])


def _evaluate_file(path: Path, model, val_loader, device, config: TrainConfig) -> tuple[dict, dict]:
    """Load checkpoint ``path`` into ``model`` and evaluate it; returns ``(evaluation, checkpoint)``."""
    saved = read_checkpoint(path)
    model.load_state_dict(saved["model_state_dict"])
    return engine.evaluate(model, nn.CrossEntropyLoss(), val_loader, device, config, desc=path.stem), saved


def _scores(prefix: str, val: dict) -> dict:
    return {f"{prefix}_val_acc": val["acc"], f"{prefix}_val_acc_tta": val.get("acc_tta"),
            f"{prefix}_val_loss": val["loss"]}


def finish(run_dir: Path, model, spec: ModelSpec, config: TrainConfig, val_loader, val_items, device,
           state: dict) -> dict:
    """Evaluate the run's model (the weight average with ``swa``, else the best checkpoint), write the
    plots and the classification report; return the metrics."""
    averaged = config.swa > 0 and (run_dir / SWA).exists()
    metrics = {"best_epoch": state["best_epoch"]}
    if averaged:  # the best single epoch, for comparison
        metrics.update(_scores("best", _evaluate_file(run_dir / BEST, model, val_loader, device, config)[0]))
    final = run_dir / (SWA if averaged else BEST)
    val, saved = _evaluate_file(final, model, val_loader, device, config)
    metrics.update(_scores("swa" if averaged else "best", val))
    if averaged:
        metrics["swa_epochs"] = saved["swa_epochs"]
        what = "average of epochs {}-{}".format(*saved["swa_epochs"])
    else:
        what = f"epoch {state['best_epoch']}"
    result = EvalResult(labels=spec.labels, y_true=val["y_true"], probs=val["probs"],
                        paths=[str(p) for p, _ in val_items], model=str(final), format="checkpoint")
    (run_dir / "classification_report.txt").write_text(result.classification_report())
    plot_confusion(result.confusion, spec.labels, run_dir / "confusion_matrix.png",
                   title=f"{run_dir.name}: {what}, val acc {result.accuracy:.2%}")
    plot_history(state["history"], run_dir / "training_history.png")
    history = state["history"]
    return {**metrics,
            "epochs_completed": len(history), "per_class": result.per_class(),
            "confusion_matrix": result.confusion.tolist(),
            "throughput": {"train_images_per_s": sum(r["train_images_per_s"] for r in history) / len(history),
                           "val_images_per_s": len(val_items) / val["seconds"], "device": str(device),
                           "threads": torch.get_num_threads()},
            "elapsed_s": state["elapsed"], "spec": spec.to_dict(), "config": config.to_dict()}
