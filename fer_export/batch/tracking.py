"""A greedy IoU tracker: gives the faces of consecutive sampled video frames stable track ids."""
from __future__ import annotations

from typing import Sequence


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class IouTracker:
    """Match each frame's boxes to live tracks by IoU, best pairs first; unmatched boxes start tracks.

    A track not seen for more than ``max_missed`` sampled frames ends; ids are never reused.
    """

    def __init__(self, min_iou: float = 0.3, max_missed: int = 5):
        self.min_iou, self.max_missed = min_iou, max_missed
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
