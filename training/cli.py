"""``fer-train``: train a FER model; a thin click layer over :func:`training.train.main`."""
from __future__ import annotations

import sys

import click

from fer_export.cli import EXIT_FAILED, EXIT_OK, library_errors
from fer_export.spec import ARCHITECTURES

from .config import (AUGS, DEVICES, FREEZES, LAYER_LRS, OPTIMIZERS, RECIPES, SCHEDULES, TEACHER_VIEWS, TRAIN_ON,
                     Recipe, make_config)

EXIT_INTERRUPTED = 130

HELP = """Train a facial-emotion ResNet18 on DATA/train, validating on DATA/val (Kaggle layout:
DATA/<split>/<emotion>/*.jpg). RUN_DIR receives best_model.pth, last.pth, history.csv,
training_history.png, confusion_matrix.png, classification_report.txt and metrics.json
(and swa_model.pth with --swa).

\b
Recipes (every option below overrides the recipe's value):
  seed  ResNet18 at 224 px, the seed's PIL augmentation, AdamW lr 1e-3 with per-layer lrs
        (stem conv1+bn1, layer1, layer2 x0.1, layer3 x0.3, layer4 x0.5, fc x1), wd 0.01,
        ReduceLROnPlateau (0.5, patience 2) on val loss, grad clip 1.0, batch 64, 30 epochs.
  fast  The seed's ResNet18 at 96 px (FER2013's 48 px crops upsampled 2x), trained from scratch
        on a CPU: in-memory data with batch augmentation in torch (flip, rotation 15, scale
        0.85-1.15, shift 10 %, random erasing), SGD nesterov lr 0.1 one-cycle, wd 5e-4, label
        smoothing 0.1, bf16 where computed natively, channels_last, batch 128, 30 epochs,
        flip-TTA accuracy reported beside plain accuracy.

\b
Weights: nothing is downloaded unless asked. The default is --weights none (random init).
--weights imagenet uses torchvision's ImageNet weights (downloaded once if not cached), and
then --freeze auto freezes as the seed did (only layer3/layer4/fc train); with none or a
checkpoint PATH, --freeze auto trains everything. The exact seed recipe is therefore:
  fer-train --data DATA --out RUN_DIR --weights imagenet

\b
Distillation: --teacher FILE adds (alpha) T^2 KL(teacher/T || student/T) to (1 - alpha) times
the hard-label loss; FILE is a model (.onnx, .pth, .pt) run once over the un-augmented training
images, or their precomputed logits (.npz from `python -m training.teacher`, which also averages
several teachers into one, or a .npy in training-item order). The logits are cached in RUN_DIR/cache.
--teacher-views augmented runs a .pth teacher on every training batch instead, augmented and mixed
as the student sees it (consistent teaching; two teacher passes a step, view and mirror: use a GPU).

\b
Weight averaging: --swa N averages the weights of the last N epochs and recomputes the average's
BatchNorm statistics over the training images at the end (swa_model.pth; the report, confusion
matrix and metrics are then the average's). Usually with --schedule constant, e.g. to refine a run:
  fer-train --recipe fast --weights RUN/last.pth --schedule constant --lr 0.01 --epochs 12 --swa 12

\b
Selection that leaves DATA/val a test: --holdout 0.05 validates, and picks best_model.pth, on a
seeded 5 % of each class of DATA/train; score DATA/val once at the end with fer-eval. A final fit
on all labelled data adds --train-on train+val to the same command, once its train-only twin (the
command without it) has given the honest DATA/val score; with --swa no epoch is chosen at all.

\b
Ctrl-C stops after keeping the last completed epoch; continue with --resume RUN_DIR
(--epochs may be raised for the plateau schedule). Exit codes: 0 done, 2 usage or input
error, 130 interrupted.
"""


@click.command(help=HELP)
@click.option("--data", type=click.Path(file_okay=False), help="Dataset root holding train/ and val/.")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run folder (RUN_DIR) to write.")
@click.option("--val", type=click.Path(file_okay=False), help="Validation folder (default DATA/val).")
@click.option("--train-on", type=click.Choice(TRAIN_ON),
              help="train, or train+val: the validation folder is trained on too (needs --holdout) [default: train].")
@click.option("--holdout", type=float,
              help="Validate (and choose the best epoch) on this share of the training split, e.g. 0.05, "
                   "instead of the validation folder, which then stays a test [default: 0].")
@click.option("--recipe", type=click.Choice(sorted(RECIPES)), default="seed", show_default=True,
              help="Preset the other options start from.")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False),
              help="Continue the run in this RUN_DIR from its last.pth (its saved config is used).")
