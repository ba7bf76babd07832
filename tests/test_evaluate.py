"""fer-eval and fer_export.evaluate: report layout, seed parity, one code path for every format."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import run_without_torch
from fer_export.cli.evaluate import main as fer_eval
from fer_export.evaluate import EvalResult, classification_report, confusion_matrix, evaluate_folder
from fer_export.folders import labelled_images

# sklearn.metrics.classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 2], target_names=["a", "b", "c"])
SKLEARN_REPORT = """\
              precision    recall  f1-score   support

           a       1.00      0.50      0.67         2
           b       0.67      1.00      0.80         2
           c       1.00      1.00      1.00         1

    accuracy                           0.80         5
   macro avg       0.89      0.83      0.82         5
weighted avg       0.87      0.80      0.79         5
"""


def test_classification_report_matches_sklearn_layout():
    cm = confusion_matrix(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert classification_report(cm, ["a", "b", "c"]) == SKLEARN_REPORT


def test_class_without_support_or_predictions_scores_zero():
    result = EvalResult(labels=("a", "b", "c"), y_true=np.array([0, 0]), probs=np.eye(3, dtype=np.float32)[[0, 1]])
    metrics = result.per_class()
    assert result.accuracy == 0.5
    assert metrics["c"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}
    assert metrics["b"]["precision"] == 0.0 and metrics["a"]["recall"] == 0.5


def _calibrated_model(spec, fer2013, seed=0):
    """A randomly initialised network whose BatchNorm statistics come from real faces, so that its
    predictions vary from image to image (a fresh one predicts nearly one class)."""
    import torch

    from fer_export.model import build_model
    from fer_export.preprocess import normalize, resize_batch, read_gray

    torch.manual_seed(seed)
    model = build_model(spec)
    items = labelled_images(fer2013 / "train", spec.labels, limit_per_class=8, seed=seed)
    x = torch.from_numpy(normalize(resize_batch([read_gray(p) for p, _ in items], spec), spec))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration pass
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def _seed_predictions(checkpoint, val_dir, limit_per_class):
    """The seed's own evaluation: its network, cv2 gray -> PIL -> Resize(224) -> ToTensor ->
    Normalize([0.485], [0.229]) in a DataLoader, argmax of the logits."""
    import cv2
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import models, transforms

    model = models.resnet18(weights=None)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(512, 7))
    model.load_state_dict(torch.load(checkpoint, map_location="cpu")["model_state_dict"])
    model.eval()
    tf = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                             transforms.Normalize([0.485], [0.229])])
    items = labelled_images(val_dir, ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"],
                            limit_per_class)

    class SeedDataset(Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, i):
            return tf(Image.fromarray(cv2.imread(str(items[i][0]), cv2.IMREAD_GRAYSCALE))), items[i][1]

    preds = []
    with torch.no_grad():
        for x, _ in DataLoader(SeedDataset(), batch_size=32):
            preds.append(model(x).argmax(1))
    return torch.cat(preds).numpy(), np.array([c for _, c in items])


@pytest.mark.data
def test_seed_checkpoint_matches_seed_pipeline(fer2013, tmp_path):
    """A checkpoint saved by the seed's code gives the same per-image predictions through fer-eval."""
    import torch

    from fer_export.spec import SEED_SPEC

    path = tmp_path / "seed.pth"
    torch.save({"model_state_dict": _calibrated_model(SEED_SPEC, fer2013).state_dict(), "epoch": 3}, path)
    seed_pred, y_true = _seed_predictions(path, fer2013 / "val", limit_per_class=10)
    result = evaluate_folder(path, fer2013, "val", batch_size=32, limit_per_class=10)
    assert len(set(seed_pred.tolist())) > 1, "the test model should not predict a single class"
    np.testing.assert_array_equal(result.y_true, y_true)
    np.testing.assert_array_equal(result.y_pred, seed_pred)


