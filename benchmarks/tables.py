"""Every results table in the docs, generated from the results files in ``benchmarks/results/``.

    python benchmarks/tables.py              # rewrite the tables in README.md, docs/ and benchmarks/README.md
    python benchmarks/tables.py --check      # exit 1, naming each table that differs from its file
    python benchmarks/tables.py --add OUT/pictures.json [--as NAME]   # take in a run written elsewhere

A table's place in a markdown file is two comments; the text between them is replaced::

    <!-- table: accuracy -->
    ...
    <!-- end table -->

``accuracy`` names the results file ``benchmarks/results/accuracy.json``; words after it choose a view
of that file (``<!-- table: accuracy per_class -->``). The script that wrote a file is the name before
the first ``-`` (``video_fps-crops.json``: a second run of ``video_fps.py``): one machine's run is one
file, and one table. Each table is headed by its machine (CPU model, the instruction sets that change
int8 and bf16 kernels, cores, threads, onnxruntime and torch versions) and the command that made it.
A results file that does not exist yet gives a line saying which command writes it. Nothing here
measures anything or imports a model runtime.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BUSY_LOAD, Parser, check_exists, description, markdown_table, refuse  # noqa: E402
from record import RESULTS, ROOT, portable  # noqa: E402

#: The markdown files whose tables are generated (a file without table comments is left alone).
DOCS = ("README.md", "docs/**/*.md", "benchmarks/README.md")
BEGIN = re.compile(r"^<!-- table: ([a-z0-9_\-]+(?: [a-z0-9_\-.]+)*) -->$")
END = "<!-- end table -->"
#: Keys of a script's JSON that describe every input (pictures.py's ``manifest``): left out of results files.
BULKY = ("manifest",)


class DocError(Exception):
    """A table comment that cannot be generated: the message names the file and line."""


def pct(value, digits: int = 2) -> str | None:
    return None if value is None else f"{100 * value:.{digits}f}"


def num(value, digits: int = 0) -> str | None:
    return None if value is None else f"{value:,.{digits}f}"


# ---- one renderer per script: (result, view words) -> markdown table ------------------------------

def _model_name(model: str) -> str:
    """A model's name in a table: how fer-batch and the API call it (the fp32 file has no name of its own)."""
    return "`accurate`, fp32" if model == "accurate-fp32" else f"`{model}`"


def accuracy_table(result: dict, view: list[str]) -> str:
    """One row per model (default); ``per_class [MODEL ...]``: precision, recall and F1 per class."""
    models = result["models"]
    if view[:1] == ["per_class"]:
        models = [m for m in models if m["model"] in view[1:]] if view[1:] else models
        if not models:
            raise DocError(f"accuracy: none of {view[1:]} in this file")
        labels = models[0]["labels"]
        headers = ["class", *(f"{_model_name(m['model'])} {k}" for m in models for k in ("precision", "recall", "F1"))]
        keys = ("precision", "recall", "f1-score")
        rows = [[label, *(f"{m['per_class'][label][k]:.2f}" for m in models for k in keys)] for label in labels]
        return markdown_table(headers, rows)
    if view:
        raise DocError(f"accuracy has the views (none) and per_class, not {' '.join(view)}")
    return markdown_table(
        ["model", "file", "MB", "precision", "top-1 %", "faces right", "agrees with its literal run %"],
        [[_model_name(m["model"]), f"`{m['file']}`", m["size_mb"], m["precision"], pct(m["accuracy"]),
          f"{m['correct']:,} of {m['images']:,}", pct(m.get("agreement_literal"))] for m in models])


def robustness_table(result: dict, view: list[str]) -> str:
    names = result["degradations"]
    return markdown_table(
        ["model", *(f"{n} %" if n == "clean" else f"{n} % (drop)" for n in names)],
        [[f"`{r['model']}`", pct(r["clean"]), *(f"{pct(r[n])} ({100 * (r[n] - r['clean']):+.2f})" for n in names[1:])]
         for r in result["models"]])


