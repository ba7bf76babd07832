"""The training step: optimizer, schedule, one epoch of training, evaluation."""
from __future__ import annotations

import math
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .augment import mixup
from .config import TrainConfig

#: Learning-rate multipliers of the seed recipe per parameter group (``layer_lrs="seed"``). The seed
#: trains conv1 x0.1, layer3 x0.3, layer4 x0.5, fc x1; with nothing frozen, bn1, layer1 and layer2
#: join the stem's x0.1 (early, generic features move least).
SEED_LAYER_LRS = {"stem": 0.1, "layer1": 0.1, "layer2": 0.1, "layer3": 0.3, "layer4": 0.5, "fc": 1.0}


def _group_of(name: str) -> str:
    top = name.split(".")[0]
    return "stem" if top in ("conv1", "bn1") else top


def param_groups(model: nn.Module, lr: float, layer_lrs: str) -> list[dict]:
    """Trainable parameters grouped by stage, each with its lr; empty (frozen) groups are dropped."""
    groups: dict[str, list] = {name: [] for name in SEED_LAYER_LRS}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[_group_of(name)].append(p)
    scale = SEED_LAYER_LRS if layer_lrs == "seed" else dict.fromkeys(SEED_LAYER_LRS, 1.0)
    return [{"name": g, "params": ps, "lr": lr * scale[g]} for g, ps in groups.items() if ps]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, config.lr, config.layer_lrs)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """``plateau`` steps once per epoch on val loss; ``onecycle``, ``cosine`` and ``constant`` step every batch."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        max_lrs = [g["lr"] for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=total, pct_start=0.2)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=2)


def steps_per_batch(scheduler) -> bool:
    return not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def teacher_probs(logits: torch.Tensor, temperature: float, lam: float = 1.0,
                  perm: torch.Tensor | None = None) -> torch.Tensor:
    """The teacher's soft targets ``softmax(logits / T)``, mixed as mixup mixed the images
    (``lam * p + (1 - lam) * p[perm]``) when ``perm`` is given."""
    p = F.softmax(logits.float() / temperature, dim=1)
    return p if perm is None else lam * p + (1 - lam) * p[perm]


def distillation_loss(student: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(target || softmax(student / T))``, averaged over the batch (``target``: teacher probabilities
    at temperature T). The T^2 keeps its gradients on the scale of the cross-entropy's (Hinton et al. 2015)."""
    log_q = F.log_softmax(student.float() / temperature, dim=1)
    return F.kl_div(log_q, target, reduction="batchmean") * temperature ** 2


def training_loss(out: torch.Tensor, criterion, y_a: torch.Tensor, y_b: torch.Tensor, lam: float,
                  target: torch.Tensor | None = None, alpha: float = 0.0, temperature: float = 1.0) -> torch.Tensor:
    """The hard-label loss (mixed over ``y_a``/``y_b`` by ``lam``), and with a teacher ``target``
    ``(1 - alpha) * hard + alpha * distillation_loss(out, target, temperature)``."""
    hard = lam * criterion(out, y_a) + (1 - lam) * criterion(out, y_b)
    if target is None:
        return hard
    return (1 - alpha) * hard + alpha * distillation_loss(out, target, temperature)


def train_one_epoch(model, criterion, optimizer, scheduler, loader, device, config: TrainConfig,
                    generator: torch.Generator, desc: str = "train", teacher=None) -> dict:
    """One pass over ``loader``, whose batches are ``(x, y)`` or, with precomputed teacher logits,
    ``(x, y, teacher_logits)``; ``teacher`` (a callable: normalised batch -> logits) instead gives the
    logits of each batch as trained on, after mixup. Returns ``{loss, acc, images, seconds, images_per_s}``."""
    model.train()
    per_batch = scheduler is not None and steps_per_batch(scheduler)
    total_loss, correct, seen, start = 0.0, 0.0, 0, time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=not config.progress, unit="batch")
    for x, y, *given in bar:
        x, y_a, y_b, lam, perm = mixup(prepare(x, config.channels_last), y, config.mixup, generator)
        if teacher is not None:
            target = teacher_probs(teacher(x), config.kd_temperature)
        else:
            target = teacher_probs(given[0], config.kd_temperature, lam, perm) if given else None
        with autocast(device, config.bf16):
            out = model(x)
            loss = training_loss(out, criterion, y_a, y_b, lam, target, config.kd_alpha, config.kd_temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if per_batch:
            scheduler.step()
        value = loss.item()  # read after the step, as before: no extra wait for the device mid-step
        if not math.isfinite(value):  # diverged: this epoch's weights are lost, and train.check_finite
            return {"loss": value, "acc": 0.0, "images": seen, "seconds": time.perf_counter() - start,
                    "images_per_s": 0.0}  # stops the run before they are saved
        pred = out.argmax(1)
        n = y.shape[0]
        total_loss += value * n
        correct += (lam * (pred == y_a).sum() + (1 - lam) * (pred == y_b).sum()).item()
        seen += n
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    seconds = time.perf_counter() - start
    return {"loss": total_loss / seen, "acc": correct / seen, "images": seen, "seconds": seconds,
            "images_per_s": seen / seconds}


def average_weights(average: dict | None, model: nn.Module, count: int) -> dict:
    """The running mean of ``model``'s floating-point state (fp32, CPU) after ``count`` earlier ones."""
    state = {k: v.detach().to("cpu", torch.float32, copy=True) for k, v in model.state_dict().items()
             if v.is_floating_point()}
    if average is None or count == 0:
        return state
    for k, v in state.items():
        average[k] += (v - average[k]) / (count + 1)
    return average


def update_batchnorm(model: nn.Module, loader, config: TrainConfig) -> None:
    """Recompute every BatchNorm's running statistics as plain averages over one pass of ``loader`` in
    train mode (averaged weights need their own; Izmailov et al. 2018), inputs prepared as in training."""
    device = next(model.parameters()).device
    with autocast(device, config.bf16):
        torch.optim.swa_utils.update_bn((prepare(x, config.channels_last) for x, *_ in loader), model)


@torch.inference_mode()
def evaluate(model, criterion, loader, device, config: TrainConfig, desc: str = "val") -> dict:
    """Loss, accuracy, predictions and probabilities over ``loader`` (and flip-TTA ones with ``tta``)."""
    model.eval()
    total_loss, start = 0.0, time.perf_counter()
    y_true, probs, probs_tta = [], [], []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not config.progress, unit="batch"):
        x = prepare(x, config.channels_last)
        with autocast(device, config.bf16):
            out = model(x).float()
            if config.tta:
                probs_tta.append(((out.softmax(1) + model(x.flip(3)).float().softmax(1)) / 2).cpu())
        total_loss += criterion(out, y).item() * y.shape[0]
        probs.append(out.softmax(1).cpu())
        y_true.append(y.cpu())
    y_true = torch.cat(y_true).numpy()
    probs = torch.cat(probs).numpy()
    result = {"loss": total_loss / len(y_true), "acc": float(np.mean(probs.argmax(1) == y_true)),
              "y_true": y_true, "probs": probs, "seconds": time.perf_counter() - start}
    if config.tta:
        result["probs_tta"] = torch.cat(probs_tta).numpy()
        result["acc_tta"] = float(np.mean(result["probs_tta"].argmax(1) == y_true))
    return result
