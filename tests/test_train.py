"""fer-train: smoke runs on both data paths, exact resume, artifacts, CLI errors (tiny slices, 16 px)."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from fer_export.errors import InputError
from fer_export.model import load_checkpoint, read_checkpoint
from fer_export.spec import SEED_SPEC
from training import train as train_mod
from training.augment import BatchAugment
from training.cli import main as fer_train
from training.config import make_config, with_overrides
from training.engine import param_groups
from training.train import main as train, resume_config

from conftest import ROOT

ARTIFACTS = ("best_model.pth", "last.pth", "history.csv", "training_history.png", "confusion_matrix.png",
             "classification_report.txt", "metrics.json")
SIZE = 16  # the smallest input a spec allows: keeps these runs to seconds on two CPU cores
TINY = ["--limit-per-class", "10", "--img-size", str(SIZE), "--no-progress"]
# bf16 runs (the fast recipe) use 48 px: at 16 px ResNet18's last stages are 1x1, where oneDNN's bf16
# kernels on this CPU gave run-to-run differences (once a NaN loss) that fp32 and >= 48 px do not show.
BF16_SIZE = 48


def _history(run_dir):
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def _check_run(run_dir, epochs, arch, size):
    for name in ARTIFACTS:
        assert (run_dir / name).stat().st_size > 0, name
    for png in ("training_history.png", "confusion_matrix.png"):
        assert (run_dir / png).read_bytes()[:4] == b"\x89PNG"
    rows = _history(run_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == epochs and 1 <= metrics["best_epoch"] <= epochs
    assert set(metrics["per_class"]) == {"angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"}
    assert metrics["throughput"]["train_images_per_s"] > 0
    assert "weighted avg" in (run_dir / "classification_report.txt").read_text()
    model, spec = load_checkpoint(run_dir / "best_model.pth")
    assert spec.arch == arch and spec.input_size == (size, size)
    assert model(torch.zeros(1, 1, size, size)).shape == (1, 7)
    last = read_checkpoint(run_dir / "last.pth")  # weights_only=True
    assert last["epoch"] == epochs and last["config"]["arch"] == arch
    return metrics


@pytest.mark.data
def test_seed_recipe_smoke(fer2013, tmp_path):
    out = tmp_path / "seed"
    res = CliRunner().invoke(fer_train, ["--data", str(fer2013), "--out", str(out), "--epochs", "1",
                                         "--workers", "0", *TINY])
    assert res.exit_code == 0, res.output
    assert "epoch 1/1" in res.output and "img/s" in res.output
    metrics = _check_run(out, 1, "resnet18", SIZE)
    assert metrics["config"]["aug"] == "seed" and metrics["config"]["optimizer"] == "adamw"


@pytest.mark.data
def test_fast_recipe_smoke(fer2013, tmp_path):
    out = tmp_path / "fast"
    res = CliRunner().invoke(fer_train, ["--recipe", "fast", "--data", str(fer2013), "--out", str(out),
                                         "--epochs", "2", "--mixup", "0.2", "--degrade", "0.5", "--framed", "0.5",
                                         "--framed-views", "1", "--framing", str(ROOT / "docs" / "model_card" / "framing.json"),
                                         *TINY, "--img-size", str(BF16_SIZE)])
    assert res.exit_code == 0, res.output
    assert "flip TTA" in res.output and "framing 1 view(s) of 70 training faces" in res.output
    metrics = _check_run(out, 2, "resnet18", BF16_SIZE)
    assert metrics["best_val_acc_tta"] is not None
    assert len(list((out / "cache").glob("*.npy"))) == 3  # train, val and the framed views


def train_interrupted_at_epoch_2(monkeypatch, config):
    """``train(config)`` as if Ctrl-C came during epoch 2; the patch is undone afterwards."""
    real_run_epoch = train_mod.run_epoch

    def interrupt_epoch_2(epoch, *args, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_run_epoch(epoch, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "run_epoch", interrupt_epoch_2)
        return train(config, log=lambda s: None)


@pytest.mark.data
def test_interrupt_and_resume_continue_exactly(fer2013, tmp_path, monkeypatch):
    config = make_config("fast", data=str(fer2013), epochs=2, limit_per_class=5, img_size=BF16_SIZE, batch_size=16,
                         progress=False)  # 3 steps per epoch: the one-cycle position must carry over
    straight = train(with_overrides(config, out=str(tmp_path / "straight")), log=lambda s: None)

    cut = train_interrupted_at_epoch_2(monkeypatch, with_overrides(config, out=str(tmp_path / "cut")))
    assert cut.interrupted and read_checkpoint(tmp_path / "cut" / "last.pth")["epoch"] == 1

    resumed = train(resume_config(tmp_path / "cut"), log=lambda s: None)
    assert not resumed.interrupted
    a, b = _history(tmp_path / "straight"), _history(tmp_path / "cut")
    assert len(b) == 2
    for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr_fc"):
        assert [float(r[key]) for r in b] == pytest.approx([float(r[key]) for r in a], rel=1e-5), key
    assert resumed.metrics["best_val_acc"] == pytest.approx(straight.metrics["best_val_acc"])


@pytest.mark.data
def test_swa_averages_the_last_epochs_and_survives_resume(fer2013, tmp_path, monkeypatch):
    config = make_config("fast", data=str(fer2013), epochs=3, swa=2, schedule="constant", lr=0.01, limit_per_class=5,
                         img_size=BF16_SIZE, batch_size=16, progress=False)  # 3 steps per epoch
    weights, real_run_epoch = {}, train_mod.run_epoch

    def keep_weights(epoch, model, *args, **kwargs):
        row = real_run_epoch(epoch, model, *args, **kwargs)
        weights[epoch] = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
        return row

    with monkeypatch.context() as m:
        m.setattr(train_mod, "run_epoch", keep_weights)
        straight = train(with_overrides(config, out=str(tmp_path / "straight")), log=lambda s: None)
    assert [float(r["lr_fc"]) for r in _history(tmp_path / "straight")] == [0.01] * 3
    averaged = read_checkpoint(tmp_path / "straight" / "swa_model.pth")
    assert averaged["swa_epochs"] == [2, 3] and straight.metrics["swa_epochs"] == [2, 3]
    assert 0 <= straight.metrics["swa_val_acc"] <= 1 and straight.metrics["swa_val_acc_tta"] is not None
    state = averaged["model_state_dict"]
    for name in ("conv1.weight", "layer3.0.conv1.weight", "fc.1.weight", "bn1.weight"):
        assert torch.allclose(state[name], (weights[2][name] + weights[3][name]) / 2, atol=1e-6), name
        assert not torch.allclose(state[name], weights[3][name]), name
    # BatchNorm statistics come from one pass over the training images with the averaged weights
    assert int(state["bn1.num_batches_tracked"]) == 3 and int(weights[3]["bn1.num_batches_tracked"]) == 9
    assert not torch.allclose(state["bn1.running_mean"], (weights[2]["bn1.running_mean"] +
                                                          weights[3]["bn1.running_mean"]) / 2)
    with pytest.raises(InputError, match="last 2 of 3 epochs"):
        resume_config(tmp_path / "straight", epochs=4)
    model, spec = load_checkpoint(tmp_path / "straight" / "swa_model.pth")
    assert model(torch.zeros(1, 1, BF16_SIZE, BF16_SIZE)).shape == (1, 7)

    cut = train_interrupted_at_epoch_2(monkeypatch, with_overrides(config, out=str(tmp_path / "cut"), epochs=3))
    assert cut.interrupted and not (tmp_path / "cut" / "swa_model.pth").exists()
    with monkeypatch.context() as m:  # interrupted in epoch 3, after epoch 2 joined the average
        m.setattr(train_mod, "run_epoch", lambda epoch, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt)
                  if epoch == 3 else real_run_epoch(epoch, *a, **k))
        cut = train(resume_config(tmp_path / "cut"), log=lambda s: None)
    assert cut.interrupted and read_checkpoint(tmp_path / "cut" / "last.pth")["swa_count"] == 1
    resumed = train(resume_config(tmp_path / "cut"), log=lambda s: None)
    again = read_checkpoint(tmp_path / "cut" / "swa_model.pth")["model_state_dict"]
    for name, value in state.items():
        assert torch.allclose(again[name].float(), value.float(), rtol=1e-4, atol=1e-5), name
    assert resumed.metrics["swa_val_acc"] == pytest.approx(straight.metrics["swa_val_acc"])


@pytest.mark.data
def test_resume_cli_extends_plateau_run(fer2013, tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(fer_train, ["--data", str(fer2013), "--out", str(out), "--epochs", "1", "--aug", "tensor",
                                    "--arch", "resnet18_s1", *TINY])
    assert res.exit_code == 0, res.output
    again = runner.invoke(fer_train, ["--data", str(fer2013), "--out", str(out), *TINY])
    assert again.exit_code == 2 and "--resume" in again.output
    res = runner.invoke(fer_train, ["--resume", str(out), "--epochs", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output and "\nepoch 2/2 " in res.output and "\nepoch 1/2 " not in res.output
    assert [r["epoch"] for r in _history(out)] == ["1", "2"]
    assert read_checkpoint(out / "last.pth")["scheduler_state_dict"]["last_epoch"] == 2


def test_cli_errors_exit_2(tmp_path):
    runner = CliRunner()
    missing = tmp_path / "no-such-data"
    res = runner.invoke(fer_train, ["--data", str(missing), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and str(missing) in res.output
    (tmp_path / "d" / "train").mkdir(parents=True)
    res = runner.invoke(fer_train, ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and str(tmp_path / "d" / "val") in res.output and "--val" in res.output
    res = runner.invoke(fer_train, ["--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--data" in res.output
    res = runner.invoke(fer_train, ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--epochs", "0"])
    assert res.exit_code == 2 and "epochs must be at least 1" in res.output
    res = runner.invoke(fer_train, ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--epochs", "2",
                                    "--swa", "3"])
    assert res.exit_code == 2 and "swa must be between 0 and epochs (2), got 3" in res.output
    res = runner.invoke(fer_train, ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--degrade", "0.3"])
    assert res.exit_code == 2 and "--aug tensor" in res.output


def test_param_groups_follow_seed_multipliers():
    from fer_export.model import build_model, freeze

    model = build_model()
    groups = {g["name"]: g["lr"] for g in param_groups(model, 1e-3, "seed")}
    assert groups == pytest.approx({"stem": 1e-4, "layer1": 1e-4, "layer2": 1e-4, "layer3": 3e-4,
                                    "layer4": 5e-4, "fc": 1e-3})
    freeze(model, "seed")
    assert [g["name"] for g in param_groups(model, 1e-3, "seed")] == ["layer3", "layer4", "fc"]
    assert make_config("seed", weights="imagenet").resolved_freeze == "seed"
    assert make_config("seed").resolved_freeze == "none"


def test_batch_augment_is_seeded_and_keeps_shape():
    x = torch.randint(0, 256, (8, 32, 32), dtype=torch.uint8)
    spec = SEED_SPEC.replace(arch="resnet18_s1", input_size=[32, 32])
    a = BatchAugment()(x, spec, torch.Generator().manual_seed(1))
    b = BatchAugment()(x, spec, torch.Generator().manual_seed(1))
    c = BatchAugment()(x, spec, torch.Generator().manual_seed(2))
    assert a.shape == (8, 1, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_degrade_resamples_only_the_chosen_faces_and_removes_detail():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 48, 48)
    out = BatchAugment(degrade=0.5).resample(x, torch.Generator().manual_seed(3))
    changed = (out - x).abs().flatten(1).amax(1) > 1e-6
    assert 16 < int(changed.sum()) < 48  # about half, drawn per face
    assert torch.equal(out[~changed], x[~changed])
    # random pixels are all fine detail: resampling down and up again removes most of their variance
    assert out[changed].var() < 0.6 * x[changed].var()
    assert torch.allclose(out[changed].mean(), x[changed].mean(), atol=0.01)
    assert torch.equal(BatchAugment(degrade=0.0)(x[:, 0].mul(255).byte(), SEED_SPEC.replace(input_size=[48, 48]),
                                                 torch.Generator().manual_seed(1)),
                       BatchAugment()(x[:, 0].mul(255).byte(), SEED_SPEC.replace(input_size=[48, 48]),
                                      torch.Generator().manual_seed(1)))



@pytest.mark.data
@pytest.mark.parametrize("arch, stem, features, blocks", [("resnet18_half", 32, 256, 2), ("resnet10", 64, 512, 1)])
def test_slim_networks_train_export_and_run(fer2013, tmp_path, arch, stem, features, blocks):
    """The half-width and the one-block-per-stage networks go through fer-train, the ONNX export gate
    and the runtime."""
    import numpy as np

    from fer_export.export import export
    from fer_export.model import build_model
    from fer_export.runtime import EmotionClassifier

    out = tmp_path / arch
    res = CliRunner().invoke(fer_train, ["--data", str(fer2013), "--out", str(out), "--epochs", "1", "--aug", "tensor",
                                         "--arch", arch, *TINY, "--img-size", "48"])
    assert res.exit_code == 0, res.output
    model, spec = load_checkpoint(out / "best_model.pth")
    assert spec.arch == arch and model.conv1.out_channels == stem and model.fc[1].in_features == features
    assert all(len(getattr(model, f"layer{i}")) == blocks for i in range(1, 5))
    result = export("onnx", out / "best_model.pth", tta="hflip")
    assert result.passed
    probs = EmotionClassifier(result.path, provider="cpu").predict(np.zeros((2, 60, 50), np.uint8))
    assert probs.shape == (2, 7)
    with pytest.raises(Exception, match="no ImageNet weights"):
        build_model(spec, weights="imagenet")


def _tiny_dataset(root, per_class=(6, 3)):
    """DATA/train and DATA/val with ``per_class`` random 16 px faces of each label."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for label in SEED_SPEC.labels:
            (root / split / label).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / split / label / f"{i}.png")
    return root


