"""The journal beside a results CSV (torch-free): what a run has finished, and the proof that the
journal describes the CSV it lies beside.

``RESULTS.progress`` is JSON lines. The first, ``{"run": {...}}``, records every setting that changes
results. Then one line per finished input, ``{"source", "key", "status", "end", "sha256"}``: ``end``
is the CSV's byte length after the input's rows, and ``sha256`` a running checksum of everything
before: the CSV's bytes up to ``end`` and the journal's records up to this one (:class:`Chain`).

Resuming (:func:`verify`) re-reads the CSV and recomputes the checksum line by line, so a journal
copied from another run, a CSV edited, cut or lengthened before its last recorded input, lines
swapped or changed, are found and refused with one line. What a crash leaves is not refused: a last
line cut short, rows after the last recorded input (written before their journal line), and a line
that is not a journal record at all (a block of zeros after a power cut, garbage). The journal ends
before such a line, and the inputs after it are done again. A journal without the settings line
never resumes, whatever the settings.

One process at a time writes a results file: it holds a lock on ``RESULTS.lock`` (which records its
process id) for the whole run. Neither file is ever opened through a link, nor as a FIFO or device.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

from ..errors import InputError, OutputError

#: What an input's status may be in the journal (and the CSV).
STATUSES = ("ok", "no_face", "error")
#: A journal line longer than this is not a record (records hold two paths and a few numbers).
MAX_LINE = 1 << 20


def journal_path(results: str | Path) -> Path:
    return Path(str(results) + ".progress")


def lock_path(results: str | Path) -> Path:
    return Path(str(results) + ".lock")


def _text(path: Path) -> str:
    """A path for a message: undecodable bytes as ``\\xHH``."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def open_own(path: Path, flags: int) -> int:
    """``os.open`` of a file fer-batch writes beside the results (its lock, its journal), never through a
    link to another file and never into a FIFO or device: such a file in its place is an OutputError."""
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise OutputError(f"{_text(path)} is a symbolic link; fer-batch writes this file itself and "
                              "never through a link: remove it, or choose another --out") from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader, a socket
            raise OutputError(f"{_text(path)} is not a regular file (a FIFO or a socket); fer-batch writes "
                              "this file itself: remove it, or choose another --out") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"{_text(path)} is not a regular file (a FIFO, a device or a folder); fer-batch "
                          "writes this file itself: remove it, or choose another --out")
    os.set_blocking(fd, True)
    return fd


def opener(path: str, flags: int) -> int:
    """:func:`open_own` as ``open()``'s opener."""
    return open_own(Path(path), flags)


def hold_lock(results: Path) -> int | None:
    """Hold the lock of ``results`` (an open descriptor), or raise naming the process that holds it."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        return None
    fd = open_own(lock_path(results), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise OutputError(f"{_text(results)} is being written by process {holder} (another fer-batch run); "
                          "wait for it to finish or choose another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _record(entry: dict) -> bytes:
    """An entry as the checksum sees it: canonical JSON (sorted keys), whatever its line's spelling."""
    return json.dumps(entry, sort_keys=True).encode() + b"\n"


class Chain:
    """The running checksum: sha256 over the CSV's header, the settings record, and each input's rows
    and record in turn, as written."""

    def __init__(self, head: bytes, settings: dict):
        self.h = hashlib.sha256(head)
        self.h.update(_record(settings))

    def copy(self) -> Chain:
        other = Chain.__new__(Chain)
        other.h = self.h.copy()
        return other

    def feed(self, rows: bytes) -> None:
        """CSV bytes of the input being recorded."""
        self.h.update(rows)

    def seal(self, entry: dict) -> str:
        """The checksum of everything up to the record ``entry`` (which closes its input's rows)."""
        self.h.update(_record(entry))
        return self.h.hexdigest()

    def add(self, rows: bytes, source: str, key: str, status: str, end: int) -> bytes:
        """The journal line of an input whose ``rows`` end the CSV at ``end``; the chain moves past it."""
        entry = {"source": source, "key": key, "status": status, "end": end}
        self.feed(rows)
        return json.dumps({**entry, "sha256": self.seal(entry)}).encode() + b"\n"


