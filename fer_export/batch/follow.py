"""Faces followed through a video (torch-free): each face of the last sampled frame is searched for
in a region around its box, at the scale the whole frame is searched at, instead of searching the
whole frame again (``--full-detect-every K`` above 1).

The whole frame is still searched (:meth:`~.faces._Detector.detect`):

- on the first sampled frame at or after each *key frame*, frame ``sampler.nth(k * K)`` for k = 0, 1,
  2, ... (K: ``DetectionSettings.full_detect_every``), so that a face entering is found within K
  sampled frames;
- when a face followed is not found around its box (it left, turned away, or was hidden), or two
  faces followed merge into one;
- when the regions around the faces cover more than :data:`MOST_COVERED` of the frame: searching
  them would cost about as much as the whole frame, which also finds faces that entered;
- on a scene cut: a frame whose small gray thumbnail differs from the last one's by more than
  :data:`SCENE_CUT` (mean absolute difference), where the faces may be new ones in the old places.

What a frame gets depends only on the frames since the last key frame, and key frames are placed by
the video's own frame rate, not by where a pass began: a Dask range of frames that starts on a key
frame (:func:`range_size`) therefore finds exactly the faces one pass over the video finds.
K = 1 searches the whole of every frame.
"""
from __future__ import annotations

import cv2
import numpy as np

from .crops import Face
from .faces import resized
from .frames import FrameSampler, open_video
from .tracking import shift

#: A face is searched for in a square this many times its box's longer side, about the box's centre
#: (clipped to the frame), cut from the frame scaled as the whole frame is searched and starting on
#: YuNet's grid: the detector sees the pixels the whole-frame search sees there, with context enough
#: around the face that it boxes it as that search does (a smaller region moves the box enough to
#: change the emotion on some frames: benchmarks/README.md, "video_tracking.py").
REGION = 3.0
#: The share of the frame the regions may cover before the whole frame is searched instead.
MOST_COVERED = 0.5
#: YuNet's coarsest cell (px): a region starts on a multiple of it in the scaled frame.
GRID = 32
#: A face found around a followed face's box is the same face when their centres are at most this
#: many box sides apart and their sizes within 1.5x (:func:`~.tracking.shift`).
SAME_FACE_SHIFT = 0.5
#: Side (px) of the gray thumbnail two frames are compared by, and the mean absolute difference of its
#: gray levels (0-255) above which the second frame starts a new scene. Motion of faces and camera
#: moves a thumbnail this small by a few levels; a cut to another shot moves it by tens.
THUMB_SIDE = 32
SCENE_CUT = 24.0


def range_size(per_task: int, every: int) -> int:
    """The sampled frames of a Dask range: ``per_task`` rounded up to a multiple of ``every`` (K), so
    that each range starts on a key frame."""
    return -(-per_task // every) * every


def video_rate(path) -> float:
    """The frame rate a video's container states (0 when unknown or unreadable: decoding then reports
    the error), which places its key frames."""
    try:
        cap, fps, _ = open_video(path)
    except Exception:  # the frames' own reader reports a bad file, with its error row
        return 0.0
    cap.release()
    return fps


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A THUMB_SIDE-square gray thumbnail of a frame, cheap at any resolution (every 8th pixel first)."""
    small = image[::8, ::8]
    if small.ndim == 3:
        small = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_BGR2GRAY)
    return cv2.resize(small, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_AREA).astype(np.int16)


class Follower:
    """The faces of one video's sampled frames, in order (:meth:`faces`), found by ``detector`` as the
    module says. ``fps``: the video's frame rate (:func:`video_rate`), which with ``sampler`` places
    the key frames. Counts the whole-frame searches (``full``) and the frames (``frames``)."""

    def __init__(self, detector, sampler: FrameSampler = FrameSampler(), fps: float = 0.0):
        self.detector, self.sampler, self.fps = detector, sampler, fps
        self.every = detector.settings.full_detect_every
        self.last: list[Face] | None = None  # the faces of the last frame; None: none searched yet
        self.thumb: np.ndarray | None = None
        self.key, self.next_key = 0, 0  # the next key frame is frame next_key = sampler.nth(key * every)
        self.full = self.frames = 0

    def faces(self, i: int, image: np.ndarray) -> list[Face]:
        """The faces of frame ``i`` (``image``), which follows the frames given before."""
        self.frames += 1
        if self.every == 1:
            self.full += 1
            return self.detector.detect(image)
        thumb = thumbnail(image)
        cut = self.thumb is not None and float(np.abs(thumb - self.thumb).mean()) > SCENE_CUT
        self.thumb = thumb
        due = i >= self.next_key
        while self.next_key <= i:
            self.key += 1
            self.next_key = self.sampler.nth(self.key * self.every, self.fps)
        found = None if due or cut or self.last is None else self._followed(image)
        if found is None:
            self.full += 1
            found = self.detector.detect(image)
        self.last = found
        return found

    def _followed(self, image: np.ndarray) -> list[Face] | None:
        """Each face of the last frame, found again around its box; None when one is not (or two
        became one), or when the regions would cover most of the frame: the whole frame is searched then."""
        H, W = image.shape[:2]
        sides = [REGION * max(f.w, f.h) for f in self.last]
        if sum(min(W, side) * min(H, side) for side in sides) > MOST_COVERED * W * H:
            return None
        s = self.detector.full_scale(image)
        small = resized(image, s)
        found = []
        for face in self.last:
            again = self._around(small, s, image.shape, face)
            if again is None:
                return None
            found.append(again)
        if len(found) > 1 and len(self.detector.merged(found)) < len(found):
            return None
        return sorted(found, key=lambda f: (f.x, f.y))

    def _around(self, small: np.ndarray, s: float, shape, face: Face) -> Face | None:
        """The face found nearest ``face``'s box in the region around it, if it is the same face;
        ``small``: the frame (of ``shape``) scaled by ``s`` as the whole frame is searched."""
        half = REGION * max(face.w, face.h) * s / 2
        cx, cy = (face.x + face.w / 2) * s, (face.y + face.h / 2) * s
        x0, y0 = (max(0, int(v - half)) // GRID * GRID for v in (cx, cy))
        x1, y1 = min(small.shape[1], int(np.ceil(cx + half))), min(small.shape[0], int(np.ceil(cy + half)))
        candidates = self.detector.detect_in(small, (x0, y0, x1, y1), s, shape)
        if not candidates:
            return None
        distance, best = min(((shift(c.box, face.box), k) for k, c in enumerate(candidates)))
        return candidates[best] if distance <= SAME_FACE_SHIFT else None
