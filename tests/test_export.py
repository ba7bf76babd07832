"""fer-export: every format exports, passes parity, carries its contract and fails loudly when it should."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT, TINY, tiny_checkpoint
from fer_export import __version__
from fer_export.cli import EXIT_FAILED, EXIT_USAGE
from fer_export.cli.export import main
from fer_export.export import FORMATS, open_artifact
from fer_export.model import sha256_file
from fer_export.spec import (META_INPUT, META_PARITY, META_PRECISION, META_SOURCE_SHA256, META_SPEC, META_TTA,
                             META_VERSION)

FMTS = sorted(FORMATS)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("fmt", FMTS)
def test_metadata_round_trip(exported, tiny_ckpt, fmt):
    meta = open_artifact(exported[fmt]).metadata
    assert json.loads(meta[META_SPEC]) == TINY.to_dict()
    assert meta[META_SOURCE_SHA256] == sha256_file(tiny_ckpt)
    assert meta[META_VERSION] == __version__
    assert (meta[META_INPUT], meta[META_TTA], meta[META_PRECISION]) == ("normalized", "none", "fp32")
    parity = json.loads(meta[META_PARITY])
    assert parity["passed"] and {c["inputs"] for c in parity["checks"]} >= {"random[1]", "random[8]"}


@pytest.mark.parametrize("fmt", FMTS)
def test_dynamic_batch_and_load_predictor(exported, tiny_ckpt, fmt):
    """fer-eval's path (load_predictor) runs the artifact at batch 1, 7 and 64 like the checkpoint."""
    from fer_export.predictors import load_predictor

    ref, got = load_predictor(tiny_ckpt), load_predictor(exported[fmt])
    assert got.spec == TINY
    batch = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    for n in (1, 7, 64):
        np.testing.assert_allclose(got.logits(batch[:n]), ref.logits(batch[:n]), atol=1e-4)


@pytest.mark.parametrize("fmt", FMTS)
def test_verify_passes_on_its_own_checkpoint(exported, tiny_ckpt, fmt):
    result = cli("verify", exported[fmt], "--against", tiny_ckpt)
    assert result.exit_code == 0, result.output
    assert "source sha256: matches" in result.output


@pytest.mark.parametrize("fmt", FMTS)
def test_verify_fails_against_another_checkpoint(exported, other_ckpt, fmt):
    result = cli("verify", exported[fmt], "--against", other_ckpt)
    assert result.exit_code == EXIT_FAILED, result.output
    assert "FAILED" in result.output and "max |diff|" in result.output and "source sha256: differs" in result.output


def test_verify_reports_spec_difference(exported, tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "wide.pth", seed=0, spec=TINY.replace(input_size=[48, 56]))
    result = cli("verify", exported["onnx"], "--against", ckpt)
    assert result.exit_code == EXIT_FAILED
    assert "input_size: artifact [48, 48], checkpoint [48, 56]" in result.output


def test_failed_parity_keeps_file_as_failed_and_exits_1(tiny_ckpt, tmp_path, monkeypatch):
    from fer_export import parity

    monkeypatch.setattr(parity, "FP32", parity.Tolerance("impossible", {"logits": -1.0}, 1.0))
    out = tmp_path / "model.pt"
    out.write_bytes(b"stale")  # an older artifact must not survive a failed export
    result = cli("torchscript", tiny_ckpt, "-o", out)
    assert result.exit_code == EXIT_FAILED, result.output
    assert not out.exists() and (tmp_path / "model.failed.pt").is_file()
    assert "model.failed.pt" in result.output and "max |diff|" in result.output


def test_seed_format_checkpoint_reproduces_seed_pipeline(fer2013, tmp_path):
    """A checkpoint saved exactly as the seed saves it, exported with the CLI, run by plain
    onnxruntime on the seed's own torchvision preprocessing, gives the seed pipeline's probabilities."""
    import cv2
    import onnxruntime as ort
    import torch
    from PIL import Image
    from torchvision import models, transforms

    torch.manual_seed(0)
    model = models.resnet18(weights=None)
    conv = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    conv.weight.data = model.conv1.weight.data.mean(dim=1, keepdim=True)
    model.conv1 = conv
    model.fc = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(512, 7))
    ckpt = tmp_path / "best_model.pth"
    torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": {}, "epoch": 3}, ckpt)

    result = cli("onnx", ckpt)
    assert result.exit_code == 0, result.output
    tf = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                             transforms.Normalize(mean=[0.485], std=[0.229])])
    files = sorted((fer2013 / "val").glob("*/*.jpg"))[::120][:24]
    x = torch.stack([tf(Image.fromarray(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))) for f in files])
    with torch.no_grad():
        expected = torch.softmax(model.eval()(x), 1).numpy()
    probs = ort.InferenceSession(str(tmp_path / "best_model.onnx")).run(["probs"], {"input": x.numpy()})[0]
    assert np.abs(probs - expected).max() <= 1e-4
    assert (probs.argmax(1) == expected.argmax(1)).all()


