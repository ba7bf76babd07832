"""Distillation: the loss, the teacher's cached logits, teacher files, resume, the ensemble command.

Runs use tiny slices at 16 px in fp32 (see test_train.py); the model teacher is the bundled ONNX
(96 px, flip-TTA in its graph) or the conftest's 48 px checkpoint.
"""
from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from fer_export.errors import InputError
from fer_export.folders import labelled_images
from fer_export.model import read_checkpoint
from fer_export.preprocess import preprocess, read_gray
from fer_export.runtime import ACCURATE_FP32
from fer_export.spec import FER2013_LABELS, SEED_SPEC
from training import teacher as teacher_mod
from training.cli import main as fer_train
from training.config import make_config, with_overrides
from training.engine import distillation_loss, teacher_probs, training_loss
from training.teacher import main as teacher_cli
from training.teacher import read_logits, relative_paths, soft_targets, teacher_logits, write_logits
from training.train import main as train, resume_config

from conftest import TINY, tiny_checkpoint
from test_train import train_interrupted_at_epoch_2

SIZE = 16
STUDENT = SEED_SPEC.replace(input_size=[SIZE, SIZE])
T96 = SEED_SPEC.replace(input_size=[96, 96])  # a student at the bundled teacher's own size


def _items(fer2013, n):
    return labelled_images(fer2013 / "train", FER2013_LABELS, n, 0)


def _config(fer2013, out, teacher, **kw):
    """The seed recipe on the in-memory path at 16 px, fp32: seconds per run, deterministic."""
    kw = {"aug": "tensor", "img_size": SIZE, "limit_per_class": 4, "batch_size": 16, "epochs": 1, **kw}
    return make_config("seed", data=str(fer2013), out=str(out), teacher=teacher and str(teacher), progress=False,
                       **kw)


def _random_teacher(path, fer2013, n=None, seed=0, labels=FER2013_LABELS):
    """An .npz teacher with random logits over the n-per-class sample (default: the whole train split)."""
    items = _items(fer2013, n)
    logits = np.random.default_rng(seed).normal(0, 3, (len(items), 7)).astype(np.float32)
    return write_logits(path, logits, labels, relative_paths(items, fer2013 / "train")), items, logits


def _history(run_dir):
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


# ---- the loss -------------------------------------------------------------------------------------

def test_loss_equals_the_formula_on_known_tensors():
    s = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    t = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 1])
    alpha, temp, eps = 0.3, 2.0, 0.1
    crit = torch.nn.CrossEntropyLoss(label_smoothing=eps)

    def log_softmax(z):
        z = z.double().numpy()
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    log_p = log_softmax(s)
    ce = np.mean([-(1 - eps) * log_p[i, y[i]] - eps * log_p[i].mean() for i in range(2)])
    pt, log_q = np.exp(log_softmax(t / temp)), log_softmax(s / temp)
    kl = np.mean((pt * (np.log(pt) - log_q)).sum(1))
    expected = (1 - alpha) * ce + alpha * temp ** 2 * kl
    target = teacher_probs(t, temp)
    assert distillation_loss(s, target, temp).item() == pytest.approx(temp ** 2 * kl, rel=1e-5)
    assert training_loss(s, crit, y, y, 1.0, target, alpha, temp).item() == pytest.approx(expected, rel=1e-5)
    # a student that matches the teacher has no distillation loss
    assert distillation_loss(t, teacher_probs(t, temp), temp).item() == pytest.approx(0.0, abs=1e-6)


def test_alpha_zero_is_the_plain_loss_and_mixup_mixes_the_targets():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 7, generator=g), torch.randn(8, 7, generator=g)
    y_a, y_b = torch.randint(7, (8,), generator=g), torch.randint(7, (8,), generator=g)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    plain = training_loss(s, crit, y_a, y_b, 0.7)
    assert torch.equal(training_loss(s, crit, y_a, y_b, 0.7, teacher_probs(t, 4.0), 0.0, 4.0), plain)
    perm = torch.randperm(8, generator=g)
    mixed = teacher_probs(t, 3.0, 0.7, perm)
    p = F.softmax(t / 3.0, 1)
    assert torch.allclose(mixed, 0.7 * p + 0.3 * p[perm]) and torch.allclose(mixed.sum(1), torch.ones(8))


