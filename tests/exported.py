"""Session fixtures shared by the export, parity and runtime tests: tiny checkpoints and their exports.

Tiny models keep the tests fast: ResNet18 with the seed's stem at 48x48 (the FER crop size).
"""
from __future__ import annotations

import pytest

from fer_export.spec import ModelSpec

TINY = ModelSpec(input_size=(48, 48))


def tiny_checkpoint(path, seed: int, spec: ModelSpec = TINY):
    import torch

    from fer_export.model import build_model, save_checkpoint

    torch.manual_seed(seed)
    return save_checkpoint(path, build_model(spec), spec)


def _shared(tmp_path_factory, name: str):
    """A folder every test module importing these fixtures shares (each module registers its own
    copy of a fixture, so the work is done once and found on disk the second time)."""
    path = tmp_path_factory.getbasetemp() / "exported" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    path = _shared(tmp_path_factory, "ckpt") / "best_model.pth"
    return path if path.is_file() else tiny_checkpoint(path, seed=0)


@pytest.fixture(scope="session")
def other_ckpt(tmp_path_factory):
    """Same spec, other weights: an artifact of tiny_ckpt must fail verify against it."""
    path = _shared(tmp_path_factory, "other") / "other.pth"
    return path if path.is_file() else tiny_checkpoint(path, seed=1)


@pytest.fixture(scope="session")
def exported(tiny_ckpt):
    """``{format: path}``: tiny_ckpt exported by `fer-export all` beside itself."""
    from click.testing import CliRunner

    from fer_export.cli.export import main

    paths = {"onnx": tiny_ckpt.with_suffix(".onnx"), "torchscript": tiny_ckpt.with_suffix(".pt")}
    if not all(p.is_file() for p in paths.values()):
        result = CliRunner().invoke(main, ["all", str(tiny_ckpt)])
        assert result.exit_code == 0, result.output
    return paths
