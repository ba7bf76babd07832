"""Networks and checkpoints (needs torch: ``pip install 'fer-export[train]'``).

``load_checkpoint(path) -> (model, spec)`` accepts what users really have: the seed's
``{'model_state_dict': ..., 'optimizer_state_dict': ..., 'epoch': ...}``, a bare state dict,
DataParallel's ``module.`` prefix, ``torch.compile``'s ``_orig_mod.`` prefix and this toolkit's own
checkpoints (which carry a spec). Files are read with ``torch.load(weights_only=True)``: no pickled
Python objects are ever executed.
"""
from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .errors import CheckpointError, SpecError
from .outputs import write_file
from .spec import ARCHITECTURES, SEED_SPEC, ModelSpec

#: What ``--weights`` accepts besides a path.
WEIGHT_CHOICES = ("imagenet", "none")
#: Checkpoint keys that may hold the state dict, in the order they are tried.
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model", "ema_state_dict")
_PREFIXES = ("module.", "_orig_mod.")


def build_model(spec: ModelSpec = SEED_SPEC, weights: str = "none") -> nn.Module:
    """Build the network for ``spec``.

    ``weights="imagenet"`` starts from torchvision's IMAGENET1K_V1 weights (torchvision's own cache;
    downloads only if the user is online and it is not cached), with the 1-channel stem set to the
    mean of the RGB filters, as the seed recipe does. ``"none"`` is a random initialisation.
    """
    from torchvision.models import ResNet18_Weights, resnet18

    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    if spec.arch not in ARCHITECTURES:
        raise SpecError(f"cannot build architecture {spec.arch!r}")
    if spec.arch in _SLIM:
        if weights == "imagenet":
            raise SpecError(f"{spec.arch} has no ImageNet weights (its layers differ from ResNet18's); use weights 'none'")
        return _slim_resnet(spec, *_SLIM[spec.arch])
    model = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if weights == "imagenet" else None)
    rgb = model.conv1.weight.data
    if spec.arch == "resnet18":
        model.conv1 = nn.Conv2d(spec.channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if weights == "imagenet":
            model.conv1.weight.data = _adapt_stem(rgb, spec.channels)
    else:  # resnet18_s1: small inputs keep their resolution through the stem
        model.conv1 = nn.Conv2d(spec.channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
        if weights == "imagenet":
            model.conv1.weight.data = _adapt_stem(rgb[:, :, 2:5, 2:5], spec.channels)
    model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(model.fc.in_features, spec.num_classes))
    return model


#: Networks with the seed's stem (7x7 stride-2 convolution, max-pool) and torchvision's module names, so
#: that checkpoints, freezing and per-stage learning rates treat them like ResNet18: (widths, blocks per stage).
_SLIM = {"resnet18_half": ((32, 64, 128, 256), 2), "resnet10": ((64, 128, 256, 512), 1)}


def _slim_resnet(spec: ModelSpec, widths: tuple[int, ...], blocks: int) -> nn.Module:
    """The seed's ResNet18 with other stage widths or fewer blocks per stage."""
    from torchvision.models import resnet18
    from torchvision.models.resnet import BasicBlock

    model = resnet18()
    model.inplanes = widths[0]
    model.conv1 = nn.Conv2d(spec.channels, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(widths[0])
    for i, width in enumerate(widths):
        setattr(model, f"layer{i + 1}", model._make_layer(BasicBlock, width, blocks, stride=1 if i == 0 else 2))
    model.fc = nn.Sequential(nn.Dropout(0.5), nn.Linear(widths[-1], spec.num_classes))
    for m in model.modules():  # torchvision's initialisation, which _make_layer's fresh modules lack
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _adapt_stem(rgb: torch.Tensor, channels: int) -> torch.Tensor:
    if channels == 3:
        return rgb.clone()
    return rgb.mean(dim=1, keepdim=True)


def freeze(model: nn.Module, mode: str) -> list[str]:
    """Apply a freezing policy; return the names of trainable parameters.

    ``seed``: only parameters whose names contain ``layer3``, ``layer4`` or ``fc`` train (the seed
    recipe, meant for ImageNet initialisation). ``none``: everything trains.
    """
    if mode not in ("seed", "none"):
        raise ValueError(f"freeze must be 'seed' or 'none', got {mode!r}")
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad = mode == "none" or any(k in name for k in ("layer3", "layer4", "fc"))
        if p.requires_grad:
            trainable.append(name)
    return trainable


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | Path, model: nn.Module, spec: ModelSpec, **extra: Any) -> Path:
    """Write ``{'model_state_dict', 'spec', **extra}`` atomically (temp file + rename).

    The layout is the seed's plus a ``spec`` dict, so the seed's own loading code still reads it.
    ``extra`` must hold only tensors and plain Python values (loadable with ``weights_only=True``).
    The file is serialised in memory and written with Python's own IO: on a full disk torch's writer
    raises an opaque RuntimeError, this an :class:`~fer_export.errors.OutputError` naming the file, and
    the previous file is kept.
    """
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    payload = {"model_state_dict": state, "spec": spec.to_dict(), **extra}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_file(path, buffer.getbuffer())


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with every failure turned into a CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; pass the .pth file inside it (e.g. {path}/best_model.pth)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty (0 bytes); the save was interrupted — use another checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_other_file(path) or (
            f"{path}: refused to load: it contains pickled Python objects that are not plain tensors or "
            f"containers, and loading it would run arbitrary code. Re-save just the weights, e.g. "
            f"torch.save({{'model_state_dict': model.state_dict()}}, path). ({_unpickler_detail(exc)})")
        ) from exc
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError, BadZipFile... on junk
        detail = _first_line(exc)
        raise CheckpointError(_other_file(path) or (
            f"{path}: not a readable PyTorch checkpoint (truncated or not a torch.save file)"
            + ("" if "weights_only" in detail else f": {detail}"))
        ) from exc
    if isinstance(obj, Mapping):
        return dict(obj)
    raise CheckpointError(
        f"{path}: holds a {type(obj).__name__}, expected a dict (a state dict or "
        f"{{'model_state_dict': ...}})"
    )


