"""Image folders (torch-free): labelled ones in Kaggle's FER2013 layout (``ROOT/<label>/*.jpg``), and
seeded samples of any folder of images. The checks every output file goes through are in
:mod:`fer_export.outputs`."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from .errors import InputError

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
