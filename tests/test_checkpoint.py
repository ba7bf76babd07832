"""load_checkpoint accepts every checkpoint shape users have, and explains every one it refuses."""
import collections

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet34

from fer_export.errors import CheckpointError
from fer_export.model import build_model, freeze, load_checkpoint, save_checkpoint
from fer_export.spec import SEED_SPEC, ModelSpec


def seed_model(num_classes=7):
    """Built exactly as the seed recipe builds it (random init: no ImageNet download here)."""
    model = resnet18(weights=None)
    w = model.conv1.weight.data.mean(dim=1, keepdim=True)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.conv1.weight.data = w
    for name, p in model.named_parameters():
        p.requires_grad = any(k in name for k in ("layer3", "layer4", "fc"))
    model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, num_classes))
    return model


@pytest.fixture(scope="module")
def seed():
    torch.manual_seed(0)
    return seed_model().eval()


def outputs(model, size=64):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.randn(2, 1, size, size))


def seed_format(model):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return {"model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(), "epoch": 7}


SHAPES = {
    "seed": seed_format,
    "bare": lambda m: m.state_dict(),
    "dataparallel": lambda m: collections.OrderedDict(("module." + k, v) for k, v in m.state_dict().items()),
    "dataparallel_in_seed_dict": lambda m: {"model_state_dict": {"module." + k: v for k, v in m.state_dict().items()}},
    "compiled": lambda m: {"state_dict": {"_orig_mod." + k: v for k, v in m.state_dict().items()}},
    "half": lambda m: {"model_state_dict": {k: v.half() if v.is_floating_point() else v
                                            for k, v in m.state_dict().items()}},
    "no_bn_counters": lambda m: {k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")},
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_loads_every_checkpoint_shape(tmp_path, seed, shape):
    path = tmp_path / f"{shape}.pth"
    torch.save(SHAPES[shape](seed), path)
    model, spec = load_checkpoint(path)
    assert spec == SEED_SPEC
    assert not model.training
    exact = shape != "half"  # fp16 weights are rounded copies of the seed's
    torch.testing.assert_close(outputs(model), outputs(seed), rtol=0 if exact else 1e-2, atol=0 if exact else 1e-2)


def test_plain_linear_head_is_accepted(tmp_path, seed):
    state = {k.replace("fc.1.", "fc."): v for k, v in seed.state_dict().items()}
    torch.save(state, tmp_path / "linear_head.pth")
    model, _ = load_checkpoint(tmp_path / "linear_head.pth")
    torch.testing.assert_close(outputs(model), outputs(seed), rtol=0, atol=0)


def test_own_checkpoint_carries_its_spec(tmp_path):
    spec = ModelSpec(arch="resnet18_s1", input_size=(48, 48), labels=("neg", "neu", "pos"))
    torch.manual_seed(0)
    model = build_model(spec).eval()
    save_checkpoint(tmp_path / "ours.pth", model, spec, epoch=3, metrics={"val_acc": 0.5})
    raw = torch.load(tmp_path / "ours.pth", weights_only=True)
    assert raw["epoch"] == 3 and raw["spec"]["input_size"] == [48, 48]
    loaded, loaded_spec = load_checkpoint(tmp_path / "ours.pth")
    assert loaded_spec == spec
    torch.testing.assert_close(outputs(loaded, 48), outputs(model, 48), rtol=0, atol=0)


def test_small_stem_is_recognised_without_spec(tmp_path):
    model = build_model(SEED_SPEC.replace(arch="resnet18_s1"))
    torch.save({"model_state_dict": model.state_dict()}, tmp_path / "s1.pth")
    _, spec = load_checkpoint(tmp_path / "s1.pth")
    assert spec.arch == "resnet18_s1"


def test_seed_freezing_policy():
    model = build_model(SEED_SPEC)
    trainable = freeze(model, "seed")
    assert trainable and all(any(k in n for k in ("layer3", "layer4", "fc")) for n in trainable)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(trainable)
    assert "fc.1.weight" in trainable and "conv1.weight" not in trainable
    assert len(freeze(model, "none")) == len(list(model.parameters()))


class Unsafe:
    pass


def _write(tmp_path, name, fill):
    path = tmp_path / name
    fill(path)
    return path


BAD = {
    "missing": (lambda p: None, "no such checkpoint"),
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "text": (lambda p: p.write_text("hello, I am not a checkpoint\n"), "not a readable PyTorch checkpoint"),
    "truncated": (lambda p: (torch.save(seed_format(seed_model()), p),
                             p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
                  "not a readable PyTorch checkpoint"),
    "pickled_object": (lambda p: torch.save({"model_state_dict": seed_model().state_dict(), "cfg": Unsafe()}, p),
                       "refused to load"),
    "ten_classes": (lambda p: torch.save({"model_state_dict": seed_model(10).state_dict()}, p),
                    "10 outputs, expected 7"),
    "resnet34": (lambda p: torch.save(_gray(resnet34()).state_dict(), p), "missing keys|unexpected keys"),
    "rgb_stem": (lambda p: torch.save({k: v for k, v in resnet18().state_dict().items()}, p), "3 input channels"),
    "no_weights": (lambda p: torch.save({"epoch": 3, "note": "hi"}, p), "no model weights found"),
    "list": (lambda p: torch.save([1, 2, 3], p), "holds a list"),
    "bad_spec": (lambda p: torch.save({"model_state_dict": seed_model().state_dict(), "spec": {"arch": "vgg"}}, p),
                 "embedded spec is invalid"),
}


def _gray(model):
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(512, 7))
    return model


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_checkpoints_raise_typed_errors_naming_the_file(tmp_path, case):
    fill, message = BAD[case]
    path = _write(tmp_path, f"{case}.pth", fill)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