@pytest.mark.data
@pytest.mark.parametrize("aug", ["tensor", "seed"])
def test_alpha_zero_trains_exactly_as_without_teacher(fer2013, tmp_path, aug):
    npz, _, _ = _random_teacher(tmp_path / "t.npz", fer2013)
    runs = {name: train(_config(fer2013, tmp_path / name, npz, aug=aug, workers=0, **kw), log=lambda s: None)
            for name, kw in (("alpha0", {"kd_alpha": 0.0}), ("alpha1", {"kd_alpha": 1.0}))}
    plain = train(_config(fer2013, tmp_path / "plain", None, aug=aug, workers=0), log=lambda s: None)
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    rows = {name: _history(r.run_dir)[0] for name, r in {**runs, "plain": plain}.items()}
    assert [rows["alpha0"][k] for k in keys] == [rows["plain"][k] for k in keys]
    assert rows["alpha1"]["train_loss"] != rows["plain"]["train_loss"]  # the teacher is used


# ---- the teacher's logits and their cache -------------------------------------------------------

@pytest.mark.data
def test_onnx_teacher_sees_the_cached_images_and_is_cached(fer2013, tmp_path, monkeypatch):
    config = _config(fer2013, tmp_path / "run", ACCURATE_FP32, limit_per_class=2, img_size=96)
    items = _items(fer2013, 2)
    first = soft_targets(config, T96, items, tmp_path / "run", log=lambda s: None)
    assert first.computed_s is not None and first.logits.shape == (14, 7)
    # the same numbers as the runtime's own preprocessing and session give
    import onnxruntime as ort

    sess = ort.InferenceSession(str(ACCURATE_FP32), providers=["CPUExecutionProvider"])
    x = preprocess([read_gray(p) for p, _ in items], T96)
    np.testing.assert_allclose(first.logits.numpy(), sess.run(["logits"], {"input": x})[0], atol=1e-4)
    # the teacher's pixels are the data cache's own file (student and teacher both at 96 px)
    cache = sorted(p.name for p in (tmp_path / "run" / "cache").iterdir())
    assert len(cache) == 2 and cache[0].startswith("teacher_") and cache[1].startswith("train_96x96_")

    def no_recompute(*args, **kwargs):
        raise AssertionError("the teacher ran again")

    monkeypatch.setattr(teacher_mod, "teacher_logits", no_recompute)
    again = soft_targets(config, T96, items, tmp_path / "run", log=lambda s: None)
    assert again.computed_s is None and torch.equal(again.logits, first.logits)
    # another slice of the data is another key
    monkeypatch.undo()
    other = soft_targets(with_overrides(config, limit_per_class=1), T96, _items(fer2013, 1),
                         tmp_path / "run", log=lambda s: None)
    assert other.computed_s is not None and other.cache != first.cache


@pytest.mark.data
def test_another_teacher_invalidates_the_cache(fer2013, tmp_path):
    a, items, logits_a = _random_teacher(tmp_path / "a.npz", fer2013, seed=1)
    b, _, logits_b = _random_teacher(tmp_path / "b.npz", fer2013, seed=2)
    sub = _items(fer2013, 4)
    ta = soft_targets(_config(fer2013, tmp_path / "r", a), STUDENT, sub, tmp_path / "r", log=lambda s: None)
    tb = soft_targets(_config(fer2013, tmp_path / "r", b), STUDENT, sub, tmp_path / "r", log=lambda s: None)
    assert ta.cache != tb.cache and tb.computed_s is not None
    assert len(list((tmp_path / "r" / "cache").glob("teacher_*.npz"))) == 2
    # rows are matched by path: the 4-per-class slice picks its images' rows out of the whole-split file
    index = {p: i for i, p in enumerate(relative_paths(items, fer2013 / "train"))}
    rows = [index[p] for p in relative_paths(sub, fer2013 / "train")]
    np.testing.assert_array_equal(ta.logits.numpy(), logits_a[rows])
    np.testing.assert_array_equal(tb.logits.numpy(), logits_b[rows])


