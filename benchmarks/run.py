"""Every backend of the toolkit on one model: latency, throughput, memory, GFLOP/s and accuracy.

    python benchmarks/run.py [--model accurate|fast|CKPT.pth|MODEL.onnx ...] [--data DIR] [--calib DIR] [--quick]
                             [--out-dir DIR] [--json out.json]

Without --model: every model bundled with the package, then a side-by-side table of their fastest
CPU rows. Backends: PyTorch eager fp32 and bf16 autocast, TorchScript, onnxruntime fp32 and int8 (static QDQ
from fer_export's quantize code, calibrated on --calib, default the train/ folder beside --data), and their CUDA variants
when a GPU is present. An int8 .onnx (the bundled fast model) gives the int8 row only. A .pth is exported first with fer_export's own exporters (parity-checked)
into OUT_DIR/artifacts; an .onnx gives the onnxruntime rows only. Each backend runs in a fresh
subprocess, so its peak RSS is its own: load the model, evaluate it on --data, then time
``predictor.logits(uint8 batch)`` at each batch size (warm-up, then --reps runs: p50, p90).
Prints a markdown table and writes OUT_DIR/benchmark.json and OUT_DIR/benchmark.md (and the JSON,
with the command that made it, to --json). Exit status:
0 every backend measured or skipped with its reason (no GPU, no checkpoint), 1 some backend failed
(export, quantisation or its run; the row's note says why), 2 bad options.
Method (FLOP counting, peaks): benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from common import (MIN_REPS, Parser, busy_warning, check_exists, check_model, check_output_dir, check_output_file,
                    describe_machine,                     description, machine_info, markdown_table, measured_ceiling, nonnegative_int, onnx_flops,
                    peak_gflops, peak_rss_mb, positive_int, summarize, time_call, write_json)
from common import SHARED_DATA
from record import command_line

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = SHARED_DATA / "fer2013" / "val"
BATCH_SIZES, QUICK_BATCH_SIZES = (1, 8, 32, 128), (1, 32)
REPS, QUICK_REPS = 10, 5
WARMUP, QUICK_WARMUP = 2, 1
QUICK_LIMIT_PER_CLASS = 20  # --quick evaluates 7 x 20 images unless --limit-per-class says otherwise
QUICK_CALIB_IMAGES = 64
EVAL_BATCH = 32
RESULT_MARK = "BENCHMARK-RESULT "  # prefix of the line a worker prints its result on
FAILED = "FAILED:"  # how a note that is a failure (not a skip) starts; any such row makes the exit status 1


@dataclass
class Backend:
    """One row group of the table: what to load and how to run it."""

    name: str
    runtime: str  # "torch" (eager or TorchScript, via load_predictor) or "onnxruntime"
    precision: str  # fp32, bf16 or int8: selects the peak the GFLOP/s are compared with
    device: str  # cpu or cuda
    path: str | None = None  # the artifact; None when it could not be made (see note)
    bf16: bool = False  # torch autocast to bfloat16
    note: str = ""  # why it was skipped, or what is special about it


def backends(model: Path, artifacts: dict[str, Path | None], notes: dict[str, str],
             cuda: dict[str, str]) -> list[Backend]:
    """The rows to measure for ``model``; a row without a path is reported as skipped with its note."""
    onnx, pt, int8 = (artifacts.get(k) for k in ("onnx", "torchscript", "int8"))
    ckpt = str(model) if model.suffix.lower() != ".onnx" else None
    no_ckpt = "" if ckpt else "needs a .pth checkpoint as --model"
    rows = [Backend("torch eager", "torch", "fp32", "cpu", ckpt, note=no_ckpt),
            Backend("torch eager bf16 autocast", "torch", "bf16", "cpu", ckpt, bf16=True, note=no_ckpt),
            Backend("torchscript", "torch", "fp32", "cpu", _str(pt), note=notes.get("torchscript", no_ckpt)),
            Backend("onnxruntime", "onnxruntime", "fp32", "cpu", _str(onnx), note=notes.get("onnx", "")),
            Backend("onnxruntime int8 QDQ", "onnxruntime", "int8", "cpu", _str(int8), note=notes.get("int8", ""))]
    torch_cuda, ort_cuda = cuda.get("torch"), cuda.get("onnxruntime")
    rows += [Backend("torch eager", "torch", "fp32", "cuda", ckpt if torch_cuda is None else None,
                     note=torch_cuda or no_ckpt),
             Backend("torch eager bf16 autocast", "torch", "bf16", "cuda", ckpt if torch_cuda is None else None,
                     bf16=True, note=torch_cuda or no_ckpt),
             Backend("onnxruntime", "onnxruntime", "fp32", "cuda", _str(onnx) if ort_cuda is None else None,
                     note=ort_cuda or notes.get("onnx", ""))]
    return rows


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def cuda_status() -> dict[str, str]:
    """``{runtime: why not}`` for each runtime that cannot use a GPU here (empty: both can)."""
    import onnxruntime as ort

    out = {}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        out["onnxruntime"] = "skipped: no CUDAExecutionProvider in this onnxruntime (CPU build or no GPU)"
    else:  # onnxruntime-gpu is installed: does CUDA really start? (without a GPU it falls back to the CPU)
        why = _ort_cuda_problem()
        if why:
            out["onnxruntime"] = f"skipped: no GPU ({why})"
    try:
        import torch

        if not torch.cuda.is_available():
            out["torch"] = "skipped: torch.cuda.is_available() is False (no GPU)"
    except ImportError:
        out["torch"] = "skipped: torch is not installed"
    return out


def _ort_cuda_problem() -> str:
    """Why onnxruntime's CUDA provider cannot run a one-node graph here ("" when it can)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        with warnings.catch_warnings():  # "not in available provider names": the answer we are after
            warnings.simplefilter("ignore")
            sess = ort.InferenceSession(model.SerializeToString(), opts,
                                        providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return "" if sess.get_providers()[0] == "CUDAExecutionProvider" else "CUDA could not start: no GPU or driver"


def default_calib(data: Path | None) -> Path | None:
    """Training images to calibrate int8 on, never the folder accuracy is measured on: the ``train``
    folder beside ``data`` (Kaggle layout: DATA/val or DATA/test beside DATA/train), else none."""
    if data is None:
        return None
    train = data.resolve().parent / "train"
    return train if train.is_dir() and train != data.resolve() else None


# ---- artifacts -------------------------------------------------------------------------------------

def make_artifacts(model: Path, out: Path, calib: Path | None, calib_images: int | None
                   ) -> tuple[dict[str, Path | None], dict[str, str], list[str]]:
    """``({kind: path}, {kind: note}, reused)`` for onnx, torchscript and int8. A .pth is exported
    with the library (parity-checked against eager) unless OUT/artifacts already holds a passed
    export of the same checkpoint (``reused`` lists those); a failed export is a note on its row."""
    from fer_export.errors import FerExportError
    from fer_export.spec import META_PRECISION

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path | None] = {}
    notes: dict[str, str] = {}
    reused: list[str] = []
    if model.suffix.lower() == ".onnx" and onnx_metadata(model).get(META_PRECISION) == "int8":
        paths["onnx"], notes["onnx"] = None, "skipped: the model is int8 (no fp32 graph to run)"
        paths["int8"], notes["int8"] = model, "the model as given"
        return paths, notes, reused
    if model.suffix.lower() == ".onnx":
        paths["onnx"] = model
    else:
        from fer_export.export import export
        from fer_export.model import sha256_file

        sha = sha256_file(model)
        for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
            path = out / f"{model.stem}{suffix}"
            if is_export_of(path, sha):
                paths[fmt] = path
                reused.append(str(path))
                continue
            try:
                paths[fmt] = export(fmt, model, path, data=calib).path
            except FerExportError as exc:
                paths[fmt], notes[fmt] = None, f"{FAILED} export: {str(exc).splitlines()[0]}"
    if paths.get("onnx") is None:
        paths["int8"], notes["int8"] = None, notes.get("onnx", "no fp32 ONNX model to quantise")
    elif calib is None:
        paths["int8"], notes["int8"] = None, ("skipped: int8 needs training images to calibrate on (--calib DIR; "
                                              "found no train/ folder beside --data)")
    else:
        try:
            paths["int8"] = quantize(paths["onnx"], out / f"{paths['onnx'].stem}.int8.onnx", calib, calib_images)
            notes["int8"] = f"calibrated on {calib_images or 'the default number of'} images from {calib}"
        except FerExportError as exc:
            paths["int8"], notes["int8"] = None, f"{FAILED} quantisation: {str(exc).splitlines()[0]}"
    return paths, notes, reused


