"""Writing a run's results in order (torch-free): finished inputs go through the crash-safe writer
(:class:`~.results.ResultsWriter`) strictly in input order, a few at a time, and the journal's first
line records every setting that changes the results, so that ``--resume`` continues only the same run."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

from .results import BatchReport, ResultsWriter, source_status
from .settings import SamplingSettings
from .sources import Source

#: While a run goes on, finished inputs are written together at most this often: each write costs
#: two fsyncs, which add up to a large share of a run of small inputs when written after every batch.
#: A kill loses at most this long's work, which ``--resume`` does again; the end of a run and Ctrl-C
#: write everything finished.
COMMIT_EVERY_S = 0.5


class Committer:
    """Writes finished inputs through the crash-safe writer, strictly in input order, and counts them."""

    def __init__(self, sources: list[Source], writer: ResultsWriter, report: BatchReport):
        self.sources, self.writer, self.report = sources, writer, report
        self.ready: dict[int, list] = {}  # finished inputs waiting for their turn: index -> rows
        self.next = 0  # index of the next input to write
        self.written = float("-inf")  # time.monotonic() of the last write
        self.cut_off = False  # a commit was interrupted (Ctrl-C, a failed write): write nothing more, so
        # no input is written past one left out, nor after rows the journal does not cover

    def finish(self, i: int, rows: list) -> None:
        self.ready[i] = rows

    def commit_ready(self, force: bool = False) -> None:
        """Write every finished input that is next in input order: now if ``force``, else when the last
        write is :data:`COMMIT_EVERY_S` old."""
        if self.cut_off or (not force and time.monotonic() - self.written < COMMIT_EVERY_S):
            return
        self.cut_off = True  # until written: a Ctrl-C in between leaves the rest to --resume, in order
        finished = []
        while self.next < len(self.sources):
            src = self.sources[self.next]
            if not self.writer.is_done(src.key, src.name):
                if self.next not in self.ready:
                    break
                finished.append((src, self.ready.pop(self.next)))
            self.next += 1
        entries = [(src.name, src.key, source_status(r[-2] for r in rows), rows) for src, rows in finished]
        if entries:
            self.writer.commit(entries)
            self.written = time.monotonic()
        self.cut_off = False
        for name, _, status, rows in entries:
            self.report.status[status] += 1
            if status == "error":
                self.report.failed.append((name, rows[-1][-1]))


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:  # a Dask client need not see the workers' files: the path stands for them
        return f"unread: {path}"
    return digest.hexdigest()


def run_settings(sampling: SamplingSettings, models: dict) -> dict:
    """Every setting that changes a run's results, as the journal records it (files by sha256): the
    model, what the detector records of its own settings (:meth:`~.faces._Detector.recorded`) and the
    frame sampling. ``models`` is :func:`~.models.describe`'s answer. The provider and batch size move
    probabilities only in the last digits, so they may change on resume."""
    detector = models["detector"]
    settings = {"model_sha256": _sha256(models["model"]), "detector": detector}
    if detector != "none":
        settings |= {"detector_sha256": _sha256(models["detector_path"])} | models["detection"]
    return settings | {"every_n": sampling.every_n or 1, "video_fps": sampling.video_fps}
