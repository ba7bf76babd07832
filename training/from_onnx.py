"""A training checkpoint from an exported fp32 ONNX model, to fine-tune it with fer-train.

    python -m training.from_onnx MODEL.onnx --data DATA/train --out MODEL.pth [--images 4096] [--seed 0]

fer-export writes a model with each BatchNorm folded into the convolution before it: the file holds
the folded weights and a bias, and the BatchNorm itself is gone. Loaded into the network as it is
(BatchNorm as the identity), the model computes the same function in eval mode, but training mode
normalises every batch and would compute another one. So each BatchNorm is recalibrated instead: its
running mean and variance become the statistics of its convolution's output over ``--images``
training images, and its scale and shift are chosen so that eval mode still computes the file's
function exactly (checked against onnxruntime before the checkpoint is written) while training mode,
which normalises with each batch's own statistics, computes nearly the same one. The spec, framing
included, comes from the file's metadata. The checkpoint is written as fer-train writes one
(``{'model_state_dict', 'spec'}``) and loads with ``weights_only=True``.

An int8 copy (static QDQ, as ``fer-export int8`` writes it) gives its weights dequantized: the
network the int8 file rounds. Its activations are rounded in the file and not in the checkpoint, so
the check is then the share of faces whose top-1 label the two agree on (at least
``INT8_AGREEMENT``), not the logits' difference. The file's test-time views (``hflip``,
``hflip-uncertain``) are applied to the checkpoint for the check; the checkpoint itself is the
network alone.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from fer_export.errors import ArtifactError, FerExportError, InputError

if TYPE_CHECKING:
    from fer_export.spec import ModelSpec

#: The prefix fer-export's wrapper modules put before the network's own parameter names.
PREFIXES = ("model.model.", "model.", "")
#: How the exporter names a convolution's folded bias: ``<conv>.weight_bias`` (or ``<conv>.bias``).
BIAS_SUFFIXES = (".weight_bias", ".bias")
TOLERANCE = 1e-4  # max |logit difference| between the checkpoint (eval) and an fp32 file
INT8_AGREEMENT = 0.97  # least share of faces on which the checkpoint and an int8 file agree (top-1)
#: How a static QDQ file names a weight's dequantized value: ``<fp32 name>_DequantizeLinear_Output``.
DEQUANTIZED_SUFFIX = "_DequantizeLinear_Output"


def dequantized(graph, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` (a graph's initializers by name) with every weight a ``DequantizeLinear`` node reads
    from an initializer added as floats under its fp32 name: ``(q - zero_point) * scale``, per
    channel along the node's axis."""
    from fer_export.export.saturation import along

    out = dict(arrays)
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in arrays:
            continue
        q = arrays[node.input[0]].astype(np.float64)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        scale = along(arrays[node.input[1]].astype(np.float64), q.ndim, axis)
        zero = along(arrays[node.input[2]].astype(np.float64), q.ndim, axis) \
            if len(node.input) > 2 and node.input[2] else 0.0
        name = node.output[0]
        out[name[:-len(DEQUANTIZED_SUFFIX)] if name.endswith(DEQUANTIZED_SUFFIX) else name] = \
            ((q - zero) * scale).astype(np.float32)
    return out


def folded_weights(path: Path) -> tuple[dict[str, np.ndarray], ModelSpec, bool]:
    """The file's weights by name (an int8 copy's dequantized), its spec, and whether it is int8."""
    import onnx
    from onnx import numpy_helper

    from fer_export.runtime import spec_from_metadata
    from fer_export.spec import META_TTA, UNCERTAIN

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError/ValueError/OSError for other files
        raise ArtifactError(f"{path}: not a readable ONNX file ({str(exc).splitlines()[0]})") from None
    meta = {p.key: p.value for p in model.metadata_props}
    spec = spec_from_metadata(meta, path)
    tta = meta.get(META_TTA, "none")
    if tta not in ("none", "hflip", UNCERTAIN):
        raise InputError(f"{path}: its graph averages over {tta!r}, which this unfolding does not rebuild; "
                         "give the file it was made from (exported with --tta none or hflip)")
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    int8 = any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    return (dequantized(model.graph, weights) if int8 else weights), spec, int8


def _find(weights: dict, name: str, suffixes: tuple[str, ...], path: Path) -> np.ndarray:
    for prefix in PREFIXES:
        for suffix in suffixes:
            if prefix + name + suffix in weights:
                return weights[prefix + name + suffix].copy()
    raise ArtifactError(f"{path}: has no weights for {name!r}; it was not exported by fer-export from this "
                        f"network, or its BatchNorm was not folded")


def _norm_of(conv_name: str) -> str:
    """The BatchNorm after a torchvision ResNet convolution: conv1 -> bn1, downsample.0 -> downsample.1."""
    if conv_name.endswith("downsample.0"):
        return conv_name[:-1] + "1"
    head, _, last = conv_name.rpartition(".")
    return (head + "." if head else "") + last.replace("conv", "bn")


