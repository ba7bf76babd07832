"""The results CSV (schema, crash-safe writer, resume) and per-input summaries (torch-free).

Crash safety: the rows of an input are appended together, the CSV is flushed and fsynced, and only
then is the input's line appended (and fsynced) to the journal ``RESULTS.progress``
(:mod:`.journal`), with the CSV's byte length after it and a checksum of everything before.
Resuming checks the journal against the CSV, truncates the CSV to the last journalled length —
dropping rows of an input that was cut off and any partial line a ``kill -9`` left — and skips the
journalled inputs; a journal that does not describe the CSV is refused. Inputs that failed stay done
(their error rows are a result, and a resumed run gives the same CSV as one run), unless
``--retry-failed``: then their rows are taken out of the CSV (rewritten, journal rebuilt, both renamed
into place) and they run again, their new rows after the others'.

The journal's first line, ``{"run": {...}}``, records every setting that changes results (model
and detector files by sha256, detector options, frame sampling); ``--resume`` refuses a run whose
settings differ. One process at a time writes a results file: it holds a lock on ``RESULTS.lock``
(which records its process id) for the whole run.
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

from ..errors import ArtifactError, InputError, OutputError
from ..outputs import write_file
from .journal import (MAX_LINE, STATUSES, Chain, hold_lock, journal_path, lock_path, open_own, opener,
                      pending_journal, settings_line, verify)

__all__ = ["HEAD", "RESULTS_HEAD", "SUMMARY_HEAD", "STATUSES", "TAIL", "BatchReport", "ResultsWriter", "columns",
           "journal_path", "labels_of", "lock_path", "make_row", "printable", "read_results", "source_status",
           "summarize", "write_failed"]

HEAD = ("source", "kind", "frame", "timestamp_s", "face", "track", "x", "y", "w", "h", "det_score",
        "emotion", "confidence")
#: How a results CSV and a summary CSV begin: --overwrite and --resume replace only such files.
RESULTS_HEAD = ",".join(HEAD[:4]) + ","
SUMMARY_HEAD = "source,kind,track,frames,faces,emotion,"
TAIL = ("status", "error")


def columns(labels: Sequence[str]) -> list[str]:
    """The CSV header: fixed columns, one probability column per model label, status and error. A
    model whose labels repeat or take a fixed column's name (a label ``source``) cannot be written:
    its columns would be read back as other columns."""
    clash = sorted({str(k) for k in labels} & {*HEAD, *TAIL}) or sorted({k for k in labels if list(labels).count(k) > 1})
    if clash:
        raise ArtifactError(f"the model's labels {clash} repeat or are names of the results' own columns "
                            f"({', '.join(HEAD + TAIL)}); rename them in the model's spec and export it again")
    return [*HEAD, *labels, *TAIL]


def _num(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def make_row(source: str, kind: str, labels: Sequence[str], *, frame: int | None = None,
             t: float | None = None, face: int | None = None, track: int | None = None, box=None,
             det_score: float | None = None, probs: Sequence[float] | None = None, status: str = "ok",
             error: str = "") -> list[str]:
    """One CSV row as strings, in :func:`columns` order. ``probs``: a face's probabilities (an array or a
    list of floats; a list is formatted faster, which matters for runs of millions of crops)."""
    x, y, w, h = box if box is not None else (None,) * 4
    if probs is None:
        emotion, conf, ps = "", "", [""] * len(labels)
    else:
        values = probs.tolist() if isinstance(probs, np.ndarray) else list(probs)
        ps = [_PROB % p for p in values]
        k = max(range(len(values)), key=values.__getitem__)  # the first largest, as np.argmax
        emotion, conf = labels[k], ps[k]
    return [source, kind, _num(frame, "d"), _num(t, ".3f"), _num(face, "d"), _num(track, "d"),
            *(_num(v, "d") for v in (x, y, w, h)), _num(det_score, ".4f"), emotion, conf, *ps,
            status, printable(" ".join(error.split())) if error else ""]


#: A probability's format in the CSV (as float32 values format with ``.6f``: the same digits).
_PROB = "%.6f"


def printable(text: str) -> str:
    """``text`` with the stand-ins of undecodable bytes (from file names) written as ``\\xHH``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _csv_lines(rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_failed(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {printable(str(path))}: {exc.strerror or exc}; the inputs finished so far are "
                       "kept: free space or fix the folder, then rerun the same command with --resume")


class ResultsWriter:
    """Appends the rows of finished inputs to the results CSV and journals each input as done.

    ``done`` maps each input already finished (by an earlier, resumed run) to its status, by its key
    (the file's real path). ``run`` is what the journal's first line records (None records ``{}``);
    a resumed run must match it, and its journal must describe the CSV (:func:`~.journal.verify`).
    """

    def __init__(self, path: str | Path, header: Sequence[str], resume: bool = False, overwrite: bool = False,
                 run: dict | None = None, retry_failed: bool = False):
        self.path, self.journal = Path(path), journal_path(path)
        self.done: dict[str, str] = {}
        self.retried: list[str] = []  # with retry_failed: the inputs whose error rows were taken out, to run again
        head = _csv_lines([header]).encode()
        settings = {"run": run or {}}
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists and not resume and not overwrite:
            raise InputError(f"{self.path} already exists; pass --resume to continue the run that wrote it, "
                             "or --overwrite to replace it")
        self._csv = self._log = self._lockfd = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lockfd = hold_lock(self.path)
            try:
                if exists and resume:
                    end, self._chain = self._recover(head, settings["run"], retry_failed)
                else:
                    self.path.write_bytes(head)
                    with open(self.journal, "wb", opener=opener) as f:
                        f.write(settings_line(settings))
                    end, self._chain = len(head), Chain(head, settings)
                self._csv = open(self.path, "r+b")
                self._csv.truncate(end)
                self._csv.seek(end)
                self._log = open(self.journal, "ab", opener=opener)
                _fsync(self._csv)
            except BaseException:
                self.close()
                raise
        except OSError as exc:
            raise write_failed(self.path, exc) from exc

    def _recover(self, head: bytes, run: dict, retry_failed: bool = False) -> tuple[int, Chain]:
        """Check the journal against the CSV; drop what a crash left after the last journalled input
        (and, if ``retry_failed``, the inputs that failed: :meth:`_drop_failed`); return the CSV length
        to keep and the checksum there."""
        self._adopt_pending(head)
        if not self.journal.is_file():
            raise InputError(f"cannot resume {self.path}: its journal {self.journal} is missing, so which inputs "
                             "finished is unknown; rerun with --overwrite")
        records: list[dict] = []
        with open(self.path, "rb") as csv_file:
            first = csv_file.read(len(head))
            if first != head:
                first = first.split(b"\n")[0]
                raise InputError(f"cannot resume {self.path}: its header differs from this model's columns "
                                 f"({first.decode(errors='replace').strip()!r}); use another --out or --overwrite")
            fd = open_own(self.journal, os.O_RDWR)  # not through a link, not a FIFO
            with open(fd, "r+b") as journal:
                self.done, end, good, chain = verify(csv_file, journal, head, run, self.path, records)
                journal.truncate(good)  # a torn or damaged tail: appended lines must follow the good ones
            if retry_failed and any(r["status"] == "error" for r in records):
                return self._drop_failed(csv_file, head, run, records)
        return end, chain

    def _drop_failed(self, csv_file, head: bytes, run: dict, records: list[dict]) -> tuple[int, Chain]:
        """``--retry-failed``: the CSV without the rows of the inputs that failed, and a journal of the
        others, are written beside them and renamed into place, the CSV first. The journal then waits
        as :func:`~.journal.pending_journal`: a crash between the two renames leaves it to
        :meth:`_adopt_pending`, and one before them leaves both old files as they were."""
        tmp, pending = Path(str(self.path) + ".retry"), pending_journal(self.path)
        for leftover in (tmp, pending):  # a crash's, which _adopt_pending did not take
            if os.path.lexists(leftover):
                os.unlink(leftover)
        chain, end = Chain(head, {"run": run}), len(head)
        with open(tmp, "xb", opener=opener) as out, open(pending, "xb", opener=opener) as log:
            out.write(head)
            log.write(settings_line({"run": run}))
            for r in records:
                if r["status"] == "error":
                    self.done.pop(r["key"] or r["source"], None)
                    self.retried.append(r["source"])
                    continue
                csv_file.seek(r["start"])
                rows = csv_file.read(r["end"] - r["start"])  # one input's rows
                end += out.write(rows)
                log.write(chain.add(rows, r["source"], r["key"], r["status"], end))
            _fsync(out)
            _fsync(log)
        os.replace(tmp, self.path)
        os.replace(pending, self.journal)
        _fsync_folder(self.path.parent)
        return end, chain

    def _adopt_pending(self, head: bytes) -> None:
        """A journal that ``--retry-failed`` wrote and a crash left pending: put in place if it describes
        the CSV (the CSV was renamed, the journal not yet), else removed (neither was renamed)."""
        pending = pending_journal(self.path)
        if not os.path.lexists(pending):
            return
        try:
            with open(self.path, "rb") as csv_file, open(open_own(pending, os.O_RDONLY), "rb") as log:
                recorded = json.loads(log.readline(MAX_LINE))["run"]
                log.seek(0)
                ok = csv_file.read(len(head)) == head and verify(csv_file, log, head, recorded, self.path) is not None
        except (InputError, OutputError, ValueError, TypeError, KeyError):
            ok = False
        if ok:
            os.replace(pending, self.journal)
        else:
            os.unlink(pending)
        if os.path.lexists(Path(str(self.path) + ".retry")):
            os.unlink(Path(str(self.path) + ".retry"))

    def is_done(self, key: str, name: str) -> bool:
        return key in self.done or name in self.done

    def status_of(self, key: str, name: str) -> str:
        return self.done.get(key) or self.done[name]

    def commit(self, finished: Sequence[tuple[str, str, str, Sequence[Sequence[str]]]]) -> None:
        """Write ``(source name, key, status, rows)`` for each finished input, then journal them, both
        fsynced. After a commit cut off before its journal line (Ctrl-C, a failed write), callers write
        nothing more (:class:`~.commit.Committer` sees to it): ``--resume`` truncates the CSV to the
        journal and does those inputs again."""
        if not finished:
            return
        try:
            chain, lines, end = self._chain.copy(), [], self._csv.tell()
            for source, key, status, rows in finished:
                data = _csv_lines(rows).encode()
                end += self._csv.write(data)
                lines.append(chain.add(data, source, key, status, end))
            _fsync(self._csv)
            self._log.write(b"".join(lines))
            _fsync(self._log)
        except OSError as exc:
            raise write_failed(self.path, exc) from exc
        self._chain = chain
        self.done.update((k, st) for _, k, st, _ in finished)

    def close(self) -> None:
        for f in (self._csv, self._log):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass  # what was committed is fsynced already; the rest is redone by --resume
        if self._lockfd is not None:
            os.close(self._lockfd)
            self._lockfd = None


def _fsync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (where the OS lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    # written whole, then renamed: a full disk leaves the previous summary, never half a new one
    return write_file(out, pd.DataFrame(rows).astype({"track": "Int64"}).to_csv(index=False))


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
    skipped: list = field(default_factory=list)  # sources.Skipped: files in folders that are not inputs

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
        if self.skipped:
            out.append(f"skipped {len(self.skipped)} files in the input folders that are not images or videos:")
            out += [f"  skipped {s.path}: {s.reason}" for s in self.skipped]
        out += [f"FAILED {s}: {e}" for s, e in self.failed]
        return out
