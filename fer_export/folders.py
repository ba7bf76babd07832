"""Image folders (torch-free): labelled ones in Kaggle's FER2013 layout (``ROOT/<label>/*.jpg``), and
seeded samples of any folder of images; and the checks every output file of the commands goes through
(never an input, never another output, a writable place) and how a failed write is reported."""
from __future__ import annotations

import errno
import os
import random
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from .errors import InputError, OutputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def labelled_images(root: str | Path, labels: Sequence[str], limit_per_class: int | None = None,
                    seed: int = 0) -> list[tuple[Path, int]]:
    """``(path, class index)`` for every image under ``root/<label>/``, sorted by path.

    Folders are matched to ``labels`` case-insensitively; a folder that is not a label is an error
    (it usually means the wrong label set), a label without a folder is allowed (a slice may lack a
    rare class). ``limit_per_class`` keeps a seeded random sample of that many images per class.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such data folder; expected {root}/<emotion>/*.jpg (Kaggle FER2013 layout)")
    index = {name.lower(): i for i, name in enumerate(labels)}
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    unknown = [d.name for d in dirs if d.name.lower() not in index]
    splits = [name for name in unknown if name.lower() in ("train", "test", "val", "validation")]
    if splits:
        pick = next((s for want in ("test", "val", "validation") for s in splits if s.lower() == want), splits[0])
        raise InputError(f"{root}: holds the splits {splits}, not class folders; pick one, e.g. --split {pick} "
                         f"(fer-eval) or {root / pick} (Kaggle's FER2013 download has train/ and test/)")
    if unknown:
        raise InputError(
            f"{root}: class folders {unknown} are not labels of this model {list(labels)}; "
            f"point --data at a folder whose sub-folders are the emotion names"
        )
    items: list[tuple[Path, int]] = []
    rng = random.Random(seed)
    for d in dirs:
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if limit_per_class is not None and len(files) > limit_per_class:
            files = sorted(rng.sample(files, limit_per_class))
        items += [(p, index[d.name.lower()]) for p in files]
    if not items:
        raise InputError(f"{root}: no images found under {root}/<emotion>/ (extensions {IMAGE_EXTENSIONS})")
    return items


def image_files(root: str | Path) -> list[Path]:
    """Every image under ``root`` (a Kaggle-layout folder or any folder of images), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such image folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise InputError(f"{root}: no images found (extensions {IMAGE_EXTENSIONS})")
    return files


def sample_images(root: str | Path, n: int, seed: int = 0) -> list[Path]:
    """A seeded sample of ``n`` image files under ``root`` (all of them when there are fewer), sorted."""
    return sample_of(image_files(root), n, seed)


def sample_of(files: list[Path], n: int, seed: int = 0) -> list[Path]:
    """:func:`sample_images` from a folder's listing already at hand (``image_files(root)``)."""
    return sorted(random.Random(seed).sample(files, min(n, len(files))))


def resolve_split(data: str | Path, split: str) -> Path:
    """``DATA/split`` when it exists, else ``DATA`` itself if it already holds class folders."""
    data = Path(data)
    if (data / split).is_dir():
        return data / split
    return data


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


def check_outputs(inputs: Iterable[tuple[str, str | Path | None]],
                  outputs: Iterable[tuple[str, str | Path | None]]) -> None:
    """Refuse, before any work, an output that is one of the ``inputs`` or another output (real paths are
    compared, so links and ``..`` do not hide it), or that cannot be written (:func:`check_writable`).
    Both are ``(what, path)`` pairs, e.g. ``("the checkpoint", ckpt)``, ``("--json", report)``; None is skipped."""
    taken = {os.path.realpath(p): f"{what} {p}" for what, p in inputs if p is not None}
    for what, path in outputs:
        if path is None:
            continue
        real = os.path.realpath(path)
        if real in taken:
            raise OutputError(f"{what} {path} would overwrite {taken[real]}; choose another path")
        taken[real] = f"{what} {path}"
        check_writable(what, path)


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it, by real paths (links and ``..`` do not hide it)."""
    root = os.path.realpath(folder)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def check_outside(what: str, folder: str | Path | None, outputs: Iterable[tuple[str, str | Path | None]]) -> None:
    """Refuse, before any work, an output inside the input ``folder`` (:func:`is_inside`): a file written
    into a data set is read back as one of its images, or changes its listing."""
    if folder is None:
        return
    for name, path in outputs:
        if path is not None and is_inside(path, folder):
            raise OutputError(f"{name} {path} is inside {what} {folder}; write it outside that folder")