@pytest.mark.data
def test_pth_teacher_at_its_own_size(fer2013, tmp_path, tiny_ckpt):
    items = _items(fer2013, 2)
    got = teacher_logits(tiny_ckpt, items, fer2013 / "train", FER2013_LABELS)
    from fer_export.model import load_checkpoint

    model, spec = load_checkpoint(tiny_ckpt)
    with torch.inference_mode():
        want = model(torch.from_numpy(preprocess([read_gray(p) for p, _ in items], spec))).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


# ---- bad teachers ---------------------------------------------------------------------------------

BAD = {
    "junk.onnx": b"not a model",
    "junk.pth": b"not a checkpoint",
    "junk.npz": b"PK\x03\x04 truncated zip",
    "junk.npy": b"\x93NUMPY garbage",
}


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_teacher_file_is_a_one_line_input_error(fer2013, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD[name])
    with pytest.raises(InputError) as err:
        teacher_logits(path, _items(fer2013, 1), fer2013 / "train", FER2013_LABELS)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.data
def test_bad_teacher_arrays_are_refused(fer2013, tmp_path):
    items = _items(fer2013, 2)
    root = fer2013 / "train"
    np.save(tmp_path / "short.npy", np.zeros((len(items) - 1, 7), np.float32))
    np.savez(tmp_path / "nolabels.npz", logits=np.zeros((len(items), 7), np.float32))
    write_logits(tmp_path / "nan.npz", np.full((len(items), 7), np.nan), FER2013_LABELS, relative_paths(items, root))
    write_logits(tmp_path / "few.npz", np.zeros((7, 7)), FER2013_LABELS, relative_paths(items, root)[:7])
    for name, words in (("short.npy", ".npz"), ("nolabels.npz", "labels"), ("nan.npz", "NaN"),
                        ("few.npz", "7 of 14 training images")):
        with pytest.raises(InputError, match=words) as err:
            read_logits(tmp_path / name, items, root, FER2013_LABELS)
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value)
    np.save(tmp_path / "ok.npy", np.ones((len(items), 7), np.float32))  # a .npy in item order is fine
    assert read_logits(tmp_path / "ok.npy", items, root, FER2013_LABELS).shape == (14, 7)


@pytest.mark.data
def test_teacher_label_order_mismatch_is_refused(fer2013, tmp_path):
    swapped = ("disgust", "angry", *FER2013_LABELS[2:])
    npz, items, _ = _random_teacher(tmp_path / "swapped.npz", fer2013, n=2, labels=swapped)
    pth = tiny_checkpoint(tmp_path / "swapped.pth", seed=0, spec=TINY.replace(labels=swapped))
    for path in (npz, pth):
        with pytest.raises(InputError, match="order") as err:
            teacher_logits(path, items, fer2013 / "train", FER2013_LABELS)
        assert str(path) in str(err.value)
    other = tiny_checkpoint(tmp_path / "other.pth", seed=0, spec=TINY.replace(labels=("a", "b")))
    with pytest.raises(InputError, match="not the student's"):
        teacher_logits(other, items, fer2013 / "train", FER2013_LABELS)


def test_config_and_cli_validate_distillation_options(tmp_path):
    for kw, words in (({"kd_alpha": 1.5}, "kd_alpha"), ({"kd_temperature": 0}, "kd_temperature"),
                      ({"teacher": "t.txt"}, "teacher must be")):
        with pytest.raises(InputError, match=words):
            make_config("fast", **kw)
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "val").mkdir()
    (tmp_path / "t.onnx").write_bytes(b"x")
    res = CliRunner().invoke(fer_train, ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"),
                                         "--teacher", str(tmp_path / "t.onnx"), "--kd-alpha", "-0.1"])
    assert res.exit_code == 2 and "kd_alpha must be in [0, 1]" in res.output


# ---- a teacher on every augmented batch (--teacher-views augmented) ------------------------------