def unfold(weights: dict[str, np.ndarray], spec, images: np.ndarray, path: Path):
    """The network of ``weights`` (:func:`folded_weights` of ``path``) with its BatchNorms recalibrated
    on ``images`` (uint8 (N, H, W) at the spec's input size), in eval mode."""
    import torch

    from fer_export.model import build_model
    from fer_export.preprocess import normalize

    model = build_model(spec).eval()
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    with torch.no_grad():
        for name, conv in convs.items():
            conv.weight.copy_(torch.from_numpy(_find(weights, name, (".weight",), path)))
            norm = model.get_submodule(_norm_of(name))
            norm.reset_running_stats()
            norm.running_var.fill_(1 - norm.eps)  # (x - 0) / sqrt(1 - eps + eps) = x: the identity
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(_find(weights, name, BIAS_SUFFIXES, path)))
        for name, param in model.named_parameters():
            if name.startswith("fc"):
                layer, _, kind = name.rpartition(".")
                param.copy_(torch.from_numpy(_find(weights, layer, ("." + kind,), path)))

    x = torch.from_numpy(normalize(images, spec))
    sums = {n: [0.0, 0.0, 0] for n in convs}

    def record(name):
        def hook(module, inputs, out):
            o = out.double()
            s = sums[name]
            s[0], s[1], s[2] = s[0] + o.sum((0, 2, 3)), s[1] + (o * o).sum((0, 2, 3)), s[2] + o.numel() // o.shape[1]
        return hook

    hooks = [conv.register_forward_hook(record(n)) for n, conv in convs.items()]
    with torch.no_grad():
        for i in range(0, len(x), 256):
            model(x[i:i + 256])
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for name in convs:
            total, squares, count = sums[name]
            mean = total / count
            var = (squares / count - mean * mean).clamp(min=0)
            norm = model.get_submodule(_norm_of(name))
            shift = norm.bias.double().clone()
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.weight.copy_(torch.sqrt(var + norm.eps))  # eval: (x - mean) / sqrt(var + eps) * this + ...
            norm.bias.copy_(mean + shift)  # ... + mean + the folded bias = x + the folded bias
    return model


def check_against_file(model, spec, path: Path, images: np.ndarray) -> tuple[float, float]:
    """Max |logit difference| and top-1 agreement between ``model`` (eval, with the file's test-time
    views) and the file on ``images``."""
    import torch

    from fer_export.export.flip import mix
    from fer_export.preprocess import normalize
    from fer_export.runtime import EmotionClassifier
    from fer_export.spec import META_FLIP_BELOW, META_TTA, UNCERTAIN

    clf = EmotionClassifier(path, provider="cpu")
    x = torch.from_numpy(normalize(images, spec))

    def run(rows=slice(None), mirrored=False) -> np.ndarray:
        with torch.no_grad():
            return model(torch.flip(x[rows], dims=[3]) if mirrored else x[rows]).numpy()

    ours, tta = run(), clf.metadata.get(META_TTA)
    if tta == "hflip":
        ours = (ours + run(mirrored=True)) / 2
    elif tta == UNCERTAIN:
        ours = mix(ours, lambda rows: run(rows, mirrored=True), float(clf.metadata[META_FLIP_BELOW]))
    theirs = clf.logits(images)
    return float(np.abs(theirs - ours).max()), float((theirs.argmax(1) == ours.argmax(1)).mean())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model_file", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Training images (DATA/train, <emotion>/*.jpg) for the BatchNorm statistics.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The checkpoint to write (.pth).")
@click.option("--images", type=int, default=4096, show_default=True, help="Training images the statistics are taken over.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the sample of training images.")
def main(model_file: Path, data: Path, out: Path, images: int, seed: int) -> None:
    """Write a fer-train checkpoint of an exported fp32 ONNX model (see the module text)."""
    from fer_export.folders import labelled_images
    from fer_export.outputs import check_writable
    from fer_export.model import save_checkpoint
    from fer_export.preprocess import read_gray, resize

    def need(ok: bool, message: str, kind=InputError) -> None:
        if not ok:
            raise kind(message)

    try:
        need(model_file.is_file(), f"{model_file}: no such model file")
        need(images >= 16, f"--images must be at least 16, got {images}")
        need(out.suffix == ".pth", f"--out {out}: give the checkpoint a .pth name")
        need(out.resolve() != model_file.resolve(), f"--out {out} is the model file itself")
        check_writable("--out", out)
        weights, spec, int8 = folded_weights(model_file)
        need(data.is_dir(), f"{data}: no such folder of training images (DATA/train)")
        items = labelled_images(data, spec.labels)
        need(len(items) >= 16, f"{data}: {len(items)} labelled images; at least 16 are needed")
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(items), size=min(images, len(items)), replace=False)
        pixels = np.stack([resize(read_gray(items[i][0]), spec.input_size, spec.resize) for i in sorted(pick)])
        model = unfold(weights, spec, pixels, model_file)
        diff, agree = check_against_file(model, spec, model_file, pixels[:256])
        if int8:
            need(agree >= INT8_AGREEMENT, f"{model_file}: the dequantized network agrees with the int8 file on "
                 f"{agree:.1%} of faces (less than {INT8_AGREEMENT:.0%}); it is not one fer-export can unfold",
                 ArtifactError)
        else:
            need(diff <= TOLERANCE, f"{model_file}: the unfolded network differs from the file by {diff:.2g} "
                 f"(more than {TOLERANCE:g}); it is not one fer-export can unfold", ArtifactError)
        save_checkpoint(out, model, spec, source=str(model_file))
    except FerExportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    match = (f"its int8 weights dequantized; eval mode agrees with {model_file.name} on {agree:.1%} of "
             f"{min(len(pixels), 256)} faces (logits within {diff:.2g})" if int8
             else f"eval mode matches {model_file.name} within {diff:.1g}")
    click.echo(f"{out}: {spec.arch} at {spec.input_size[0]}x{spec.input_size[1]} px, BatchNorm recalibrated over "
               f"{len(pixels)} training images; {match}")


if __name__ == "__main__":
    main()
