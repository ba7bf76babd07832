"""``fer-eval``: accuracy and per-class report of any model file on a labelled folder.

The same code path for ``.pth``, ``.pt`` and ``.onnx`` (:func:`fer_export.evaluate.evaluate_folder`);
evaluating an ``.onnx`` never imports torch.
"""
from __future__ import annotations

from pathlib import Path

import click

from . import echo_err, library_errors
from ..evaluate import CONFUSION_SUFFIXES, check_confusion_path, evaluate_folder, plot_confusion
from ..errors import require
from ..outputs import check_outputs, check_outside, write_file
from ..runtime import BUNDLED_MODELS, PROVIDERS, resolve_model


@click.command(help="""Evaluate MODEL (.pth checkpoint, .pt TorchScript, .onnx, or a bundled model by name:
accurate, fast) on DATA/SPLIT/<emotion>/*.jpg
(or DATA/<emotion>/*.jpg): prints accuracy and the per-class precision/recall/F1 report.
Images are read as grayscale and resized to the model's embedded input size.
Exit codes: 0 done, 2 usage or input error (missing folder, wrong label folders, bad model file, a
--report/--confusion that would overwrite an input or cannot be written), 130 interrupted.""")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset root (with SPLIT/ inside) or a folder of emotion sub-folders.")
@click.option("--split", default="val", show_default=True, help="Sub-folder of DATA to evaluate.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Images per batch.")
@click.option("--limit-per-class", type=click.IntRange(min=1), help="Seeded sample of at most N images per class.")
@click.option("--provider", type=click.Choice(PROVIDERS), default="cpu", show_default=True,
              help="onnxruntime execution provider (.onnx only).")
@click.option("--no-self-check", "self_check", is_flag=True, flag_value=False, default=True,
              help="Evaluate an ONNX file that fails its self-check on this machine anyway.")
@click.option("--confusion", type=click.Path(dir_okay=False, path_type=Path),
              help=f"Write the confusion matrix as an image ({', '.join(CONFUSION_SUFFIXES)}).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write the classification report.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of text.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@library_errors
def main(model, data, split, batch_size, limit_per_class, provider, self_check, confusion, report, as_json, progress):
    name = str(model) if str(model) in BUNDLED_MODELS else model  # a name keeps its self-check fall-back
    if name is not model:
        model = resolve_model(name, provider)
    if confusion:
        check_confusion_path(confusion)
        require("matplotlib", "train", "fer-eval --confusion")
    outputs = [("--report", report), ("--confusion", confusion)]
    check_outputs([("the model", model)], outputs)
    check_outside("the --data folder", data, outputs)
    result = evaluate_folder(name, data, split, batch_size, limit_per_class, provider, progress, self_check)
    if result.self_check:
        echo_err(result.self_check)
    model = Path(result.model)
    text = result.classification_report()
    if report:
        write_file(report, text)
    if confusion:
        plot_confusion(result.confusion, result.labels, confusion,
                       title=f"{model.name} ({result.format}): accuracy {result.accuracy:.2%}")
    if as_json:
        click.echo(result.to_json())
    else:
        click.echo(f"{model} ({result.format}) on {len(result.y_true)} images: accuracy {result.accuracy:.4f}\n")
        click.echo(text, nl=False)
