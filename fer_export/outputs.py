"""Output safety (torch-free): the checks every file a command writes goes through, and how a failed
write is reported. fer-export, fer-eval, fer-batch and the benchmark scripts all use these.

An output is never an input, never another output of the same command (real paths are compared, so
links and ``..`` do not hide it), never inside an input folder (it would be read back as an input),
never a file some other program wrote (only a command's own earlier output is replaced), and goes to
a place that takes new files. Each check raises one :class:`~fer_export.errors.OutputError` naming
the option, the path and what to do, before any work starts. Writes themselves are whole or not at
all (:func:`write_file`).
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .errors import OutputError

Named = Iterable[tuple[str, "str | Path | None"]]  # (what, path) pairs, e.g. ("--json", path); None is skipped

#: What to do about a failed write, by errno; anything else is reported with the system's own words.
_WRITE_ADVICE = {
    errno.ENOSPC: "no space left on device; free space and rerun",
    errno.EDQUOT: "disk quota exceeded; free space and rerun",
    errno.EFBIG: "file too large for this file system; choose another place",
    errno.EROFS: "read-only file system; choose a writable place",
    errno.EACCES: "permission denied; choose a writable place",
    errno.EPERM: "operation not permitted; choose a writable place",
    errno.EISDIR: "is a folder; give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOENT: "no such folder, or files cannot be created there; choose another place",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter one",
}


def os_error_reason(exc: OSError) -> str:
    """What went wrong in ``exc`` and what to do, in a few words."""
    return _WRITE_ADVICE.get(exc.errno, exc.strerror or str(exc))


def cannot_write(path: str | Path, exc: OSError) -> OutputError:
    """The one-line error for an ``OSError`` raised while writing ``path``."""
    return OutputError(f"cannot write {path}: {os_error_reason(exc)}")


def current_umask() -> int:
    """The process's umask (read by setting it and back): the mode a new file gets is 0o666 & ~it."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_file_beside(final: Path) -> Path:
    """A new empty file in ``final``'s folder (made if missing) to write ``final`` into before renaming it
    into place: a unique name (never an input's), ``final``'s suffix, the permissions a new file gets."""
    final.parent.mkdir(parents=True, exist_ok=True)
    stem = os.fsencode(final.stem)[:64].decode(errors="ignore")  # a name at the length limit leaves no room
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{stem}.", suffix=f".tmp{final.suffix[:16]}")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    return Path(name)


def write_file(path: str | Path, data: bytes | memoryview | str, atomic: bool = True) -> Path:
    """Write ``data`` to ``path`` (its folder created). ``atomic``: whole, through a unique temporary file in
    the same folder renamed into place, so a failed write leaves the previous file (a device such as
    /dev/stdout is written directly). Any ``OSError`` becomes :func:`cannot_write`'s error; nothing partial
    is left behind."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    direct = not atomic or (path.exists() and not path.is_file() and not path.is_dir())
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if direct:
            with open(path, "wb") as f:
                f.write(raw)
            return path
        stem = os.fsencode(path.name)[:64].decode(errors="ignore")  # a name at the length limit leaves no room
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}.", suffix=".tmp")
        tmp = Path(name)
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would make a summary private where the CSV is not
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        elif direct and path.is_file():
            path.unlink(missing_ok=True)  # half a file is worse than none
        raise cannot_write(path, exc) from exc


# ---- where an output may go ------------------------------------------------------------------------

def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, by real paths (links and ``..`` do not hide it)."""
    root = os.path.realpath(folder)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


class Claims:
    """The files one command reads and writes, by real path: an output may claim a path nobody holds.
    ``resolved``: more ``(what, path)`` pairs whose paths are real paths already (fer-batch's inputs,
    resolved once while collecting them: resolving thousands again costs a stat per path component)."""

    def __init__(self, inputs: Named = (), resolved: Named = ()):
        self.taken = {os.path.realpath(p): (what, p) for what, p in inputs if p is not None}
        self.taken.update((real, (what, real)) for what, real in resolved)

    def holder(self, path: str | Path) -> tuple[str, str | Path] | None:
        """Who holds ``path`` already, as ``(what, path)``, e.g. ``("--out", "r.csv")``; or None."""
        return self.taken.get(os.path.realpath(path))

    def claim(self, what: str, path: str | Path) -> None:
        """Take ``path`` for output ``what``; refused when an input or another output holds it."""
        holder = self.holder(path)
        if holder is not None:
            raise OutputError(f"{what} {path} would overwrite {holder[0]} {holder[1]}; choose another path")
        self.taken[os.path.realpath(path)] = (what, path)


