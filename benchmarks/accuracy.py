"""Top-1 accuracy of the bundled models (or any exported models) on a labelled folder, through
fer-eval's own code path, written with the machine that ran it.

    python benchmarks/accuracy.py [--model accurate accurate-fp32 fast M.onnx ...] [--data DIR]
                                  [--limit-per-class N] [--json out.json]

``--model`` takes bundled names (``accurate`` and ``fast``: the files the CPU runs, both int8;
``accurate-fp32``: the accurate model's fp32 file) or exported ONNX files, each as ``LABEL=FILE`` to
name it in the tables; default: all three bundled files. ``--data`` is a labelled folder in FER2013's Kaggle layout (default PublicTest). Per model:
the accuracy :func:`fer_export.evaluate.evaluate_folder` gives (what ``fer-eval MODEL --data DIR``
prints), the faces right, the per-class precision, recall and F1, and the file's self-check on this
CPU. For an int8 file also its **literal run** (graph optimisations off: ONNX's own definition of
the file, with no int8 kernel involved): its accuracy, the share of faces whose top-1 class the CPU's
int8 kernels give as the literal run does, and the largest probability difference. The literal run
does not depend on the CPU, so where the agreement is (near) 100 % the accuracy holds on every CPU.
Nothing is timed.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Parser, check_model, description, machine_info, markdown_table, print_report  # noqa: E402
from common import SHARED_DATA  # noqa: E402
from record import checked_model_set, command_line, labelled, model_set_options, portable  # noqa: E402

DATA = SHARED_DATA / "fer2013" / "val"
DEFAULT_MODELS = ("accurate", "accurate-fp32", "fast")


def model_file(name: str) -> Path:
    """The file behind a name: ``accurate-fp32`` is the accurate model's fp32 file, other names as
    every benchmark reads them (bundled names give the file the CPU runs)."""
    from fer_export.runtime import ACCURATE_FP32

    return ACCURATE_FP32 if name == "accurate-fp32" else check_model("--model", name)


def literal_agreement(path: Path, data: Path, spec, limit_per_class: int | None) -> dict:
    """An int8 file's fused run against its literal run on the labelled folder."""
    from fer_export.export.quantize import agreement_with_literal, labelled_batch, outputs

    x, y = labelled_batch(data, spec, limit_per_class)
    fused, literal = outputs(path, x, "probs"), outputs(path, x, "probs", literal=True)
    same, _ = agreement_with_literal(fused, literal)
    return {"accuracy_literal": float((literal.argmax(1) == y).mean()), "agreement_literal": float(same.mean()),
            "max_prob_diff_literal": float(np.abs(fused - literal).max()) if len(x) else 0.0}


def measure(names: list[str], data: Path, limit_per_class: int | None = None) -> dict:
    from fer_export.evaluate import evaluate_folder
    from fer_export.model import sha256_file
    from fer_export.runtime import open_session, read_metadata
    from fer_export.spec import META_PRECISION

    rows = []
    for entry in names:
        name, model = labelled(entry)
        path = model_file(model)
        result = evaluate_folder(path, data, split="", limit_per_class=limit_per_class)
        meta = read_metadata(open_session(path, "cpu")[0], path)
        precision = meta.get(META_PRECISION, "fp32")
        spec_labels = list(result.labels)
        row = {"model": name, "file": path.name, "size_mb": round(path.stat().st_size / 1e6, 1),
               "sha256": sha256_file(path), "precision": precision, "images": int(len(result.y_true)),
               "correct": int((result.y_pred == result.y_true).sum()), "accuracy": result.accuracy,
               "labels": spec_labels, "per_class": result.per_class(), "self_check": result.self_check}
        if precision == "int8":
            from fer_export.predictors import load_predictor

            row |= literal_agreement(path, data, load_predictor(path).spec, limit_per_class)
        rows.append(row)
        print(f"{name}: {row['accuracy']:.2%} ({row['correct']} of {row['images']})", file=sys.stderr, flush=True)
    return {"data": portable(str(data)), "limit_per_class": limit_per_class, "models": rows}


def table(result: dict) -> str:
    pct = lambda v: None if v is None else f"{100 * v:.2f}"  # noqa: E731
    return markdown_table(
        ["model", "file", "MB", "precision", "accuracy %", "right", "literal run %", "agrees with literal %"],
        [[r["model"], r["file"], r["size_mb"], r["precision"], pct(r["accuracy"]), f"{r['correct']}/{r['images']}",
          pct(r.get("accuracy_literal")), pct(r.get("agreement_literal"))] for r in result["models"]])


def main(argv=None) -> int:
    ap = Parser(description=description(__doc__))
    model_set_options(ap, list(DEFAULT_MODELS), "bundled names (accurate, fast: the files the CPU runs; "
                                                "accurate-fp32) or ONNX files", DATA)
    args = ap.parse_args(argv)
    checked_model_set(args, model_file)
    machine = machine_info()
    result = measure(args.model, args.data, args.limit_per_class)
    result |= {"command": command_line("accuracy.py", argv), "machine": machine}
    print_report(machine, table(result), args.json, result,
                 note=f"\n{result['models'][0]['images']} images of {result['data']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