def is_export_of(path: Path, source_sha256: str) -> bool:
    """Whether ``path`` is a plain (normalised-input, no TTA) export of the checkpoint with this
    SHA-256 that passed its parity check (only a passed export is stamped and moved into place)."""
    from fer_export.errors import FerExportError
    from fer_export.export import open_artifact
    from fer_export.spec import META_INPUT, META_PARITY, META_SOURCE_SHA256, META_TTA

    if not path.is_file():
        return False
    try:
        meta = open_artifact(path).metadata
    except FerExportError:
        return False
    return (meta.get(META_SOURCE_SHA256) == source_sha256 and META_PARITY in meta
            and meta.get(META_INPUT, "normalized") == "normalized" and meta.get(META_TTA, "none") == "none")


def quantize(fp32: Path, path: Path, calib: Path, calib_images: int | None) -> Path:
    """Static QDQ int8 copy of ``fp32`` with fer_export's quantiser, carrying the fp32 model's
    metadata marked ``int8`` (the benchmark measures its accuracy itself, so no accuracy gate)."""
    from fer_export.spec import META_PRECISION
    from fer_export.export.onnx import stamp_onnx
    from fer_export.export.quantize import quantize_int8
    from fer_export.runtime import spec_from_metadata

    meta = onnx_metadata(fp32)
    quantize_int8(fp32, path, spec_from_metadata(meta, fp32), calib, calib_images)
    stamp_onnx(path, {**meta, META_PRECISION: "int8"})
    return path


