"""Teachers for knowledge distillation: a teacher's logits over the training items, computed once.

A teacher (``fer-train --teacher FILE``) is one of

* a model file: an exported ``.onnx`` (its contract, i.e. labels, input size, normalisation and resize
  method, comes from its metadata, and TTA built into its graph is part of the teacher), a ``.pth``
  checkpoint or a ``.pt`` TorchScript export. It runs over the training images un-augmented, decoded
  as the data cache decodes them (:func:`training.data.decode_items` at the teacher's own input size
  and resize method; at the student's size and with ``--aug tensor`` it is the very same cache file);
* an ``.npz`` logits file as :func:`write_logits` writes it (``python -m training.teacher``): ``logits``
  float32 (N, C); ``labels`` (C,), the class names in column order; ``paths`` (N,), each image's path
  relative to the train folder with ``/`` separators (``happy/Training_10019449.jpg``). Rows are
  matched to the training items by path, so one file over the whole split serves any
  ``--limit-per-class`` slice;
* a bare ``.npy`` float array (N, C): one row per training item in fer-train's order, which is
  ``fer_export.folders.labelled_images(DATA/train, labels, limit_per_class, seed)`` (class folders
  sorted by name, then files sorted by name; with ``--limit-per-class`` the seeded sample), columns
  in the student's label order. Nothing in a ``.npy`` can check either, so prefer ``.npz``.

:func:`soft_targets` keeps the logits as ``RUN_DIR/cache/teacher_<key>.npz`` (itself an ``.npz``
teacher), where the key covers the teacher file's sha256 and the training item list: another
teacher, data folder, ``--limit-per-class`` or seed computes them again, a resumed run does not.
The temperature is applied while training, so it is not part of the key.

An ensemble teacher is the mean of several teachers' logits (equivalently of their log-probabilities:
softmax ignores a per-row shift)::

    python -m training.teacher --data DATA --out ensemble.npz A.onnx B.onnx C.pth
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import click
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fer_export.cli import EXIT_OK, library_errors
from fer_export.errors import FerExportError, InputError
from fer_export.folders import labelled_images, resolve_split
from fer_export.model import load_checkpoint, sha256_file
from fer_export.spec import SEED_SPEC, ModelSpec

from .augment import standardize
from .config import TEACHER_LOGITS, TEACHER_MODELS, TrainConfig
from .data import Items, cache_dir, decode_items, items_fingerprint, items_root

BATCH_SIZE = 128  # images per teacher forward pass

#: ``decode(spec) -> uint8 (N, H, W)``: the training items at ``spec.input_size``, resized by ``spec.resize``.
Decode = Callable[[ModelSpec], np.ndarray]


@dataclass(frozen=True)
class SoftTargets:
    """A teacher's logits over the training items, and where they came from."""

    logits: torch.Tensor  # float32 (N, C), row i belongs to training item i
    teacher: str  # the teacher file
    sha256: str  # of the teacher file
    cache: Path  # RUN_DIR/cache/teacher_<key>.npz
    computed_s: float | None  # seconds spent computing them; None when read from the cache
    accuracy: float  # the teacher's top-1 on the training items' labels

    def describe(self) -> str:
        took = "read from" if self.computed_s is None else f"computed in {self.computed_s:.0f} s, kept in"
        return f"teacher {self.teacher}: train top-1 {self.accuracy:.2%}, logits {took} {self.cache}"


def _top1(logits: np.ndarray, items: Items) -> float:
    return float(np.mean(logits.argmax(1) == np.array([c for _, c in items]))) if len(items) else 0.0


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def relative_paths(items: Items, root: str | Path) -> list[str]:
    """Each item's path relative to ``root``, with ``/`` separators (the ``paths`` of an ``.npz`` teacher)."""
    root = Path(os.path.abspath(root))
    return [Path(os.path.abspath(p)).relative_to(root).as_posix() for p, _ in items]


def _check_labels(found: Sequence[str], labels: Sequence[str], path: Path, what: str) -> None:
    found, labels = tuple(found), tuple(labels)
    if found == labels:
        return
    if sorted(found) == sorted(labels):
        raise InputError(f"{path}: the teacher's {what} are in the order {list(found)}, the student's are "
                         f"{list(labels)}; refusing a teacher whose classes would be misread")
    raise InputError(f"{path}: the teacher's {what} {list(found)} are not the student's {list(labels)}")


