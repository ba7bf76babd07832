"""Inference preprocessing, written once, in numpy/OpenCV/Pillow (no torch).

It reproduces the seed's training transform exactly: a uint8 grayscale image goes through PIL
``Resize(input_size)`` (antialiased bilinear), ``ToTensor`` (scale to [0, 1]) and
``Normalize(mean, std)``. ``tests/test_preprocess.py`` proves it matches torchvision numerically.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
from PIL import Image, ImageOps

from .errors import InputError
from .spec import ModelSpec


def _to_8bit(img: np.ndarray) -> np.ndarray:
    """A 16-bit or float image as uint8 (other dtypes as they are). Float is [0, 1] by convention, but
    one holding 0-255 values (a float TIFF from a scanner) is taken as such rather than saturated; a
    small overshoot of 1 still counts as [0, 1]."""
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype.kind == "f":
        scale = 1.0 if img.size and np.nanmax(img) > 2.0 else 255.0
        return np.clip(np.rint(np.nan_to_num(img) * scale), 0, 255).astype(np.uint8)
    return img


def to_gray(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; uint8, uint16 or float in [0, 1]) as uint8 HxW gray."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    img = _to_8bit(img)
    if img.dtype != np.uint8:
        raise InputError(f"unsupported image dtype {img.dtype}; expected uint8, uint16 or float")
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
    raise InputError(f"unsupported image shape {img.shape}; expected HxW, HxWx3 (BGR) or HxWx4 (BGRA)")


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 grayscale, the way the seed does (cv2 ``IMREAD_GRAYSCALE``).

    16-bit images are scaled to 8 bits; formats OpenCV cannot decode are tried with Pillow.
    Raises :class:`InputError` naming the file when it is missing, empty or not a readable image.
    """
    path = path if isinstance(path, Path) else Path(path)  # Path(a Path) parses it again: 9 us a crop
    data = _file_bytes(path)
    img = _decode(path, data, cv2.IMREAD_GRAYSCALE)
    if img is None or img.dtype != np.uint8:
        img = _decode(path, data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_GRAYSCALE)
    if img is None:
        img = _read_with_pillow(path)
    return to_gray(img)


def read_color(path: str | Path) -> np.ndarray:
    """Read an image file as a uint8 BGR array (for face detection and annotation), turned upright
    as its EXIF orientation says (as ``cv2.imread`` and :func:`read_gray` do: a phone photo taken
    sideways is stored sideways with a tag); an alpha channel is dropped, 16-bit scaled to 8."""
    path = path if isinstance(path, Path) else Path(path)  # Path(a Path) parses it again: 9 us a crop
    img = _decode(path, _file_bytes(path), cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        img = _read_with_pillow(path)
    img = _to_8bit(np.asarray(img))
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


#: The most pixels an image may have (16384 x 16384; a 100-megapixel photo is well within): a few
#: hundred kB of PNG can claim billions, and decoding them would take gigabytes (a decompression bomb).
MAX_PIXELS = 1 << 28
#: Files smaller than this are decoded without a look at their header: too small to be such a bomb
#: (PNG's deflate shrinks at most ~1000:1), and the common case of face crops stays as fast.
_BOMB_BYTES = 32 * 1024


def _decode(path: Path, data: np.ndarray, flags: int) -> np.ndarray | None:
    """``cv2.imdecode`` of a file's bytes, after a look at a large PNG's or JPEG's stated size;
    None for a format OpenCV does not know; :class:`InputError` naming the file otherwise."""
    if len(data) >= _BOMB_BYTES:
        size = _stated_size(data)
        if size and size[0] * size[1] > MAX_PIXELS:
            raise InputError(f"{path}: {size[0]}x{size[1]} pixels, more than the {MAX_PIXELS:,} this reads "
                             "(a decompression bomb, or a scan too large): shrink it first")
    try:
        return cv2.imdecode(data, flags)
    except cv2.error as exc:
        reason = getattr(exc, "err", "") or str(exc).strip().splitlines()[-1]
        raise InputError(f"{path}: OpenCV cannot decode it ({' '.join(reason.split())})") from None


def _stated_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) a PNG or baseline/progressive JPEG states in its header, without decoding it."""
    head = data[:32].tobytes()
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:2] != b"\xff\xd8":
        return None
    buf, i = data.data, 2  # a view: no copy of a large file
    while i + 9 < len(buf):
        if buf[i] != 0xFF:
            return None
        marker, length = buf[i + 1], int.from_bytes(buf[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            return int.from_bytes(buf[i + 7:i + 9], "big"), int.from_bytes(buf[i + 5:i + 7], "big")
        i += 2 + length
    return None


def _file_bytes(path: Path) -> np.ndarray:
    """A file's bytes, for ``cv2.imdecode``; :class:`InputError` naming the file when there are none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the run
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: not a regular file")
        # os.read, not a file object: a face crop is one system call (a buffered reader costs more
        # than the read); a file that grew since fstat is read to its end all the same. A regular
        # file reads short only at its end, so a short read is the last.
        chunks, size = [], info.st_size + 1
        while chunk := os.read(fd, size):
            chunks.append(chunk)
            if len(chunk) < size:
                break
            size = 1 << 20
    except OSError as exc:
        raise InputError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not data:
        raise InputError(f"{path}: file is empty (0 bytes); re-copy or remove it")
    return np.frombuffer(data, dtype=np.uint8)


def _read_with_pillow(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)  # upright, as OpenCV turns what it decodes
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im).astype(np.uint16)
            return np.asarray(im.convert("L"))
    except Exception as exc:  # Pillow raises many types for corrupt input
        raise InputError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc


def resize(gray: np.ndarray, size: tuple[int, int], method: str = "pil_bilinear") -> np.ndarray:
    """Resize a uint8 HxW image to ``size`` = (height, width) with the spec's method."""
    h, w = size
    if gray.shape == (h, w):
        return gray
    if method == "pil_bilinear":
        return np.asarray(Image.fromarray(gray).resize((w, h), Image.BILINEAR))
    raise InputError(f"unknown resize method {method!r}")


def normalize(batch: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 (N, H, W) at the input size -> float32 (N, C, H, W), scaled and normalised."""
    x = batch.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(1, -1, 1, 1)
    x = x[:, None, :, :]
    if spec.channels != 1:
        x = np.repeat(x, spec.channels, axis=1)
    return (x - mean) / std


def resize_batch(faces: Iterable[np.ndarray], spec: ModelSpec) -> np.ndarray:
    """Face crops of any size (each uint8 gray or BGR) -> uint8 (N, H, W) at the spec's input size."""
    out = [resize(to_gray(f), spec.input_size, spec.resize) for f in faces]
    if not out:
        return np.zeros((0, *spec.input_size), dtype=np.uint8)
    return np.stack(out)


def preprocess(faces: Sequence[np.ndarray], spec: ModelSpec) -> np.ndarray:
    """Face crops of any size -> the float32 (N, C, H, W) batch the network expects."""
    return normalize(resize_batch(faces, spec), spec)
