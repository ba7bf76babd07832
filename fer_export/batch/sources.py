"""Batch inputs (torch-free): image and video files found under the paths a user gives.

A file given explicitly is always an input (a video by its extension, else an image, so a wrong
file gives an error row rather than vanishing); folders are searched recursively for the known
extensions; what a folder holds besides is listed as skipped, with the reason. ``Source.name`` is
the path as given, or ``FOLDER/relative/path`` for files found in a folder, escaped by
:func:`escape_name` so that any file name (even one that is not valid UTF-8) fits the CSV.
``Source.key`` is the file's real path: ``--resume`` recognises a finished input by it, however
its path is spelled. Video frames (sampling, times, ranges, frame counts) are :mod:`.frames`'s,
and importable from here too.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Iterator, Sequence

import numpy as np

from ..errors import InputError
from ..folders import IMAGE_EXTENSIONS
from .frames import FrameRange, FrameSampler, decode_error, estimated_frames, iter_frames, open_video

__all__ = ["CROP_MAX_SIDE", "VIDEO_EXTENSIONS", "FrameRange", "FrameSampler", "Skipped", "Source", "annotated_name",
           "collect_sources", "count_frames", "decode_error", "escape_name", "is_face_crop", "iter_frames", "kind_of",
           "open_video", "unescape_name"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
#: Images with both sides at most this many pixels are taken to be face crops (FER2013 crops are
#: 48x48) and are classified whole, without face detection.
CROP_MAX_SIDE = 64


@dataclass(frozen=True)
class Source:
    path: Path  # the file to read
    name: str  # what the CSV's `source` column says (escape_name of the path as given)
    kind: str  # "image" or "video"
    key: str = ""  # the file's real path: the same file however it was named (resume matches on it)
    out_name: str = ""  # relative path of its annotated copy or plot: FOLDER-NAME/relative/path

    @property
    def annotated_name(self) -> str:
        """The relative path of its annotated copy: ``out_name``, and for a video not already an MP4
        with ``.mp4`` added (``clip.avi.mp4``: beside ``clip.mp4``, each keeps its own name)."""
        return annotated_name(self.out_name, self.kind)


def kind_of(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"


#: Characters written as ``\\xHH``: the C0 controls and DEL (a line break or carriage return in a
#: name would split a CSV row or a console line; an escape sequence would rewrite the terminal).
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def escape_name(path: str | Path) -> str:
    """A path as text that is always valid UTF-8, on one line, and can be turned back into the
    path's bytes: a backslash is written twice, and each byte that is not part of valid UTF-8, or is
    a control character (line breaks, tabs, escape), as ``\\xHH`` (:func:`unescape_name` reverses it)."""
    text = os.fsdecode(os.fsencode(path))
    if "\\" not in text and not _CONTROL.search(text):
        try:
            text.encode("utf-8")  # no stand-ins for undecodable bytes: nothing to escape
            return text
        except UnicodeEncodeError:
            pass
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif "\udc80" <= ch <= "\udcff":  # os.fsdecode's stand-in for an undecodable byte
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif _CONTROL.match(ch):
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def unescape_name(text: str) -> bytes:
    """The bytes of the path that :func:`escape_name` wrote as ``text``."""
    out, i = bytearray(), 0
    while i < len(text):
        if text.startswith("\\\\", i):
            out += b"\\"
            i += 2
        elif text.startswith("\\x", i):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            out += text[i].encode()
            i += 1
    return bytes(out)


@dataclass(frozen=True)
class Skipped:
    path: str  # escaped, as in the CSV
    reason: str


def collect_sources(inputs: Sequence[str | Path], skipped: list[Skipped] | None = None) -> list[Source]:
    """Every input file, in the order given, folders expanded recursively in sorted order.

    A path that does not exist raises :class:`InputError`; a file listed twice is kept once. Files
    inside folders that are not inputs (other types, broken or looping links) are appended to
    ``skipped`` with the reason.
    """
    out, seen, outs, folders = [], set(), set(), {}
    for given in inputs:
        root = Path(given)
        if root.is_dir():
            items = []
            base = root.resolve().name or "root"
            for parts, entry in sorted(_folder_entries(root), key=lambda found: found[0]):
                reason = _not_an_input(entry)
                if reason and skipped is not None and reason != "folder":
                    skipped.append(Skipped(escape_name(entry.path), reason))
                if not reason:
                    rel = "/".join(parts)
                    items.append((Path(entry.path), os.path.join(str(given), rel), os.path.join(base, rel),
                                  entry.is_symlink()))
        elif root.exists():
            items = [(root, str(given), root.name, root.is_symlink())]
        else:
            raise InputError(f"{escape_name(given)}: no such file or folder")
        for path, name, out_name, link in items:
            key = _real_path(path, link, folders)
            if key in seen:
                continue
            seen.add(key)
            kind = kind_of(path)
            out_name = wanted = escape_name(out_name)
            k = 0  # two inputs of the same name from different places (or clip.avi beside clip.avi.mp4)
            while out_name in outs or annotated_name(out_name, kind) in outs:
                k += 1
                stem, dot, ext = wanted.rpartition(".")
                out_name = f"{stem}_{k}.{ext}" if dot else f"{wanted}_{k}"
            outs.update({out_name, annotated_name(out_name, kind)})
            out.append(Source(path, escape_name(name), kind, key, out_name))
    return out


def annotated_name(out_name: str, kind: str) -> str:
    """See :attr:`Source.annotated_name`."""
    return out_name if kind != "video" or out_name.lower().endswith(".mp4") else out_name + ".mp4"


def _folder_entries(root: Path) -> Iterator[tuple[tuple[str, ...], os.DirEntry]]:
    """Everything under ``root``, as ``root.rglob("*")`` finds it (into folders, not into links to
    folders; a folder it may not read is passed over), as (path parts below ``root``, entry). One
    ``scandir`` per folder and the entries' cached types: a fifth of the time of ``rglob`` and a
    ``stat`` per file, on a folder of 10,000 crops."""
    stack = [((), os.fspath(root))]
    while stack:
        parts, folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except PermissionError:
            continue
        for entry in entries:
            found = (*parts, entry.name)
            yield found, entry
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((found, entry.path))
            except OSError:
                pass


def _real_path(path: Path, link: bool, folders: dict[str, str]) -> str:
    """``os.path.realpath(path)``, each folder resolved once (in ``folders``): a file that is not a link
    (``link``) is its real folder plus its name. Saves most of collecting a folder of many small crops."""
    if link:
        return os.path.realpath(path)
    parent = os.path.dirname(path) or "."  # realpath resolves links and .. in it
    real = folders.get(parent)
    if real is None:
        real = folders[parent] = os.path.realpath(parent)
    return os.path.join(real, path.name)


def _not_an_input(entry: os.DirEntry) -> str:
    """Why an entry found in a folder is not an input ("" when it is one)."""
    try:
        if entry.is_dir():
            if entry.is_symlink():  # not followed, as find and rglob do not: it may loop, or lead anywhere
                return "a link to a folder, not followed: give it as an input to include it"
            return "folder"
        if not entry.is_file():
            return "broken or looping link" if entry.is_symlink() else "not a regular file"
    except OSError as exc:  # a symlink loop, a permission problem
        return "broken or looping link" if entry.is_symlink() else f"unreadable: {exc.strerror}"
    suffix = PurePath(entry.name).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
        return f"not an image or video type ({suffix or 'no extension'})"
    return ""


def is_face_crop(image: np.ndarray) -> bool:
    return max(image.shape[:2]) <= CROP_MAX_SIDE


def count_frames(source: Source, sampler: FrameSampler) -> int:
    """How many items a source will yield (for the progress bar): 1 for an image, a guess for a video
    (:func:`~.frames.estimated_frames`: bounded, and as fast whatever its container claims)."""
    return estimated_frames(source.path, sampler) if source.kind == "video" else 1