def test_with_preprocessing_matches_pil_path_on_real_crops(tiny_ckpt, fer2013, photos, tmp_path):
    """uint8 crops of FER size and larger photo crops, resized in the graph, match PIL + PyTorch."""
    import cv2

    from fer_export.model import load_checkpoint
    from fer_export.parity import PREPROCESSING, compare, torch_reference
    from fer_export.preprocess import read_gray

    data = tmp_path / "crops"
    data.mkdir()
    for f in sorted((fer2013 / "val").glob("*/*.jpg"))[::300]:
        (data / f.name).write_bytes(f.read_bytes())
    photo = read_gray(photos / "fr_obama-480p.jpg")
    for i, (y, x, s) in enumerate([(40, 330, 180), (60, 300, 240), (20, 200, 400)]):
        cv2.imwrite(str(data / f"photo_{i}.png"), photo[y:y + s, x:x + s + 7 * i])
    out = tmp_path / "pre.onnx"
    result = cli("onnx", tiny_ckpt, "-o", out, "--with-preprocessing", "--data", data)
    assert result.exit_code == 0, result.output
    assert "with-preprocessing): passed" in result.output and "faces 48x48" in result.output
    artifact = open_artifact(out)
    assert artifact.input_format == "uint8"
    model, spec = load_checkpoint(tiny_ckpt)
    crops = {f"{c.shape}": c[None, None] for c in (photo[100:300, 300:460], photo[:37, :41])}
    report = compare(torch_reference(model, spec, "uint8"), artifact.run, crops, PREPROCESSING)
    assert report.passed, report.summary()


def test_int8_reports_accuracy_and_gates_on_drop(exported, tiny_ckpt, fer2013, monkeypatch):
    from fer_export.export import quantize

    monkeypatch.setattr(quantize, "CALIB_IMAGES", 32)
    monkeypatch.setattr(quantize, "MAX_ACCURACY_DROP_PP", -100.0)  # any int8 model fails this gate
    monkeypatch.setattr(quantize, "images_per_second", lambda path, spec, **options: 1.0)
    val = fer2013 / "val"
    result = cli("onnx", tiny_ckpt, "--int8", "--calib", val, "--eval-limit", 4)
    assert result.exit_code == EXIT_FAILED, result.output
    assert "int8" in result.output and "pass --accept-drop" in result.output
    failed = tiny_ckpt.with_name("best_model.int8.failed.onnx")
    meta = open_artifact(failed).metadata
    assert meta[META_PRECISION] == "int8"
    record = json.loads(meta[META_PARITY])
    assert record["tolerance"] == "int8" and record["judged"][0]["eval_images"] == 28


@pytest.mark.data
def test_int8_from_an_exported_onnx_file_is_gated_against_that_file(exported, fer2013, tmp_path, monkeypatch):
    """`fer-export onnx MODEL.onnx --int8`: no checkpoint needed; the fp32 file is the parity reference,
    its spec, framing and source checkpoint carry over; options only a checkpoint can take are refused."""
    import shutil

    from fer_export.export import quantize
    from fer_export.parity import INT8_PROB_ATOL
    from fer_export.runtime import EmotionClassifier

    monkeypatch.setattr(quantize, "CALIB_IMAGES", 32)
    monkeypatch.setattr(quantize, "images_per_second", lambda path, spec, **options: 1.0)
    fp32 = tmp_path / "model.onnx"
    shutil.copy(exported["onnx"], fp32)
    val = fer2013 / "val"
    result = cli("onnx", fp32, "--int8", "--calib", val, "--eval-limit", 4, "--accept-drop")
    assert result.exit_code == 0, result.output
    int8 = tmp_path / "model.int8.onnx"
    meta, source = open_artifact(int8).metadata, open_artifact(fp32).metadata
    assert meta[META_PRECISION] == "int8" and meta[META_SPEC] == source[META_SPEC]
    assert meta[META_SOURCE_SHA256] == source[META_SOURCE_SHA256]
    record = json.loads(meta[META_PARITY])
    assert record["tolerance"] == "int8" and record["passed"] and record["judged"][0]["eval_images"] == 28
    faces = [np.full((48, 48), v, np.uint8) for v in (60, 120, 200)]
    np.testing.assert_allclose(EmotionClassifier(int8, "cpu").predict(faces),
                               EmotionClassifier(fp32, "cpu").predict(faces), atol=INT8_PROB_ATOL)
    for extra in (["--tta", "hflip"], ["-o", tmp_path / "x.onnx"]):
        refused = cli("onnx", fp32, "--int8", "--calib", val, *extra)
        assert refused.exit_code == EXIT_USAGE and "has its own command" in refused.output