def test_holdout_split_is_stratified_disjoint_and_seeded():
    from training.data import holdout_split

    items = [(f"{c}/{i}.png", c) for c in range(3) for i in range((c + 1) * 10)] + [("lone.png", 3)]
    kept, held = holdout_split(items, 0.2, seed=1)
    assert sorted(kept + held) == sorted(items) and not set(kept) & set(held)
    assert [sum(1 for _, c in held if c == k) for k in range(4)] == [2, 4, 6, 0]  # a lone face is never held out
    assert holdout_split(items, 0.2, seed=1) == (kept, held)
    assert holdout_split(items, 0.2, seed=2)[1] != held
    assert kept == [it for it in items if it in kept]  # order kept


def test_final_fit_trains_on_val_and_validates_on_a_train_holdout(tmp_path):
    from training.data import items_root, load_items
    from training.teacher import relative_paths

    data = _tiny_dataset(tmp_path / "data")
    config = make_config("fast", data=str(data), out=str(tmp_path / "run"), train_on="train+val", holdout=0.34,
                         img_size=SIZE, epochs=1, progress=False, batch_size=7)
    train_items, val_items = load_items(config, SEED_SPEC.labels)
    assert len(val_items) == 7 * 2 and all("/train/" in str(p) for p, _ in val_items)
    assert len(train_items) == 7 * (6 - 2 + 3) and not set(train_items) & set(val_items)
    assert sum("/val/" in str(p) for p, _ in train_items) == 7 * 3
    assert relative_paths(train_items, items_root(config))[0].startswith("train/")
    twin = with_overrides(config, train_on="train")
    assert len(load_items(twin, SEED_SPEC.labels)[0]) == 7 * 4 and load_items(twin, SEED_SPEC.labels)[1] == val_items
    result = train(config, log=lambda _: None)
    assert result.metrics["data"] == {"train_on": "train+val", "train_images": 49, "val_images": 14,
                                      "validated_on": "0.34 of train, held out"}


@pytest.mark.parametrize("overrides, message", [
    ({"train_on": "train+val"}, "give --holdout"),
    ({"holdout": 0.7}, "holdout must be a share"),
    ({"holdout": float("nan")}, "holdout must be a finite number"),
    ({"train_on": "everything"}, "train_on must be one of"),
])
def test_data_protocol_errors(overrides, message):
    with pytest.raises(InputError, match=message):
        make_config("fast", data="d", out="o", **overrides)


def test_bf16_auto_follows_the_device():
    from fer_export.cpu import cpu_info
    from training.train import resolve_bf16

    cpu = torch.device("cpu")
    assert resolve_bf16(True, cpu) is True and resolve_bf16(False, cpu) is False
    assert resolve_bf16(None, cpu) == cpu_info().bf16
    assert make_config("fast").bf16 is None and make_config("seed").bf16 is False