def int8_schemes_table(result: dict, view: list[str]) -> str:
    """The script's own table; ``accuracy``: without the speed columns (for a run on a busy machine)."""
    import int8_schemes

    text = int8_schemes.table(result)
    if view == ["accuracy"]:
        rows = [[None if c.strip() == "-" else c.strip() for c in line.strip().strip("|").split("|")]
                for line in text.splitlines()]
        keep = [i for i, head in enumerate(rows[0]) if not head.startswith("img/s")]
        text = markdown_table([rows[0][i] for i in keep], [[r[i] for i in keep] for r in rows[2:]])
    elif view:
        raise DocError(f"int8_schemes has the views (none) and accuracy, not {' '.join(view)}")
    return text


def run_table(result: dict, view: list[str]) -> str:
    """``side_by_side`` (default): each model as the CPU runs it; ``MODEL``: every row of that model."""
    import run

    if not view or view == ["side_by_side"]:
        return run.side_by_side(result)
    model = next((m for m in result["models"] if m["name"] == view[0]), None)
    if model is None:
        raise DocError(f"run: no model {view[0]!r} in this file (it has {[m['name'] for m in result['models']]})")
    columns = (("backend", "backend", None), ("precision", "precision", None), ("batch", "batch", None),
               ("p50 ms", "p50_ms", 2), ("img/s", "images_per_s", 0), ("% ceiling", "pct_ceiling", 1),
               ("accuracy %", "accuracy", 2))
    rows = [r for r in model["rows"] if r["device"] == "cpu" and r.get("images_per_s")]
    cell = lambda r, k, d: r.get(k) if r.get(k) is None or d is None else (  # noqa: E731
        f"{100 * r[k] if k == 'accuracy' else r[k]:.{d}f}")
    return markdown_table([h for h, _, _ in columns], [[cell(r, k, d) for _, k, d in columns] for r in rows])


def video_fps_table(result: dict, view: list[str]) -> str:
    fer = result.get("fer_fps") is not None
    headers = ["model", "detector", "frames", "frames/s, whole process", "frames/s, in run", "CPU ms/frame"]
    rows = [[r["model"], r["detector"], r["frames"], num(r["best_frames_per_s"], 1),
             num(r["best_in_run_frames_per_s"], 1), num(r["cpu_ms_per_frame"], 1)] for r in result["runs"]]
    if fer:
        headers += ["x `fer`, whole process", "x `fer`, in run"]
        whole, in_run = result.get("fer_whole_process_fps"), result["fer_fps"]
        for row, r in zip(rows, result["runs"]):
            row += [num(r["best_frames_per_s"] / whole, 2) if whole else None,
                    num(r["best_in_run_frames_per_s"] / in_run, 2)]
        rows.append(["`fer` (peer)", "haar", None, num(whole, 1), num(in_run, 1), None, "1.00", "1.00"])
    return markdown_table(headers, rows)


def detectors_table(result: dict, view: list[str]) -> str:
    return markdown_table(["detector", "OpenCV threads", "input", "pictures", "faces", "ms/picture"],
                          [[r["detector"], r["opencv_threads"], r["input"], r["pictures"], r["faces"],
                            num(r["ms_per_picture"], 2)] for r in result["runs"]])


def pipeline_table(result: dict, view: list[str]) -> str:
    rows = [["bare onnxruntime session, crops/s", num(result["bare_session_crops_per_s"])],
            ["fer-batch --detector none, crops/s", num(result["fer_batch_crops_per_s"])],
            ["fer-batch / bare session", num(result["ratio"], 2)],
            [f"fer-batch on `{Path(result['video']).name}` with YuNet, frames/s", num(result["video_frames_per_s"], 1)]]
    return markdown_table(["measure", "value"], rows)


def dask_scaling_table(result: dict, view: list[str]) -> str:
    return markdown_table(["mode", "frames", "faces", "wall s", "cluster start s", "frames/s after start"],
                          [[r["mode"], r["frames"], r["faces"], num(r["wall_s"], 1), num(r["cluster_start_s"], 1),
                            num(r["frames_per_s_after_start"], 1)] for r in result["runs"]])