@pytest.mark.data
def test_calib_tries_keeps_the_int8_copy_closest_to_fp32(exported, fer2013, tmp_path, monkeypatch):
    """--calib-tries N: one int8 candidate per seeded calibration sample, compared with fp32 on other
    calibration images; the file written is the candidate with the smallest KL (the same file that
    calibrating on that sample alone gives), and the int8 file's record and the printed report say so."""
    import shutil

    from fer_export.export import quantize

    monkeypatch.setattr(quantize, "CALIB_IMAGES", 16)
    monkeypatch.setattr(quantize, "FIDELITY_IMAGES", 64)
    monkeypatch.setattr(quantize, "images_per_second", lambda path, spec, **options: 1.0)
    fp32, val = tmp_path / "model.onnx", fer2013 / "val"
    shutil.copy(exported["onnx"], fp32)
    spec = open_artifact(fp32).spec
    calibration = quantize.quantize_int8(fp32, tmp_path / "q.onnx", spec, val, seed=5, tries=3)
    assert calibration.seeds == [5, 6, 7] and calibration.images == 64 and calibration.sample == 16
    assert len(set(calibration.kl)) == 3 and calibration.kept == int(np.argmin(calibration.kl))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "q.onnx"]  # no candidate left behind
    assert quantize.quantize_int8(fp32, tmp_path / "alone.onnx", spec, val, seed=calibration.seeds[calibration.kept]) is None
    x = np.random.default_rng(0).normal(size=(8, spec.channels, *spec.input_size)).astype(np.float32)
    np.testing.assert_array_equal(quantize.logits(tmp_path / "q.onnx", x), quantize.logits(tmp_path / "alone.onnx", x))

    result = cli("onnx", fp32, "--int8", "--calib", val, "--calib-tries", 2, "--eval-limit", 4, "--accept-drop")
    assert result.exit_code == 0 and "calibration: kept sample" in result.output, result.output
    judged = json.loads(open_artifact(tmp_path / "model.int8.onnx").metadata[META_PARITY])["judged"][0]
    assert judged["calibration"]["seeds"] == [0, 1] and judged["calibration"]["images"] == 64


def test_accept_drop_keeps_int8():
    from fer_export.export.quantize import PrecisionReport, Variant

    def report(accept):
        return PrecisionReport("val", 100, Variant("fp32", "a", 1, 0.60, 1), Variant("int8", "b", 1, 0.55, 4), 1.0, accept)

    assert report(False).drop_pp == pytest.approx(5.0)
    assert not report(False).passed and report(True).passed


@pytest.mark.parametrize("args", [["onnx", "--opset", "17"], ["onnx", "--int8"]])
def test_bad_options_are_usage_errors(tiny_ckpt, args):
    result = cli(args[0], tiny_ckpt, *args[1:])
    assert result.exit_code == EXIT_USAGE
    assert "opset 17" in result.output or "--calib" in result.output


@pytest.mark.parametrize("command", ["onnx", "torchscript", "all"])
def test_bad_checkpoint_is_exit_2_naming_the_file(tmp_path, command):
    missing = tmp_path / "nope.pth"
    result = cli(command, missing)
    assert result.exit_code == EXIT_USAGE and str(missing) in result.output
    junk = tmp_path / "notes.pth"
    junk.write_text("not a checkpoint")
    result = cli(command, junk)
    assert result.exit_code == EXIT_USAGE and str(junk) in result.output


def test_every_command_has_help():
    assert set(main.commands) == {"onnx", "torchscript", "all", "verify", "stamp", "requantize", "int8", "flip", "embed",
                                 "fp16"}
    for name, command in main.commands.items():
        result = cli(name, "--help")
        assert result.exit_code == 0 and len(command.help or "") > 30, name