def onnx_metadata(path: Path) -> dict[str, str]:
    from fer_export.runtime import open_session, read_metadata

    return read_metadata(open_session(path, "cpu")[0], path)


# ---- one backend, in its own process --------------------------------------------------------------

def open_backend(job: dict):
    """A predictor (``.spec``, ``.logits(uint8 batch)``) for the job's backend."""
    if job["runtime"] == "onnxruntime":
        from fer_export.runtime import EmotionClassifier

        return EmotionClassifier(job["path"], job["device"], threads=job["threads"])
    import torch

    from fer_export.predictors import load_predictor

    torch.set_num_threads(job["threads"])
    predictor = load_predictor(job["path"], bf16=job["bf16"])
    return on_cuda(predictor) if job["device"] == "cuda" else predictor


def on_cuda(predictor):
    """The same TorchPredictor on the GPU: the batch goes over, the logits come back (which synchronises)."""
    import torch

    from fer_export.predictors import TorchPredictor
    from fer_export.preprocess import normalize

    class CudaTorchPredictor(TorchPredictor):
        def logits(self, batch):
            x = torch.from_numpy(normalize(batch, self.spec)).cuda()
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
                return self.module(x).float().cpu().numpy()

    return CudaTorchPredictor(predictor.module.cuda(), predictor.spec, predictor.format, predictor.bf16)


