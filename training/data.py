"""Training data: labelled folders, the seed's DataLoader path and the in-memory tensor path.

Both loaders yield ``(x, y)`` with ``x`` normalised float (N, C, H, W) on the device and have
``set_epoch(epoch)``, which reseeds their randomness from ``(seed, epoch)``. Given a teacher's
logits (one row per item, see :mod:`training.teacher`) they yield ``(x, y, teacher_logits)``.
"""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fer_export.errors import InputError
from fer_export.folders import labelled_images
from fer_export.preprocess import read_gray, resize
from fer_export.spec import ModelSpec

from .augment import BatchAugment, normalize, seed_transform
from .config import TrainConfig
from .framed import framed_views, read_framing

Items = Sequence[tuple[Path, int]]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's randomness (shuffling, augmentation, dropout)."""
    return seed * 100_003 + epoch


def split_dirs(config: TrainConfig) -> tuple[Path, Path]:
    """``(train_dir, val_dir)``: DATA/train and DATA/val (or --val)."""
    data = Path(config.data)
    if not data.is_dir():
        raise InputError(f"{data}: no such data folder; expected {data}/train/<emotion>/*.jpg and {data}/val/")
    train = data / "train"
    val = Path(config.val) if config.val else data / "val"
    for split, path in (("train", train), ("validation", val)):
        if not path.is_dir():
            hint = ""
            if split == "validation":
                hint = (f"; Kaggle's FER2013 download has {data / 'test'} instead: pass --val {data / 'test'}"
                        if (data / "test").is_dir() else "; pass --val DIR to use another validation folder")
            raise InputError(f"{path}: no {split} folder; expected {path}/<emotion>/*.jpg (Kaggle FER2013 layout)" + hint)
    return train, val


def cache_dir(run_dir: Path) -> Path:
    """Where a run keeps what it computes once: decoded pixels and a teacher's logits."""
    return Path(run_dir) / "cache"


def items_root(config: TrainConfig) -> Path:
    """The folder every training item lies under (teacher logits files name items relative to it)."""
    train, val = split_dirs(config)
    return train if config.train_on == "train" else Path(os.path.commonpath([os.path.abspath(train), os.path.abspath(val)]))


def load_items(config: TrainConfig, labels: Sequence[str]) -> tuple[list, list]:
    """``(train_items, val_items)``, each a list of ``(path, class index)``.

    With ``holdout`` the validation items are that share of the training split (and are not trained on);
    with ``train_on="train+val"`` the validation folder's items join the training items.
    """
    train_dir, val_dir = split_dirs(config)
    train, val = (labelled_images(d, labels, config.limit_per_class, config.seed) for d in (train_dir, val_dir))
    if not config.holdout:
        return train, val
    train, held = holdout_split(train, config.holdout, config.seed)
    if config.train_on == "train+val":
        train = sorted(train + val)
    return train, held


def holdout_split(items: Items, share: float, seed: int = 0) -> tuple[list, list]:
    """``(kept, held)``: ``share`` of each class's items held out (at least one of a class with two or
    more), chosen with ``seed``; both keep the items' order."""
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(items):
        by_class.setdefault(label, []).append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for label in sorted(by_class):
        members = by_class[label]
        n = min(len(members) - 1, max(1, round(len(members) * share))) if len(members) > 1 else 0
        held.update(rng.sample(members, n))
    return ([it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held])


class FolderDataset(Dataset):
    """The seed's dataset: cv2 grayscale read -> PIL image -> transform (and the item's teacher logits)."""

    def __init__(self, items: Items, transform, teacher: torch.Tensor | None = None):
        self.items, self.transform, self.teacher = list(items), transform, teacher

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        x = self.transform(Image.fromarray(read_gray(path)))
        return (x, label) if self.teacher is None else (x, label, self.teacher[i])


class SeedLoader:
    """A DataLoader over :class:`FolderDataset` whose shuffling and worker seeds follow the epoch."""

    def __init__(self, items: Items, spec: ModelSpec, config: TrainConfig, device, train: bool,
                 teacher: torch.Tensor | None = None):
        self.seed, self.device, self.num_images = config.seed, device, len(items)
        self.generator = torch.Generator()
        dataset = FolderDataset(items, seed_transform(spec, train), teacher)
        self.loader = DataLoader(dataset, batch_size=config.batch_size,
                                 shuffle=train, num_workers=config.workers, generator=self.generator,
                                 persistent_workers=False, pin_memory=device.type == "cuda")

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield tuple(t.to(self.device, non_blocking=True) for t in batch)


