"""The results CSV (schema, crash-safe writer, resume) and per-input summaries (torch-free).

Crash safety: the rows of an input are appended together, the CSV is flushed and fsynced, and only
then is a line ``{"source", "key", "status", "end"}`` appended (and fsynced) to the journal
``RESULTS.progress``. ``end`` is the CSV's byte length after that input. Resuming truncates the CSV
to the last journalled ``end`` — dropping rows of an input that was cut off and any partial line a
``kill -9`` left — and skips the journalled inputs. A journal line that cannot be read (a torn or
damaged tail) ends the journal there: the inputs after it are done again.

The journal's first line, ``{"run": {...}}``, records every setting that changes results (model
and detector files by sha256, detector options, frame sampling); ``--resume`` refuses a run whose
settings differ. One process at a time writes a results file: it holds a lock on ``RESULTS.lock``
(which records its process id) for the whole run.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ArtifactError, InputError, OutputError
from ..folders import write_file

HEAD = ("source", "kind", "frame", "timestamp_s", "face", "track", "x", "y", "w", "h", "det_score",
        "emotion", "confidence")
#: How a results CSV and a summary CSV begin: --overwrite and --resume replace only such files.
RESULTS_HEAD = ",".join(HEAD[:4]) + ","
SUMMARY_HEAD = "source,kind,track,frames,faces,emotion,"
TAIL = ("status", "error")
STATUSES = ("ok", "no_face", "error")


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


def journal_path(results: str | Path) -> Path:
    return Path(str(results) + ".progress")


def _csv_lines(rows: Sequence[Sequence[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_failed(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {printable(str(path))}: {exc.strerror or exc}; the inputs finished so far are "
                       "kept: free space or fix the folder, then rerun the same command with --resume")


def lock_path(results: str | Path) -> Path:
    return Path(str(results) + ".lock")


def _open_own(path: Path, flags: int) -> int:
    """``os.open`` of a file fer-batch writes beside the results (its lock, its journal), never through a
    link to another file and never into a FIFO or device: such a file in its place is an OutputError."""
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise OutputError(f"{printable(str(path))} is a symbolic link; fer-batch writes this file itself and "
                              "never through a link: remove it, or choose another --out") from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, a socket
            raise OutputError(f"{printable(str(path))} is not a regular file (a FIFO or a socket); fer-batch writes "
                              "this file itself: remove it, or choose another --out") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"{printable(str(path))} is not a regular file (a FIFO, a device or a folder); fer-batch "
                          "writes this file itself: remove it, or choose another --out")
    os.set_blocking(fd, True)
    return fd


def _own(path: str, flags: int) -> int:
    """:func:`_open_own` as ``open()``'s opener."""
    return _open_own(Path(path), flags)


