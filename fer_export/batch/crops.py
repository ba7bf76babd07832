"""Faces cut out for the model (torch-free): each face framed as the model's training crops were,
and, for a face in a picture, the views whose probabilities are averaged into the face's.

A :class:`Framer` makes the crops of an image's faces as one :class:`FaceCrops` value: the crops,
face after face, and how many views each face has. The same value averages the model's
probabilities over each face's views (:meth:`FaceCrops.average`), so the count travels with the
crops and nothing downstream recovers it from list lengths.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..preprocess import to_gray
from ..spec import Framing
from .settings import CropSettings

#: A crop extends the detected box by this fraction of its longer side on every side, made square
#: (for models whose spec has no framing).
CROP_MARGIN = 0.1
#: Smallest and largest side (px) of a framed crop; it is cut at the face's own resolution within these.
FRAMED_SIDES = (16, 1024)


@dataclass(frozen=True)
class Face:
    """A detected face: box in source pixels (x, y = top-left corner), the detector's score and, from
    YuNet, its five landmarks (x, y each, source pixels, in :data:`~fer_export.spec.LANDMARKS` order)."""

    x: int
    y: int
    w: int
    h: int
    score: float | None = None
    landmarks: tuple[float, ...] | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.w, self.h


@dataclass(frozen=True, eq=False)
class FaceCrops:
    """The crops a frame's faces are classified from: face after face, ``views`` consecutive crops each.
    ``crops`` are gray uint8 crops, or what :meth:`~fer_export.runtime.EmotionClassifier.prepare` made
    of them (:meth:`prepared`)."""

    crops: Sequence
    views: int = 1

    def __len__(self) -> int:
        return len(self.crops)

    def prepared(self, clf) -> "FaceCrops":
        """The same crops as the model's input (resized and normalised as its spec says)."""
        return FaceCrops(clf.prepare(self.crops), self.views)

    def average(self, probs: np.ndarray) -> np.ndarray:
        """Each face's probabilities from its crops' (``probs``: one row per crop, in order): the mean
        over its views."""
        if len(probs) != len(self.crops):
            raise ValueError(f"{len(probs)} rows of probabilities for {len(self.crops)} crops")
        return probs if self.views == 1 else probs.reshape(-1, self.views, probs.shape[1]).mean(axis=1)


class Framer:
    """How a detector's faces are cut out: framed by ``framing`` (the model's; None: :func:`crop_face`'s
    square), by the box rule for ``detector`` where the framing has one. A face in a picture is also
    seen ``crops.spread`` wider and tighter when it is framed: a training crop's framing varies about the
    detector's box, which no rule predicts from the box, and the average over the views stands for that
    spread (how much it gains: benchmarks/README.md, "Face framing"). A video frame's face gets one crop."""

    def __init__(self, framing: Framing | None = None, detector: str | None = None,
                 crops: CropSettings = CropSettings(crop_spread=0.0)):
        self.framing, self.detector, self.settings = framing, detector, crops
        spread = crops.spread
        #: the side of each view of a face in a picture, as multiples of the framed side
        self.views = (1.0,) if framing is None or not spread else (1.0, 1.0 - spread, 1.0 + spread)

    def recorded(self) -> dict:
        """The crop settings as a run's journal records them (the spread only when there is one)."""
        spread = self.settings.spread
        return {"crop": self.settings.crop} | ({"crop_spread": spread} if spread else {})

    def crop(self, image: np.ndarray, face: Face, scale: float = 1.0) -> np.ndarray:
        """``face`` of ``image`` as a gray crop, framed as this framer was set up to (:func:`frame_face`)."""
        return frame_face(image, face, self.framing, self.detector, scale)

    def crops(self, image: np.ndarray, faces: Sequence[Face], still: bool = False) -> FaceCrops:
        """The crops of ``faces`` the model classifies: each face's framed crop, and for a ``still``
        picture its other views (``views``)."""
        scales = self.views if still else (1.0,)
        return FaceCrops([self.crop(image, face, s) for face in faces for s in scales], len(scales))


def crop_face(image: np.ndarray, face: Face, margin: float = CROP_MARGIN) -> np.ndarray:
    """The face as a uint8 gray crop: a square around the box, ``margin`` added, clipped to the image."""
    side = max(face.w, face.h) * (1 + 2 * margin)
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    H, W = image.shape[:2]
    x0, y0 = max(0, int(round(cx - side / 2))), max(0, int(round(cy - side / 2)))
    x1, y1 = min(W, int(round(cx + side / 2))), min(H, int(round(cy + side / 2)))
    return to_gray(image[y0:y1, x0:x1])


def frame_face(image: np.ndarray, face: Face, framing: Framing | None, detector: str | None = None,
               scale: float = 1.0) -> np.ndarray:
    """The face as a uint8 gray crop framed as the model's training crops were: without a framing,
    :func:`crop_face`; with one, the square that the framing's box rule for ``detector`` places around
    the face's box, else (no rule for it) a square warped by the similarity that takes the face's
    landmarks nearest to the framing's, else (no landmarks) the square ``framing.box`` places around
    the box; at the face's own resolution (area-averaged down to ``framing.size`` when it has one),
    the image's edge pixels repeated where the square leaves it. ``scale`` multiplies the square's
    side about its centre (a framed face's wider or tighter view)."""
    if framing is None:
        return crop_face(image, face)
    rule = framing.box_rule(detector)
    if rule is None and face.landmarks is not None:
        unit = similarity(np.reshape(face.landmarks, (-1, 2)), np.reshape(framing.landmarks, (-1, 2)))
        if scale != 1.0:  # the same centre, a side `scale` times as long
            unit = np.hstack([unit[:, :2] / scale, (unit[:, 2:] - 0.5) / scale + 0.5])
    else:
        dx, dy, rule_scale = rule or framing.box
        side = rule_scale * scale * max(face.w, face.h)
        x0 = face.x + face.w / 2 + dx * max(face.w, face.h) - side / 2
        y0 = face.y + face.h / 2 + dy * max(face.w, face.h) - side / 2
        unit = np.array([[1 / side, 0, -x0 / side], [0, 1 / side, -y0 / side]])
    side = int(np.clip(round(1 / np.hypot(*unit[:, 0])), *FRAMED_SIDES))  # source px per crop side
    crop = cv2.warpAffine(to_gray(image), unit * side, (side, side), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    if framing.size is not None and side > framing.size:  # as sharp as the training crops, not sharper
        crop = cv2.resize(crop, (framing.size, framing.size), interpolation=cv2.INTER_AREA)
    return crop


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + uniform scale + translation that takes points ``src`` (N, 2) nearest to
    ``dst`` in the least-squares sense (Umeyama 1991; deterministic, unlike RANSAC fits)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    flip = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ flip @ vt
    scale = np.trace(np.diag(sig) @ flip) / max((s ** 2).sum() / len(src), 1e-12)
    return np.hstack([scale * rot, (md - scale * rot @ ms)[:, None]])
