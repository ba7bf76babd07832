"""Modules that wrap the network for export.

:class:`LogitsAndProbs` adds the in-graph softmax every ONNX artifact carries.

:class:`WithPreprocessing` (``fer-export onnx --with-preprocessing``) moves the spec's preprocessing
into the graph: it takes raw uint8 grayscale crops (N, 1, H, W) of any height and width from 2 to
8192 px (one size per batch) and resizes them to ``spec.input_size`` with antialiased bilinear
interpolation (PIL's ``BILINEAR`` filter, which torchvision's ``Resize`` runs on PIL images) the way
PIL does it: the width first, then the height, each pass rounded half up to whole gray levels (PIL
keeps 8-bit pixels between its passes; one pass with round-half-to-even left a quarter of the pixels
of a 48 -> 96 px resize one gray level off, which moved a trained model's probabilities by up to
0.04). It then scales to [0, 1] and normalises. Only the dynamo exporter exports ``antialias=True``
(as ``Resize(antialias=1)``). 48 -> 96 px now gives PIL's pixels exactly; at other ratios PIL's
fixed-point filter weights still put some pixels one gray level off, which is why its parity
tolerance (:data:`fer_export.parity.PREPROCESSING`) is looser than plain fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import ModelSpec


class LogitsAndProbs(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        return logits, torch.softmax(logits, dim=1)


#: Side of each ten-crop crop, as a fraction of the input's side (rounded to an even margin).
TENCROP_SIDE = 0.9


class ViewAverage(nn.Module):
    """Test-time augmentation in the graph: the mean of the logits over fixed views of each image.

    ``hflip``: the image and its mirror (2 views). ``tencrop``: the classic ten crops, i.e. the four
    corner crops and the centre crop, each about :data:`TENCROP_SIDE` of the side (86 of 96 px) and
    resized back to the input size (bilinear), and their mirrors (10 views). All views go through the
    network as one batch of ``views x N`` images.
    """

    VIEWS = {"hflip": 2, "tencrop": 10}

    def __init__(self, model: nn.Module, mode: str, size: tuple[int, int]):
        super().__init__()
        if mode not in self.VIEWS:
            raise ValueError(f"unknown TTA mode {mode!r}; expected one of {sorted(self.VIEWS)}")
        self.model, self.mode, self.size = model, mode, tuple(size)

    def crops(self) -> list[tuple[int, int, int, int]]:
        """``(top, left, height, width)`` of the five ten-crop crops; the margins are even, so the
        centre crop is exactly centred and the ten views of a mirrored image are the same ten views."""
        (h, w), (mh, mw) = self.size, (2 * round(s * (1 - TENCROP_SIDE) / 2) for s in self.size)
        return [(top, left, h - mh, w - mw) for top, left in ((0, 0), (0, mw), (mh, 0), (mh, mw), (mh // 2, mw // 2))]

    def views(self, x):
        if self.mode == "tencrop":
            crops = torch.cat([x[:, :, top:top + ch, left:left + cw] for top, left, ch, cw in self.crops()])
            x = F.interpolate(crops, size=self.size, mode="bilinear", align_corners=False)
        return torch.cat([x, torch.flip(x, dims=[3])])

    def forward(self, x):
        logits = self.model(self.views(x))
        return logits.reshape(self.VIEWS[self.mode], -1, logits.shape[1]).mean(0)


class UncertainFlip(nn.Module):
    """``hflip-uncertain`` in PyTorch, the reference its ONNX graph is checked against (the graph is
    built by :func:`fer_export.export.flip.add_uncertain_flip`, not traced from this module): the rows
    whose softmax top probability is below ``flip_below`` get the mean of their logits and their
    mirror's."""

    def __init__(self, model: nn.Module, flip_below: float):
        super().__init__()
        self.model, self.flip_below = model, float(flip_below)

    def forward(self, x):
        logits = self.model(x)
        rows = torch.nonzero(torch.softmax(logits, dim=1).amax(dim=1) < self.flip_below).flatten()
        if rows.numel():
            logits = logits.clone()
            logits[rows] = (logits[rows] + self.model(torch.flip(x[rows], dims=[3]))) / 2
        return logits


class WithPreprocessing(LogitsAndProbs):
    def __init__(self, model: nn.Module, spec: ModelSpec):
        super().__init__(model)
        self.size = tuple(spec.input_size)
        self.channels = spec.channels
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        x = x.float()
        # PIL resizes the width, then the height, keeping 8-bit pixels (rounded half up) in between.
        for size in ((x.shape[2], self.size[1]), self.size):
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            x = torch.floor(x + 0.5).clamp(0, 255)
        x = x / 255.0
        x = (x.expand(-1, self.channels, -1, -1) - self.mean) / self.std
        return super().forward(x)