def _lock(results: Path) -> int | None:
    """Hold the lock of ``results`` (an open descriptor), or raise naming the process that holds it."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        return None
    fd = _open_own(lock_path(results), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise OutputError(f"{printable(str(results))} is being written by process {holder} (another fer-batch run); "
                          "wait for it to finish or choose another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class ResultsWriter:
    """Appends the rows of finished inputs to the results CSV and journals each input as done.

    ``done`` maps each input already finished (by an earlier, resumed run) to its status, by its key
    (the file's real path; journals of older versions have only its name). ``run`` is what the
    journal's first line records; a resumed run must match it.
    """

    def __init__(self, path: str | Path, header: Sequence[str], resume: bool = False, overwrite: bool = False,
                 run: dict | None = None):
        self.path, self.journal = Path(path), journal_path(path)
        self.done: dict[str, str] = {}
        head = _csv_lines([header]).encode()
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists and not resume and not overwrite:
            raise InputError(f"{self.path} already exists; pass --resume to continue the run that wrote it, "
                             "or --overwrite to replace it")
        self._csv = self._log = self._lockfd = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lockfd = _lock(self.path)
            try:
                if exists and resume:
                    end = self._recover(head, run)
                else:
                    self.path.write_bytes(head)
                    with open(self.journal, "wb", opener=_own) as f:
                        f.write(b"" if run is None else _journal_line({"run": run}))
                    end = len(head)
                self._csv = open(self.path, "r+b")
                self._csv.truncate(end)
                self._csv.seek(end)
                self._log = open(self.journal, "ab", opener=_own)
                _fsync(self._csv)
            except BaseException:
                self.close()
                raise
        except OSError as exc:
            raise write_failed(self.path, exc) from exc

    def _recover(self, head: bytes, run: dict | None) -> int:
        """Read the journal; return the CSV length to keep."""
        if not self.journal.is_file():
            raise InputError(f"cannot resume {self.path}: its journal {self.journal} is missing, so which inputs "
                             "finished is unknown; rerun with --overwrite")
        with open(self.path, "rb") as f:
            first = f.readline()
        if first != head:
            raise InputError(f"cannot resume {self.path}: its header differs from this model's columns "
                             f"({first.decode(errors='replace').strip()!r}); use another --out or --overwrite")
        os.close(_open_own(self.journal, os.O_RDONLY))  # not through a link, not a FIFO
        end, good = len(head), 0
        for k, line in enumerate(self.journal.read_bytes().splitlines(keepends=True) or [b""]):
            entry = _journal_entry(line)
            if k == 0 and run is not None and (entry is None or "run" not in entry):
                raise InputError(f"cannot resume {self.path}: its journal {self.journal} does not begin with the "
                                 "run's settings, so they cannot be checked; rerun with --overwrite")
            if entry is None:
                break  # a torn or damaged line: the journal ends here, what follows is done again
            if k == 0 and "run" in entry:
                _check_same_run(self.path, entry["run"], run)
            elif "run" not in entry:
                self.done[entry.get("key") or entry["source"]] = entry["status"]
                end = entry["end"]
            good += len(line)
        if end > self.path.stat().st_size:
            raise InputError(f"cannot resume {self.path}: it is shorter than its journal says; rerun with --overwrite")
        with open(self.journal, "r+b") as f:
            f.truncate(good)
        return end

    def is_done(self, key: str, name: str) -> bool:
        return key in self.done or name in self.done

    def status_of(self, key: str, name: str) -> str:
        return self.done.get(key) or self.done[name]

    def commit(self, finished: Sequence[tuple[str, str, str, Sequence[Sequence[str]]]]) -> None:
        """Write ``(source name, key, status, rows)`` for each finished input, then journal them, both
        fsynced. After a commit cut off before its journal line (Ctrl-C, a failed write), callers write
        nothing more (:class:`~.work.Committer` sees to it): ``--resume`` truncates the CSV to the
        journal and does those inputs again."""
        if not finished:
            return
        try:
            ends, end = [], self._csv.tell()
            for source, key, status, rows in finished:
                end += self._csv.write(_csv_lines(rows).encode())
                ends.append((source, key, status, end))
            _fsync(self._csv)
            self._log.write(b"".join(_journal_line({"source": s, "key": k, "status": st, "end": e})
                                     for s, k, st, e in ends))
            _fsync(self._log)
        except OSError as exc:
            raise write_failed(self.path, exc) from exc
        self.done.update((k, st) for _, k, st, _ in ends)

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


def _journal_line(entry: dict) -> bytes:
    return json.dumps(entry).encode() + b"\n"


def _journal_entry(line: bytes) -> dict | None:
    """A journal line's entry, or None when the line is torn or damaged."""
    if not line.endswith(b"\n"):
        return None  # a partial line from a kill: that input was not committed
    try:
        entry = json.loads(line)
    except ValueError:  # garbage, NUL bytes, invalid UTF-8
        return None
    if not isinstance(entry, dict):
        return None
    if "run" in entry:
        return entry if isinstance(entry["run"], dict) else None
    ok = (isinstance(entry.get("source"), str) and entry.get("status") in STATUSES
          and isinstance(entry.get("end"), int) and not isinstance(entry["end"], bool) and entry["end"] > 0
          and isinstance(entry.get("key", ""), str))
    return entry if ok else None


def _check_same_run(path: Path, recorded: dict, run: dict | None) -> None:
    if run is None:
        return
    changed = [f"{k} {recorded.get(k)!r} -> {run.get(k)!r}" for k in sorted(set(recorded) | set(run))
               if recorded.get(k) != run.get(k)]
    if changed:
        raise InputError(f"cannot resume {path}: it was started with other settings ({'; '.join(changed)}); "
                         "rerun with those settings, or use another --out (or --overwrite) for the new ones")


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