def _unpickler_detail(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused (``Unsupported global: GLOBAL numpy...``), without its
    advice to load with ``weights_only=False``, which is exactly what must not be done with such a file."""
    import re

    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\s+was not an allowed global|\n\n|$)", str(exc), re.S)
    return " ".join(m.group(1).split()) if m else "unsupported content"


def _other_file(path: Path) -> str | None:
    """The error for a file that is clearly no checkpoint but another kind (an ONNX model, a TorchScript
    archive, text), saying what it is and what to pass instead; None when it is not recognised."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        try:
            names = zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError):
            return None
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return (f"{path}: not a readable PyTorch checkpoint: it is a TorchScript file (torch.jit.save); pass the .pth checkpoint "
                    f"it was exported from, or evaluate it as it is with fer-eval under a .pt name")
        return None
    if head[:1] == b"\x08" and _is_onnx(path):
        return (f"{path}: not a readable PyTorch checkpoint: it is an ONNX model; pass the .pth checkpoint it was exported "
                f"from, or use it as it is under an .onnx name (fer-eval, fer-batch, EmotionClassifier)")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.strip() and "\x00" not in text:
        kind = "JSON" if text.lstrip()[:1] in "{[" else "text"
        first = " ".join(text.split())[:40]
        return (f"{path}: not a readable PyTorch checkpoint: it is a {kind} file (it starts with {first!r}); pass "
                f"the .pth file that torch.save wrote")
    return None


def _is_onnx(path: Path) -> bool:
    try:
        import onnx

        return len(onnx.load_model(str(path), load_external_data=False).graph.node) > 0
    except Exception:  # not installed, or not an ONNX file: protobuf raises DecodeError and others
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def extract_state_dict(ckpt: Mapping[str, Any], path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Find the model weights in a loaded checkpoint and strip wrapper prefixes."""
    state = None
    for key in STATE_DICT_KEYS:
        if isinstance(ckpt.get(key), Mapping):
            state = ckpt[key]
            break
    if state is None and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state = ckpt
    if state is None:
        raise CheckpointError(
            f"{path}: no model weights found; expected a state dict or one of the keys "
            f"{list(STATE_DICT_KEYS)}, found keys {sorted(map(repr, ckpt))[:10]}"
        )
    out = {}
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):  # a state dict is named tensors
            continue
        for prefix in _PREFIXES:
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    if "fc.weight" in out and "fc.1.weight" not in out:  # a plain Linear head: same weights
        out["fc.1.weight"] = out.pop("fc.weight")
        out["fc.1.bias"] = out.pop("fc.bias")
    return out


def infer_spec(state: Mapping[str, torch.Tensor], path: str | Path = "<checkpoint>") -> ModelSpec:
    """The spec of a checkpoint that carries none: the seed's, with the stem read off the weights."""
    conv1 = state.get("conv1.weight")
    if conv1 is None or conv1.ndim != 4:
        raise CheckpointError(
            f"{path}: not a ResNet18 checkpoint: no 'conv1.weight' (found keys {sorted(state)[:8]}...)"
        )
    arch = {7: "resnet18", 3: "resnet18_s1"}.get(conv1.shape[-1])
    if arch is None:
        raise CheckpointError(f"{path}: unknown stem: conv1 has a {tuple(conv1.shape[-2:])} kernel, expected 7x7 or 3x3")
    if conv1.shape[1] != 1:
        raise CheckpointError(
            f"{path}: conv1 takes {conv1.shape[1]} input channels; without an embedded spec a checkpoint "
            f"is taken to be the seed's 1-channel grayscale model"
        )
    return SEED_SPEC.replace(arch=arch)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelSpec]:
    """Load a checkpoint into a fresh network in eval mode. Returns ``(model, spec)``.

    Raises :class:`CheckpointError` naming the file and what was found against what was expected
    when the file is missing, not a checkpoint, truncated, unsafe, another architecture or has the
    wrong number of classes.
    """
    ckpt = read_checkpoint(path)
    state = extract_state_dict(ckpt, path)
    if "spec" in ckpt:
        try:
            spec = ModelSpec.from_dict(ckpt["spec"])
        except SpecError as exc:
            raise CheckpointError(f"{path}: embedded spec is invalid: {exc}") from exc
    else:
        spec = infer_spec(state, path)
    fc = state.get("fc.1.weight")
    if fc is not None and fc.shape[0] != spec.num_classes:
        raise CheckpointError(
            f"{path}: the classifier has {fc.shape[0]} outputs, expected {spec.num_classes} "
            f"({', '.join(spec.labels)}). This is a model for another label set."
        )
    model = build_model(spec, weights="none")
    expected = model.state_dict()
    for k in expected:  # BatchNorm counters only matter to training; checkpoints from before torch 0.4.1 lack them
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = expected[k]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: not a {spec.arch} checkpoint of this recipe: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    bad = [f"{k}: found {tuple(state[k].shape)}, expected {tuple(v.shape)}"
           for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{path}: weights do not fit {spec.arch}: " + "; ".join(bad[:5]))
    model.load_state_dict(state)
    return model.to(device).eval(), spec
