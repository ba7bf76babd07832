"""The work on one input (torch-free), the same in both runners: read an image or a video frame, find
its faces and cut them out (:class:`~.crops.FaceCrops`), classify the crops in batches gathered
across frames (:class:`Pending`), and turn the results into the input's CSV rows."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import InputError
from ..preprocess import read_gray, read_pages, to_gray
from ..runtime import EmotionClassifier
from .crops import Face, FaceCrops
from .follow import Follower, video_rate
from .results import make_row
from .settings import SamplingSettings
from .sources import FrameSampler, Source, is_face_crop


@dataclass
class FrameResult:
    """One image or sampled video frame: its faces, their track ids (videos) and probabilities."""

    frame: int | None
    t: float | None
    faces: list[Face]
    probs: np.ndarray | None = None
    tracks: list[int | None] | None = None


def frame_sampler(sampling: SamplingSettings) -> FrameSampler:
    """The video frames ``sampling`` asks for."""
    return FrameSampler(sampling.every_n or 1, sampling.video_fps)


def read_pages_of(path: str | Path, detector) -> Iterator[tuple[int | None, np.ndarray, bool]]:
    """An image input's pages as ``(page, pixels, whole)``: a face crop (or any page without a detector)
    as gray, classified whole (``whole=True``); a picture as BGR for the detector. ``page`` is None for
    an image of one page (most), else the page's number in a multi-page TIFF. Each page is decoded when
    asked for; one that fails raises after the pages before it."""
    pages = read_pages(path, color=detector is not None)
    first = next(pages)
    try:
        second = next(pages, None)
    except Exception:  # page 1 is broken: page 0 is still a page of several
        yield 0, *_as_read(first, detector)
        raise
    if second is None:  # one page: read as a crop or a picture always is
        yield None, *((read_gray(path), True) if detector is not None and is_face_crop(first)
                      else _as_read(first, detector))
        return
    yield 0, *_as_read(first, detector)
    yield 1, *_as_read(second, detector)
    for k, page in enumerate(pages, start=2):
        yield k, *_as_read(page, detector)


def _as_read(page: np.ndarray, detector) -> tuple[np.ndarray, bool]:
    whole = detector is None or is_face_crop(page)
    return (to_gray(page) if whole else page), whole


def faces_in(image: np.ndarray, detector, still: bool = False) -> tuple[list[Face], FaceCrops]:
    """The faces of a BGR (or gray) image and their crops, each face's views together
    (:meth:`~.crops.Framer.crops`); without a detector, the whole image. ``still``: a picture, not a
    video frame (it gets the detector's second look, and the views)."""
    if detector is None:
        return [Face(0, 0, image.shape[1], image.shape[0])], FaceCrops([to_gray(image)])
    faces = detector.detect(image, still)
    return faces, detector.framer.crops(image, faces, still)


def video_looker(detector, sampler: FrameSampler, path: str | Path):
    """``look(frame index, BGR frame) -> (faces, crops)`` for one video's sampled frames, given in order:
    its faces followed from frame to frame (:class:`~.follow.Follower`); without a detector, each frame whole."""
    if detector is None:
        return lambda i, image: faces_in(image, None)
    follower = Follower(detector, sampler, video_rate(path))

    def look(i: int, image: np.ndarray) -> tuple[list[Face], FaceCrops]:
        faces = follower.faces(i, image)
        return faces, detector.framer.crops(image, faces)
    return look


def look_at_image(path: str | Path, detector, times: dict[str, float]) -> Iterator[tuple[FrameResult, FaceCrops]]:
    """An image input read, its faces found and cut out, page by page (:func:`read_pages_of`): one
    result for most images, one per page (``frame`` = its number) for a multi-page TIFF. The time
    each step took is added to ``times``. A page that fails raises after the pages before it."""
    t0 = time.perf_counter()
    for page, img, whole in read_pages_of(path, detector):
        t1 = time.perf_counter()
        faces, crops = faces_in(img, None if whole else detector, still=True)
        times["decode"] += t1 - t0
        times["detect"] += time.perf_counter() - t1
        yield FrameResult(page, None, faces), crops
        t0 = time.perf_counter()


class Gathered:
    """Image pages whose raw crops wait for the model, for a worker that prepares and classifies them
    together (:class:`Pending` holds crops already prepared)."""

    def __init__(self):
        self.crops, self.pages = [], []

    def add(self, result: FrameResult, found: FaceCrops) -> FrameResult:
        self.pages.append((result, len(self.crops), found))
        self.crops += found.crops
        return result

    def spread(self, probs: np.ndarray) -> None:
        """Give each page its faces' probabilities (``probs``: one row per gathered crop); start again."""
        for result, start, found in self.pages:
            result.probs = found.average(probs[start:start + len(found)]) if len(found) else None
        self.crops, self.pages = [], []


class Pending:
    """Frames whose crops wait for the model; classified together, ``batch_size`` crops a call."""

    def __init__(self, clf: EmotionClassifier):
        self.clf, self.frames, self.prepared, self.crops = clf, [], [], 0

    def add(self, result: FrameResult, prepared: FaceCrops) -> None:
        """Queue ``result``'s faces, given as their crops :meth:`~.crops.FaceCrops.prepared` for the model."""
        self.frames.append(result)
        self.prepared.append(prepared)
        self.crops += len(prepared)

    def flush(self) -> int:
        """Classify everything queued, set each frame's ``probs``; return the number of faces."""
        if not self.frames:
            return 0
        batch = (np.concatenate([p.crops for p in self.prepared]) if not self.clf.raw
                 else [c for p in self.prepared for c in p.crops])
        probs, k, n = self.clf.predict_prepared(batch), 0, 0
        for r, prepared in zip(self.frames, self.prepared):
            r.probs = prepared.average(probs[k:k + len(prepared)])
            k, n = k + len(prepared), n + len(r.faces)
        self.frames, self.prepared, self.crops = [], [], 0
        return n


def input_error(source: Source, exc: Exception) -> str:
    """The ``error`` column for an input that raised ``exc``."""
    return str(exc) if isinstance(exc, InputError) else f"{source.path}: {type(exc).__name__}: {exc}"


def input_rows(source: Source, labels: Sequence[str], frames: Sequence[FrameResult], error: str = "") -> list[list[str]]:
    """The CSV rows of one input: per image or sampled frame in order, a row per face, or a ``no_face``
    row; ``error`` adds an error row."""
    rows = []
    for f in frames:
        at = dict(source=source.name, kind=source.kind, labels=labels, frame=f.frame, t=f.t)
        if not f.faces:
            rows.append(make_row(**at, status="no_face"))
            continue
        probs = f.probs.tolist()
        for j, (face, track) in enumerate(zip(f.faces, f.tracks or [None] * len(f.faces))):
            rows.append(make_row(**at, face=j, track=track, box=face.box, det_score=face.score, probs=probs[j]))
    if error:
        rows.append(make_row(source.name, source.kind, labels, status="error", error=error))
    return rows