def video_tracking_table(result: dict, view: list[str]) -> str:
    """``agreement``: the followed run's rows against every whole frame searched; default: and the
    seconds each spent detecting."""
    if view not in ([], ["agreement"]):
        raise DocError(f"video_tracking has the views (none) and agreement, not {' '.join(view)}")
    headers = ["video", "frames", "whole-frame searches", "rows", "faces found %", "boxes IoU ≥ 0.8 %",
               "same emotion %", "faces entering, longest wait (frames)"]
    rows = []
    for r in result["results"]:
        a = r["agreement"]
        rows.append([f"`{r['video']}`", r["frames"], r["full_searches"], a["rows"], pct(a["found"], 1),
                     pct(a["box_iou_0.8"], 1), pct(a["same_emotion"], 1),
                     f"{a['entering_tracks']}, {a['longest_wait_frames']}"])
    if not view:
        headers += ["detect s, every frame", "detect s, followed"]
        for row, r in zip(rows, result["results"]):
            row += [num(r["times_every_frame"]["detect"], 1), num(r["times_followed"]["detect"], 1)]
    return markdown_table(headers, rows)


def pictures_table(result: dict, view: list[str]) -> str:
    """The rows over both backgrounds (``all``); ``by_background`` gives every row."""
    rows = [r for r in result["rows"] if view == ["by_background"] or r["background"] == "all"]
    return markdown_table(
        ["detector", "crop", *(["background"] if view else []), "pictures", "faces found %", "accuracy on found %",
         "end to end %", "their crops, found %", "all crops %"],
        [[r["detector"], r["crop"], *([r["background"]] if view else []), r["pictures"], r["found_pct"],
          r["acc_found"], r["end_to_end"], r["crop_acc_found"], r["crop_acc_all"]] for r in rows])


def peer_fer_table(result: dict, view: list[str]) -> str:
    return markdown_table(["tool", "faces", "faces/s, read and classified", "faces/s, model alone", "top-1 %"],
                          [[result["tool"], f"{result['faces']:,}", num(result["faces_per_s"]),
                            num(result["model_faces_per_s"]), pct(result.get("accuracy"))]])


def browser_table(result: dict, view: list[str]) -> str:
    """The page, Node.js and fer-batch on one model file (``benchmarks/browser.py``)."""
    table = result["table"]
    return markdown_table(table["headers"], [[num(c, 1) if isinstance(c, float) else ("-" if c is None else c)
                                              for c in row] for row in table["rows"]])


@dataclass(frozen=True)
class Kind:
    render: Callable[[dict, list[str]], str]
    timed: bool  # whether its figures are speeds (a busy machine makes them low)
    options: str = ""  # the script's options for the docs' run, before --json
    untimed_views: tuple[str, ...] = ()  # views that show no speed


KINDS = {
    "accuracy": Kind(accuracy_table, False),
    "robustness": Kind(robustness_table, False),
    "int8_schemes": Kind(int8_schemes_table, True, untimed_views=("accuracy",)),
    "run": Kind(run_table, True, "--batch-sizes 32 128"),
    "video_fps": Kind(video_fps_table, True, "--models accurate fast"),
    "detectors": Kind(detectors_table, True),
    "pipeline": Kind(pipeline_table, True, "--model accurate"),
    "dask_scaling": Kind(dask_scaling_table, True, "--model accurate"),
    "pictures": Kind(pictures_table, False),
    "video_tracking": Kind(video_tracking_table, True, untimed_views=("agreement",)),
    "peer_fer": Kind(peer_fer_table, True),
    "browser": Kind(browser_table, True),
}

