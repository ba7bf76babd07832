"""Training configuration: recipes (presets) and the run config the CLI fills.

A :class:`Recipe` holds what defines a training recipe; :class:`TrainConfig` adds what defines one
run (data, output folder, device...). ``make_config("fast", epochs=60)`` starts from a recipe and
applies overrides; ``None`` overrides are ignored, so unset CLI options keep the recipe's value.

Weights rule: no recipe downloads anything by default (``weights="none"``). ``--weights imagenet``
is opt-in; ``freeze="auto"`` then means the seed's freezing (``seed``), and with random or
checkpoint weights it means ``none`` (freezing randomly initialised layers makes no sense).

Weight averaging: with ``swa = N`` the weights at the end of each of the last N epochs are averaged
(Izmailov et al. 2018, usually with a ``constant`` learning rate over those epochs), and the average's
BatchNorm statistics are recomputed over the training data when the run ends.

Distillation: with ``teacher`` set, the training loss is ``(1 - kd_alpha) * CE + kd_alpha * T^2 *
KL(softmax(teacher / T) || softmax(student / T))`` with ``T = kd_temperature`` (see
:mod:`training.teacher` for what a teacher may be); ``kd_*`` have no effect without a teacher. With
``teacher_views="augmented"`` the teacher's logits are those of the very batch the student is trained on
(augmented, mixed), computed at every step, rather than of the un-augmented image.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from fer_export.errors import InputError
from fer_export.outputs import is_inside
from fer_export.spec import ARCHITECTURES

AUGS = ("seed", "tensor")
TEACHER_MODELS = (".onnx", ".pth", ".pt")  # teacher files that are models (run over the training images)
TEACHER_LOGITS = (".npz", ".npy")  # teacher files that hold precomputed logits
#: Float fields, each of which must be a finite number (``--lr nan`` once trained to NaN weights and exited 0).
FLOAT_FIELDS = ("lr", "weight_decay", "grad_clip", "label_smoothing", "mixup", "kd_alpha", "kd_temperature", "degrade",
                "framed", "holdout")
#: What a teacher sees: "clean" (each training image un-augmented, once per run) or "augmented" (each
#: batch as the student sees it, every step: consistent teaching, Beyer et al. 2022).
TEACHER_VIEWS = ("clean", "augmented")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("plateau", "onecycle", "cosine", "constant")
LAYER_LRS = ("seed", "uniform")
FREEZES = ("auto", "seed", "none")
DEVICES = ("auto", "cpu", "cuda")
#: What a run trains on: the training split, or the training and validation splits together (a final fit
#: once the recipe is fixed; its validation is then a fold held out of the training split, --holdout).
TRAIN_ON = ("train", "train+val")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """What defines a recipe. The defaults are the seed recipe (except ``weights``: see above)."""

    arch: str = "resnet18"  # network, one of fer_export.spec.ARCHITECTURES
    img_size: int = 224  # square input size the network sees (spec.input_size)
    weights: str = "none"  # start from: "none" (random), "imagenet" (torchvision cache/download) or a .pth path
    freeze: str = "auto"  # "seed" (train layer3/layer4/fc only), "none", or "auto" (seed iff imagenet)
    aug: str = "seed"  # "seed": PIL transforms in a DataLoader; "tensor": in-memory uint8 data, batch aug in torch
    optimizer: str = "adamw"  # "adamw" or "sgd" (nesterov, momentum 0.9)
    lr: float = 1e-3  # base learning rate (the fc group's; peak lr for onecycle)
    layer_lrs: str = "seed"  # "seed": stem/bn1/layer1/layer2 x0.1, layer3 x0.3, layer4 x0.5, fc x1; "uniform"
    weight_decay: float = 0.01  # decoupled (adamw) or L2 (sgd) weight decay
    schedule: str = "plateau"  # "plateau" (ReduceLROnPlateau on val loss, factor 0.5, patience 2), "onecycle", "cosine", "constant"
    epochs: int = 30  # total epochs of the run (onecycle/cosine plan their schedule for this many)
    batch_size: int = 64  # images per training step
    grad_clip: float = 1.0  # max gradient norm (0 = no clipping)
    label_smoothing: float = 0.0  # CrossEntropyLoss label smoothing
    mixup: float = 0.0  # mixup Beta(alpha, alpha); 0 = off
    bf16: bool | None = False  # bfloat16 autocast; None = where the device computes it natively (CUDA, or a CPU
    # with AVX-512 bf16 or AMX): elsewhere the CPU emulates it, many times slower than float32
    channels_last: bool = False  # NHWC memory format (faster convolutions on CPU oneDNN and tensor cores)
    tta: bool = False  # also report horizontal-flip test-time-augmented val accuracy
    kd_alpha: float = 0.5  # weight of the distillation term (0 = hard labels only, 1 = teacher only); needs a teacher
    kd_temperature: float = 4.0  # softmax temperature T of teacher and student in the distillation term
    teacher_views: str = "clean"  # what the teacher sees, one of TEACHER_VIEWS ("augmented": a .pth teacher, aug tensor)
    degrade: float = 0.0  # aug "tensor": probability of a training face losing resolution (down- and upsampled)
    swa: int = 0  # average the weights of the last N epochs (stochastic weight averaging); 0 = off
    framed: float = 0.0  # aug "tensor": probability of a training face being one of its framed views (training.framed)
    framed_views: int = 2  # framed views made of each training face (once, kept in the run's cache)
    framing: str | None = None  # the framing the views are cropped with: a framing JSON or an exported .onnx


#: The seed recipe (ImageNet fine-tuning at 224 px when run with --weights imagenet).
SEED = Recipe()

#: A from-scratch recipe sized for a 2-core CPU: the seed's own ResNet18 at 96 px (FER2013's 48 px
#: crops upsampled 2x, so layer1 works at 24x24), in-memory data with batch augmentation in torch,
#: SGD + one-cycle, bf16 where the device has it, label smoothing.
FAST = Recipe(arch="resnet18", img_size=96, aug="tensor", optimizer="sgd", lr=0.1, layer_lrs="uniform",
              weight_decay=5e-4, schedule="onecycle", epochs=30, batch_size=128, label_smoothing=0.1,
              bf16=None, channels_last=True, tta=True)

RECIPES: dict[str, Recipe] = {"seed": SEED, "fast": FAST}


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Recipe):
    """One training run: a recipe plus where the data is and where the run goes."""

    recipe: str = "seed"  # name of the recipe the other fields started from
    data: str = ""  # dataset root holding train/ and val/ in Kaggle layout (DATA/<split>/<emotion>/*.jpg)
    val: str | None = None  # validation folder (default DATA/val)
    train_on: str = "train"  # "train", or "train+val": the validation folder's images are trained on too
    holdout: float = 0.0  # validate on this share of the training split instead (stratified, seeded; 0 = off):
    # epochs and checkpoints are then chosen on faces of the training split, and the validation folder stays a test
    teacher: str | None = None  # distil from: a model (.onnx, .pth, .pt) or precomputed train logits (.npz, .npy)
    out: str = "runs/fer"  # run folder: checkpoints, history, plots, report, metrics
    limit_per_class: int | None = None  # seeded sample of at most N images per class (train and val)
    workers: int = 2  # DataLoader worker processes for --aug seed (0 = load in the main process)
    seed: int = 0  # seeds sampling, shuffling, augmentation and initialisation
    device: str = "auto"  # "auto" (cuda if available), "cpu" or "cuda"
    progress: bool = True  # tqdm progress bars within each epoch
    resume: bool = False  # continue the run in `out` from its last.pth

    def __post_init__(self):
        problems = _problems(self)
        if problems:
            raise InputError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def resolved_freeze(self) -> str:
        if self.freeze == "auto":
            return "seed" if self.weights == "imagenet" else "none"
        return self.freeze


def make_config(recipe: str = "seed", **overrides: Any) -> TrainConfig:
    """A run config from a named recipe; ``None`` overrides are skipped (they mean "not given")."""
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return TrainConfig(recipe=recipe, **{**asdict(RECIPES[recipe]), **given})


def with_overrides(config: TrainConfig, **overrides: Any) -> TrainConfig:
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def _problems(c: TrainConfig) -> list[str]:
    checks = [("arch", ARCHITECTURES), ("aug", AUGS), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
              ("layer_lrs", LAYER_LRS), ("freeze", FREEZES), ("device", DEVICES), ("train_on", TRAIN_ON)]
    p = [f"{name} must be one of {choices}, got {getattr(c, name)!r}"
         for name, choices in checks if getattr(c, name) not in choices]
    bad = [name for name in FLOAT_FIELDS
           if isinstance(getattr(c, name), bool) or not isinstance(getattr(c, name), (int, float))
           or not math.isfinite(getattr(c, name))]
    if bad:  # NaN compares False with every bound below, so it must be refused first
        return p + [f"{name} must be a finite number, got {getattr(c, name)!r}" for name in bad]
    if c.img_size < 16:
        p.append(f"img_size must be at least 16, got {c.img_size}")
    for name in ("epochs", "batch_size"):
        if getattr(c, name) < 1:
            p.append(f"{name} must be at least 1, got {getattr(c, name)}")
    if c.lr <= 0:
        p.append(f"lr must be positive, got {c.lr}")
    for name in ("weight_decay", "grad_clip"):
        if getattr(c, name) < 0:
            p.append(f"{name} must be >= 0, got {getattr(c, name)}")
    if not 0 <= c.label_smoothing < 1:
        p.append(f"label_smoothing must be in [0, 1), got {c.label_smoothing}")
    if c.mixup < 0:
        p.append(f"mixup alpha must be >= 0, got {c.mixup}")
    if not 0 <= c.kd_alpha <= 1:
        p.append(f"kd_alpha must be in [0, 1], got {c.kd_alpha}")
    if c.kd_temperature <= 0:
        p.append(f"kd_temperature must be positive, got {c.kd_temperature}")
    if c.teacher is not None and not str(c.teacher).lower().endswith(TEACHER_MODELS + TEACHER_LOGITS):
        p.append(f"teacher must be a model ({', '.join(TEACHER_MODELS)}) or logits file ({', '.join(TEACHER_LOGITS)}), "
                 f"got {c.teacher!r}")
    if c.teacher_views not in TEACHER_VIEWS:
        p.append(f"teacher_views must be one of {TEACHER_VIEWS}, got {c.teacher_views!r}")
    elif c.teacher_views == "augmented" and c.teacher is None:
        p.append("teacher_views augmented is what a teacher sees; give the teacher with --teacher FILE.pth")
    elif c.teacher_views == "augmented":
        if not str(c.teacher).lower().endswith(".pth"):
            p.append(f"teacher_views augmented runs the teacher in torch at every step, so the teacher must be a "
                     f".pth checkpoint, got {c.teacher!r}")
        if c.aug != "tensor":
            p.append("teacher_views augmented needs --aug tensor (the batch the teacher sees is augmented on the device)")
    if not 0 <= c.degrade <= 1:
        p.append(f"degrade must be in [0, 1], got {c.degrade}")
    elif c.degrade and c.aug != "tensor":
        p.append("degrade is part of the tensor augmentation; use it with --aug tensor (the fast recipe)")
    if not 0 <= c.framed <= 1:
        p.append(f"framed must be in [0, 1], got {c.framed}")
    elif c.framed and c.aug != "tensor":
        p.append("framed views are part of the tensor augmentation; use them with --aug tensor (the fast recipe)")
    elif c.framed and not c.framing:
        p.append("framed views are cropped with a framing: give --framing FILE (a framing JSON, e.g. "
                 "docs/model_card/framing.json, or an exported .onnx whose spec has one)")
    if c.framed_views < 1:
        p.append(f"framed_views must be at least 1, got {c.framed_views}")
    if not 0 <= c.swa <= c.epochs:
        p.append(f"swa must be between 0 and epochs ({c.epochs}), got {c.swa}")
    if not 0 <= c.holdout <= 0.5:
        p.append(f"holdout must be a share of the training split in [0, 0.5], got {c.holdout}")
    elif c.train_on == "train+val" and not c.holdout:
        p.append("train_on train+val trains on the validation folder, so it cannot validate: give --holdout F "
                 "(e.g. 0.05) to validate on a share of the training split")
    if c.bf16 not in (None, True, False):
        p.append(f"bf16 must be true, false or none (auto), got {c.bf16!r}")
    if c.limit_per_class is not None and c.limit_per_class < 1:
        p.append(f"limit_per_class must be at least 1, got {c.limit_per_class}")
    if c.data and c.out and is_inside(c.out, c.data):
        p.append(f"out {c.out!r} is inside the data folder {c.data!r}: the run's files would join the dataset; "
                 "choose a folder outside it")
    return p