def test_flip_tta_is_built_into_the_graph(tiny_ckpt, tmp_path):
    """--tta hflip: the graph averages an image and its mirror, so mirrored inputs give equal outputs,
    and it equals the mean of the checkpoint's logits on both; verify re-checks it the same way."""
    from fer_export.predictors import load_predictor

    out = tmp_path / "tta.onnx"
    result = cli("onnx", tiny_ckpt, "-o", out, "--tta", "hflip")
    assert result.exit_code == 0, result.output
    assert open_artifact(out).metadata[META_TTA] == "hflip"
    got, ref = load_predictor(out), load_predictor(tiny_ckpt)
    batch = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    mirrored = batch[:, :, ::-1].copy()
    np.testing.assert_allclose(got.logits(batch), got.logits(mirrored), atol=1e-4)
    np.testing.assert_allclose(got.logits(batch), (ref.logits(batch) + ref.logits(mirrored)) / 2, atol=1e-4)
    assert cli("verify", out, "--against", tiny_ckpt).exit_code == 0


def test_tencrop_tta_is_built_into_the_graph(tiny_ckpt, tmp_path):
    """--tta tencrop: the graph's logits are the mean over the four corner crops and the centre crop
    (44 of 48 px, resized back) and their mirrors, computed here one view at a time; the ten views of
    a mirrored image are the same ten views, so its output is the same."""
    import torch
    import torch.nn.functional as F

    from fer_export.model import load_checkpoint
    from fer_export.predictors import load_predictor
    from fer_export.preprocess import preprocess

    out = tmp_path / "tencrop.onnx"
    result = cli("onnx", tiny_ckpt, "-o", out, "--tta", "tencrop")
    assert result.exit_code == 0, result.output
    assert open_artifact(out).metadata[META_TTA] == "tencrop"
    got = load_predictor(out).logits
    batch = np.random.default_rng(1).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    model, spec = load_checkpoint(tiny_ckpt)
    x = torch.from_numpy(preprocess(list(batch), spec))
    views = []
    for top, left in [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]:
        crop = F.interpolate(x[:, :, top:top + 44, left:left + 44], size=(48, 48), mode="bilinear", align_corners=False)
        views += [crop, crop.flip(3)]
    with torch.inference_mode():
        ref = np.mean([model(v).numpy() for v in views], axis=0)
        plain = model(x).numpy()
    np.testing.assert_allclose(got(batch), ref, atol=1e-4)
    assert not np.allclose(got(batch), plain, atol=1e-3)  # the views do change the answer
    np.testing.assert_allclose(got(batch[:, :, ::-1].copy()), got(batch), atol=1e-4)
    assert cli("verify", out, "--against", tiny_ckpt).exit_code == 0


def test_every_command_is_in_the_pipelines_table():
    from fer_export.cli.export import PIPELINES, main

    assert [name for name, *_ in PIPELINES] and {name for name, *_ in PIPELINES} == set(main.commands)
    assert all(name in cli("--help").output for name, *_ in PIPELINES)


@pytest.mark.data
def test_made_from_an_onnx_file_each_by_its_own_command(exported, fer2013, tmp_path, monkeypatch):
    """int8, flip and embed take an .onnx file and only their own options; the old `onnx MODEL.onnx` forms
    still work and say which command replaces them."""
    import shutil

    from fer_export.export import quantize

    monkeypatch.setattr(quantize, "CALIB_IMAGES", 32)
    monkeypatch.setattr(quantize, "images_per_second", lambda path, spec, **options: 1.0)
    fp32 = tmp_path / "m.onnx"
    shutil.copy(exported["onnx"], fp32)
    val = fer2013 / "val"
    r = cli("int8", fp32, "--calib", val, "--eval-limit", 4, "--accept-drop")
    assert r.exit_code == 0 and (tmp_path / "m.int8.onnx").is_file(), r.output
    r = cli("flip", tmp_path / "m.int8.onnx", "--flip-below", 0.7)
    assert r.exit_code == 0 and open_artifact(tmp_path / "m.int8.flip.onnx").metadata[META_TTA] == "hflip-uncertain"
    r = cli("embed", fp32)
    assert r.exit_code == 0 and open_artifact(tmp_path / "m.embed.onnx").input_format == "uint8", r.output
    for command, option in (("int8", "--tta"), ("flip", "--calib"), ("embed", "--int8")):
        refused = cli(command, fp32, option, "x")
        assert refused.exit_code == 2 and "No such option" in refused.output
    r = cli("onnx", fp32, "--with-preprocessing", "-o", tmp_path / "old.onnx")
    assert r.exit_code == 0 and "deprecated" in r.output and "fer-export embed" in r.output, r.output


def test_onnx_file_names_no_file_of_the_exporting_machine(exported):
    """The exporter's per-node stack traces would publish the user's paths and make the same export differ
    by where fer-export is installed."""
    data = exported["onnx"].read_bytes()
    assert b"stack_trace" not in data
    assert str(ROOT).encode() not in data and str(exported["onnx"].parent).encode() not in data
