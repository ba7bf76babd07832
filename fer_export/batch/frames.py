"""Video frames (torch-free): which to use, when each is shown, and how many a video has.

Times are the decoder's own (``CAP_PROP_POS_MSEC`` of each frame grabbed): in a variable-frame-rate
video, frame ``i`` is not shown at ``i / fps``. ``--video-fps`` sampling follows those times: it takes
the first frame shown at or after each tick of its clock (:meth:`FrameSampler.wants`), so a video
that slows from 30 to 3 frames a second is sampled evenly in time, not in frames.

A container's frame count is a claim: a damaged or crafted file may state hours and hold seconds.
Counts are therefore used only where a wrong one costs nothing but a guess: for the progress bar
(bounded by the file's size, :func:`estimated_frames`) and to plan ranges of frames for workers,
after seeking to the last range shows that it exists (:func:`frame_ranges`). Nothing loops over
the frames a container claims.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..errors import InputError

#: A video frame takes at least this many bytes of its file (a packet's header alone does): a count
#: claiming more frames than the file's size allows is cut to what it allows.
MIN_FRAME_BYTES = 16
#: Videos planned in more ranges than this are checked by a seek to their last range first (a seek
#: decodes from the keyframe before it, so it is spent only where a lie would cost more tasks).
CHECKED_ABOVE_RANGES = 8
#: A frame shown this much before a tick of the ``--video-fps`` clock counts as shown at it: containers
#: store times in whole milliseconds (frame 2 of a 30 fps Matroska file is at 66 ms, not 66.67).
TICK_SLACK_S = 0.001


@dataclass(frozen=True)
class FrameSampler:
    """Which video frames to use: every ``every_n``-th, or ``fps`` frames per second of video."""

    every_n: int = 1
    fps: float | None = None

    def __post_init__(self):
        if self.every_n < 1 or (self.fps is not None and not self.fps > 0):
            raise InputError(f"need every_n >= 1 and fps > 0, got every_n={self.every_n}, fps={self.fps}")

    def wants(self, i: int, t: float, before: float | None) -> bool:
        """Whether to use frame ``i``, shown at ``t`` s, the frame before it at ``before`` s (None for
        the video's first frame, or where its time is unknown): every ``every_n``-th frame, or the
        first frame at or after each tick of a clock running at ``fps``. The answer depends on these alone, so that ranges of a video
        decoded apart sample it as one pass does."""
        if self.fps is None:
            return i % self.every_n == 0
        return before is None or self._tick(t) != self._tick(before)

    def _tick(self, t: float) -> int:
        return math.floor((t + TICK_SLACK_S) * self.fps)

    def _step(self, video_fps: float) -> float:
        """Frames per sampled frame, for a video at a constant ``video_fps``."""
        if self.fps is None or video_fps <= 0:
            return float(self.every_n)
        return max(1.0, video_fps / self.fps)

    def nth(self, k: int, video_fps: float) -> int:
        """The index of the ``k``-th frame used (from 0), were the video shown at ``video_fps`` throughout."""
        if self.fps is None or video_fps <= 0 or video_fps <= self.fps:
            return k * int(self._step(video_fps))
        return max(0, math.ceil((k / self.fps - TICK_SLACK_S) * video_fps - 1e-9))

    def count(self, frames: int, video_fps: float) -> int:
        """How many of ``frames`` frames are used, were the video shown at ``video_fps`` throughout."""
        if frames <= 0:
            return 0
        if self.fps is None or video_fps <= 0 or video_fps <= self.fps:
            return -(-frames // int(self._step(video_fps)))
        return self._tick((frames - 1) / video_fps) + 1

    def picks(self, video_fps: float) -> Iterator[bool]:
        """An endless stream saying, frame by frame, whether to use it, were the video shown at
        ``video_fps`` throughout (an estimate: the frames used follow the decoder's times)."""
        i, k = 0, 0
        while True:
            take = i == self.nth(k, video_fps)
            k += take
            yield take
            i += 1


def open_video(path: str | Path):
    """An opened ``cv2.VideoCapture``, its fps and the frame count its container claims (0 when unknown)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not a regular file (a pipe or a device); save the stream to a file first"
                         if path.exists() else f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); re-copy or remove it")
    cap = _capture(path)
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{path}: cannot open this video (corrupt, truncated or an unsupported codec)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return cap, (fps if math.isfinite(fps) and fps > 0 else 0.0), (int(count) if math.isfinite(count) and count > 0 else 0)


def _capture(path: Path) -> cv2.VideoCapture:
    """``cv2.VideoCapture`` on ``path``. OpenCV crashes on a path that is not valid UTF-8, so such a
    file is opened through a link of a plain name, removed once the file is open."""
    try:
        str(path).encode("utf-8")
        return cv2.VideoCapture(str(path))
    except UnicodeEncodeError:
        pass
    folder = tempfile.mkdtemp(prefix="fer-batch-")
    try:
        link = os.path.join(folder, "video" + "".join(c for c in path.suffix if c.isascii()))
        os.symlink(os.path.abspath(os.fsencode(path)), os.fsencode(link))
        return cv2.VideoCapture(link)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _time(cap: cv2.VideoCapture, i: int, fps: float) -> float | None:
    """When frame ``i``, just grabbed, is shown (s): the decoder's time, or ``i / fps`` where the
    container has none (OpenCV then says 0 for every frame); None where neither says."""
    ms = cap.get(cv2.CAP_PROP_POS_MSEC)
    if math.isfinite(ms) and (ms > 0 or (ms == 0 and i == 0)):
        return ms / 1000.0
    return i / fps if fps > 0 else None


class FrameRange:
    """The sampled frames ``start`` to ``stop`` (None = the end) of a video, as ``(index, time shown in s,
    BGR frame)``. ``start`` is reached by seeking (OpenCV's FFmpeg backend seeks to the keyframe before
    it and decodes forward) or, with ``seek=False``, by decoding every frame before it. Frames are
    sampled as if decoding had begun at frame 0 (by ``--video-fps``, the frame before ``start`` is
    grabbed too, for its time).

    After iterating: ``end`` is the index after the last frame grabbed, ``count`` the frame count the
    container claims (0 = unknown; the frames there are where that claim was an estimate the video
    reached in time: :meth:`_ended`), ``first`` the frame at ``start`` (used or not) and ``after`` the
    frame just past ``stop`` when there is one: neighbouring ranges check their seam with these.
    """

    def __init__(self, path: str | Path, sampler: FrameSampler = FrameSampler(), start: int = 0,
                 stop: int | None = None, seek: bool = True):
        self.path, self.sampler, self.start, self.stop, self.seek = Path(path), sampler, start, stop, seek
        self.end, self.count, self.first, self.after = start, 0, None, None

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        cap, fps, self.count = open_video(self.path)
        try:
            before = None  # the time of the frame before the next one
            lead = 1 if self.start and self.sampler.fps is not None else 0  # the frame before start, for its time
            if self.start and self.seek:
                cap.set(cv2.CAP_PROP_POS_FRAMES, self.start - lead)
                reached = all(cap.grab() for _ in range(lead))
            else:
                reached = all(cap.grab() for _ in range(self.start))  # False: the video ends before start
            if reached and self.start and lead:
                before = _time(cap, self.start - 1, fps)
            i, shown = self.start, None
            while reached and (self.stop is None or i < self.stop):
                if not cap.grab():
                    self._ended(shown, fps)
                    break
                t = shown = _time(cap, i, fps)
                if self.sampler.wants(i, t, before) if t is not None or self.sampler.fps is None else True:
                    ok, frame = cap.retrieve()
                    if not ok:
                        break
                    if i == self.start:
                        self.first = frame
                    self.end = i
                    yield i, t or 0.0, frame
                elif i == self.start:
                    self.first = cap.retrieve()[1]
                before = t
                i += 1
                self.end = i
            if reached and self.stop is not None and i == self.stop and cap.grab():
                ok, frame = cap.retrieve()
                self.after = frame if ok else None
        finally:
            cap.release()

    def _ended(self, shown: float | None, fps: float) -> None:
        """The video ended after the frame shown at ``shown`` s. A container that states only its duration
        (Matroska, WebM) has its count estimated as duration x frame rate, which a variable frame rate
        makes too high: a video that ended where that duration says has the frames it had."""
        if shown is not None and fps > 0 and self.count > self.end and shown + 2 / fps >= self.count / fps:
            self.count = self.end

    def error(self) -> str:
        """After iterating: the error if decoding stopped before the end the container declares."""
        return decode_error(self.path, self.end, self.count)


def iter_frames(path: str | Path, sampler: FrameSampler = FrameSampler()) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(frame index, time shown in s, BGR frame)`` for the sampled frames of a video.

    Frames that decode are yielded; if the video stops before the frame count its container
    declares, :class:`InputError` is raised after the last good frame (a truncated file).
    """
    frames = FrameRange(path, sampler)
    yield from frames
    error = frames.error()
    if error:
        raise InputError(error)


def decode_error(path: str | Path, decoded: int, count: int) -> str:
    """The error for a video whose decoding stopped after ``decoded`` frames of the ``count`` its
    container declares; empty when it reached the end."""
    if decoded == 0:
        return f"{path}: no frame could be decoded (corrupt or unsupported codec)"
    if count and decoded < count - 1:  # containers may round the count by one
        return f"{path}: decoding stopped at frame {decoded} of {count}; the file is truncated or corrupt"
    return ""


def _bounded(path: Path, count: int) -> int:
    """A claimed frame count, cut to what the file's size allows (:data:`MIN_FRAME_BYTES` a frame)."""
    try:
        return min(count, os.path.getsize(path) // MIN_FRAME_BYTES)
    except OSError:
        return count


def estimated_frames(path: str | Path, sampler: FrameSampler) -> int:
    """How many frames of a video ``sampler`` will use, by its container's claims (for a progress
    bar: a guess, at least 1); a few microseconds whatever the claim."""
    try:
        cap, fps, count = open_video(path)
        cap.release()
    except InputError:
        return 1
    return max(1, sampler.count(_bounded(Path(path), count), fps))


def frame_ranges(path: str | Path, sampler: FrameSampler, per_task: int) -> list[tuple[int, int | None]]:
    """``(start, stop)`` frame ranges of about ``per_task`` sampled frames each, for workers; the last is
    open-ended, so that a container that under-counts its frames still gets them all. One range where
    the count is unknown. The claimed count (bounded by the file's size) plans them; where that makes
    more than :data:`CHECKED_ABOVE_RANGES`, a seek first shows that the last range's first frame
    exists, and where it does not, the last range that begins on a frame is found by bisection (a
    file that claims ten hours and holds three seconds gets the ranges of three seconds)."""
    try:
        cap, fps, count = open_video(path)
    except InputError:
        return [(0, None)]  # the worker will report the same error
    try:
        ranges = max(1, -(-sampler.count(_bounded(Path(path), count), fps) // per_task))

        def start(k: int) -> int:
            return sampler.nth(k * per_task, fps)

        def exists(k: int) -> bool:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start(k))
            return cap.grab()

        if ranges > CHECKED_ABOVE_RANGES and not exists(ranges - 1):
            lo, hi = 0, ranges - 1  # range lo begins on a frame (range 0 always counts), range hi does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if exists(mid) else (lo, mid)
            ranges = lo + 1
    finally:
        cap.release()
    starts = [start(k) for k in range(ranges)]
    return list(zip(starts, [*starts[1:], None]))