#: Results files written by another command than ``python benchmarks/SCRIPT.py OPTIONS --json FILE``.
COMMANDS = {
    "int8_schemes": "python benchmarks/int8_schemes.py --emulate-cpu EPYC-Milan --emulate-faces 16 "
                    "--json benchmarks/results/int8_schemes.json",
    "int8_schemes-zen3": "python benchmarks/int8_schemes.py --json benchmarks/results/int8_schemes-zen3.json "
                         "(on a CPU without VNNI)",
    "video_fps-crops": "python benchmarks/video_fps.py ../shared/data/fer2013/val --detectors none "
                       "--models accurate fast --json benchmarks/results/video_fps-crops.json",
    "accuracy-twins": "python benchmarks/accuracy.py --model accurate-twin=runs/acc_twin/accurate.int8.onnx "
                      "accurate-twin-fp32=runs/acc_twin/accurate.onnx "
                      "accurate-twin-lr0.01=runs/acc_twin_lr01/accurate.int8.onnx "
                      "accurate-twin-lr0.01-fp32=runs/acc_twin_lr01/accurate.onnx accurate accurate-fp32 "
                      "--json benchmarks/results/accuracy-twins.json (the twins: docs/model_card.md)",
    "pictures": "python benchmarks/pictures.py --per-class 1000 --detectors yunet haar --crops framed "
                "--out /tmp/pictures && python benchmarks/tables.py --add /tmp/pictures/pictures.json",
    "peer_fer": "FER_VENV/bin/python benchmarks/peer_fer.py crops ../shared/data/fer2013/val --limit 0 "
                "--json benchmarks/results/peer_fer.json",
}


def kind_of(name: str) -> Kind:
    kind = KINDS.get(name.split("-")[0])
    if kind is None:
        raise DocError(f"no script writes results named {name!r}: a name starts with one of {', '.join(KINDS)}")
    return kind


# ---- the heading: which machine, which command --------------------------------------------------

def machine_line(machine: dict, threads: int | None = None) -> str:
    """CPU model, int8/bf16 instruction sets, cores, threads and library versions, in one line."""
    isa = machine.get("isa") or []
    vnni = "VNNI" in isa or "AMX" in isa
    sets = ", ".join(isa) if vnni else ", ".join([*isa, "no VNNI"])
    family = f", family/model {machine['cpu_family_model']}" if machine.get("cpu_family_model") else ""
    threads = threads or machine.get("logical_cpus")
    versions = ", ".join(f"{k} {machine[k]}" for k in ("onnxruntime", "onnxruntime-gpu", "torch") if machine.get(k))
    return f"{machine['cpu']} ({sets}{family}), {machine['cores']} cores, {threads} threads; {versions}"


def heading(name: str, result: dict, view: list[str] = ()) -> str:
    kind, machine = kind_of(name), result.get("machine")
    if machine is None:
        raise DocError(f"benchmarks/results/{name}.json has no machine: rerun `{command_for(name)}`")
    # a file that does not record its command is named by the documented one, else by its script alone
    command = result.get("command") or COMMANDS.get(name) or f"benchmarks/{name.split('-')[0]}.py"
    text = f"*Measured on {machine_line(machine, result.get('threads'))}, by `{command}`"
    load = machine.get("load_average_1min")
    timed = kind.timed and " ".join(view) not in kind.untimed_views
    if timed and load is not None and load > BUSY_LOAD * machine["logical_cpus"]:
        text += f"; other work was running (load average {load:.1f}), so the speeds are low"
    return text + ".*"


def command_for(name: str) -> str:
    """The command that writes ``results/NAME.json``."""
    script = name.split("-")[0]
    options = f"{kind_of(name).options} " if kind_of(name).options else ""
    return COMMANDS.get(name) or f"python benchmarks/{script}.py {options}--json benchmarks/results/{name}.json"


def render(name: str, view: list[str], results: Path = RESULTS) -> str:
    """The markdown between the comments of table ``name`` (with ``view``), from its file in ``results``."""
    path = results / f"{name}.json"
    kind = kind_of(name)
    if not path.is_file():
        where = "on an idle machine, " if kind.timed else ""
        return f"*Not measured yet: {where}run `{command_for(name)}`, then `python benchmarks/tables.py`.*"
    try:
        result = json.loads(path.read_text())
    except ValueError as exc:
        raise DocError(f"{portable(str(path))}: not JSON ({exc}); rerun `{command_for(name)}`") from None
    try:
        table = kind.render(result, view)
    except (KeyError, TypeError, IndexError) as exc:
        raise DocError(f"{portable(str(path))}: lacks {exc} for this table; rerun `{command_for(name)}`") from None
    return f"{heading(name, result, view)}\n\n{table}"