def measure(job: dict) -> dict:
    """Load, evaluate on the labelled folder, time each batch size; return the numbers."""
    import numpy as np

    from fer_export.evaluate import evaluate
    from fer_export.folders import labelled_images

    predictor = open_backend(job)
    spec = predictor.spec
    result: dict = {"rss_after_load_mb": peak_rss_mb()}
    if job["data"]:
        items = labelled_images(job["data"], spec.labels, job["limit_per_class"])
        result |= {"accuracy": evaluate(predictor, items, EVAL_BATCH).accuracy, "eval_images": len(items)}
    rng = np.random.default_rng(0)
    result["batches"] = {}
    for n in job["batch_sizes"]:
        batch = rng.integers(0, 256, (n, *spec.input_size), dtype=np.uint8)
        result["batches"][str(n)] = summarize(time_call(lambda: predictor.logits(batch), job["reps"], job["warmup"]))
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def run_isolated(job: dict) -> dict:
    """:func:`measure` in a fresh interpreter, so peak RSS belongs to this backend alone."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                          cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{FAILED} worker exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1][len(RESULT_MARK):])


# ---- the whole run -------------------------------------------------------------------------------

def rows_for(backend: Backend, measured: dict, flops: float | None, machine: dict, threads: int,
             ceilings: dict) -> list[dict]:
    """One table row per batch size (or one row saying why there are no numbers)."""
    base = {"backend": backend.name, "precision": backend.precision, "device": backend.device,
            "accuracy": measured.get("accuracy"), "eval_images": measured.get("eval_images"),
            "peak_rss_mb": measured.get("peak_rss_mb"), "note": measured.get("error") or backend.note}
    if not measured.get("batches"):
        return [base | {"batch": None}]
    cpu = backend.device == "cpu"
    peak = peak_gflops(machine, backend.precision, threads) if cpu else None
    ceiling = (ceilings.get(backend.precision) or {}).get("gflops") if cpu else None
    rows = []
    for n, t in measured["batches"].items():
        per_s = int(n) / (t["p50_ms"] / 1000)
        gflops = flops * per_s / 1e9 if flops else None
        rows.append(base | {"batch": int(n), **t, "images_per_s": per_s, "gflops": gflops,
                            "peak_gflops": peak, "pct_peak": 100 * gflops / peak if gflops and peak else None,
                            "ceiling_gflops": ceiling,
                            "pct_ceiling": 100 * gflops / ceiling if gflops and ceiling else None})
    return rows


TABLE = (("backend", "backend", None), ("precision", "precision", None), ("device", "device", None),
         ("batch", "batch", None), ("p50 ms", "p50_ms", 2), ("p90 ms", "p90_ms", 2), ("img/s", "images_per_s", 1),
         ("GFLOP/s", "gflops", 1), ("% ceiling", "pct_ceiling", 1), ("% nominal peak", "pct_peak", 1), ("peak RSS MB", "peak_rss_mb", 0),
         ("accuracy %", "accuracy", 2), ("note", "note", None))


def table(rows: list[dict]) -> str:
    def cell(row, key, digits):
        v = row.get(key)
        if v is None or digits is None:
            return v
        return f"{100 * v if key == 'accuracy' else v:.{digits}f}"

    return markdown_table([h for h, _, _ in TABLE], [[cell(r, k, d) for _, k, d in TABLE] for r in rows])


def ort_vs_eager(rows: list[dict], batch: int = 32) -> str:
    """onnxruntime fp32 against eager fp32 on the CPU at ``batch`` (else the largest batch measured)."""
    measured = {r["batch"] for r in rows if r["batch"]}
    batch = batch if batch in measured or not measured else max(measured)

    def speed(name):
        return next((r["images_per_s"] for r in rows if r["backend"] == name and r["precision"] == "fp32"
                     and r["device"] == "cpu" and r["batch"] == batch), None)

    ort, eager = speed("onnxruntime"), speed("torch eager")
    if ort is None or eager is None:
        return f"onnxruntime fp32 vs torch eager fp32 at batch {batch}: not both measured"
    verdict = "at least as fast" if ort >= eager else "SLOWER"
    return (f"onnxruntime fp32 vs torch eager fp32 at batch {batch}: {ort:.1f} vs {eager:.1f} img/s "
            f"({ort / eager:.2f}x, onnxruntime is {verdict})")


def run(args) -> dict:
    machine = machine_info()
    print("measuring the GEMM ceiling per precision ...", file=sys.stderr, flush=True)
    ceilings = measured_ceiling(machine, args.threads)
    models = [run_model(args, name, path, machine, ceilings) for name, path in args.models]
    return {"machine": machine, "ceilings": ceilings, "models": models,
            "peak_gflops": {p: peak_gflops(machine, p, args.threads) for p in ("fp32", "bf16", "int8")},
            "data": _str(args.data), "threads": args.threads, "reps": args.reps, "warmup": args.warmup,
            "batch_sizes": args.batch_sizes, "quick": args.quick}


def run_model(args, name: str, model: Path, machine: dict, ceilings: dict) -> dict:
    """Every backend of one model (``name``: its bundled name, or the file's stem)."""
    out = args.out_dir / name if len(args.models) > 1 else args.out_dir
    model = model.resolve()
    calib = args.calib or default_calib(args.data)
    calib_images = QUICK_CALIB_IMAGES if args.quick else None
    artifacts, notes, reused = make_artifacts(model, out / "artifacts", calib, calib_images)
    graph = artifacts.get("onnx") or artifacts.get("int8")
    flops, flops_by_op, share = None, {}, None
    if graph is not None:
        from fer_export.runtime import spec_from_metadata

        spec = spec_from_metadata(onnx_metadata(graph), graph)
        flops_by_op = onnx_flops(graph, [1, spec.channels, *spec.input_size])
        share = mirrored_share(graph, spec, args.data, args.limit_per_class)
        flops = float(sum(flops_by_op.values())) * (1 + (share or 0))
    rows = []
    for backend in backends(model, artifacts, notes, cuda_status()):
        if backend.path is None:
            rows += rows_for(backend, {}, flops, machine, args.threads, ceilings)
            continue
        job = asdict(backend) | {"threads": args.threads, "batch_sizes": args.batch_sizes, "reps": args.reps,
                                 "warmup": args.warmup, "data": str(args.data) if args.data else None,
                                 "limit_per_class": args.limit_per_class}
        print(f"measuring {backend.name} {backend.precision} on {backend.device} ...", file=sys.stderr, flush=True)
        rows += rows_for(backend, run_isolated(job), flops, machine, args.threads, ceilings)
    as_given = None  # the backend that runs the given file itself (a checkpoint: none, it is exported first)
    if model.suffix.lower() == ".onnx":
        as_given = "onnxruntime int8 QDQ" if artifacts.get("onnx") is None else "onnxruntime"
    return {"name": name, "model": str(model), "size_mb": round(model.stat().st_size / 1e6, 1),
            "as_given": as_given,
            "artifacts": {k: _str(v) for k, v in artifacts.items()}, "artifacts_reused": reused,
            "flops_per_image": flops, "flops_per_image_by_op": flops_by_op, "mirrored_share": share,
            "calib": _str(calib),
            "limit_per_class": args.limit_per_class, "rows": rows}


def mirrored_share(graph: Path, spec, data: Path | None, limit_per_class: int | None) -> float | None:
    """For a ``hflip-uncertain`` graph, the share of the accuracy images it runs twice (its first pass,
    cut out of the graph, below the threshold): its FLOPs per image are one pass times 1 + this share.
    None for other graphs, or without labelled data."""
    import onnx.utils
    import onnxruntime as ort

    from fer_export.export.flip import FIRST_PASS, threshold_of, unsure
    from fer_export.folders import labelled_images
    from fer_export.preprocess import preprocess, read_gray

    flip_below = threshold_of(onnx_metadata(graph))
    if flip_below is None or data is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp) / "first.onnx"
        onnx.utils.extract_model(str(graph), str(first), ["input"], [FIRST_PASS])
        session = ort.InferenceSession(str(first), providers=["CPUExecutionProvider"])
        paths = [p for p, _ in labelled_images(data, spec.labels, limit_per_class)]
        below = 0
        for i in range(0, len(paths), 256):
            logits = session.run(None, {"input": preprocess([read_gray(p) for p in paths[i:i + 256]], spec)})[0]
            below += len(unsure(logits, flip_below))
    return below / len(paths)