def check_outputs(inputs: Named, outputs: Named) -> None:
    """Refuse, before any work, an output that is one of the ``inputs`` or another output, or that cannot
    be written (:func:`check_writable`). Both are ``(what, path)`` pairs, e.g. ``("the checkpoint", ckpt)``,
    ``("--json", report)``; None is skipped."""
    claims = Claims(inputs)
    for what, path in outputs:
        if path is not None:
            claims.claim(what, path)
            check_writable(what, path)


def check_outside(what: str, folder: str | Path | None, outputs: Named) -> None:
    """Refuse, before any work, an output that is the input ``folder`` or lies inside it (:func:`is_inside`):
    a file written into a data set is read back as one of its images, or changes its listing."""
    if folder is None:
        return
    for name, path in outputs:
        if path is not None and is_inside(path, folder):
            where = "is" if os.path.realpath(path) == os.path.realpath(folder) else "lies inside"
            raise OutputError(f"{name} {path}: {where} {what} {folder}, an input of this run; write the output "
                              "elsewhere")


def check_writable(what: str, path: str | Path) -> None:
    """Refuse, before any work, an output ``path`` that is a folder, lies under a file, or whose folder
    (or the nearest one that exists: missing ones are created) does not take new files."""
    path = Path(path)
    folder = path.parent
    try:
        if path.is_dir():
            raise OutputError(f"{what} {path} is a folder; give a file name (e.g. {path / 'NAME'})")
        if path.exists():
            if path.is_file() and not os.access(path, os.W_OK):
                raise OutputError(f"{what} {path}: permission denied; choose a writable file")
            return  # an existing file (or a device such as /dev/stdout) is written in place
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise OutputError(f"{what} {path}: {folder} is a file, not a folder; choose another path")
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".fer-export-write-test-"):
            pass
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot create files in {folder}: "
                          f"{os_error_reason(exc)}") from exc


def check_folder_writable(what: str, folder: str | Path) -> None:
    """Make ``folder`` (and its parents) if missing and refuse it unless a new file can be created in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".fer-export-write-test-"):
            pass
    except OSError as exc:
        raise OutputError(f"{what}: cannot write into {folder}: {exc.strerror or exc}; choose a writable folder") from exc


def check_name_length(what: str, path: Path, shown: str | None = None) -> None:
    """Refuse a file name longer than its folder takes: such a name fails only when first written, which
    can be after the whole run."""
    try:
        limit = os.pathconf(path.parent if path.parent.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(path.name)) > limit:
        raise OutputError(f"{what} {shown or path}: the file name is longer than the {limit} bytes a name may "
                          "have here; choose a shorter name")


# ---- whose file it is ----------------------------------------------------------------------------

def starts_with(head: bytes) -> Callable[[Path], bool]:
    """A test of a file's first bytes: ``head`` (a CSV header a command writes, say)."""
    def test(path: Path) -> bool:
        with open(path, "rb") as f:
            return f.read(len(head)) == head
    return test


def check_own_file(what: str, path: Path, is_own: Callable[[Path], bool], not_own: str) -> None:
    """An existing ``path`` that an output would replace must be a regular file that is empty or that
    ``is_own`` recognises as this command's own output; else an error ending in ``not_own`` (what it is
    not, and what to do). A missing ``path`` passes."""
    if not path.exists():
        return
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name")
    if not path.is_file():
        raise OutputError(f"{what} {path}: is not a regular file; give a file name")
    if path.stat().st_size and not is_own(path):
        raise OutputError(f"{what} {path}: exists and {not_own}")
