"""Shared fixtures. Real data comes from ../shared/data (or $FER_SHARED_DATA).

Where it is absent, ``photos`` and ``videos`` fall back to the small copies in tests/data/ (see
tests/data/LICENSES.md), so a fresh clone runs the photo and video tests. A test that needs what the
copies lack (another file, or FER2013) skips with the reason; under CI=true it fails instead, so a
CI machine without the data can never pass by skipping.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fer_export.spec import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FER_SHARED_DATA", ROOT.parent / "shared" / "data"))
IN_REPO_DATA = ROOT / "tests" / "data"


def missing(reason: str):
    """Skip with ``reason``, or fail under CI=true, where a missing data folder is an error."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " — CI=true, so a missing data folder is an error")
    pytest.skip(reason)


def shared(*parts: str) -> Path:
    """Path under the shared data folder; skip (or fail under CI=true) when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        missing(f"needs shared data {path} (set FER_SHARED_DATA or place the data in ../shared/data)")
    return path


class InRepoFolder(type(Path())):
    """tests/data/<name>, standing in for the shared folder of that name: ``folder / "file"`` skips
    (or fails under CI=true) when the in-repo copy lacks that file, as the shared folder would."""

    def __truediv__(self, name) -> Path:
        path = Path(self, name)
        if not path.exists():
            missing(f"needs {SHARED_DATA / self.name / name}: tests/data/{self.name}/ holds a few of the shared "
                    f"files only (set FER_SHARED_DATA or place the data in ../shared/data)")
        return path


def shared_or_in_repo(name: str) -> Path:
    """The shared folder ``name`` where it exists, else its small copy in tests/data/."""
    path = SHARED_DATA / name
    return path if path.is_dir() else InRepoFolder(IN_REPO_DATA / name)


@pytest.fixture(scope="session")
def fer2013() -> Path:
    """The FER2013 root with train/ and val/ in Kaggle's layout."""
    return shared("fer2013")


@pytest.fixture(scope="session")
def photos() -> Path:
    return shared_or_in_repo("photos")


@pytest.fixture(scope="session")
def videos() -> Path:
    return shared_or_in_repo("videos")


@pytest.fixture(scope="session")
def face_files(tmp_path_factory) -> list[Path]:
    """The 16 bundled probe faces (48x48, cut from MIT-licensed photos) as JPEG files: face crops for the
    tests that need some real faces as inputs, not FER2013's and not their labels."""
    import cv2

    from fer_export.probe import probe_faces

    folder = tmp_path_factory.mktemp("faces")
    paths = [folder / f"face_{i:02d}.jpg" for i in range(len(probe_faces()))]
    for path, face in zip(paths, probe_faces()):
        cv2.imwrite(str(path), face)
    return paths


@pytest.fixture(scope="session")
def small_face(photos):
    """A 1920x1440 picture with one face of about 35 px at (900, 600), and that face photo's width:
    YuNet misses the face on the 640 px copy it detects on, and finds it at 1280 px."""
    import cv2
    import numpy as np

    face = cv2.resize(cv2.imread(str(photos / "fr_obama-480p.jpg")), None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    picture = np.full((1440, 1920, 3), 128, np.uint8)
    picture[600:600 + face.shape[0], 900:900 + face.shape[1]] = face
    return picture, face.shape[1]


@pytest.fixture(scope="session")
def yunet_model() -> Path:
    """The YuNet file fer-export ships (the shared data's copy where an install lacks it)."""
    from fer_export.batch.faces import BUNDLED_YUNET

    return BUNDLED_YUNET if BUNDLED_YUNET.is_file() else shared("models", BUNDLED_YUNET.name)


#: Prefix for `python -c`: any later `import torch` / `import torchvision` raises ImportError.
BLOCK_TORCH = "import sys; sys.modules.update({'torch': None, 'torchvision': None}); "


def run_without_torch(code: str, *args: str, cwd: Path | None = None, timeout: int = 300):
    """Run Python ``code`` in a subprocess where torch cannot be imported; return CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


# Tiny checkpoints and their exports, shared by the export, parity, runtime and batch tests.
# ResNet18 with the seed's stem at 48x48 (the FER crop size) keeps them fast.
TINY = ModelSpec(input_size=(48, 48))


def tiny_checkpoint(path, seed: int, spec: ModelSpec = TINY):
    import torch

    from fer_export.model import build_model, save_checkpoint

    torch.manual_seed(seed)
    return save_checkpoint(path, build_model(spec), spec)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "best_model.pth", seed=0)


@pytest.fixture(scope="session")
def other_ckpt(tmp_path_factory):
    """Same spec, other weights: an artifact of tiny_ckpt must fail verify against it."""
    return tiny_checkpoint(tmp_path_factory.mktemp("other") / "other.pth", seed=1)


@pytest.fixture(scope="session")
def exported(tiny_ckpt):
    """``{format: path}``: tiny_ckpt exported by `fer-export all` beside itself."""
    from click.testing import CliRunner

    from fer_export.cli.export import main

    result = CliRunner().invoke(main, ["all", str(tiny_ckpt)])
    assert result.exit_code == 0, result.output
    return {"onnx": tiny_ckpt.with_suffix(".onnx"), "torchscript": tiny_ckpt.with_suffix(".pt")}


@pytest.fixture(scope="session")
def framed_model(exported) -> Path:
    """The tiny ONNX model carrying FER2013's framing, as the bundled models do (their faces in
    pictures are framed, and get the views of --crop-spread)."""
    from training.face_template import stamp
    from training.framed import read_framing

    out = exported["onnx"].with_name("framed.onnx")
    return stamp(exported["onnx"], out, read_framing(ROOT / "docs" / "model_card" / "framing.json"))
