"""A greedy tracker (overlap, then centre distance): gives the faces of consecutive sampled video frames
stable track ids."""
from __future__ import annotations

from typing import Sequence


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def shift(a: Sequence[float], b: Sequence[float]) -> float:
    """How far apart two (x, y, w, h) boxes' centres are, in sides of the boxes (their mean side);
    infinite when one is more than 1.5x the other's size (not the same face, nearer or farther)."""
    sa, sb = (a[2] * a[3]) ** 0.5, (b[2] * b[3]) ** 0.5
    if min(sa, sb) <= 0 or max(sa, sb) > 1.5 * min(sa, sb):
        return float("inf")
    dx, dy = (a[0] + a[2] / 2) - (b[0] + b[2] / 2), (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    return (dx * dx + dy * dy) ** 0.5 / ((sa + sb) / 2)


class IouTracker:
    """Match each frame's boxes to live tracks by IoU, best pairs first; then the boxes and tracks left
    by how far the face moved (centres at most ``max_shift`` of its side apart, its size within 1.5x),
    nearest first: a face that moved more than its boxes overlap between sampled frames (``--video-fps``
    far below the video's rate) keeps its id. Unmatched boxes start tracks.

    A track not seen for more than ``max_missed`` sampled frames ends; ids are never reused.
    """

    def __init__(self, min_iou: float = 0.3, max_missed: int = 5, max_shift: float = 0.8):
        self.min_iou, self.max_missed, self.max_shift = min_iou, max_missed, max_shift
        self.tracks: dict[int, tuple[Sequence[float], int]] = {}  # id -> (last box, frames missed)
        self.next_id = 0

    def update(self, boxes: Sequence[Sequence[float]]) -> list[int]:
        """Track ids for ``boxes`` (one per box, in order)."""
        pairs = sorted(((iou(box, last), tid, j) for tid, (last, _) in self.tracks.items()
                        for j, box in enumerate(boxes)), reverse=True)
        ids: list[int | None] = [None] * len(boxes)
        used = set()
        for score, tid, j in pairs:
            if score < self.min_iou:
                break
            if tid not in used and ids[j] is None:
                ids[j] = tid
                used.add(tid)
        moved = sorted((shift(boxes[j], last), tid, j) for tid, (last, _) in self.tracks.items() if tid not in used
                       for j in range(len(boxes)) if ids[j] is None)
        for distance, tid, j in moved:
            if distance > self.max_shift:
                break
            if tid not in used and ids[j] is None:
                ids[j] = tid
                used.add(tid)
        for j, tid in enumerate(ids):
            if tid is None:
                ids[j] = tid = self.next_id
                self.next_id += 1
            self.tracks[tid] = (boxes[j], 0)
        for tid, (last, missed) in list(self.tracks.items()):
            if tid not in ids:
                if missed >= self.max_missed:
                    del self.tracks[tid]
                else:
                    self.tracks[tid] = (last, missed + 1)
        return ids