def report(result: dict) -> str:
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in result["peak_gflops"].items() if v)
    ceilings = ", ".join(f"{k} {c['gflops']:.0f} ({c['engine']} {c['kernel']})" if (c := result["ceilings"].get(k)) else
                         f"{k} not measured (this CPU has no {k} instructions)" for k in ("fp32", "bf16", "int8"))
    lines = [f"Machine: {describe_machine(result['machine'])}",
             f"Accuracy on {result['data']}; threads {result['threads']}; "
             f"{result['warmup']} warm-up + {result['reps']} timed runs per batch size",
             f"% ceiling: of the fastest large dense kernel (GEMM, or fp32 convolution) measured on the same {result['threads']} threads, GFLOP/s "
             f"(GOP/s for int8): {ceilings}. % nominal peak: of cores x clock x FMA width: {peaks}", ""]
    for m in result["models"]:
        flops, rows = m["flops_per_image"], m["rows"]
        images = next((r["eval_images"] for r in rows if r["eval_images"]), 0)
        share = m.get("mirrored_share")
        mirrored = f"; one pass, and a second for the {100 * share:.1f} % of faces it mirrors" if share is not None else ""
        lines += [f"## {m['name']}: {m['model']} ({m['size_mb']} MB), "
                  + (f"{flops / 1e9:.3f} GFLOP per image (Conv+Gemm MACs x 2{mirrored})" if flops else "FLOPs unknown")
                  + f"; accuracy on {images} images", "", table(rows), "", ort_vs_eager(rows), ""]
    if len(result["models"]) > 1:
        lines += ["## Side by side: each model as given (a checkpoint: its fastest CPU backend)", "",
                  side_by_side(result), ""]
    warning = busy_warning(result["machine"])
    return "\n".join(lines + ([warning] if warning else []))