def test_augmented_teacher_averages_the_view_and_its_mirror_at_its_own_size(tiny_ckpt):
    from fer_export.model import load_checkpoint
    from training.augment import normalize

    config = make_config("fast", teacher=str(tiny_ckpt), teacher_views="augmented", bf16=False, channels_last=False)
    model, spec = load_checkpoint(tiny_ckpt)
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8))
    x = normalize(pixels, spec)  # a student at the teacher's size: the teacher sees x itself
    t = teacher_mod.AugmentedTeacher.load(config, spec, torch.device("cpu"))
    with torch.inference_mode():
        want = (model(x) + model(x.flip(3))) / 2
    torch.testing.assert_close(t(x), want, atol=1e-5, rtol=1e-5)
    assert t.sha256 == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()


def test_augmented_teacher_input_is_the_students_image_in_the_teachers_contract(tiny_ckpt):
    from training.augment import normalize

    config = make_config("fast", teacher=str(tiny_ckpt), teacher_views="augmented")
    student = SEED_SPEC.replace(input_size=[16, 16], mean=[0.2], std=[0.5])
    t = teacher_mod.AugmentedTeacher.load(config, student, torch.device("cpu"))
    gray = torch.full((2, 16, 16), 153, dtype=torch.uint8)  # 0.6 of white
    seen = t.inputs(normalize(gray, student))
    assert seen.shape == (2, 1, 48, 48)
    torch.testing.assert_close(seen, torch.full_like(seen, (0.6 - t.spec.mean[0]) / t.spec.std[0]))
    big = SEED_SPEC.replace(input_size=[96, 96])  # shrinking is antialiased: a 1-px checkerboard becomes flat gray
    board = ((torch.arange(96).view(-1, 1) + torch.arange(96)) % 2 * 255).to(torch.uint8).expand(1, 96, 96)
    seen = teacher_mod.AugmentedTeacher.load(config, big, torch.device("cpu")).inputs(normalize(board, big))
    inner = seen[..., 1:-1, 1:-1]  # the border pixels' kernels reach past the image
    torch.testing.assert_close(inner, torch.full_like(inner, (0.5 - t.spec.mean[0]) / t.spec.std[0]), atol=0.02, rtol=0)