def _check_logits(logits: np.ndarray, rows: int, labels: Sequence[str], path: Path) -> np.ndarray:
    if logits.ndim != 2 or logits.dtype.kind not in "fiu":
        raise InputError(f"{path}: expected a float (images, classes) logits array, got {logits.dtype} "
                         f"{logits.shape}")
    if logits.shape != (rows, len(labels)):
        raise InputError(f"{path}: holds logits of shape {logits.shape}, expected ({rows}, {len(labels)}) for "
                         f"{rows} training images and {len(labels)} classes; a .npy must cover exactly the "
                         f"training items in order (an .npz from `python -m training.teacher` is matched by path)")
    if not np.isfinite(logits).all():
        raise InputError(f"{path}: logits contain NaN or infinite values")
    return logits.astype(np.float32)


def read_logits(path: str | Path, items: Items, root: str | Path, labels: Sequence[str]) -> np.ndarray:
    """float32 (len(items), C) logits from an ``.npz`` (rows matched by path) or ``.npy`` (rows in order)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such teacher file")
    try:
        data = np.load(path, allow_pickle=False)
        if path.suffix.lower() == ".npy":
            return _check_logits(np.asarray(data), len(items), labels, path)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise InputError(f"{path}: is a bare array, not an .npz archive; name it .npy if it is one")
        with data:
            missing = {"logits", "labels", "paths"} - set(data.files)
            if missing:
                raise InputError(f"{path}: not a teacher logits file: no {sorted(missing)} arrays (found "
                                 f"{sorted(data.files)}); write one with `python -m training.teacher`")
            logits, file_labels, paths = data["logits"], data["labels"], data["paths"]
    except FerExportError:
        raise
    except Exception as exc:  # numpy raises ValueError, OSError, BadZipFile, EOFError... on junk
        raise InputError(f"{path}: not a readable {path.suffix} logits file: {_first_line(exc)}") from exc
    _check_labels([str(x) for x in file_labels], labels, path, "labels")
    index = {str(p): i for i, p in enumerate(paths)}
    if len(index) != len(paths) or len(paths) != len(logits):
        raise InputError(f"{path}: {len(paths)} paths (of them {len(index)} distinct) for {len(logits)} rows of logits")
    wanted = relative_paths(items, root)
    absent = [p for p in wanted if p not in index]
    if absent:
        raise InputError(f"{path}: {len(absent)} of {len(wanted)} training images have no logits (first: {absent[0]}); "
                         f"compute them over this data with `python -m training.teacher`")
    rows = np.array([index[p] for p in wanted], dtype=np.int64)
    return _check_logits(np.asarray(logits)[rows], len(items), labels, path)


def write_logits(path: str | Path, logits: np.ndarray, labels: Sequence[str], paths: Sequence[str],
                 **info: str) -> Path:
    """Write an ``.npz`` teacher (atomically): ``logits``, ``labels``, ``paths`` and ``info`` strings."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, logits=np.asarray(logits, dtype=np.float32), labels=np.array(list(labels), dtype=str),
             paths=np.array(list(paths), dtype=str), **{k: np.array(str(v)) for k, v in info.items()})
    tmp.replace(path)
    return path


def open_model(path: str | Path, labels: Sequence[str]):
    """A model teacher as a ``fer_export`` predictor (``.spec``, ``.logits(uint8 batch)``), labels checked."""
    from fer_export.predictors import load_predictor

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such teacher file")
    try:
        predictor = load_predictor(path, provider="cpu")
    except FerExportError as exc:
        reason = _first_line(exc)
        reason = reason[len(str(path)):].lstrip(": ") if reason.startswith(str(path)) else reason
        raise InputError(f"{path}: cannot use this file as a teacher: {reason}") from exc
    _check_labels(predictor.spec.labels, labels, path, "labels")
    return predictor


def model_logits(predictor, pixels: np.ndarray, batch_size: int = BATCH_SIZE, progress: bool = False) -> np.ndarray:
    """The predictor's float32 logits over uint8 (N, H, W) images at its input size."""
    chunks = [np.asarray(predictor.logits(pixels[i:i + batch_size]), dtype=np.float32)
              for i in tqdm(range(0, len(pixels), batch_size), desc="teacher", unit="batch", disable=not progress,
                            leave=False)]
    return np.concatenate(chunks) if chunks else np.zeros((0, predictor.spec.num_classes), np.float32)