def settings_line(settings: dict) -> bytes:
    """The journal's first line: ``{"run": {...}}`` (what :class:`Chain` starts from)."""
    return json.dumps(settings).encode() + b"\n"


def _entry(line: bytes) -> dict | None:
    """A finished input's record, or None when the line is not one (torn, damaged, an older journal's)."""
    if not line.endswith(b"\n"):
        return None  # a partial line from a kill: that input was not committed
    try:
        entry = json.loads(line)
    except ValueError:  # garbage, NUL bytes, invalid UTF-8
        return None
    if not isinstance(entry, dict) or set(entry) != {"source", "key", "status", "end", "sha256"}:
        return None
    end, sha = entry["end"], entry["sha256"]
    ok = (isinstance(entry["source"], str) and isinstance(entry["key"], str) and entry["status"] in STATUSES
          and type(end) is int and end > 0 and isinstance(sha, str) and len(sha) == 64)
    return entry if ok else None


def verify(csv, journal, head: bytes, run: dict, path: Path,
           records: list | None = None) -> tuple[dict[str, str], int, int, Chain]:
    """Check that ``journal`` (open, at its start) describes the results CSV ``csv`` (open, after its
    header ``head``) of a run with settings ``run``. Returns ``(done, end, good, chain)``: the finished
    inputs' statuses by key, the CSV length they cover, the journal length that holds them, and the
    checksum there. Raises :class:`InputError` (one line, saying what to do) on any disagreement.
    ``records``, when given, receives each finished input's record (``start``: where its rows begin)."""
    where = f"cannot resume {_text(path)}: its journal {_text(journal_path(path))}"
    first = journal.readline(MAX_LINE)
    try:
        recorded = json.loads(first) if first.endswith(b"\n") else None
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("run"), dict):
        raise InputError(f"{where} does not begin with the run's settings, so they cannot be checked; "
                         "rerun with --overwrite, or to a new --out")
    _check_same_run(path, recorded["run"], run)
    chain, done, end, good, k = Chain(head, recorded), {}, len(head), len(first), 1
    while entry := _entry(line := journal.readline(MAX_LINE)):
        k += 1
        if entry["end"] <= end:
            raise InputError(f"{where} does not describe it (line {k} ends the CSV at byte {entry['end']}, "
                             f"before the line above it: lines were moved); rerun with --overwrite, or to a new --out")
        if not _hash_segment(csv, chain, entry["end"] - end):
            raise InputError(f"cannot resume {_text(path)}: it is shorter than its journal says (line {k}: "
                             f"{entry['end']:,} bytes); it was cut or replaced: rerun with --overwrite, or to a new --out")
        sha = entry.pop("sha256")
        key = entry["key"] or entry["source"]
        if chain.seal(entry) != sha or key in done:
            raise InputError(f"{where} does not describe it (line {k}: the CSV before it was changed, or the journal "
                             "is another run's); rerun with --overwrite, or to a new --out")
        if records is not None:
            records.append({**entry, "start": end})
        done[key], end, good = entry["status"], entry["end"], good + len(line)
    return done, end, good, chain


def pending_journal(results: str | Path) -> Path:
    """Where a journal rewritten by ``--retry-failed`` waits for its CSV to be renamed into place."""
    return Path(str(results) + ".progress.retry")


def _hash_segment(csv, chain: Chain, n: int) -> bool:
    """Add the next ``n`` bytes of ``csv`` to the chain; False if the file ends first."""
    while n > 0:
        block = csv.read(min(n, 1 << 20))
        if not block:
            return False
        chain.feed(block)
        n -= len(block)
    return True


def _check_same_run(path: Path, recorded: dict, run: dict) -> None:
    changed = [f"{k} {recorded.get(k)!r} -> {run.get(k)!r}" for k in sorted(set(recorded) | set(run))
               if recorded.get(k) != run.get(k)]
    if changed:
        raise InputError(f"cannot resume {_text(path)}: it was started with other settings ({'; '.join(changed)}); "
                         "rerun with those settings, or use another --out (or --overwrite) for the new ones")