@pytest.fixture(scope="module")
def artifacts(fer2013, tmp_path_factory):
    """The same small network as .pth, TorchScript .pt and .onnx (with fer-export metadata)."""
    import onnx
    import torch

    from fer_export.model import save_checkpoint
    from fer_export.spec import META_INPUT, META_SPEC, SEED_SPEC

    spec = SEED_SPEC.replace(arch="resnet18_s1", input_size=[48, 48])
    model = _calibrated_model(spec, fer2013)
    d = tmp_path_factory.mktemp("formats")
    save_checkpoint(d / "m.pth", model, spec, epoch=1)
    x = torch.zeros(2, 1, 48, 48)
    torch.jit.trace(model, x).save(str(d / "m.pt"), _extra_files={META_SPEC: spec.to_json()})
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated; it is enough here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(d / "m.onnx"), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17)
    proto = onnx.load(str(d / "m.onnx"))
    for key, value in ((META_SPEC, spec.to_json()), (META_INPUT, "normalized")):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(d / "m.onnx"))
    return d


@pytest.mark.data
@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
def test_every_format_gives_the_checkpoint_predictions(artifacts, fer2013, suffix):
    reference = evaluate_folder(artifacts / "m.pth", fer2013, limit_per_class=10)
    result = evaluate_folder(artifacts / f"m{suffix}", fer2013, limit_per_class=10)
    assert result.format == {".pt": "torchscript", ".onnx": "onnx"}[suffix]
    np.testing.assert_array_equal(result.y_pred, reference.y_pred)
    np.testing.assert_allclose(result.probs, reference.probs, atol=1e-4)


@pytest.mark.data
def test_fer_eval_onnx_runs_without_torch(artifacts, fer2013, tmp_path):
    reference = evaluate_folder(artifacts / "m.pth", fer2013, limit_per_class=10)
    png = tmp_path / "cm.png"
    proc = run_without_torch("from fer_export.cli.evaluate import main; main()", str(artifacts / "m.onnx"),
                             "--data", str(fer2013), "--limit-per-class", "10", "--json", "--no-progress",
                             "--confusion", str(png))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["format"] == "onnx" and out["images"] == 70
    assert out["accuracy"] == pytest.approx(reference.accuracy)
    assert out["confusion_matrix"] == reference.confusion.tolist()
    assert png.stat().st_size > 0


@pytest.mark.data
def test_fer_eval_writes_report_and_confusion(artifacts, fer2013, tmp_path):
    res = CliRunner().invoke(fer_eval, [str(artifacts / "m.pth"), "--data", str(fer2013), "--limit-per-class", "5",
                                        "--report", str(tmp_path / "r.txt"), "--confusion", str(tmp_path / "c.png"),
                                        "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "weighted avg" in res.output
    report = (tmp_path / "r.txt").read_text()
    assert report.splitlines()[0].split() == ["precision", "recall", "f1-score", "support"]
    assert report in res.output
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.data
def test_fer_eval_errors_are_one_line_exit_2(artifacts, fer2013, tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    (tmp_path / "odd" / "cats").mkdir(parents=True)  # a class folder that is no label
    cases = [
        ([str(artifacts / "m.pth"), "--data", str(tmp_path / "missing")], str(tmp_path / "missing")),
        ([str(tmp_path / "absent.onnx"), "--data", str(fer2013)], "absent.onnx"),
        ([str(junk), "--data", str(fer2013)], "junk.pth"),
        ([str(artifacts / "m.pth"), "--data", str(fer2013), "--split", "nope"], "holds the splits ['train', 'val']"),
        ([str(artifacts / "m.pth"), "--data", str(tmp_path / "odd")], "are not labels of this model"),
    ]
    for args, expected in cases:
        res = CliRunner().invoke(fer_eval, args)
        assert res.exit_code == 2, (args, res.output)
        assert expected in res.output and "Traceback" not in res.output