@click.option("--arch", type=click.Choice(ARCHITECTURES), help="Network (see fer_export.spec.ARCHITECTURES).")
@click.option("--img-size", type=int, help="Square input size in pixels.")
@click.option("--weights", help="Initial weights: none, imagenet, or a .pth checkpoint to fine-tune.")
@click.option("--freeze", type=click.Choice(FREEZES), help="seed: train layer3/layer4/fc only; auto: see above.")
@click.option("--aug", type=click.Choice(AUGS), help="seed: PIL transforms + DataLoader; tensor: in-memory, torch.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), help="adamw or sgd (nesterov, momentum 0.9).")
@click.option("--lr", type=float, help="Base (fc group / peak) learning rate.")
@click.option("--layer-lrs", type=click.Choice(LAYER_LRS), help="seed: per-stage lr multipliers; uniform.")
@click.option("--weight-decay", type=float, help="Weight decay.")
@click.option("--schedule", type=click.Choice(SCHEDULES), help="Learning-rate schedule.")
@click.option("--epochs", type=int, help="Total epochs.")
@click.option("--batch-size", type=int, help="Images per training step.")
@click.option("--grad-clip", type=float, help="Max gradient norm (0 = off).")
@click.option("--label-smoothing", type=float, help="Label smoothing of the training loss.")
@click.option("--mixup", type=float, help="Mixup alpha (0 = off).")
@click.option("--bf16/--no-bf16", default=None,
              help="bfloat16 autocast [default: the recipe's; fast: on where CUDA or the CPU (AVX-512 bf16, "
                   "AMX) computes it natively, since other CPUs emulate it many times slower].")
@click.option("--channels-last/--no-channels-last", default=None, help="NHWC memory format.")
@click.option("--tta/--no-tta", default=None, help="Also report horizontal-flip TTA val accuracy.")
@click.option("--teacher", type=click.Path(exists=True, dir_okay=False, resolve_path=True),
              help="Distil from this model (.onnx/.pth/.pt) or logits file (.npz/.npy).")
@click.option("--kd-alpha", type=float,
              help=f"Weight of the distillation term, 0-1 [default: {Recipe.kd_alpha}].")
@click.option("--kd-temperature", type=float,
              help=f"Softmax temperature of the distillation term [default: {Recipe.kd_temperature}].")
@click.option("--teacher-views", type=click.Choice(TEACHER_VIEWS),
              help="What the teacher sees: clean images once, or every augmented batch [default: clean].")
@click.option("--degrade", type=float,
              help="Probability of a training face losing resolution (aug tensor; 0 = off).")
@click.option("--framed", type=float,
              help="Probability of a training face being seen as fer-batch crops it from a picture "
                   "(aug tensor; 0 = off; see training.framed).")
@click.option("--framed-views", type=int, help="Framed views made of each training face [default: 2].")
@click.option("--framing", type=click.Path(exists=True, dir_okay=False, resolve_path=True),
              help="Framing of the framed views: a framing JSON or an exported .onnx that carries one.")
@click.option("--swa", type=int, help="Average the weights of the last N epochs (0 = off).")
@click.option("--limit-per-class", type=int, help="Seeded sample of at most N images per class (train and val).")
@click.option("--workers", type=int, help="DataLoader workers for --aug seed [default: 2].")
@click.option("--seed", type=int, help="Random seed [default: 0].")
@click.option("--device", type=click.Choice(DEVICES), help="auto (cuda if available), cpu or cuda.")
@click.option("--progress/--no-progress", default=None, help="tqdm bars within each epoch [default: on].")
@library_errors
def main(data, out, resume_dir, recipe, **options):
    from .train import main as train, resume_config

    if resume_dir:
        allowed = {k: options[k] for k in ("epochs", "workers", "device", "progress")}
        given = [k for k, v in {**options, "data": data, "out": out}.items() if v is not None and k not in allowed]
        if given:
            raise click.UsageError(f"--resume uses the run's saved config; only --epochs, --workers, --device "
                                   f"and --progress may be given with it, not {', '.join(sorted(given))}")
        config = resume_config(resume_dir, **allowed)
    else:
        if not data or not out:
            raise click.UsageError("--data and --out are required (or --resume RUN_DIR)")
        config = make_config(recipe, data=data, out=out, **options)
    result = train(config, log=click.echo)
    if result.metrics:
        m = result.metrics
        tta = f" (flip TTA {m['best_val_acc_tta']:.2%})" if m.get("best_val_acc_tta") is not None else ""
        click.echo(f"best epoch {m['best_epoch']}: val acc {m['best_val_acc']:.2%}{tta} -> {result.run_dir}")
        if "swa_val_acc" in m:
            tta = f" (flip TTA {m['swa_val_acc_tta']:.2%})" if m.get("swa_val_acc_tta") is not None else ""
            first, last = m["swa_epochs"]
            click.echo(f"average of epochs {first}-{last}: val acc {m['swa_val_acc']:.2%}{tta} -> "
                       f"{result.run_dir / 'swa_model.pth'}")
    if result.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(EXIT_OK if result.metrics else EXIT_FAILED)

