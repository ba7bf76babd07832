"""python -m training.from_onnx: an exported fp32 model back as a checkpoint fer-train fine-tunes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer_export.cli.export import main as fer_export
from fer_export.model import build_model, load_checkpoint, save_checkpoint
from training.from_onnx import folded_weights, main as from_onnx

from conftest import TINY


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    """A tiny checkpoint whose BatchNorms are far from the identity, its ONNX export (BatchNorm folded
    away, flip-TTA in the graph) and a folder of labelled images."""
    root = tmp_path_factory.mktemp("unfold")
    torch.manual_seed(0)
    model = build_model(TINY)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    ckpt = save_checkpoint(root / "model.pth", model, TINY)
    res = CliRunner().invoke(fer_export, ["onnx", str(ckpt), "--tta", "hflip"])
    assert res.exit_code == 0, res.output
    rng = np.random.default_rng(0)
    for label in TINY.labels:
        (root / "train" / label).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(root / "train" / label / f"{i}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    return ckpt, ckpt.with_suffix(".onnx"), root / "train"


def test_unfolded_checkpoint_computes_the_original(folded, tmp_path):
    ckpt, onnx_file, train = folded
    out = tmp_path / "unfolded.pth"
    res = CliRunner().invoke(from_onnx, [str(onnx_file), "--data", str(train), "--out", str(out), "--images", "28"])
    assert res.exit_code == 0, res.output
    assert "BatchNorm recalibrated over 28 training images" in res.output
    original, _ = load_checkpoint(ckpt)
    unfolded, spec = load_checkpoint(out)  # weights_only, as fer-train --weights loads it
    assert spec.input_size == TINY.input_size and spec.labels == TINY.labels
    x = torch.randn(6, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(unfolded.eval()(x), original.eval()(x), atol=1e-4, rtol=1e-4)
    # the recalibrated BatchNorms are no longer the identity: train mode normalises like the original did
    norm = unfolded.get_submodule("layer1.0.bn1")
    assert not torch.allclose(norm.running_var, torch.ones_like(norm.running_var), atol=0.05)


def test_refuses_what_it_cannot_unfold(folded, tmp_path):
    ckpt, onnx_file, train = folded
    res = CliRunner().invoke(from_onnx, [str(onnx_file), "--data", str(train), "--out", str(onnx_file)])
    assert res.exit_code == 2 and "give the checkpoint a .pth name" in res.output
    res = CliRunner().invoke(from_onnx, [str(tmp_path / "none.onnx"), "--data", str(train), "--out", str(tmp_path / "a.pth")])
    assert res.exit_code == 2 and "none.onnx: no such model file" in res.output
    res = CliRunner().invoke(from_onnx, [str(ckpt), "--data", str(train), "--out", str(tmp_path / "a.pth")])
    assert res.exit_code == 2 and "not a readable ONNX file" in res.output
    res = CliRunner().invoke(from_onnx, [str(onnx_file), "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "a.pth")])
    assert res.exit_code == 2 and "nodata: no such folder of training images" in res.output
    assert not (tmp_path / "a.pth").exists()


@pytest.mark.parametrize("flip", [False, True], ids=["int8", "int8+hflip-uncertain"])
def test_an_int8_copy_unfolds_to_its_dequantized_weights(folded, tmp_path, flip):
    """An int8 file (the bundled fast model is one, with hflip-uncertain) gives the network it rounds."""
    ckpt, _, train = folded
    plain = tmp_path / "plain.onnx"
    assert CliRunner().invoke(fer_export, ["onnx", str(ckpt), "-o", str(plain)]).exit_code == 0
    res = CliRunner().invoke(fer_export, ["int8", str(plain), "--calib", str(train)])
    int8 = tmp_path / "plain.int8.onnx"
    assert res.exit_code == 0 and int8.is_file(), res.output
    if flip:
        res = CliRunner().invoke(fer_export, ["flip", str(int8), "--flip-below", "0.9", "-o", str(tmp_path / "f.onnx")])
        assert res.exit_code == 0, res.output
        int8 = tmp_path / "f.onnx"
    out = tmp_path / "from_int8.pth"
    res = CliRunner().invoke(from_onnx, [str(int8), "--data", str(train), "--out", str(out), "--images", "28"])
    assert res.exit_code == 0, res.output
    assert "its int8 weights dequantized" in res.output and "agrees with" in res.output
    # each dequantized weight is the fp32 file's own, rounded to one of 2 * 63 steps of its channel's range
    fp32, _, _ = folded_weights(plain)
    weights, _, is_int8 = folded_weights(int8)
    assert is_int8
    convs = [name for name in fp32 if name.endswith("conv1.weight")]
    assert convs
    for name in convs:
        step = np.abs(fp32[name]).reshape(len(fp32[name]), -1).max(1) / 63
        error = np.abs(weights[name] - fp32[name]).reshape(len(step), -1).max(1)
        assert (error <= step / 2 + 1e-6).all() and error.max() > 0, name
    original, _ = load_checkpoint(ckpt)
    unfolded, _ = load_checkpoint(out)
    x = torch.randn(64, 1, 48, 48)
    with torch.no_grad():
        theirs, ours = original.eval()(x), unfolded.eval()(x)
    assert (theirs.argmax(1) == ours.argmax(1)).float().mean() >= 0.9