SIDE = (("model", "name", None), ("file MB", "size_mb", 1), ("GFLOP/image", "gflop", 3), ("backend", "backend", None),
        ("precision", "precision", None), ("batch", "batch", None), ("img/s", "images_per_s", 0),
        ("% ceiling", "pct_ceiling", 1), ("accuracy %", "accuracy", 2))


def side_by_side(result: dict) -> str:
    """Per model, at each of the two largest batch sizes, the CPU row of the file as given (an .onnx),
    else the CPU row with the most images/s."""
    rows = []
    for m in result["models"]:
        measured = [r for r in m["rows"] if r["device"] == "cpu" and r.get("images_per_s")
                    and m.get("as_given") in (None, r["backend"])]
        for batch in sorted({r["batch"] for r in measured})[-2:]:
            best = max((r for r in measured if r["batch"] == batch), key=lambda r: r["images_per_s"])
            rows.append({"name": m["name"], "size_mb": m["size_mb"],
                         "gflop": m["flops_per_image"] / 1e9 if m["flops_per_image"] else None, **best})
    cell = lambda r, k, d: r.get(k) if r.get(k) is None or d is None else (  # noqa: E731
        f"{100 * r[k] if k == 'accuracy' else r[k]:.{d}f}")
    return markdown_table([h for h, _, _ in SIDE], [[cell(r, k, d) for _, k, d in SIDE] for r in rows])