class TensorLoader:
    """Batches from an in-memory uint8 (N, H, W) tensor, augmented on the device with ``augment``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: ModelSpec, batch_size: int, device,
                 seed: int = 0, augment: BatchAugment | None = None, teacher: torch.Tensor | None = None,
                 views: torch.Tensor | None = None, view_p: float = 0.0):
        self.images, self.labels, self.spec, self.teacher = images, labels, spec, teacher
        self.views, self.view_p = views, view_p  # uint8 (V, N, H, W): other views of each image, used with view_p
        self.batch_size, self.device, self.seed, self.augment = batch_size, device, seed, augment
        self.num_images = len(labels)
        self.generator = torch.Generator(device=device)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator, device=self.device).cpu() if self.augment else None
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size] if order is not None else slice(start, start + self.batch_size)
            x = self.images[idx]
            if self.views is not None and self.augment:
                x = self.other_views(x, idx)
            x = x.to(self.device, non_blocking=True)
            y = self.labels[idx].to(self.device, non_blocking=True)
            x = self.augment(x, self.spec, self.generator) if self.augment else normalize(x, self.spec)
            yield (x, y) if self.teacher is None else (x, y, self.teacher[idx].to(self.device, non_blocking=True))

    def other_views(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Each image of the batch replaced, with probability ``view_p``, by one of its views."""
        n, g = len(idx), self.generator
        on = (torch.rand(n, generator=g, device=g.device) < self.view_p).cpu()
        which = torch.randint(len(self.views), (n,), generator=g, device=g.device).cpu()
        return torch.where(on.view(n, 1, 1), self.views[which, idx], x)


def items_fingerprint(items: Items) -> str:
    """12 hex digits that change with the file list or a label (cache file names carry it)."""
    return hashlib.sha1("\n".join(f"{p}\t{c}" for p, c in items).encode()).hexdigest()[:12]


def decode_items(items: Items, size: tuple[int, int], method: str, cache_dir: Path | None = None,
                 name: str = "images", progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and resize every image once: ``(uint8 (N, H, W), int64 labels)``.

    With ``cache_dir`` the pixels are kept as ``<name>_<H>x<W>_<fingerprint>.npy`` (the fingerprint
    covers the file list and labels), so a resumed run does not decode again.
    """
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    cache = Path(cache_dir) / f"{name}_{size[0]}x{size[1]}_{items_fingerprint(items)}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        return torch.from_numpy(np.load(cache)), labels
    pixels = np.stack([resize(read_gray(p), size, method)
                       for p, _ in tqdm(items, desc=f"decode {name}", disable=not progress, leave=False)])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + ".tmp.npy")
        np.save(tmp, pixels)
        tmp.replace(cache)
    return torch.from_numpy(pixels), labels


def load_data(config: TrainConfig, spec: ModelSpec, device, run_dir: Path, items: tuple[list, list] | None = None,
              teacher: torch.Tensor | None = None, log=print):
    """``(train_loader, val_loader, val_items)`` for the config's ``aug`` path.

    ``items``: ``(train_items, val_items)`` when the caller has listed them already. ``teacher``: float
    (len(train_items), classes) logits the train loader hands out with each batch.
    """
    train_items, val_items = items or load_items(config, spec.labels)
    if config.aug == "seed":
        return (SeedLoader(train_items, spec, config, device, train=True, teacher=teacher),
                SeedLoader(val_items, spec, config, device, train=False), val_items)
    cache = cache_dir(run_dir)
    decoded = [decode_items(items, spec.input_size, spec.resize, cache, name, config.progress)
               for items, name in ((train_items, "train"), (val_items, "val"))]
    views = None
    if config.framed:
        views = framed_views([p for p, _ in train_items], spec, read_framing(config.framing), config.framed_views,
                             config.seed, cache, items_fingerprint(train_items), log)
    train = TensorLoader(*decoded[0], spec, config.batch_size, device, config.seed,
                         augment=BatchAugment(degrade=config.degrade), teacher=teacher,
                         views=views, view_p=config.framed)
    val = TensorLoader(*decoded[1], spec, config.batch_size, device)
    return train, val, val_items