# ---- the markdown files -------------------------------------------------------------------------

def doc_files(root: Path = ROOT) -> list[Path]:
    return sorted({p for pattern in DOCS for p in root.glob(pattern) if p.is_file()})


def regenerate(text: str, where: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """``(new text, names of the tables in it)``: every table block of a markdown text rendered anew."""
    lines, out, names = text.split("\n"), [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        found = BEGIN.match(line.strip())
        if line.strip().startswith("<!-- table:") and not found:
            raise DocError(f"{where}:{i + 1}: write a table comment as <!-- table: NAME [VIEW] -->")
        if line.strip() == END:
            raise DocError(f"{where}:{i + 1}: {END} without a table comment before it")
        if not found:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == END
                    or lines[j].strip().startswith("<!-- table:")), None)
        if end is None or lines[end].strip() != END:
            raise DocError(f"{where}:{i + 1}: <!-- table: {found.group(1)} --> has no {END} after it")
        name, *view = found.group(1).split()
        try:
            out += ["", render(name, view, results), "", lines[end]]
        except DocError as exc:
            raise DocError(f"{where}:{i + 1}: {exc}") from None
        names.append(found.group(1))
        i = end + 1
    return "\n".join(out), names


def update(root: Path = ROOT, check: bool = False, results: Path = RESULTS) -> list[str]:
    """Regenerate the tables of every doc under ``root`` from ``results`` (``check``: only compare); the
    ``file: table`` entries that differed."""
    stale = []
    for path in doc_files(root):
        text = path.read_text()
        rel = path.relative_to(root).as_posix()
        new, names = regenerate(text, rel, results)
        if new == text:
            continue
        old_blocks, new_blocks = _blocks(text), _blocks(new)
        stale += [f"{rel}: {n}" for n in names if old_blocks.get(n) != new_blocks.get(n)] or [rel]
        if not check:
            path.write_text(new)
    return stale


def _blocks(text: str) -> dict[str, str]:
    blocks = re.finditer(r"<!-- table: ([^>]*?) -->\n(.*?)<!-- end table -->", text, re.S)
    return {m.group(1): m.group(2) for m in blocks}


def add(source: Path, name: str | None) -> Path:
    """Copy a script's JSON written elsewhere into ``benchmarks/results/NAME.json``, without its bulky keys."""
    name = name or source.stem
    if not re.fullmatch(r"[a-z0-9_\-]+", name):
        refuse(f"--as {name}: a results name is lower-case letters, digits, _ and - (e.g. pictures-fast)")
    try:
        kind_of(name)
    except DocError as exc:
        refuse(str(exc))
    try:
        result = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        refuse(f"--add {source}: cannot read it as JSON ({exc})")
    if not isinstance(result, dict) or "machine" not in result:
        refuse(f"--add {source}: not a benchmark result with its machine; rerun the script that writes it")
    target = RESULTS / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    kept = {k: portable(v) if isinstance(v, str) else v for k, v in result.items() if k not in BULKY}
    target.write_text(json.dumps(kept, indent=2) + "\n")
    return target


def main(argv=None) -> int:
    ap = Parser(description=description(__doc__))
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its file")
    ap.add_argument("--add", type=Path, metavar="RESULT.json", help="copy a result JSON into benchmarks/results/ first")
    ap.add_argument("--as", dest="name", help="its name there (default: the file's own name)")
    args = ap.parse_args(argv)
    if args.name and not args.add:
        ap.error("--as needs --add")
    try:
        if args.add:
            check_exists("--add", args.add, folder=False)
            print(f"wrote {portable(str(add(args.add, args.name)))}")
        stale = update(check=args.check)
    except DocError as exc:
        refuse(str(exc))
    if args.check and stale:
        print("tables that differ from benchmarks/results (run `python benchmarks/tables.py`):\n  "
              + "\n  ".join(stale), file=sys.stderr)
        return 1
    print(("tables match benchmarks/results" if args.check else "tables regenerated: ")
          + ("" if args.check else (", ".join(stale) or "none changed")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
