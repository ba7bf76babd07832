"""The results CSV (schema, crash-safe writer, resume) and per-input summaries (torch-free).

Crash safety: the rows of an input are appended together, the CSV is flushed and fsynced, and only
then is a line ``{"source", "status", "end"}`` appended (and fsynced) to the journal
``RESULTS.progress``. ``end`` is the CSV's byte length after that input. Resuming truncates the CSV
to the last journalled ``end`` — dropping rows of an input that was cut off and any partial line a
``kill -9`` left — and skips the journalled inputs.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InputError

HEAD = ("source", "kind", "frame", "timestamp_s", "face", "track", "x", "y", "w", "h", "det_score",
        "emotion", "confidence")
TAIL = ("status", "error")
STATUSES = ("ok", "no_face", "error")


def columns(labels: Sequence[str]) -> list[str]:
    """The CSV header: fixed columns, one probability column per model label, status and error."""
    return [*HEAD, *labels, *TAIL]


def _num(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def make_row(source: str, kind: str, labels: Sequence[str], *, frame: int | None = None,
             t: float | None = None, face: int | None = None, track: int | None = None, box=None,
             det_score: float | None = None, probs: np.ndarray | None = None, status: str = "ok",
             error: str = "") -> list[str]:
    """One CSV row as strings, in :func:`columns` order."""
    x, y, w, h = box if box is not None else (None,) * 4
    if probs is None:
        emotion, conf, ps = "", "", [""] * len(labels)
    else:
        k = int(np.argmax(probs))
        emotion, conf, ps = labels[k], f"{probs[k]:.6f}", [f"{p:.6f}" for p in probs]
    return [source, kind, _num(frame, "d"), _num(t, ".3f"), _num(face, "d"), _num(track, "d"),
            *(_num(v, "d") for v in (x, y, w, h)), _num(det_score, ".4f"), emotion, conf, *ps,
            status, " ".join(error.split())]


def journal_path(results: str | Path) -> Path:
    return Path(str(results) + ".progress")


def _csv_line(row: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue()


class ResultsWriter:
    """Appends the rows of finished inputs to the results CSV and journals each input as done.

    ``done`` maps each source already finished (by an earlier, resumed run) to its status.
    """

    def __init__(self, path: str | Path, header: Sequence[str], resume: bool = False, overwrite: bool = False):
        self.path, self.journal = Path(path), journal_path(path)
        head = _csv_line(header).encode()
        exists = self.path.is_file() and self.path.stat().st_size > 0
        self.done: dict[str, str] = {}
        if exists and resume:
            end = self._recover(head)
        elif exists and not overwrite:
            raise InputError(f"{self.path} already exists; pass --resume to continue the run that wrote it, "
                             "or --overwrite to replace it")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(head)
            self.journal.write_bytes(b"")
            end = len(head)
        self._csv = open(self.path, "r+b")
        self._csv.truncate(end)
        self._csv.seek(end)
        self._log = open(self.journal, "ab")
        _fsync(self._csv)

    def _recover(self, head: bytes) -> int:
        """Read the journal; return the CSV length to keep."""
        if not self.journal.is_file():
            raise InputError(f"cannot resume {self.path}: its journal {self.journal} is missing, so which inputs "
                             "finished is unknown; rerun with --overwrite")
        with open(self.path, "rb") as f:
            first = f.readline()
        if first != head:
            raise InputError(f"cannot resume {self.path}: its header differs from this model's columns "
                             f"({first.decode(errors='replace').strip()!r}); use another --out or --overwrite")
        end, good = len(head), 0
        data = self.journal.read_bytes()
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a partial line from a kill: that input was not committed
            entry = json.loads(line)
            self.done[entry["source"]] = entry["status"]
            end, good = entry["end"], good + len(line)
        if end > self.path.stat().st_size:
            raise InputError(f"cannot resume {self.path}: it is shorter than its journal says; rerun with --overwrite")
        with open(self.journal, "r+b") as f:
            f.truncate(good)
        return end

    def commit(self, finished: Sequence[tuple[str, str, Sequence[Sequence[str]]]]) -> None:
        """Write ``(source, status, rows)`` for each finished input, then journal them, both fsynced."""
        if not finished:
            return
        ends = []
        for source, status, rows in finished:
            self._csv.write("".join(_csv_line(r) for r in rows).encode())
            ends.append((source, status, self._csv.tell()))
        _fsync(self._csv)
        self._log.write(b"".join(json.dumps({"source": s, "status": st, "end": e}).encode() + b"\n"
                                 for s, st, e in ends))
        _fsync(self._log)
        self.done.update((s, st) for s, st, _ in ends)

    def close(self) -> None:
        self._csv.close()
        self._log.close()


def _fsync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def source_status(statuses) -> str:
    """An input's status from its rows': ``error`` if any is, else ``ok`` if a face was found, else ``no_face``."""
    states = set(statuses)
    return "error" if "error" in states else "ok" if "ok" in states else "no_face"


def read_results(path: str | Path):
    """The results CSV as a pandas DataFrame (empty cells are NaN, sources stay strings)."""
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False, na_values=[""],
                       dtype={"source": str, "kind": str, "emotion": str, "status": str, "error": str})


def labels_of(df) -> list[str]:
    cols = list(df.columns)
    return cols[len(HEAD):len(cols) - len(TAIL)]


@dataclass
class _Group:
    frames: int
    faces: int
    means: np.ndarray | None


def _stats(df, labels, video: bool) -> _Group:
    ok = df[df["status"] == "ok"]
    frames = int(df["frame"].nunique()) if video else int((df["status"] != "error").any())
    means = ok[labels].to_numpy(float).mean(axis=0) if len(ok) else None
    return _Group(frames, len(ok), means)


def summarize(results: str | Path, out: str | Path, detector: str = "") -> Path:
    """Write the summary CSV: one row per input, and one per track of each video.

    Columns: source, kind, track (empty on the input's own row), frames (frames or images seen),
    faces, emotion (argmax of the mean probabilities), mean_<label>..., status, detector.
    """
    import pandas as pd

    df = read_results(results)
    labels = labels_of(df)
    rows = []
    for source, g in df.groupby("source", sort=False):
        kind = g["kind"].iloc[0]
        video = kind == "video"
        parts = [(None, g, source_status(g["status"]))]
        if video:
            parts += [(int(t), tg, "ok") for t, tg in g[g["track"].notna()].groupby("track", sort=True)]
        for track, part, status in parts:
            s = _stats(part, labels, video)
            means = s.means if s.means is not None else [np.nan] * len(labels)
            rows.append({"source": source, "kind": kind, "track": track, "frames": s.frames, "faces": s.faces,
                         "emotion": labels[int(np.argmax(s.means))] if s.means is not None else "",
                         **{f"mean_{k}": round(float(m), 6) for k, m in zip(labels, means)},
                         "status": status, "detector": detector})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).astype({"track": "Int64"}).to_csv(out, index=False)
    return out


@dataclass
class BatchReport:
    """What a batch run did. ``return_code`` is the CLI's exit status (0 all inputs fine, 1 some failed)."""

    results: Path
    provider: str = ""
    detector: str = ""
    inputs: int = 0  # inputs in the run, including ones finished by an earlier run (--resume)
    resumed: int = 0  # inputs skipped because an earlier run finished them
    frames: int = 0  # images and video frames processed in this run
    faces: int = 0  # faces classified in this run
    status: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STATUSES})  # inputs per status
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, error) of this run
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds (summed over threads)
    outputs: list[Path] = field(default_factory=list)  # summary, plots, annotated copies

    @property
    def return_code(self) -> int:
        return 1 if self.status["error"] else 0

    def lines(self) -> list[str]:
        rate = self.frames / self.seconds if self.seconds else 0.0
        out = [f"{self.inputs} inputs ({self.resumed} done by an earlier run): " +
               ", ".join(f"{n} {s}" for s, n in self.status.items()),
               f"{self.frames} images/frames, {self.faces} faces in {self.seconds:.1f} s ({rate:.1f} frames/s) "
               f"on {self.provider}, detector {self.detector}",
               f"results: {self.results}"]
        out += [f"FAILED {s}: {e}" for s, e in self.failed]
        return out