@pytest.mark.data
def test_augmented_teacher_runs_on_each_training_batch_and_resumes(fer2013, tmp_path, monkeypatch, tiny_ckpt):
    seen, real_call = [], teacher_mod.AugmentedTeacher.__call__

    def record(self, x):
        seen.append(x.clone())
        return real_call(self, x)

    monkeypatch.setattr(teacher_mod.AugmentedTeacher, "__call__", record)
    config = _config(fer2013, tmp_path / "aug", tiny_ckpt, teacher_views="augmented", mixup=0.2, epochs=2,
                     kd_alpha=1.0)
    with monkeypatch.context() as m:
        m.setattr(teacher_mod, "teacher_logits", lambda *a, **k: pytest.fail("logits precomputed"))
        train(config, log=lambda s: None)
    steps = -(-28 // 16)  # 4 images of each of 7 classes, batches of 16
    assert len(seen) == 2 * steps and all(x.shape[1:] == (1, SIZE, SIZE) for x in seen)
    assert not torch.equal(seen[0], seen[steps])  # each epoch's batches are augmented anew
    last = read_checkpoint(tmp_path / "aug" / "last.pth")
    assert last["config"]["teacher_views"] == "augmented"
    assert last["teacher_sha256"] == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    plain = _history(tmp_path / "aug")
    train(with_overrides(config, out=str(tmp_path / "clean"), teacher_views="clean"), log=lambda s: None)
    assert plain[0]["train_loss"] != _history(tmp_path / "clean")[0]["train_loss"]  # another target
    other = tiny_checkpoint(tmp_path / "other.pth", seed=5)
    cut = with_overrides(config, out=str(tmp_path / "cut"), teacher=str(other))
    assert train_interrupted_at_epoch_2(monkeypatch, cut).interrupted
    tiny_checkpoint(other, seed=6)  # the teacher file changes
    with pytest.raises(InputError, match="changed since this run started"):
        train(resume_config(tmp_path / "cut"), log=lambda s: None)


def test_augmented_views_need_a_pth_teacher_and_the_tensor_path():
    for kw, words in (({"teacher": "t.onnx"}, "must be a .pth"), ({"teacher": "t.npz"}, "must be a .pth"),
                      ({"teacher": "t.pth", "aug": "seed"}, "needs --aug tensor"), ({}, "give the teacher")):
        with pytest.raises(InputError, match=words):
            make_config("fast", teacher_views="augmented", **kw)
    with pytest.raises(InputError, match="teacher_views must be one of"):
        make_config("fast", teacher_views="mirrored")


# ---- runs ---------------------------------------------------------------------------------------

@pytest.mark.data
def test_cli_distils_and_resumes_with_the_cached_teacher(fer2013, tmp_path, monkeypatch):
    npz, _, _ = _random_teacher(tmp_path / "t.npz", fer2013)
    config = _config(fer2013, tmp_path / "straight", npz, epochs=2, mixup=0.2)
    train(config, log=lambda s: None)

    assert train_interrupted_at_epoch_2(monkeypatch, with_overrides(config, out=str(tmp_path / "cut"))).interrupted
    last = read_checkpoint(tmp_path / "cut" / "last.pth")  # weights_only=True
    assert last["config"]["teacher"] == str(npz)
    assert last["teacher_sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()

    monkeypatch.setattr(teacher_mod, "teacher_logits", lambda *a, **k: pytest.fail("the teacher ran again"))
    res = CliRunner().invoke(fer_train, ["--resume", str(tmp_path / "cut")])
    assert res.exit_code == 0, res.output
    assert "distilling (alpha 0.5, T 4)" in res.output and "logits read from" in res.output
    a, b = _history(tmp_path / "straight"), _history(tmp_path / "cut")
    for key in ("train_loss", "val_loss", "val_acc"):
        assert [float(r[key]) for r in b] == pytest.approx([float(r[key]) for r in a], rel=1e-5), key

    write_logits(npz, np.zeros((70, 7)), FER2013_LABELS, [f"x{i}" for i in range(70)])  # the teacher changes
    with pytest.raises(InputError, match="changed since this run started"):
        train(resume_config(tmp_path / "cut", epochs=2), log=lambda s: None)


@pytest.mark.data
def test_cli_bad_teacher_exits_2_naming_the_file(fer2013, tmp_path):
    bad = tmp_path / "teacher.onnx"
    bad.write_bytes(b"not a model")
    res = CliRunner().invoke(fer_train, ["--data", str(fer2013), "--out", str(tmp_path / "r"), "--teacher", str(bad),
                                         "--limit-per-class", "1", "--img-size", str(SIZE), "--aug", "tensor",
                                         "--no-progress"])
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]
    assert res.exit_code == 2 and len(errors) == 1 and str(bad) in errors[0] and "teacher" in errors[0], res.output


@pytest.mark.data
def test_ensemble_command_writes_the_mean_logits(fer2013, tmp_path, tiny_ckpt):
    out = tmp_path / "ensemble.npz"
    res = CliRunner().invoke(teacher_cli, [str(ACCURATE_FP32), str(tiny_ckpt), "--data", str(fer2013), "--out",
                                           str(out), "--limit-per-class", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "mean of the logits: train top-1" in res.output
    items, root = _items(fer2013, 2), fer2013 / "train"
    members = [teacher_logits(t, items, root, FER2013_LABELS) for t in (ACCURATE_FP32, tiny_ckpt)]
    np.testing.assert_allclose(read_logits(out, items, root, FER2013_LABELS), (members[0] + members[1]) / 2,
                               atol=1e-5)
    # the written file is a teacher fer-train takes
    res = CliRunner().invoke(fer_train, ["--data", str(fer2013), "--out", str(tmp_path / "r"), "--teacher", str(out),
                                         "--limit-per-class", "2", "--img-size", str(SIZE), "--aug", "tensor",
                                         "--epochs", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(teacher_cli, [str(ACCURATE_FP32), "--data", str(fer2013), "--out",
                                           str(tmp_path / "x.npy")])
    assert res.exit_code == 2 and ".npz" in res.output
