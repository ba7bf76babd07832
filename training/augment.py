"""Augmentations: the seed's PIL transforms, and whole-batch augmentation in torch.

Every random draw of the batch path goes through an explicit ``torch.Generator``, so a run is
reproducible from ``(seed, epoch)`` alone and ``--resume`` continues exactly.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision import transforms as T

from fer_export.spec import ModelSpec


def seed_transform(spec: ModelSpec, train: bool) -> T.Compose:
    """The seed recipe's transform of a PIL grayscale image (train: with its augmentation)."""
    aug = [
        T.RandomHorizontalFlip(0.5),
        T.RandomRotation(10),
        T.RandomAffine(0, translate=(0.05, 0.05), scale=(0.95, 1.05)),
        T.RandomAdjustSharpness(1.5, p=0.3),
        T.RandomAutocontrast(p=0.3),
    ] if train else []
    return T.Compose([T.Resize(spec.input_size), *aug, T.ToTensor(), T.Normalize(spec.mean, spec.std)])


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [0, 1] (ToTensor's scaling)."""
    return x.float().div_(255.0).unsqueeze(1)


def standardize(x: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """float (N, 1, H, W) in [0, 1] -> normalised with the spec's mean/std (and channel count)."""
    if spec.channels != 1:
        x = x.expand(-1, spec.channels, -1, -1)
    mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def normalize(x: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, C, H, W), as ``fer_export.preprocess.normalize`` does in numpy."""
    return standardize(to_unit(x), spec)


def _uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


@dataclass(frozen=True, kw_only=True)
class BatchAugment:
    """Flip + per-sample affine (one ``grid_sample``) on [0, 1] images, then random erasing; with
    ``degrade``, first a loss of resolution on some samples (see :meth:`resample`)."""

    rotation: float = 15.0  # max rotation, degrees either way
    scale: tuple[float, float] = (0.85, 1.15)  # zoom range
    translate: float = 0.10  # max shift, fraction of the image size either way
    flip: float = 0.5  # probability of a horizontal flip
    erase: float = 0.5  # probability of erasing one rectangle (area 2-33 %, aspect 0.3-3.3)
    degrade: float = 0.0  # probability of a sample losing resolution (resampled down and up again)
    degrade_scale: tuple[float, float] = (0.35, 0.8)  # the size it is resampled to, fraction of the input's

    def __call__(self, x: torch.Tensor, spec: ModelSpec, g: torch.Generator) -> torch.Tensor:
        """uint8 (N, H, W) -> augmented, normalised float (N, C, H, W)."""
        x = to_unit(x)
        if self.degrade > 0:
            x = self.resample(x, g)
        return self.random_erase(standardize(self.affine(x, g), spec), g)

    def resample(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Each sample with probability ``degrade`` scaled down (antialiased) to a random fraction of its
        size in ``degrade_scale`` (one per batch) and back up (bilinear), as a face found small, or
        resampled on its way from a picture to the crop, reaches the network. FER2013's crops are 48 px
        upsampled to the input size, so the low end loses detail the crops have, the high end only
        blurs it."""
        n, _, h, w = x.shape
        dev = x.device
        on = torch.rand(n, generator=g, device=dev) < self.degrade
        f = float(_uniform(1, *self.degrade_scale, g, dev))
        small = F.interpolate(x, size=(max(1, round(h * f)), max(1, round(w * f))), mode="bilinear",
                              antialias=True, align_corners=False)
        back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        return torch.where(on.view(n, 1, 1, 1), back, x)

    def affine(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        angle = _uniform(n, -self.rotation, self.rotation, g, dev) * (math.pi / 180)
        scale = _uniform(n, *self.scale, g, dev)
        shift = _uniform(2 * n, -2 * self.translate, 2 * self.translate, g, dev).view(n, 2)  # grid units: [-1, 1]
        flip = torch.where(torch.rand(n, generator=g, device=dev) < self.flip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                             torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def random_erase(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        area = _uniform(n, 0.02, 0.33, g, dev) * h * w
        aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), g, dev))
        eh = torch.sqrt(area * aspect).clamp(max=h)
        ew = torch.sqrt(area / aspect).clamp(max=w)
        top = torch.rand(n, generator=g, device=dev) * (h - eh)
        left = torch.rand(n, generator=g, device=dev) * (w - ew)
        on = torch.rand(n, generator=g, device=dev) < self.erase
        rows = torch.arange(h, device=dev).view(1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        box = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
               & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)) & on.view(n, 1, 1))
        return x.masked_fill(box.unsqueeze(1), 0.0)


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, g: torch.Generator):
    """Mix each sample with a shuffled partner. Returns ``(x, y_a, y_b, lam, perm)``, where sample i
    was mixed with ``perm[i]`` (mix other per-sample targets the same way); alpha 0 = unchanged, perm None."""
    if alpha <= 0:
        return x, y, y, 1.0, None
    lam = random.Random(int(torch.randint(2**31, (1,), generator=g, device=g.device))).betavariate(alpha, alpha)
    perm = torch.randperm(x.shape[0], generator=g, device=x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam, perm
