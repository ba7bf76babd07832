"""Inference preprocessing, written once, in numpy/OpenCV/Pillow (no torch).

It reproduces the seed's training transform exactly: a uint8 grayscale image goes through PIL
``Resize(input_size)`` (antialiased bilinear), ``ToTensor`` (scale to [0, 1]) and
``Normalize(mean, std)``. ``tests/test_preprocess.py`` proves it matches torchvision numerically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np
from PIL import Image, ImageOps

from .errors import InputError
from .image_limits import DEFAULT_BUDGET, ImageBudget, open_with_pillow, read_checked
from .spec import ModelSpec


def _to_8bit(img: np.ndarray) -> np.ndarray:
    """A 16-bit or float image as uint8 (other dtypes as they are); float as :func:`_float_scale` says."""
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype.kind == "f":
        return np.clip(np.rint(np.nan_to_num(img) * _float_scale(img)), 0, 255).astype(np.uint8)
    return img


def _float_scale(img: np.ndarray) -> float:
    """255 for float pixels in [0, 1] (the convention), 1 for pixels holding 0-255 (a float TIFF from
    a scanner). Judged by the bulk of the pixels, so that a few outliers (a hot pixel at 3.0) neither
    turn a [0, 1] image black nor count: 99.9 % of them at most 2 (a small overshoot of 1 allowed) is
    [0, 1], and what lies above is clipped. A large image is judged on a million of its pixels."""
    flat = img.ravel()[::max(1, img.size // 1_000_000)]
    flat = flat[np.isfinite(flat)]
    if not flat.size or flat.max() <= 2.0:
        return 255.0
    return 255.0 if np.percentile(flat, 99.9) <= 2.0 else 1.0


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


def read_gray(path: str | Path, budget: ImageBudget = DEFAULT_BUDGET) -> np.ndarray:
    """Read an image file as uint8 grayscale, the way the seed does (cv2 ``IMREAD_GRAYSCALE``).

    16-bit images are scaled to 8 bits; formats OpenCV cannot decode are tried with Pillow. Raises
    :class:`InputError` naming the file when it is missing, empty, not a readable image, or beyond
    ``budget`` (:mod:`fer_export.image_limits`: checked from its size and header, before decoding).
    """
    path = path if isinstance(path, Path) else Path(path)  # Path(a Path) parses it again: 9 us a crop
    return _gray(path, *read_checked(path, budget), budget)


def _gray(path: Path, data: bytes, found, budget: ImageBudget) -> np.ndarray:
    img = None
    if found is not None:  # a format whose size was checked: OpenCV may decode it
        img = _decode(path, data, cv2.IMREAD_GRAYSCALE)
        if img is None or img.dtype != np.uint8:
            img = _decode(path, data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_GRAYSCALE)
    return to_gray(_read_with_pillow(path, data, budget) if img is None else img)


def read_color(path: str | Path, budget: ImageBudget = DEFAULT_BUDGET) -> np.ndarray:
    """Read an image file as a uint8 BGR array (for face detection and annotation), turned upright
    as its EXIF orientation says (as ``cv2.imread`` and :func:`read_gray` do: a phone photo taken
    sideways is stored sideways with a tag); an alpha channel is dropped, 16-bit scaled to 8.
    ``budget``: as :func:`read_gray`."""
    path = path if isinstance(path, Path) else Path(path)  # Path(a Path) parses it again: 9 us a crop
    return _color(path, *read_checked(path, budget), budget)


def _color(path: Path, data: bytes, found, budget: ImageBudget) -> np.ndarray:
    img = _decode(path, data, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH) if found is not None else None
    return _bgr(_read_with_pillow(path, data, budget) if img is None else img)


def _bgr(img: np.ndarray) -> np.ndarray:
    img = _to_8bit(np.asarray(img))
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def read_pages(path: str | Path, color: bool = False, budget: ImageBudget = DEFAULT_BUDGET) -> Iterator[np.ndarray]:
    """Every page of an image file, in order, as :func:`read_color` (``color``) or :func:`read_gray`
    reads the first: one for most images (read once, as they read it), one per page for a multi-page
    TIFF. ``budget`` covers each page, and all of them together; a page that does not decode raises
    :class:`InputError` naming it, after the pages before it."""
    path = path if isinstance(path, Path) else Path(path)
    data, found = read_checked(path, budget)
    if found is None or len(found.pages) < 2:  # the file is read once
        yield (_color if color else _gray)(path, data, found, budget)
        return
    flags = cv2.IMREAD_ANYDEPTH | (cv2.IMREAD_ANYCOLOR if color else cv2.IMREAD_GRAYSCALE)
    buf = np.frombuffer(data, np.uint8)
    for k in range(len(found.pages)):
        try:
            ok, mats = cv2.imdecodemulti(buf, flags, range=(k, k + 1))
        except cv2.error as exc:
            ok, mats = False, str(exc).strip().splitlines()[-1:]
        if not ok or not mats or not isinstance(mats[0], np.ndarray):
            raise InputError(f"{path}: page {k} of {len(found.pages)} cannot be decoded (corrupt or an unsupported "
                             f"compression{': ' + ' '.join(str(mats[0]).split()) if mats else ''})")
        yield _bgr(mats[0]) if color else to_gray(mats[0])


def _decode(path: Path, data: bytes, flags: int) -> np.ndarray | None:
    """``cv2.imdecode`` of a file's bytes (whose header :func:`read_checked` has checked); None for a
    format OpenCV does not know; :class:`InputError` naming the file otherwise."""
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        reason = getattr(exc, "err", "") or str(exc).strip().splitlines()[-1]
        raise InputError(f"{path}: OpenCV cannot decode it ({' '.join(reason.split())})") from None


def _read_with_pillow(path: Path, data: bytes, budget: ImageBudget) -> np.ndarray:
    try:
        with open_with_pillow(path, data, budget) as im:
            im.load()
            im = ImageOps.exif_transpose(im)  # upright, as OpenCV turns what it decodes
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im).astype(np.uint16)
            if im.mode == "F":  # scaled by _to_8bit, not clipped to 0-255 by Pillow
                return np.asarray(im, np.float32)
            return np.asarray(im.convert("L"))
    except InputError:
        raise
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