def parse_args(argv=None):
    from fer_export.runtime import BUNDLED_MODELS

    ap = Parser(description=description(__doc__))
    ap.add_argument("--model", nargs="+", metavar="accurate|fast|PATH",
                    help="bundled models by name, .pth checkpoints or exported .onnx files, measured one after "
                         "the other and then side by side (default: every bundled model)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
                    help="labelled folder DIR/<emotion>/*.jpg for accuracy (default: ../shared/data/fer2013/val)")
    ap.add_argument("--calib", type=Path, help="training images to calibrate int8 on (default: the train/ folder "
                                               "beside --data); never the folder accuracy is measured on")
    ap.add_argument("--limit-per-class", type=positive_int, help=f"evaluate at most this many images per class "
                                                        f"(--quick: {QUICK_LIMIT_PER_CLASS})")
    ap.add_argument("--batch-sizes", type=positive_int, nargs="+", help=f"default {BATCH_SIZES}; --quick {QUICK_BATCH_SIZES}")
    ap.add_argument("--reps", type=positive_int,
                    help=f"timed runs per batch size, at least {MIN_REPS} (default {REPS}; --quick {QUICK_REPS})")
    ap.add_argument("--warmup", type=nonnegative_int, help=f"untimed runs first (default {WARMUP}; --quick {QUICK_WARMUP})")
    ap.add_argument("--threads", type=positive_int, default=len(os.sched_getaffinity(0)),
                    help="intra-op threads for torch and onnxruntime alike (default: all CPUs this process may use)")
    ap.add_argument("--quick", action="store_true", help="fewer batch sizes, runs and images: minutes, not tens")
    ap.add_argument("--out-dir", type=Path, help="where artifacts, benchmark.json and benchmark.md go "
                                                 "(default: a new temporary folder)")
    ap.add_argument("--json", type=Path, help="also write benchmark.json here (e.g. benchmarks/results/run.json)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one backend (JSON job), print the result
    args = ap.parse_args(argv)
    if args.worker:
        return args
    names = args.model or [n for n, files in BUNDLED_MODELS.items() if files["cpu"].is_file()]
    if not names:
        ap.error("no bundled model in this install: pass --model PATH")
    args.models = []
    for name in names:  # a name gives the file the CPU runs: int8 for both bundled models
        path = check_model("--model", name, (".onnx", ".pth"))
        args.models.append((name if name in BUNDLED_MODELS else path.stem, path))
    if len({n for n, _ in args.models}) < len(args.models):
        ap.error("--model: two models of the same name; rename one")
    quick = args.quick
    args.batch_sizes = args.batch_sizes or list(QUICK_BATCH_SIZES if quick else BATCH_SIZES)
    args.reps = args.reps or (QUICK_REPS if quick else REPS)
    if args.warmup is None:
        args.warmup = QUICK_WARMUP if quick else WARMUP
    if args.reps < MIN_REPS:
        ap.error(f"--reps must be at least {MIN_REPS} (a median and a spread need them)")
    if args.calib and args.data and args.calib.resolve() == args.data.resolve():
        ap.error("--calib is the folder accuracy is measured on (--data), which would flatter int8's accuracy; "
                 "calibrate on training images")
    if args.limit_per_class is None and quick:
        args.limit_per_class = QUICK_LIMIT_PER_CLASS
    check_exists("--data", args.data, folder=True)
    check_exists("--calib", args.calib, folder=True)
    inputs = [("--data", args.data), ("--calib", args.calib or default_calib(args.data)),
              *(("--model", path) for _, path in args.models)]
    check_output_dir("--out-dir", args.out_dir, inputs, marker="benchmark.json",
                     own={"benchmark.json", "benchmark.md", "artifacts", *(n for n, _ in args.models)})
    if args.out_dir is not None:
        check_output_file("--out-dir", args.out_dir / "benchmark.json", inputs)
    check_output_file("--json", args.json, inputs)
    args.out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="fer-bench-"))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_MARK + json.dumps(measure(json.loads(args.worker))), flush=True)
        return 0
    result = run(args) | {"command": command_line("run.py", argv)}
    text = report(result)
    print(text)
    write_json(args.out_dir / "benchmark.json", result)
    (args.out_dir / "benchmark.md").write_text(text + "\n")
    print(f"\nwrote {args.out_dir / 'benchmark.json'} and {args.out_dir / 'benchmark.md'}")
    if args.json:
        print(f"wrote {write_json(args.json, result)}")
    return 1 if any(r["note"].startswith(FAILED) for m in result["models"] for r in m["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
