"""The models shipped inside the package: present, self-describing, accurate, the accurate one the default
everywhere and the fast one a name away."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_without_torch
from fer_export import EmotionClassifier
from fer_export.folders import labelled_images
from fer_export.preprocess import read_gray
from fer_export.runtime import ACCURATE_FP32, BUNDLED_MODELS, resolve_model
from fer_export.spec import FER2013_LABELS, META_PARITY, META_PRECISION, META_SOURCE_SHA256


@pytest.mark.parametrize("name, variant, precision", [("accurate", "cpu", "int8"), ("accurate", "cuda", "fp32"),
                                                       ("fast", "cpu", "int8"), ("fast", "cuda", "int8")])
def test_bundled_models_are_shipped_and_self_describing(name, variant, precision):
    path = BUNDLED_MODELS[name][variant]
    assert path.is_file(), f"{path} is missing from the package"
    assert resolve_model(name, variant) == path
    clf = EmotionClassifier(path, provider="cpu")
    assert clf.labels == FER2013_LABELS and clf.spec.framing is not None
    assert clf.metadata.get(META_PRECISION, "fp32") == precision
    assert len(clf.metadata[META_SOURCE_SHA256]) == 64
    assert json.loads(clf.metadata[META_PARITY])["passed"] is True


def test_the_cpu_runs_the_accurate_models_int8_copy_by_default():
    """Same network, same contract: the int8 file was gated against the fp32 export it came from."""
    clf = EmotionClassifier(provider="cpu")
    assert clf.path == BUNDLED_MODELS["accurate"]["cpu"] != ACCURATE_FP32
    assert EmotionClassifier("accurate", provider="cpu").path == clf.path
    fp32 = EmotionClassifier(ACCURATE_FP32, provider="cpu")
    assert clf.spec == fp32.spec and clf.metadata[META_SOURCE_SHA256] == fp32.metadata[META_SOURCE_SHA256]
    judged = json.loads(clf.metadata[META_PARITY])["judged"][0]
    assert judged["eval_images"] == 3589 and judged["drop_pp"] <= 1.0  # all of PublicTest


def test_auto_without_cuda_runs_the_cpu_file(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert resolve_model("accurate", "auto") == BUNDLED_MODELS["accurate"]["cpu"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert resolve_model("accurate", "auto") == resolve_model("accurate", "cuda") == ACCURATE_FP32
    assert resolve_model("some/model.onnx", "cuda") == Path("some/model.onnx")


@pytest.mark.data
@pytest.mark.parametrize("name", ["accurate", "fast"])
def test_bundled_models_recognise_real_faces(fer2013, name):
    """A sanity floor on 20 PublicTest faces per class (the model card has the full numbers)."""
    items = labelled_images(fer2013 / "val", FER2013_LABELS, limit_per_class=20, seed=1)
    probs = EmotionClassifier(name, provider="cpu").predict([read_gray(p) for p, _ in items])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    accuracy = float(np.mean(probs.argmax(axis=1) == np.array([y for _, y in items])))
    assert accuracy >= 0.55, f"bundled model accuracy {accuracy:.1%} on a PublicTest slice"


@pytest.mark.data
def test_fer_batch_defaults_to_the_bundled_model_without_torch(photos, tmp_path):
    out = tmp_path / "r.csv"
    r = run_without_torch("from fer_export.cli.batch import main; main()", str(photos / "fer_justin.jpg"),
                          "--out", str(out), "--detector", "haar", "--provider", "cpu")
    assert r.returncode == 0, r.stderr
    assert str(BUNDLED_MODELS["accurate"]["cpu"]) in r.stderr
    rows = out.read_text().splitlines()
    assert len(rows) >= 2 and rows[1].split(",")[-2] == "ok"


@pytest.mark.data
def test_fer_batch_runs_the_fast_model_by_name_without_torch(fer2013, tmp_path):
    crops = sorted((fer2013 / "val" / "happy").glob("*.jpg"))[:4]
    out = tmp_path / "r.csv"
    r = run_without_torch("from fer_export.cli.batch import main; main()", *map(str, crops), "--out", str(out),
                          "--model", "fast", "--provider", "cpu")
    assert r.returncode == 0, r.stderr
    assert str(BUNDLED_MODELS["fast"]["cpu"]) in r.stderr
    rows = out.read_text().splitlines()[1:]
    assert len(rows) == 4 and all(row.split(",")[-2] == "ok" for row in rows)