def teacher_logits(path: str | Path, items: Items, root: str | Path, labels: Sequence[str],
                   decode: Decode | None = None, progress: bool = False) -> np.ndarray:
    """float32 (len(items), C) logits of any teacher file over ``items`` (which lie under ``root``).

    A model teacher sees ``decode(its spec)``; the default decodes the items afresh without caching.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TEACHER_LOGITS:
        return read_logits(path, items, root, labels)
    if suffix not in TEACHER_MODELS:
        raise InputError(f"{path}: unknown teacher type {suffix!r}; expected one of {TEACHER_MODELS + TEACHER_LOGITS}")
    predictor = open_model(path, labels)
    spec = predictor.spec
    if decode is None:
        pixels = decode_items(items, spec.input_size, spec.resize, name="teacher", progress=progress)[0].numpy()
    else:
        pixels = decode(spec)
    return _check_logits(model_logits(predictor, pixels, progress=progress), len(items), labels, path)


def teacher_sha256(path: Path, expect: str | None = None) -> str:
    """The teacher file's sha256; ``expect`` (a resumed run's teacher) refuses a file that has changed since."""
    if not path.is_file():
        raise InputError(f"{path}: no such teacher file")
    sha = sha256_file(path)
    if expect is not None and sha != expect:
        raise InputError(f"{path}: the teacher file changed since this run started (sha256 {sha[:12]}, the run's "
                         f"was {expect[:12]}); restore it or start a new run")
    return sha


def soft_targets(config: TrainConfig, spec: ModelSpec, items: Items, run_dir: str | Path,
                 expect_sha256: str | None = None, log: Callable[[str], None] = print) -> SoftTargets:
    """``config.teacher``'s logits over the training ``items``, from ``RUN_DIR/cache`` or computed and cached.

    ``expect_sha256`` (a resumed run's teacher) refuses a teacher file that has changed since.
    """
    path = Path(config.teacher)
    sha = teacher_sha256(path, expect_sha256)
    root = items_root(config)
    key = hashlib.sha1(f"{sha}\n{items_fingerprint(items)}".encode()).hexdigest()[:12]
    cache = cache_dir(run_dir) / f"teacher_{key}.npz"
    if cache.is_file():
        logits = read_logits(cache, items, root, spec.labels)
        return SoftTargets(torch.from_numpy(logits), str(path), sha, cache, None, _top1(logits, items))

    def decode(teacher_spec: ModelSpec) -> np.ndarray:  # the data cache's own file when the sizes agree
        shared = config.aug == "tensor" and (tuple(teacher_spec.input_size), teacher_spec.resize) == (
            tuple(spec.input_size), spec.resize)
        return decode_items(items, teacher_spec.input_size, teacher_spec.resize,
                            cache_dir(run_dir) if shared else None, "train", config.progress)[0].numpy()

    if path.suffix.lower() in TEACHER_MODELS:
        log(f"running the teacher {path} over {len(items)} training images")
    start = time.perf_counter()
    logits = teacher_logits(path, items, root, spec.labels, decode, config.progress)
    seconds = time.perf_counter() - start
    write_logits(cache, logits, spec.labels, relative_paths(items, root), teacher=str(path), sha256=sha)
    return SoftTargets(torch.from_numpy(logits), str(path), sha, cache, seconds, _top1(logits, items))


class AugmentedTeacher:
    """A ``.pth`` teacher that sees every training batch as the student sees it (``--teacher-views
    augmented``): the same flips, affine warps, erasing and mixing, so the student matches the teacher's
    function on the whole neighbourhood of each face rather than on one clean point (consistent teaching,
    Beyer et al. 2022, "Knowledge distillation: a good teacher is patient and consistent").

    The student's normalised batch is mapped back to [0, 1], resized to the teacher's input size
    (bilinear, antialiased when shrinking) and normalised with the teacher's own mean and std. The logits
    are the mean over the view and its mirror, as the flip-TTA graphs fer-export makes average them.
    Costs two teacher forward passes per training step: meant for a GPU.
    """

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, student: ModelSpec, sha256: str, path: str,
                 channels_last: bool = False, bf16: bool = False):
        self.model, self.spec, self.student, self.sha256, self.path = model, spec, student, sha256, path
        self.channels_last, self.bf16 = channels_last, bf16

    @classmethod
    def load(cls, config: TrainConfig, student: ModelSpec, device: torch.device,
             expect_sha256: str | None = None) -> "AugmentedTeacher":
        path = Path(config.teacher)
        sha = teacher_sha256(path, expect_sha256)
        try:
            model, spec = load_checkpoint(path, device)
        except FerExportError as exc:
            raise InputError(f"{path}: cannot use this file as a teacher: {_first_line(exc)}") from exc
        _check_labels(spec.labels, student.labels, path, "labels")
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(model.eval(), spec, student, sha, str(path), config.channels_last, config.bf16)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The student's normalised batch (N, C, H, W) as the teacher's normalised input."""
        s_mean = torch.tensor(self.student.mean, device=x.device).view(1, -1, 1, 1)
        s_std = torch.tensor(self.student.std, device=x.device).view(1, -1, 1, 1)
        unit = (x.float() * s_std + s_mean)[:, :1]  # grayscale: every channel holds the same image
        size = tuple(self.spec.input_size)
        if tuple(unit.shape[-2:]) != size:
            shrink = size[0] < unit.shape[-2] or size[1] < unit.shape[-1]
            unit = F.interpolate(unit, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        return standardize(unit, self.spec)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """float32 (N, classes) logits of the student's normalised batch ``x``."""
        t = self.inputs(x)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with torch.autocast(t.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return (self.model(t).float() + self.model(t.flip(3)).float()) / 2

    def describe(self) -> str:
        h, w = self.spec.input_size
        return f"teacher {self.path} ({self.spec.arch} at {h}x{w}, mirror-averaged) on every augmented batch"


def teacher_labels(path: str | Path) -> tuple[str, ...] | None:
    """The class names a teacher file declares (a model's spec, an ``.npz``'s labels); None for ``.npy``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return None
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return tuple(str(x) for x in data["labels"])
        except Exception as exc:  # missing file, junk, no labels array
            raise InputError(f"{path}: not a readable .npz logits file: {_first_line(exc)}") from exc
    from fer_export.predictors import load_predictor

    try:
        return tuple(load_predictor(path, provider="cpu").spec.labels)
    except FerExportError as exc:
        raise InputError(f"{path}: cannot use this file as a teacher: {_first_line(exc)}") from exc


@dataclass
class EnsembleReport:
    """What :func:`ensemble` computed: the mean logits and each member's train accuracy and time."""

    logits: np.ndarray  # float32 (N, C): the mean of the members' logits
    labels: tuple[str, ...]
    paths: list[str]  # relative to the train folder
    members: list[dict]  # {teacher, accuracy, seconds}
    accuracy: float  # top-1 of the mean logits against the folder labels

    def summary(self) -> str:
        rows = [f"  {m['teacher']}: train top-1 {m['accuracy']:.2%} ({m['seconds']:.0f} s)" for m in self.members]
        return "\n".join([f"{len(self.paths)} images, {len(self.members)} teachers", *rows,
                          f"  mean of the logits: train top-1 {self.accuracy:.2%}"])


def ensemble(teachers: Sequence[str | Path], data: str | Path, limit_per_class: int | None = None, seed: int = 0,
             progress: bool = False) -> EnsembleReport:
    """The mean logits of ``teachers`` over ``DATA/train`` (or DATA itself when it holds the class folders)."""
    if not teachers:
        raise InputError("give at least one teacher file")
    root = resolve_split(data, "train")
    labels = next((found for t in teachers if (found := teacher_labels(t)) is not None), SEED_SPEC.labels)
    items = labelled_images(root, labels, limit_per_class, seed)
    total, members = None, []
    for teacher in teachers:
        start = time.perf_counter()
        logits = teacher_logits(teacher, items, root, labels, progress=progress)
        members.append({"teacher": str(teacher), "accuracy": _top1(logits, items),
                        "seconds": time.perf_counter() - start})
        total = logits.astype(np.float64) if total is None else total + logits
    mean = (total / len(teachers)).astype(np.float32)
    return EnsembleReport(mean, tuple(labels), relative_paths(items, root), members, _top1(mean, items))


@click.command(help="""Write the mean logits of one or more TEACHERS over DATA/train as an .npz teacher for
fer-train --teacher (rows matched by image path, columns in label order). A teacher is an exported .onnx,
a .pth checkpoint, a .pt TorchScript file, or an .npz/.npy of logits. Exit codes: 0 written, 2 usage or
input error.""")
@click.argument("teachers", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset root holding train/ (or the train folder itself).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The .npz file to write.")
@click.option("--limit-per-class", type=int, help="Seeded sample of at most N images per class.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit-per-class sample.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="tqdm bars.")
@library_errors
def main(teachers, data, out, limit_per_class, seed, progress):
    if not out.lower().endswith(".npz"):
        raise click.UsageError(f"--out must name an .npz file, got {out!r}")
    report = ensemble(teachers, data, limit_per_class, seed, progress)
    write_logits(out, report.logits, report.labels, report.paths, teachers=" ".join(map(str, teachers)))
    click.echo(report.summary())
    click.echo(f"-> {out}")
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
