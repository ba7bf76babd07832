"""What a results file records beside its numbers: the command that made it, with paths written as a
reader of the docs would type them (relative to the repository; the shared data as ``../shared/data``)."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Callable

from common import SHARED_DATA, check_exists, check_output_file, positive_int

ROOT = Path(__file__).resolve().parents[1]
#: Where a script writes its results when asked to record them (``--json benchmarks/results/NAME.json``).
RESULTS = ROOT / "benchmarks" / "results"


def portable(arg: str) -> str:
    """``arg`` with a path inside the repository made relative to it, and one inside the shared data
    written as ``../shared/data/...`` (where the tests and the benchmarks look for it)."""
    if os.sep not in arg:
        return arg
    path = Path(arg).absolute()
    for base, shown in ((SHARED_DATA.resolve(), Path("../shared/data")), (ROOT, None)):
        try:
            rel = path.resolve().relative_to(base)
        except ValueError:
            continue
        return str(shown / rel if shown else rel)
    return arg


def command_line(script: str, argv=None) -> str:
    """How this run was started, as a shell line: ``python benchmarks/SCRIPT ARGS``."""
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    return shlex.join(["python", f"benchmarks/{script}", *(portable(a) for a in args)])


def labelled(entry: str) -> tuple[str, str]:
    """A ``--model`` entry as (label, model): ``LABEL=MODEL`` names a file in the tables
    (``accurate-twin=runs/a/accurate.int8.onnx``); any other entry is its own label."""
    label, eq, model = entry.partition("=")
    return (label, model) if eq and label and model else (entry, entry)


def model_set_options(ap, models: list[str], model_help: str, data: Path) -> None:
    """The options of a script that runs models over a labelled folder: ``--model`` (one or more,
    each a name, a file or ``LABEL=FILE``: :func:`labelled`), ``--data``, ``--limit-per-class`` and
    ``--json``."""
    ap.add_argument("--model", nargs="+", default=models, help=model_help + "; LABEL=FILE names a file in the tables")
    ap.add_argument("--data", type=Path, default=data, help="labelled folder: <emotion>/*.jpg (default PublicTest)")
    ap.add_argument("--limit-per-class", type=positive_int, help="at most N images per class (seeded sample)")
    ap.add_argument("--json", type=Path, help="also write the numbers, with the machine, here")


def checked_model_set(args, model_file: Callable[[str], Path]) -> list[Path]:
    """The model files of :func:`model_set_options`' options, refused (one line, exit 2) before any work
    when ``--data`` is missing, a model is not a file, or ``--json`` would replace an input."""
    check_exists("--data", args.data, folder=True)
    files = [model_file(labelled(entry)[1]) for entry in args.model]
    check_output_file("--json", args.json, [("--data", args.data), *(("--model", f) for f in files)])
    return files
