"""fer-export, fer-eval, fer-train and the Python API against hostile inputs and places: reports that would
overwrite a model, temporary names that are an input's, full disks, crafted checkpoints and specs, bad
option values, Ctrl-C, odd arguments to predict(), a diverging run. Nothing is destroyed, nothing dies
with a traceback, and every refusal is one line with exit status 2 (130 for Ctrl-C).
"""
from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer_export import export as export_pkg
from fer_export.cli.evaluate import main as fer_eval
from fer_export.cli.export import main as fer_export
from fer_export.errors import ArtifactError, CheckpointError, InputError, OutputError, SpecError
from fer_export.model import load_checkpoint, read_checkpoint, save_checkpoint
from fer_export.runtime import BUNDLED_MODELS, EmotionClassifier
from fer_export.spec import ModelSpec
from training import engine
from training.cli import main as fer_train
from training.config import FLOAT_FIELDS, make_config

from conftest import TINY


def invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args])


def refused(res, *words: str) -> str:
    """Exit status 2 with one clean ``Error:`` line naming ``words``; returns the message."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and not isinstance(res.exception, (OSError, TypeError, ValueError))
    lines = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, res.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def ckpt(tiny_ckpt, tmp_path) -> Path:
    """A copy of the tiny checkpoint alone in a fresh folder."""
    return Path(shutil.copy(tiny_ckpt, tmp_path / "m.pth"))


@pytest.fixture(scope="module")
def fast_onnx() -> Path:
    return BUNDLED_MODELS["fast"]["cpu"]


@pytest.fixture
def model_onnx(fast_onnx, tmp_path) -> Path:
    return Path(shutil.copy(fast_onnx, tmp_path / "model.onnx"))


def full_disk(path, mode="r", *args, **kwargs):
    """``open`` on a full disk: the file is created, the write fails with ENOSPC."""
    f = builtins.open(path, mode, *args, **kwargs)
    if "w" not in mode:
        return f
    f.close()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


# 1. a report must never overwrite an input or the file the command just wrote

@pytest.mark.parametrize("args", [
    ("onnx", "{m}", "--json", "{m}"),
    ("torchscript", "{m}", "--json", "{m}"),
    ("onnx", "{m}", "-o", "{d}/r.onnx", "--json", "{d}/r.onnx"),
    ("onnx", "{m}", "-o", "{d}/r.onnx", "--json", "{d}/r.failed.onnx"),
    ("onnx", "{m}", "-o", "{m}"),
    ("all", "{m}", "--json", "{d}/m.pt"),
    ("verify", "{d}/x.onnx", "--against", "{m}", "--json", "{d}/sub/../m.pth"),
])
def test_export_refuses_outputs_that_are_inputs_or_outputs(ckpt, args):
    (ckpt.parent / "x.onnx").write_bytes(b"not looked at")
    before = snapshot(ckpt.parent)
    res = invoke(fer_export, *(a.format(m=ckpt, d=ckpt.parent) for a in args))
    refused(res, "would overwrite", "choose another path")
    assert snapshot(ckpt.parent) == before  # refused before any work: nothing written, nothing removed


@pytest.mark.parametrize("option", ["--report", "--confusion"])
def test_eval_refuses_to_write_over_its_model(model_onnx, tmp_path, option):
    target = tmp_path / "link.png"
    target.symlink_to(model_onnx)  # real paths are compared: a link does not hide the model
    before = snapshot(tmp_path)
    refused(invoke(fer_eval, model_onnx, "--data", tmp_path, option, target), "would overwrite the model")
    assert snapshot(tmp_path) == before


def test_eval_refuses_report_and_confusion_on_one_file(model_onnx, tmp_path):
    refused(invoke(fer_eval, model_onnx, "--data", tmp_path, "--report", tmp_path / "a.png",
                   "--confusion", tmp_path / "a.png"), "--confusion", "would overwrite --report")


# 2. the temporary and failed files of the gate are never an input

def test_temp_file_is_never_the_input(tiny_ckpt, tmp_path):
    src = Path(shutil.copy(tiny_ckpt, tmp_path / "w.tmp.pt"))  # was NAME.tmp.pt for -o NAME.pt
    data = src.read_bytes()
    res = invoke(fer_export, "torchscript", src, "-o", tmp_path / "w.pt")
    assert res.exit_code == 0, res.output
    assert src.read_bytes() == data and (tmp_path / "w.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt", "w.tmp.pt"]  # no temporary left


def test_failed_copy_is_never_the_input(tiny_ckpt, tmp_path):
    src = Path(shutil.copy(tiny_ckpt, tmp_path / "w.failed.pth"))  # a failed export of -o w.pth would be moved here
    refused(invoke(fer_export, "torchscript", src, "-o", tmp_path / "w.pth"), "the failed copy", "would overwrite")
    assert src.read_bytes() == tiny_ckpt.read_bytes()


# 3. unwritable places and full disks

@pytest.mark.parametrize("where, words", [
    ("folder", ["is a folder"]),
    ("under_file", ["is a file, not a folder"]),
    ("/proc/x.pt", ["cannot create files in /proc"]),
])
def test_export_refuses_unwritable_outputs_up_front(ckpt, where, words):
    (ckpt.parent / "folder").mkdir()
    out = {"folder": ckpt.parent / "folder", "under_file": ckpt / "x.pt"}.get(where, where)
    before = snapshot(ckpt.parent)
    refused(invoke(fer_export, "torchscript", ckpt, "-o", out), *words)
    assert snapshot(ckpt.parent) == before and list((ckpt.parent / "folder").iterdir()) == []


def test_torchscript_on_a_full_disk_is_one_line_and_leaves_nothing(ckpt, monkeypatch):
    from fer_export.export import torchscript

    monkeypatch.setattr(torchscript, "open", full_disk, raising=False)
    refused(invoke(fer_export, "torchscript", ckpt, "-o", ckpt.parent / "m.pt"), "m.pt", "no space left on device",
            "free space")
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["m.pth"]


def test_onnx_write_failure_removes_the_temporary(ckpt, monkeypatch):
    def export_onnx(model, spec, path, metadata, **options):
        path.write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setitem(export_pkg.FORMATS, "onnx", export_pkg.FORMATS["onnx"]._replace(export=export_onnx))
    refused(invoke(fer_export, "onnx", ckpt), "m.onnx", "no space left on device")
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["m.pth"]


def test_json_report_to_full_device_and_to_a_new_folder(ckpt):
    res = invoke(fer_export, "torchscript", ckpt, "--json", "/dev/full")
    refused(res, "/dev/full", "no space left on device")
    res = invoke(fer_export, "torchscript", ckpt, "--json", ckpt.parent / "new" / "r.json")
    assert res.exit_code == 0, res.output
    assert (ckpt.parent / "new" / "r.json").read_text().startswith("[")


def test_eval_output_checks_and_full_device(model_onnx, tmp_path, fer2013):
    data = fer2013 / "val"
    refused(invoke(fer_eval, model_onnx, "--data", data, "--confusion", tmp_path / "cm.txt"), ".png", "cm.txt")
    refused(invoke(fer_eval, model_onnx, "--data", data, "--report", model_onnx / "x.txt"), "is a file, not a folder")
    refused(invoke(fer_eval, model_onnx, "--data", data, "--confusion", "/proc/cm.png"), "/proc")
    res = invoke(fer_eval, model_onnx, "--data", data, "--limit-per-class", "1", "--no-progress",
                 "--report", "/dev/full")
    refused(res, "/dev/full", "no space left on device")


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    from fer_export import outputs
    from fer_export.model import build_model

    model = build_model(TINY)
    path = save_checkpoint(tmp_path / "best_model.pth", model, TINY, epoch=1)
    before = path.read_bytes()

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs.os, "fsync", fsync)
    with pytest.raises(OutputError, match="best_model.pth: no space left on device; free space"):
        save_checkpoint(path, model, TINY, epoch=2)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["best_model.pth"]


# 4. crafted checkpoints and specs

@pytest.mark.parametrize("change, words", [
    ({"version": "abc"}, "version must be a positive integer"),
    ({"version": None}, "version must be a positive integer"),
    ({"std": [float("nan")]}, "finite"),
    ({"mean": [float("inf")]}, "finite"),
    ({"labels": "abcdefg"}, "'labels' must be a list"),
    ({"input_size": [20000, 20000]}, "16 to 1024 px"),
    ({"input_size": 48}, "'input_size' must be a list"),
])
def test_crafted_specs_are_spec_errors(change, words):
    with pytest.raises(SpecError, match=words):
        ModelSpec.from_dict({**TINY.to_dict(), **change})


def test_checkpoint_with_crafted_spec_exits_2(tmp_path):
    path = tmp_path / "nan.pth"
    torch.save({"model_state_dict": {}, "spec": {**TINY.to_dict(), "std": [float("nan")]}}, path)
    refused(invoke(fer_export, "torchscript", path), "nan.pth", "finite")


@pytest.mark.parametrize("content", [{1: torch.zeros(1), 2: torch.zeros(1)}, {"a": 1, 2: 3}])
def test_checkpoint_with_odd_keys_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="odd.pth"):
        load_checkpoint(path)


# 5. option values

@pytest.mark.parametrize("option, value", [("--eval-limit", "-1"), ("--eval-limit", "0"), ("--max-drop", "nan"),
                                           ("--max-drop", "inf")])
def test_int8_options_refuse_bad_values(model_onnx, tmp_path, option, value):
    res = invoke(fer_export, "onnx", model_onnx, "--int8", "--calib", tmp_path, option, value)
    assert res.exit_code == 2 and f"Invalid value for '{option}'" in res.output, res.output


# 6. Ctrl-C

def test_ctrl_c_in_export_exits_130_and_leaves_nothing(ckpt, monkeypatch):
    def export_torchscript(model, spec, path, metadata):
        path.write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setitem(export_pkg.FORMATS, "torchscript",
                        export_pkg.FORMATS["torchscript"]._replace(export=export_torchscript))
    res = invoke(fer_export, "torchscript", ckpt)
    assert res.exit_code == 130 and "interrupted" in res.output and "Aborted" not in res.output, res.output
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["m.pth"]


def test_ctrl_c_in_eval_exits_130(model_onnx, tmp_path, monkeypatch):
    from fer_export.cli import evaluate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate_folder", interrupted)
    res = invoke(fer_eval, model_onnx, "--data", tmp_path)
    assert res.exit_code == 130 and "interrupted" in res.output and "Aborted" not in res.output, res.output


# 7. predict() on what cv2.imread and callers really pass

@pytest.fixture(scope="module")
def clf(fast_onnx):
    return EmotionClassifier(fast_onnx, provider="cpu")


@pytest.mark.parametrize("faces, words", [
    (np.zeros((100, 80, 3), np.uint8), "one colour image"),
    (np.zeros((100, 80), np.uint8), "one gray image"),
    (None, "did cv2.imread fail"),
    (5, "got int 5"),
    ("face.jpg", "cv2.imread"),
])
def test_predict_refuses_what_is_not_a_list_of_faces(clf, faces, words):
    with pytest.raises(InputError, match=words):
        clf.predict(faces)


def test_predict_takes_a_list_and_a_stack(clf):
    assert clf.predict([np.zeros((100, 80, 3), np.uint8)]).shape == (1, 7)
    assert clf.predict(np.zeros((2, 60, 50), np.uint8)).shape == (2, 7)
    assert clf.predict(np.zeros((2, 60, 50, 3), np.uint8)).shape == (2, 7)


# 8. training values that are not numbers, and a run that diverges

@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_training_config_refuses_non_finite_numbers(field):
    with pytest.raises(InputError, match=f"{field} must be a finite number"):
        make_config("seed", data="d", out="o", **{field: float("nan")})


def test_fer_train_lr_nan_exits_2(tmp_path):
    refused(invoke(fer_train, "--data", tmp_path, "--out", tmp_path / "run", "--lr", "nan"), "lr must be a finite")
    assert not (tmp_path / "run").exists()


def test_fer_train_refuses_out_inside_data(tmp_path):
    refused(invoke(fer_train, "--data", tmp_path, "--out", tmp_path / "run"), "inside the data folder")
    assert not (tmp_path / "run").exists()


def test_diverging_run_stops_without_saving_nan_weights(fer2013, tmp_path, monkeypatch):
    real = engine.training_loss

    def nan_loss(*args, **kwargs):
        return real(*args, **kwargs) * float("nan")

    monkeypatch.setattr(engine, "training_loss", nan_loss)
    out = tmp_path / "run"
    res = invoke(fer_train, "--data", fer2013, "--out", out, "--epochs", "1", "--workers", "0",
                 "--limit-per-class", "2", "--img-size", "16", "--no-progress")
    refused(res, "training diverged in epoch 1", "nan", "--lr")
    assert not (out / "best_model.pth").exists() and not (out / "last.pth").exists()


# 9. files that are no checkpoint

def test_other_files_as_checkpoints_say_what_they_are(fast_onnx, tmp_path):
    cases = {"model.pth": Path(shutil.copy(fast_onnx, tmp_path / "model.pth")), "notes.pth": tmp_path / "notes.pth"}
    cases["notes.pth"].write_text("hello world\n")
    for words, path in (("it is an ONNX model", cases["model.pth"]), ("it is a text file", cases["notes.pth"])):
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        assert words in str(err.value) and "weights_only=False" not in str(err.value)


# 10. the torch-free install, fixed-batch exports, outputs in the data set, -o suffixes, int8 options

def test_embed_without_onnx_is_a_dependency_error(model_onnx, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    refused(invoke(fer_export, "onnx", model_onnx, "--with-preprocessing"), "needs the 'onnx' package",
            "pip install")
    assert not model_onnx.with_name("model.embed.onnx").exists()


@pytest.fixture(scope="module")
def fixed_batch_onnx(tiny_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b2") / "b2.onnx"
    res = invoke(fer_export, "onnx", tiny_ckpt, "--batch", "2", "-o", out)
    assert res.exit_code == 0, res.output
    return out


def test_fixed_batch_export_runs_any_number_of_faces(fixed_batch_onnx, exported):
    fixed, dynamic = EmotionClassifier(fixed_batch_onnx, "cpu", batch_size=4), EmotionClassifier(exported["onnx"], "cpu")
    assert fixed.fixed_batch == 2 and dynamic.fixed_batch is None
    faces = [np.full((40 + i, 48), 30 * i, np.uint8) for i in range(5)]
    np.testing.assert_allclose(fixed.predict(faces), dynamic.predict(faces), atol=1e-5)
    crops = np.stack([np.full((48, 48), 25 * i, np.uint8) for i in range(3)])
    np.testing.assert_allclose(fixed.logits(crops), dynamic.logits(crops), atol=1e-4)
    assert fixed.predict([]).shape == (0, 7)


def test_fer_eval_runs_a_fixed_batch_export(fixed_batch_onnx, fer2013):
    res = invoke(fer_eval, fixed_batch_onnx, "--data", fer2013, "--limit-per-class", "1", "--batch-size", "3",
                 "--no-progress")
    assert res.exit_code == 0 and "accuracy" in res.output, res.output


@pytest.mark.parametrize("option, name", [("--report", "report.txt"), ("--confusion", "cm.png")])
def test_eval_refuses_outputs_inside_the_data_folder(model_onnx, tmp_path, option, name):
    data = tmp_path / "data"
    (data / "val" / "happy").mkdir(parents=True)
    out = tmp_path / "link" / "val" / "happy" / name  # through a link: real paths are compared
    (tmp_path / "link").symlink_to(data)
    refused(invoke(fer_eval, model_onnx, "--data", data, option, out), "inside the --data folder")
    assert not (data / "val" / "happy" / name).exists()


def test_eval_confusion_without_matplotlib_fails_before_evaluating(model_onnx, tmp_path, monkeypatch):
    import sys

    from fer_export import evaluate

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(evaluate, "evaluate_folder", lambda *a, **k: pytest.fail("evaluated"))
    report = tmp_path / "r.txt"
    refused(invoke(fer_eval, model_onnx, "--data", tmp_path / "d", "--confusion", tmp_path / "cm.png",
                   "--report", report), "matplotlib", "pip install")
    assert not report.exists()


@pytest.mark.parametrize("args, words", [
    (("onnx", "{m}", "-o", "{d}/x.pt"), ".onnx"),
    (("onnx", "{m}", "-o", "{d}/noext"), "no suffix"),
    (("torchscript", "{m}", "-o", "{d}/x.onnx"), ".pt"),
    (("onnx", "{o}", "--with-preprocessing", "-o", "{d}/x.pt"), ".onnx"),
])
def test_export_refuses_an_output_of_another_format(ckpt, model_onnx, tmp_path, args, words):
    before = snapshot(tmp_path)
    args = [a.format(m=ckpt, o=model_onnx, d=tmp_path) for a in args]
    refused(invoke(fer_export, *args), "-o", words)
    assert snapshot(tmp_path) == before


def _images(folder: Path, n: int) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((48, 48), 5 * i, np.uint8))
    return folder


@pytest.mark.parametrize("calib, words", [
    (lambda d: d.mkdir() or d, "no images found"),
    (lambda d: _images(d, 3), "only 3 image(s)"),
    (lambda d: (_images(d, 20) / "broken.jpg").write_bytes(b"not a jpeg") and d, "broken.jpg"),
])
def test_int8_calib_folder_is_checked_before_any_export(ckpt, tmp_path, calib, words):
    folder = calib(tmp_path / "calib")
    refused(invoke(fer_export, "onnx", ckpt, "--int8", "--calib", folder), words)
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["calib", "m.pth"]


@pytest.mark.parametrize("args, words", [
    (("--calib", "{d}"), "--calib needs --int8"),
    (("--max-drop", "2"), "--max-drop needs --int8"),
])
def test_int8_options_without_int8_are_refused(ckpt, tmp_path, args, words):
    res = invoke(fer_export, "onnx", ckpt, *[a.format(d=tmp_path) for a in args])
    assert res.exit_code == 2 and words in res.output, res.output
    assert not ckpt.with_suffix(".onnx").exists()


def test_negative_max_drop_is_refused(model_onnx, tmp_path):
    res = invoke(fer_export, "onnx", model_onnx, "--int8", "--calib", tmp_path, "--max-drop", "-5")
    assert res.exit_code == 2 and "Invalid value for '--max-drop'" in res.output, res.output
    assert "x<=None" not in invoke(fer_export, "onnx", "--help").output


# 11. training.face_template

def test_face_template_refuses_bad_arguments_before_work(model_onnx, tmp_path, monkeypatch, capsys):
    import sys

    from training import face_template

    monkeypatch.setattr(face_template, "derive", lambda files: pytest.fail("derived"))
    before = model_onnx.read_bytes()
    cases = [(["--data", tmp_path / "missing"], "no such folder"),
             (["--data", tmp_path, "--stamp", model_onnx, "--out", tmp_path / ".." / tmp_path.name / "model.onnx"],
              "would overwrite the --stamp model")]
    for argv, words in cases:
        assert face_template.main([str(a) for a in argv]) == 2
        assert words in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert face_template.main(["--data", str(tmp_path), "--stamp", str(model_onnx), "--out", str(tmp_path / "o.onnx")]) == 2
    assert "needs the 'onnx' package" in capsys.readouterr().err
    assert model_onnx.read_bytes() == before


# 12. EmotionClassifier's arguments and what its methods are given

@pytest.mark.parametrize("kwargs, words", [
    ({"batch_size": 0}, "batch_size must be a positive integer"), ({"batch_size": -1}, "batch_size"),
    ({"batch_size": 1.5}, "batch_size"), ({"batch_size": "8"}, "batch_size"), ({"batch_size": None}, "batch_size"),
    ({"threads": 1.5}, "threads must be a positive integer or None"), ({"threads": -2}, "threads"),
])
def test_classifier_refuses_bad_arguments(fast_onnx, kwargs, words):
    with pytest.raises(InputError, match=words):
        EmotionClassifier(fast_onnx, "cpu", **kwargs)


def test_classifier_says_what_a_wrong_model_file_is(tmp_path, ckpt):
    with pytest.raises(ArtifactError, match="is a folder"):
        EmotionClassifier(tmp_path, "cpu")
    with pytest.raises(ArtifactError, match=r"PyTorch checkpoint.*fer-export onnx"):
        EmotionClassifier(ckpt, "cpu")


def test_prepare_and_raw_calls_blame_the_input(clf):
    with pytest.raises(InputError, match="prepare\\(\\) got one gray image"):
        clf.prepare(np.zeros((60, 50), np.uint8))
    for bad in (np.zeros((2, 10, 10), np.uint8), np.zeros((2, 64, 64), np.float32), [1, 2]):
        with pytest.raises(InputError, match="logits"):
            clf.logits(bad)
    for bad in (np.zeros((2, 1, 10, 10), np.float32), np.zeros((2, 64, 64), np.uint8), None):
        with pytest.raises(InputError, match="predict_prepared"):
            clf.predict_prepared(bad)
    good = clf.prepare([np.zeros((60, 50), np.uint8)])
    assert clf.predict_prepared(good).shape == (1, 7)


# ---- a model file's metadata is input too -------------------------------------------------------

HOSTILE_LABELS = ["sad\r", "sad\nhappy", "=HYPERLINK(1)", "+1", "-1", "@SUM(A1)", "x" * 65, "tab\there", "\x1b[2J"]


@pytest.mark.parametrize("label", HOSTILE_LABELS, ids=ascii)
def test_hostile_labels_are_refused_by_the_spec(label):
    from fer_export.errors import SpecError
    from fer_export.spec import FER2013_LABELS, ModelSpec

    with pytest.raises(SpecError, match="labels must be") as info:
        ModelSpec(labels=(*FER2013_LABELS[:6], label))
    assert "\n" not in str(info.value) and "\r" not in str(info.value)


@pytest.mark.parametrize("spec_json", [
    "[" * 200_000 + "]" * 200_000,
    '{"labels": [' + ", ".join(f'"l{i}"' for i in range(10_000)) + "]}",
    '{"std": [1e-300]}', '{"mean": [1e300]}', '{"std": [1e300]}',
    '{"framing": {"landmarks": [0.3, 0.4, 0.3, 0.4, 0.5, 0.6, 0.35, 0.8, 0.65, 0.8], "box": [0, 0, 1]}}',
    "x" * 2_000_000,
], ids=["deep", "10000 labels", "tiny std", "huge mean", "huge std", "eyes on one point", "2 MB"])
def test_a_crafted_spec_is_one_line_and_fast(spec_json):
    import time

    from fer_export.errors import SpecError
    from fer_export.spec import ModelSpec

    start = time.perf_counter()
    with pytest.raises(SpecError) as info:
        ModelSpec.from_json(spec_json)
    assert "\n" not in str(info.value) and len(str(info.value)) < 2_000
    assert time.perf_counter() - start < 5  # a bound on a hang, not a speed target


def test_a_model_with_a_hostile_label_is_refused_by_fer_batch(exported, tmp_path):
    import shutil

    from fer_export.cli.batch import main
    from fer_export.export.onnx import stamp_onnx
    from fer_export.spec import FER2013_LABELS, META_SPEC

    model = tmp_path / "m.onnx"
    shutil.copy(exported["onnx"], model)
    metadata = EmotionClassifier(model, "cpu").metadata
    spec = json.loads(metadata[META_SPEC]) | {"labels": [*FER2013_LABELS[:6], "=cmd|' /C calc'!A0"]}
    stamp_onnx(model, metadata | {META_SPEC: json.dumps(spec)})
    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((48, 48), 128, np.uint8))
    refused(invoke(main, face, "--out", tmp_path / "r.csv", "--model", model), "m.onnx", "labels")
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("bad", [np.zeros((0, 0), np.uint8), np.zeros((48, 0), np.uint8), np.zeros((48, 48, 2), np.uint8),
                                 np.zeros((48, 48), np.float32)], ids=["0x0", "48x0", "2 channels", "float"])
def test_prepare_refuses_what_predict_refuses(bad):
    clf = EmotionClassifier("fast", "cpu")
    for call in (clf.prepare, clf.predict):
        with pytest.raises(InputError, match="face 0"):
            call([bad])


def test_a_one_channel_face_is_gray_and_a_single_one_is_refused():
    clf = EmotionClassifier("fast", "cpu")
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    np.testing.assert_array_equal(clf.predict([face[:, :, None]]), clf.predict([face]))
    with pytest.raises(InputError, match="one gray image"):
        clf.predict(face[:, :, None])  # one (H, W, 1) image, not H faces of W x 1


# ---- files fer-batch writes beside its results -----------------------------------------------------

@pytest.mark.parametrize("suffix", [".lock", ".progress"])
@pytest.mark.parametrize("kind", ["link to a file", "dangling link", "fifo"])
def test_the_lock_and_journal_are_never_written_through_a_link_or_into_a_fifo(tmp_path, suffix, kind):
    from fer_export.batch.results import ResultsWriter

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "o.csv"
    planted = Path(str(out) + suffix)
    if kind == "fifo":
        os.mkfifo(planted)
    else:
        planted.symlink_to(victim if kind == "link to a file" else tmp_path / "nowhere")
    with pytest.raises(OutputError, match="symbolic link|not a regular file") as info:
        ResultsWriter(out, ["source", "status"], run={"model": "m"}).close()
    assert "\n" not in str(info.value)
    assert victim.read_text() == "keep me" and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("journal", [b"", b'{"source": "a.jpg", "status": "ok", "end": 30}\n',
                                     b'{"run": {"model": "m"}}\n{"source": "a.jpg", "key": ["x"], "status": "ok", "end": 30}\n',
                                     b'{"run": {"model": "m"}}\n{"source": "a.jpg", "status": "ok", "end": true}\n'],
                         ids=["emptied", "no settings line", "list key", "bool end"])
def test_a_journal_without_settings_or_with_a_bad_entry_never_mixes_runs(tmp_path, journal):
    from fer_export.batch.results import ResultsWriter, journal_path

    out = tmp_path / "o.csv"
    out.write_bytes(b"source,status\na.jpg,ok\n")
    journal_path(out).write_bytes(journal)
    if b'"run"' not in journal:
        with pytest.raises(InputError, match="settings") as info:
            ResultsWriter(out, ["source", "status"], resume=True, run={"model": "other"})
        assert "\n" not in str(info.value)
        return
    writer = ResultsWriter(out, ["source", "status"], resume=True, run={"model": "m"})
    writer.close()
    assert writer.done == {}  # the damaged entry and what follows are done again, never a TypeError


def test_the_summary_gets_the_permissions_the_csv_gets(tmp_path):
    from fer_export.outputs import write_file

    mask = os.umask(0o022)
    try:
        write_file(tmp_path / "s.csv", "a,b\n")
        assert (tmp_path / "s.csv").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)


def _face_folder(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), np.random.default_rng(len(name)).integers(0, 256, (120, 120), dtype=np.uint8))
    return root


def test_an_annotated_copy_replaces_a_hard_link_instead_of_drawing_on_the_input(tmp_path):
    from fer_export.cli.batch import main

    inputs = _face_folder(tmp_path / "in", "a.png")
    before = (inputs / "a.png").read_bytes()
    (tmp_path / "annot" / "in").mkdir(parents=True)  # a copy keeps its input folder's name
    os.link(inputs / "a.png", tmp_path / "annot" / "in" / "a.png")
    res = invoke(main, inputs, "--out", tmp_path / "r.csv", "--model", "fast", "--detector", "none",
                 "--annotate", tmp_path / "annot", "--overwrite")
    assert res.exit_code == 0, res.output
    assert (inputs / "a.png").read_bytes() == before
    assert not os.path.samefile(inputs / "a.png", tmp_path / "annot" / "in" / "a.png")


def test_an_annotated_copy_never_leaves_its_folder_through_a_linked_folder(tmp_path):
    from fer_export.cli.batch import main

    inputs = _face_folder(tmp_path / "in", "sub/b.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "annot").mkdir()
    (tmp_path / "annot" / "in").symlink_to(elsewhere, target_is_directory=True)
    res = invoke(main, inputs, "--out", tmp_path / "r.csv", "--model", "fast", "--detector", "none",
                 "--annotate", tmp_path / "annot")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert list(elsewhere.iterdir()) == []


def test_decoders_own_log_lines_never_reach_the_console(tmp_path):
    """A truncated TIFF: OpenCV logs "[ERROR:0@0.2] global grfmt_tiff.cpp ..." and Pillow warns about its
    EXIF on fd 2; fer-batch says what went wrong in the input's error row instead."""
    from PIL import Image

    from conftest import run_without_torch

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)).save(
        folder / "whole.tif", compression="tiff_lzw")
    data = (folder / "whole.tif").read_bytes()
    (folder / "cut.tif").write_bytes(data[:len(data) // 2])
    out = tmp_path / "r.csv"
    r = run_without_torch("from fer_export.cli.batch import main; main()", str(folder), "--out", str(out),
                          "--model", "fast", "--detector", "none", "--provider", "cpu", "--no-progress")
    assert r.returncode == 1, r.stderr  # one input failed
    assert "[ERROR" not in r.stderr and "[ WARN" not in r.stderr and "EXIF" not in r.stderr, r.stderr
    rows = out.read_text().splitlines()
    assert any("cut.tif" in row and ",error," in row for row in rows), rows
