"""What an image file may cost, known before it is decoded (no torch, no decoding).

A few hundred bytes of JPEG, GIF or WebP, or a few hundred kB of compressed TIFF or PNG, can state
billions of pixels; decoding them takes gigabytes and minutes (a decompression bomb), and a sparse
file can claim gigabytes it does not hold. So a file's size is checked before a byte is read, its
header is read where it lies (a TIFF's page directories may be anywhere) and checked, page by page
(width, height, channels, bytes per sample, and what the decoder holds besides: a TIFF tile, a
progressive JPEG's coefficients), and only then is the file read whole and decoded.

:mod:`.image_headers` reads the headers of the formats OpenCV decodes. A file of any other format is
never given to OpenCV; Pillow opens it instead (:func:`open_with_pillow`), under Pillow's own limit
(``PIL.Image.MAX_IMAGE_PIXELS``) as well as this budget.
"""
from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass

from PIL import Image

from .errors import InputError
from .image_headers import Page, Stated, Reader, stated


@dataclass(frozen=True)
class ImageBudget:
    """The most one image input may cost."""

    max_pixels: int = 1 << 28  # a page (16384 x 16384): a 100-megapixel photo is well within
    max_bytes: int = 1 << 30  # a page's decoded array; and the file itself, which is read whole
    max_pages: int = 1000  # pages of a multi-page TIFF
    max_total_pixels: int = 1 << 31  # all the pages of a file together: bounds the time to decode it

    def pixels(self) -> int:
        """``max_pixels``, or Pillow's own limit where that is lower: Pillow refuses images of more
        than twice ``PIL.Image.MAX_IMAGE_PIXELS`` (which a program may set), so every format gets one limit."""
        pil = Image.MAX_IMAGE_PIXELS
        return self.max_pixels if pil is None else min(self.max_pixels, 2 * int(pil))


DEFAULT_BUDGET = ImageBudget()


def read_checked(path, budget: ImageBudget = DEFAULT_BUDGET) -> tuple[bytes, Stated | None]:
    """An image file's bytes and what its header states (None: a format not read here), the header
    checked against ``budget`` before the rest of the file is read.

    Raises :class:`InputError` naming the file when it is missing, not a regular file (a FIFO must not
    block the run), empty, larger than ``budget.max_bytes`` (refused from its size alone: a sparse
    file of gigabytes costs nothing), or when its header states more than the budget."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: not a regular file")
        _check_size(path, info.st_size, budget)
        # One read for a file of up to _HEAD bytes (most inputs are small crops): a regular file reads
        # short only at its end, and no read asks for more than Linux gives in one call (2 GiB - 4 kiB).
        head = os.read(fd, min(info.st_size + 1, _HEAD))
        if not head:
            raise InputError(f"{path}: file is empty (0 bytes); re-copy or remove it")
        whole = len(head) < min(info.st_size + 1, _HEAD)
        found = stated(Reader(head, None if whole else fd, max(info.st_size, len(head))), budget.max_pages)
        if found is not None:
            check_stated(path, found, budget)
        return head if whole else _read_rest(path, fd, head, info.st_size, budget), found
    except OSError as exc:
        raise InputError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


#: The first read: a face crop whole, and the header of almost any image.
_HEAD = 1 << 18
_CHUNK = 1 << 26


def _read_rest(path, fd: int, head: bytes, size: int, budget: ImageBudget) -> bytearray:
    """``head`` and the rest of the file, read into one buffer of the file's size (in reads of at most
    :data:`_CHUNK`); a file that grows as it is read is read on, within ``budget.max_bytes``."""
    data = bytearray(max(size, len(head)))
    data[:len(head)] = head
    view, at = memoryview(data), len(head)
    while at < len(data) and (n := os.readv(fd, [view[at:at + _CHUNK]])):
        at += n
    view.release()
    del data[at:]  # a file that shrank
    while at == len(data) and (more := os.read(fd, _CHUNK)):
        data += more
        at = len(data)
        _check_size(path, at, budget)
    return data


def _check_size(path, size: int, budget: ImageBudget) -> None:
    if size > budget.max_bytes:
        raise InputError(f"{path}: {size:,} bytes, more than the {budget.max_bytes:,} an image file may have "
                         "here (no image within the pixel budget is that large): check the file, or shrink it")


def check_stated(path, found: Stated, budget: ImageBudget = DEFAULT_BUDGET) -> None:
    """:class:`InputError` naming the file unless what its header states fits ``budget``."""
    if not found.pages:
        raise InputError(f"{path}: a {found.format} file whose header does not say its size (truncated "
                         "or corrupt); re-export it")
    if len(found.pages) > budget.max_pages:
        raise InputError(f"{path}: a {found.format} file of more than {budget.max_pages:,} pages; split it first")
    limit, total = budget.pixels(), 0
    for k, (w, h, *_) in enumerate(found.pages):
        pixels, size = w * h, found.pages[k].bytes
        if pixels > limit or size > budget.max_bytes:
            what = f"{w}x{h} pixels" + (f" (page {k})" if len(found.pages) > 1 else "")
            if pixels > limit:
                raise InputError(f"{path}: {what}, more than the {limit:,} this reads (a decompression bomb, "
                                 "or a scan too large): shrink it first")
            raise InputError(f"{path}: {what} would take {size:,} bytes to decode, more than the "
                             f"{budget.max_bytes:,} an image may take: shrink it first")
        total += pixels
    if total > budget.max_total_pixels:
        raise InputError(f"{path}: {len(found.pages)} pages of {total:,} pixels together, more than the "
                         f"{budget.max_total_pixels:,} this reads from one file: split it first")


def open_with_pillow(path, data: bytes, budget: ImageBudget = DEFAULT_BUDGET):
    """``PIL.Image.open`` of a file's bytes (which reads its header only), its size checked against
    ``budget`` before anything is decoded; Pillow's own refusal (DecompressionBombError) is an
    :class:`InputError` too. Other errors are Pillow's (it raises many types for corrupt input)."""
    try:
        im = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:  # (its message names a BytesIO object, not the file)
        raise InputError(f"{path}: not a readable image (neither OpenCV nor Pillow knows its format)") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: {' '.join(str(exc).split())} more than the pixels Pillow reads "
                         "(PIL.Image.MAX_IMAGE_PIXELS): shrink it first") from None
    deep = im.mode.startswith("I") or im.mode == "F"
    check_stated(path, Stated(im.format or "image", (Page(*im.size, 3, 4 if deep else 1),)), budget)
    return im
