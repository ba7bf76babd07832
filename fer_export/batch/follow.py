"""Faces followed through a video (torch-free): each face of the last sampled frame is searched for
in a small region around its box, at a small input size, instead of searching the whole frame again.

The whole frame is still searched (:meth:`~.faces._Detector.detect`):

- on the first sampled frame at or after each *key frame*, frame ``sampler.nth(k * K)`` for k = 0, 1,
  2, ... (K: ``DetectionSettings.full_detect_every``), so that a face entering is found within K
  sampled frames;
- when a face followed is not found around its box (it left, turned away, or was hidden), or two
  faces followed merge into one;
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
from .frames import FrameSampler, open_video
from .tracking import shift

#: A face is searched for in a square this many times its box's longer side, about the box's centre
#: (clipped to the frame): room for the face to move half its size between two sampled frames.
REGION = 2.0
#: The region is scaled to at most this long side (px), and never above the scale the whole frame is
#: searched at: the face is then large enough for YuNet to find and box as it does in the whole frame,
#: at a fraction of the whole frame's pixels. A multiple of 32, YuNet's padding.
REGION_SIDE = 320
#: YuNet's coarsest cell (px): a region at the whole frame's scale starts on a multiple of it there.
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
        became one): the whole frame is searched then."""
        found = []
        for face in self.last:
            again = self._around(image, face)
            if again is None:
                return None
            found.append(again)
        if len(found) > 1 and len(self.detector.merged(found)) < len(found):
            return None
        return sorted(found, key=lambda f: (f.x, f.y))

    def _around(self, image: np.ndarray, face: Face) -> Face | None:
        """The face found nearest ``face``'s box in the region around it, if it is the same face."""
        H, W = image.shape[:2]
        half = REGION * max(face.w, face.h) / 2
        cx, cy = face.x + face.w / 2, face.y + face.h / 2
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(W, int(np.ceil(cx + half))), min(H, int(np.ceil(cy + half)))
        full = self.detector.full_scale(image)
        s = min(full, REGION_SIDE / max(x1 - x0, y1 - y0))
        if s == full:  # at the whole frame's scale, on its grid of YuNet's cells: the same pixels, the same boxes
            x0, y0 = (int(v * s // GRID * GRID / s) for v in (x0, y0))
        candidates = self.detector.detect_in(image, (x0, y0, x1, y1), s)
        if not candidates:
            return None
        distance, best = min(((shift(c.box, face.box), k) for k, c in enumerate(candidates)))
        return candidates[best] if distance <= SAME_FACE_SHIFT else None
