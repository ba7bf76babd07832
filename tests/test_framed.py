"""fer-train --framed: training faces seen as fer-batch crops them from pictures (training.framed)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer_export.batch import run_batch
from fer_export.batch.config import BatchConfig
from fer_export.errors import InputError
from fer_export.folders import labelled_images
from fer_export.preprocess import read_gray
from fer_export.runtime import EmotionClassifier
from training import framed
from training.cli import main as fer_train
from training.data import TensorLoader

from conftest import ROOT

FRAMING_JSON = ROOT / "docs" / "model_card" / "framing.json"
BUNDLED = ROOT / "fer_export" / "models" / "fer2013_resnet18.int8.onnx"


def test_read_framing_from_json_or_model(tmp_path):
    from_json = framed.read_framing(FRAMING_JSON)
    assert from_json == EmotionClassifier(BUNDLED, provider="cpu").spec.framing
    assert framed.read_framing(BUNDLED) == from_json
    bare = tmp_path / "framing.json"
    bare.write_text(json.dumps(from_json.to_dict()))  # the framing alone, without face_template's report
    assert framed.read_framing(bare) == from_json
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json: not a framing JSON"):
        framed.read_framing(bad)
    with pytest.raises(InputError, match="no such framing file"):
        framed.read_framing(tmp_path / "missing.json")


def test_picture_places_the_face_where_it_says():
    face = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))
    kinds = set()
    for seed in range(6):
        image, (x, y, side) = framed.picture(face, np.random.default_rng(seed))
        assert image.shape == framed.PICTURE and framed.FACE_SIDES[0] <= side <= framed.FACE_SIDES[1]
        assert 0 <= x <= framed.PICTURE[1] - side and 0 <= y <= framed.PICTURE[0] - side
        assert np.array_equal(image[y:y + side, x:x + side], resize_cubic(face, side))
        left = image[y:y + side, :x] if x else image[y:y + side, x + side:]
        kinds.add("edge" if np.all(left == left[:, :1]) else "noise")
    assert kinds == {"edge", "noise"}  # both backgrounds are drawn


def resize_cubic(face, side):
    import cv2

    return cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)


def test_other_views_replace_the_chosen_images():
    images = torch.zeros(200, 8, 8, dtype=torch.uint8)
    views = torch.stack([torch.full((200, 8, 8), 1, dtype=torch.uint8), torch.full((200, 8, 8), 2, dtype=torch.uint8)])
    loader = TensorLoader(images, torch.zeros(200, dtype=torch.int64), None, 50, "cpu", views=views, view_p=0.5)
    idx = torch.arange(200)
    out = loader.other_views(images, idx)
    values = out.flatten(1)[:, 0]
    assert torch.equal(out, values.view(-1, 1, 1).expand(-1, 8, 8))  # whole images, never mixed
    counts = torch.bincount(values.long(), minlength=3)
    assert 60 < counts[0] < 140 and counts[1] > 20 and counts[2] > 20
    loader.view_p = 0.0
    assert torch.equal(loader.other_views(images, idx), images)
    loader.view_p = 1.0
    assert int((loader.other_views(images, idx) == 0).sum()) == 0


@pytest.mark.data
def test_framed_views_are_the_faces_reframed(fer2013, tmp_path, monkeypatch):
    model = ROOT / "fer_export" / "models" / "fer2013_resnet18.onnx"
    spec = EmotionClassifier(model, provider="cpu").spec
    paths = [p for p, _ in labelled_images(fer2013 / "train", spec.labels, limit_per_class=1)]
    monkeypatch.setattr(framed, "CHUNK", 3)  # three tasks, so the worker processes share them
    views = framed.framed_views(paths, spec, spec.framing, 2, seed=0, cache=tmp_path, fingerprint="t")
    assert views.shape == (2, len(paths), 96, 96) and views.dtype == torch.uint8
    assert len({views[0, i].numpy().tobytes() for i in range(len(paths))} | {views[1, 0].numpy().tobytes()}) == 8

    # a view is what fer-batch's model sees of that face in that picture, at its framed square (without the
    # wider and tighter views fer-batch also averages for pictures): its probabilities are fer-batch's
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i, path in enumerate(paths):
        gray, _ = framed.picture(read_gray(path), framed.view_rng(0, i, 1))
        cv2.imwrite(str(pictures / f"{i}.png"), gray)
    run_batch(BatchConfig.build([pictures], tmp_path / "out.csv", model=str(model), crop_spread=0, progress=False))
    with open(tmp_path / "out.csv") as f:
        rows = {int(Path(r["source"]).stem): r for r in csv.DictReader(f) if r["face"] == "0"}
    assert sorted(rows) == list(range(len(paths)))  # each picture's one face found (no other face)
    probs = EmotionClassifier(model, provider="cpu").predict(list(views[1].numpy()))
    csv_probs = np.array([[float(rows[i][label]) for label in spec.labels] for i in range(len(paths))])
    np.testing.assert_allclose(probs, csv_probs, atol=2e-6)

    # seeded per face and view: the same from one process, and read back from the cache
    assert len(list(tmp_path.glob("framed_2x96x96_*.npy"))) == 1
    with monkeypatch.context() as m:
        m.setattr("os.sched_getaffinity", lambda pid: {0})
        assert torch.equal(framed.framed_views(paths, spec, spec.framing, 2, 0), views)
    monkeypatch.setattr(framed, "_views", lambda task: pytest.fail("recomputed despite the cache"))
    assert torch.equal(framed.framed_views(paths, spec, spec.framing, 2, 0, tmp_path, "t"), views)


def test_framed_option_errors_exit_2(tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "val").mkdir()
    base = ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")]
    res = CliRunner().invoke(fer_train, [*base, "--recipe", "fast", "--framed", "0.5"])
    assert res.exit_code == 2 and "give --framing FILE" in res.output
    res = CliRunner().invoke(fer_train, [*base, "--framed", "0.5", "--framing", str(FRAMING_JSON)])
    assert res.exit_code == 2 and "--aug tensor" in res.output
    res = CliRunner().invoke(fer_train, [*base, "--recipe", "fast", "--framed", "1.5", "--framing", str(FRAMING_JSON)])
    assert res.exit_code == 2 and "framed must be in [0, 1], got 1.5" in res.output
    res = CliRunner().invoke(fer_train, [*base, "--recipe", "fast", "--framed-views", "0"])
    assert res.exit_code == 2 and "framed_views must be at least 1" in res.output
