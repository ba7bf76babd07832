"""Framed views: each training face as fer-batch crops it from a picture (``fer-train --framed P``).

FER2013's crops are framed the way their makers' detector framed each face, and that framing varies
from face to face. fer-batch frames every face it finds with one rule (the model's ``framing``, see
:mod:`training.face_template`), so on faces found in pictures a model meets a framing it was not
trained on: on PublicTest faces placed in pictures the bundled model scored about 2 points less on
the faces YuNet found than on the same faces' own crops (``benchmarks/pictures.py``), while the same
placing with the exact square lost nothing.

A framed view is made the way those pictures are, with training faces only: the face upscaled (cubic)
to a random side of 96-240 px, put at a random position in a 480x360 picture whose background is
smooth random noise or the face's own edge pixels repeated, found by the bundled YuNet with fer-batch's
settings (second looks included), cropped by :func:`fer_export.batch.crops.frame_face` with the given
framing, and resized to the input size as the model's preprocessing does (the framed square itself:
fer-batch also averages a wider and a tighter view of a face in a picture, ``--crop-spread``, which a
training view does not). A face YuNet does not find keeps its own crop in that view. Views are
seeded per face and view, so they do not depend on the number of worker processes; they are kept in the run's cache (``framed_<V>x<H>x<W>_<key>.npy``, the
key covering the items, the framing, the input size and the seed).
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from fer_export.batch.config import usable_cpus
from fer_export.errors import InputError
from fer_export.preprocess import read_gray, resize
from fer_export.spec import Framing, ModelSpec

PICTURE = (360, 480)  # (height, width) of a picture a view is cut from
FACE_SIDES = (96, 240)  # a placed face's side, px: uniform in this range
CHUNK = 256  # faces per task of a worker process


def read_framing(path: str | Path) -> Framing:
    """The framing in a JSON file as ``python -m training.face_template --json`` writes it, or in the
    spec of an exported ``.onnx`` model."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from fer_export.runtime import EmotionClassifier

        spec = EmotionClassifier(path, provider="cpu").spec
        if spec.framing is None:
            raise InputError(f"{path}: this model's spec has no framing; give a framing JSON "
                             "(python -m training.face_template --json FILE)")
        return spec.framing
    try:
        data = json.loads(path.read_text())
        return Framing.from_dict(data.get("framing", data) if isinstance(data, dict) else data)
    except FileNotFoundError:
        raise InputError(f"{path}: no such framing file; write one with python -m training.face_template --json FILE") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a framing JSON ({exc}); write one with python -m training.face_template --json FILE") from None


def noise_background(rng: np.random.Generator, shape: tuple[int, int] = PICTURE) -> np.ndarray:
    """Smooth blurred noise: a few random gray levels per side upscaled, with a little grain."""
    h, w = shape
    coarse = rng.uniform(20, 235, size=(int(rng.integers(3, 9)), int(rng.integers(4, 12)))).astype(np.float32)
    smooth = cv2.GaussianBlur(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 8)
    grain = cv2.GaussianBlur(rng.normal(0, 6, size=(h, w)).astype(np.float32), (0, 0), 1)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def picture(face: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``face`` (gray) upscaled to a random side in FACE_SIDES at a random position of a PICTURE-sized
    gray picture, on smooth noise or on its own edge pixels repeated (even odds). Returns the picture
    and where the face is: ``(x, y, side)``."""
    side = int(rng.integers(FACE_SIDES[0], FACE_SIDES[1] + 1))
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    h, w = PICTURE
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    if rng.random() < 0.5:
        out = noise_background(rng)
        out[y:y + side, x:x + side] = big
    else:
        out = cv2.copyMakeBorder(big, y, h - y - side, x, w - x - side, cv2.BORDER_REPLICATE)
    return out, (x, y, side)


def view_rng(seed: int, index: int, view: int) -> np.random.Generator:
    """The randomness of one framed view: of the face at ``index`` of the item list."""
    return np.random.default_rng([seed, index, view])


def _views(task: tuple) -> tuple[np.ndarray, np.ndarray]:
    """One worker task: ``views`` framed views of each path. Returns uint8 (V, n, H, W) and found (V, n)."""
    from fer_export.batch.faces import open_detector
    from fer_export.batch.settings import DetectionSettings

    start, paths, views, framing, size, method, seed = task
    cv2.setNumThreads(1)
    detector = open_detector(DetectionSettings(), framing)  # fer-batch's default detection
    out = np.empty((views, len(paths), *size), np.uint8)
    found = np.zeros((views, len(paths)), bool)
    for i, path in enumerate(paths):
        face = read_gray(path)
        for v in range(views):
            gray, (x, y, side) = picture(face, view_rng(seed, start + i, v))
            image = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
            on_face = [f for f in detector.detect(image, still=True)
                       if x <= f.x + f.w / 2 <= x + side and y <= f.y + f.h / 2 <= y + side]
            crop = face
            if on_face:
                crop = detector.framer.crop(image, max(on_face, key=lambda f: f.score or 0.0))  # framed by `framing`
                found[v, i] = True
            out[v, i] = resize(crop, size, method)
    return out, found


def framed_views(paths: Sequence[Path], spec: ModelSpec, framing: Framing, views: int, seed: int,
                 cache: Path | None = None, fingerprint: str = "", log=print):
    """A uint8 tensor (views, N, H, W): ``views`` framed views of each training face (see the module text)."""
    key = hashlib.sha1(json.dumps([fingerprint, framing.to_dict(), spec.input_size, spec.resize, seed]).encode())
    h, w = spec.input_size
    file = Path(cache) / f"framed_{views}x{h}x{w}_{key.hexdigest()[:12]}.npy" if cache else None
    import torch

    if file is not None and file.is_file():
        log(f"framed views read from {file}")
        return torch.from_numpy(np.load(file))
    tasks = [(i, list(paths[i:i + CHUNK]), views, framing, spec.input_size, spec.resize, seed)
             for i in range(0, len(paths), CHUNK)]
    workers = max(1, min(len(tasks), usable_cpus()))
    log(f"framing {views} view(s) of {len(paths)} training faces with YuNet ({workers} processes)")
    if workers == 1:
        done = [_views(t) for t in tasks]
    else:
        # spawned, not forked: a fork of a process whose torch/onnxruntime thread pools are running can deadlock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_views, tasks))
    pixels = np.concatenate([d[0] for d in done], axis=1)
    found = np.concatenate([d[1] for d in done], axis=1)
    log(f"YuNet found {found.mean():.1%} of the placed faces; the rest keep their own crop")
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(file.stem + ".tmp.npy")
        np.save(tmp, pixels)
        tmp.replace(file)
    return torch.from_numpy(pixels)
