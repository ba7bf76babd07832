"""What every benchmark script shares: the machine, its peak per precision, timing, FLOPs, output.

Scripts in this folder put ``benchmarks/`` first on ``sys.path`` (Python does that for a script),
so ``from common import ...`` works when they run as ``python benchmarks/NAME.py``. Nothing here
imports torch; :func:`onnx_flops` needs the ``onnx`` package (the ``train`` extra).
See README.md in this folder for how the FLOPs and the peaks are derived.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, NoReturn, Sequence

import numpy as np

from fer_export.cpu import cpu_info, first_processor

#: The shared data (FER2013 splits, photos, videos, models): ``$FER_SHARED_DATA``, else ``../shared/data``
#: beside the checkout, as the tests read it.
SHARED_DATA = Path(os.environ.get("FER_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

#: Bits of SIMD FMA a core completes per cycle. Zen 4 has two 256-bit FMA pipes and runs a 512-bit
#: (zmm) instruction as two 256-bit halves: one zmm FMA, VDPBF16PS or VPDPBUSD per cycle per core.
#: Zen 2/3 (AVX2) and Intel client cores also reach 512; Intel Xeons with two 512-bit FMA ports
#: reach 1024, so on those the % of peak printed here is twice too high.
FMA_BITS_PER_CYCLE = 512
#: Operations one 32-bit lane of one instruction counts, per precision:
#: fp32 FMA = 1 multiply + 1 add; bf16 VDPBF16PS = 2 products + 2 adds into an fp32 lane;
#: int8 VPDPBUSD = 4 u8*s8 products + 4 adds into an int32 lane.
OPS_PER_LANE = {"fp32": 2, "bf16": 4, "int8": 8}
#: CPU flags each precision's fast path needs (else: bf16 runs at the fp32 rate, int8 has no peak here).
PRECISION_FLAGS = {"bf16": ("avx512_bf16", "avx_bf16"), "int8": ("avx512_vnni", "avx_vnni")}
#: Operations per cycle per core of Intel's AMX tile unit (TMUL), where the CPU has its flag: int8
#: ``tdpbusd`` 1,024 multiply-adds, bf16 ``tdpbf16ps`` 512 (Intel's optimisation manual, Sapphire Rapids).
AMX_OPS_PER_CYCLE = {"bf16": ("amx_bf16", 1024), "int8": ("amx_int8", 2048)}
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "avx512_vnni", "avx_vnni",
              "amx_tile", "amx_bf16", "amx_int8")
MIN_REPS = 5
BUSY_LOAD = 0.25  # 1-minute load average per CPU above which the machine counts as busy


# ---- the machine ---------------------------------------------------------------------------------

def _clock(info: dict[str, str]) -> tuple[float | None, str]:
    """``(MHz, what it is)``: cpufreq's maximum when the kernel exposes it, else /proc/cpuinfo's value."""
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_freq.is_file():
        return int(max_freq.read_text()) / 1000, "maximum (cpufreq cpuinfo_max_freq)"
    if "cpu MHz" in info:
        return float(info["cpu MHz"]), ("nominal: /proc/cpuinfo 'cpu MHz' without cpufreq (under a hypervisor "
                                        "the TSC rate); boost clocks are not visible, so the true peak may be higher")
    return None, "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """CPU model, physical cores this process may use, clock, SIMD flags and library versions."""
    info = first_processor()
    flags = set(info.get("flags", "").split())
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_core = max(1, int(info.get("siblings", 1)) // max(1, int(info.get("cpu cores", 1))))
    mhz, clock_source = _clock(info)
    return {
        "cpu": cpu_info().model,
        "isa": list(cpu_info().features),  # the instruction sets that change int8 and bf16 kernels
        "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
        "logical_cpus": logical,
        "cores": max(1, logical // per_core),
        "clock_mhz": mhz,
        "clock_source": clock_source,
        "flags": [f for f in SIMD_FLAGS if f in flags],
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        **{name: _version(name) for name in ("numpy", "onnxruntime", "onnxruntime-gpu", "torch", "onnx")},
    }


def peak_gflops(machine: dict, precision: str, cores: int | None = None) -> float | None:
    """Theoretical CPU peak in GFLOP/s (GOP/s for int8): cores x GHz x lanes x ops per lane.

    ``cores``: how many the run may use (its thread count), at most the machine's; default all.

    ``None`` when the clock is unknown, the CPU has no FMA, or int8 has no VNNI. With AMX
    (``amx_bf16``, ``amx_int8``) bf16 and int8 take the tile unit's rate, :data:`AMX_OPS_PER_CYCLE`.
    """
    flags, mhz = set(machine["flags"]), machine["clock_mhz"]
    if not mhz or not ({"avx512f", "fma"} & flags):
        return None
    cores = min(cores or machine["cores"], machine["cores"])
    flag, per_cycle = AMX_OPS_PER_CYCLE.get(precision, (None, 0))
    if flag in flags:
        return cores * mhz / 1000 * per_cycle
    lanes = FMA_BITS_PER_CYCLE // 32
    if precision == "fp32" or (precision == "bf16" and not set(PRECISION_FLAGS["bf16"]) & flags):
        ops = OPS_PER_LANE["fp32"]
    elif precision in PRECISION_FLAGS and set(PRECISION_FLAGS[precision]) & flags:
        ops = OPS_PER_LANE[precision]
    else:
        return None
    return cores * mhz / 1000 * lanes * ops


def busy_warning(machine: dict) -> str | None:
    """A warning when other work was running as the benchmark started: timings are then not the
    machine's (threads that wait for a descheduled peer slow down by orders of magnitude)."""
    load = machine.get("load_average_1min")
    if load is not None and load > BUSY_LOAD * machine["logical_cpus"]:
        return (f"WARNING: load average {load:.1f} on {machine['logical_cpus']} CPUs when this started: other "
                f"work is running, so these timings do not describe the machine; rerun when it is idle")
    return None


def print_report(machine: dict, table: str, json_path: str | Path | None = None, result: dict | None = None,
                 note: str = "") -> None:
    """A benchmark's ending: the machine, the table, ``note``, the busy warning, and the JSON written
    to ``json_path`` (when given)."""
    print(f"Machine: {describe_machine(machine)}\n")
    print(table)
    if note:
        print(note)
    warning = busy_warning(machine)
    if warning:
        print(warning)
    if json_path:
        print(f"wrote {write_json(json_path, result)}")


def describe_machine(machine: dict) -> str:
    """One paragraph: the machine and its peaks, for the top of a table."""
    peaks = ", ".join(f"{p} {peak_gflops(machine, p) or float('nan'):.0f}" for p in OPS_PER_LANE)
    versions = ", ".join(f"{k} {machine[k]}" for k in ("onnxruntime", "onnxruntime-gpu", "torch") if machine[k])
    clock = machine["clock_source"].split(":")[0]
    isa = machine.get("isa") or []
    int8 = ("int8 sums pairs without saturation" if {"VNNI", "AMX"} & set(isa) else
            "no VNNI: int8 kernels sum pairs of products into saturating int16")
    return (f"{machine['cpu']} (family/model {machine['cpu_family_model']}), {machine['cores']} cores at "
            f"{machine['clock_mhz']} MHz ({clock}); int8/bf16 instruction sets: {', '.join(isa) or 'none'} ({int8}); "
            f"flags {' '.join(machine['flags'])}; peak GFLOP/s {peaks}; {versions}, Python {machine['python']}")


# ---- measuring -----------------------------------------------------------------------------------

def time_call(fn: Callable[[], object], reps: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``reps`` calls of ``fn`` after ``warmup`` untimed calls."""
    if reps < MIN_REPS:
        raise ValueError(f"reps must be at least {MIN_REPS} to give a median and a spread, got {reps}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def summarize(seconds: Sequence[float]) -> dict:
    """Median (p50), p10, p90, min and max in milliseconds, and the spread (p90 - p10) / p50."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    p10, p50, p90 = np.percentile(ms, [10, 50, 90])
    return {"reps": len(ms), "p50_ms": float(p50), "p90_ms": float(p90), "p10_ms": float(p10),
            "min_ms": float(ms.min()), "max_ms": float(ms.max()), "spread": float((p90 - p10) / p50)}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    Linux's ``VmHWM`` belongs to this process image alone; ``ru_maxrss`` (the fallback elsewhere)
    keeps the peak of the parent that forked it, so a fresh subprocess would report its parent's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    scale = 1 if platform.system() == "Darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


def onnx_flops(path: str | Path, input_shape: Sequence[int]) -> dict[str, int]:
    """FLOPs of one forward pass, from the graph: ``{op type: flops}`` for Conv, Gemm and MatMul.

    A multiply-accumulate counts 2. Conv: 2 * N * Cout * Hout * Wout * (Cin / groups) * kH * kW;
    Gemm and MatMul: 2 * M * K * N. Shapes come from ONNX shape inference with the input fixed to
    ``input_shape``. Bias adds, batch norm, activations, pooling and softmax are not counted.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    graph_input = next(i for i in graph.input if i.name not in inits)
    dims = graph_input.type.tensor_type.shape.dim
    for d, size in zip(dims, input_shape):
        d.Clear()
        d.dim_value = int(size)
    del graph.value_info[:]
    for out in graph.output:  # drop declared (symbolic) output shapes so inference fills them
        out.type.tensor_type.ClearField("shape")
    graph = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for v in [*graph.input, *graph.value_info, *graph.output]:
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    flops: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "Conv":
            w, y = shapes[node.input[1]], shapes[node.output[0]]
            n = 2 * int(np.prod(y)) * int(np.prod(w[1:]))
        elif node.op_type == "Gemm":
            a = shapes[node.input[0]]
            trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
            n = 2 * int(np.prod(shapes[node.output[0]])) * a[0 if trans_a else 1]
        elif node.op_type == "MatMul":
            n = 2 * int(np.prod(shapes[node.output[0]])) * shapes[node.input[0]][-1]
        else:
            continue
        flops[node.op_type] = flops.get(node.op_type, 0) + n
    return flops


# ---- output --------------------------------------------------------------------------------------

def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; columns of numbers right-aligned, ``None`` shown as ``-``."""
    def cell(v):
        return "-" if v is None else str(v)

    body = [[cell(v) for v in row] for row in rows]
    numeric = [all(_is_number(r[i]) for r in rows if r[i] is not None) and any(r[i] is not None for r in rows)
               for i in range(len(headers))]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)) + " |"
    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in body)])


def _is_number(v) -> bool:
    """A number, or a number already formatted as text (both are right-aligned)."""
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return False
        return True
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def write_json(path: str | Path, result: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def default_model(tmp: str | Path) -> Path:
    """The model a benchmark runs when none is given: the bundled accurate model's fp32 export, else (needs torch) a randomly
    initialised seed-format ResNet18 at 224 px exported through fer-export's own parity gate."""
    from fer_export.runtime import ACCURATE_FP32

    if ACCURATE_FP32.is_file():
        return ACCURATE_FP32
    import torch

    from fer_export.export import export
    from fer_export.model import build_model, save_checkpoint
    from fer_export.spec import SEED_SPEC

    torch.manual_seed(0)
    ckpt = save_checkpoint(Path(tmp) / "resnet18_224.pth", build_model(SEED_SPEC), SEED_SPEC)
    return export("onnx", ckpt).path


# ---- the measured ceiling ------------------------------------------------------------------------

#: Square GEMM sizes the ceiling is measured at (the best of them counts).
CEILING_SIZES = (1024, 2048)


def _ort_gemm(n: int, precision: str, threads: int):
    """A callable running one n x n x n MatMul in onnxruntime (MLAS), fp32 or int8 (MatMulInteger: u8 x s8).
    B is a constant, as a model's weights are: onnxruntime packs it once, as it packs convolution
    weights, instead of on every call."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if precision == "fp32":
        elem, a = TensorProto.FLOAT, rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        node, out_type = helper.make_node("MatMul", ["a", "b"], ["c"]), TensorProto.FLOAT
        inputs = [helper.make_tensor_value_info("a", elem, [n, n])]
    else:
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
        b = rng.integers(-128, 128, (n, n), dtype=np.int8)
        node, out_type = helper.make_node("MatMulInteger", ["a", "b"], ["c"]), TensorProto.INT32
        inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])]
    graph = helper.make_graph([node], "gemm", inputs, [helper.make_tensor_value_info("c", out_type, [n, n])],
                              initializer=[numpy_helper.from_array(b, "b")])
    sess = _ort_session(graph, threads)
    return lambda: sess.run(None, {"a": a})


def _ort_session(graph, threads: int):
    """A CPU onnxruntime session of a one-node ``graph`` (opset 18) on ``threads`` threads."""
    import onnxruntime as ort
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


#: The convolution the fp32 ceiling also times: 3x3, 512 -> 512 channels on 28x28 (3.7 GFLOP), a
#: ResNet layer's shape. onnxruntime's direct convolution kernels beat its MatMul (and torch's MKL GEMM,
#: which takes a slower code path on AMD CPUs) on some CPUs: a ceiling without it reads above 100 %.
CEILING_CONV = (512, 28, 3)


def _ort_conv(threads: int):
    """A callable running CEILING_CONV once in onnxruntime (fp32, weights constant)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    c, hw, k = CEILING_CONV
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c, c, k, k)) * 0.01).astype(np.float32)
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, c, hw, hw]) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[k // 2] * 4)], "conv", io[:1], io[1:],
                              initializer=[numpy_helper.from_array(w, "w")])
    sess = _ort_session(graph, threads)
    return lambda: sess.run(None, {"x": x})


def _torch_gemm(n: int, precision: str, threads: int):
    """A callable running one n x n x n matmul in torch (oneDNN/MKL), fp32 or bf16; None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return lambda: torch.mm(a, b)


def _kernels(precision: str, flags: set[str], threads: int):
    """``(engine, kernel, flops, make)`` for every kernel the ceiling of ``precision`` is the best of;
    ``make()`` returns the callable to time (None: that engine is not installed)."""
    gemms = {"fp32": [("onnxruntime", _ort_gemm), ("torch", _torch_gemm)], "bf16": [("torch", _torch_gemm)],
             "int8": [("onnxruntime", _ort_gemm)]}[precision]
    if precision != "fp32" and not set(PRECISION_FLAGS[precision]) & flags:
        return
    for engine, gemm in gemms:
        for n in CEILING_SIZES:
            yield engine, f"GEMM {n}^3", 2 * n ** 3, lambda gemm=gemm, n=n: gemm(n, precision, threads)
    if precision == "fp32":
        c, hw, k = CEILING_CONV
        yield "onnxruntime", f"Conv {k}x{k} {c}ch {hw}x{hw}", 2 * c * c * k * k * hw * hw, lambda: _ort_conv(threads)


def measured_ceiling(machine: dict, threads: int, reps: int = 5) -> dict[str, dict]:
    """``{precision: {gflops, engine, kernel}}``: the fastest large dense kernel this machine runs on
    ``threads`` threads, per precision (fp32 always; bf16 and int8 where the CPU has the instructions),
    over onnxruntime's and torch's square GEMMs and (fp32) onnxruntime's convolution. It is what the
    % ceiling column divides by: a real, measured rate on the same cores, where the nominal peak
    guesses clock and FMA width."""
    flags = set(machine["flags"])
    out = {}
    for precision in ("fp32", "bf16", "int8"):
        for engine, kernel, flops, make in _kernels(precision, flags, threads):
            fn = make()
            if fn is None:
                continue
            gflops = flops / min(time_call(fn, reps, warmup=1)) / 1e9
            if precision not in out or gflops > out[precision]["gflops"]:
                out[precision] = {"gflops": gflops, "engine": engine, "kernel": kernel}
    return out


# ---- options and outputs ------------------------------------------------------------------------
# Every script checks its options and where it writes before it measures anything: a bad option, or
# an output that would replace an input, land inside a data folder or overwrite a file that is not the
# script's own, is one line ``error: ...`` on stderr and exit status 2.

class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``error: ...``, with exit status 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def refuse(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def description(doc: str) -> str:
    """A script's --help description: the module docstring's whole first paragraph (not its first line,
    which may stop mid-sentence), as one line."""
    text = " ".join(doc.strip().split("\n\n")[0].split()).replace("``", "")
    return text[:-1] + "." if text.endswith(":") else text


def _number(kind, what: str):
    """An argparse ``type=``: ``kind`` that is > 0 (``positive``) or >= 0 (``non-negative``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0 or (what == "positive" and value == 0) or value != value:
            raise argparse.ArgumentTypeError(f"{text} is not {what}; give a {what} number")
        return value
    parse.__name__ = f"{what} {kind.__name__}"
    return parse


positive_int = _number(int, "positive")
nonnegative_int = _number(int, "non-negative")
positive_float = _number(float, "positive")


def _refused(check: Callable, *args) -> None:
    """Run one of fer_export.outputs' checks; its refusal ends the script (exit status 2)."""
    from fer_export.errors import OutputError

    try:
        check(*args)
    except OutputError as exc:
        refuse(str(exc))


def _clash(option: str, path: Path, inputs) -> None:
    """Refuse ``path`` when it is an input file or is (or lies inside) an input folder."""
    from fer_export.outputs import check_outside

    for what, given in inputs:
        _refused(check_outside, what, given, [(option, path)])


def check_output_file(option: str, path: Path | None, inputs=(), is_own=None) -> None:
    """``path`` (a file this script writes) may not be an input or lie in an input folder, and an existing
    file there must be one this script wrote (``is_own(path)``; default: JSON or empty)."""
    from fer_export.outputs import check_own_file

    if path is None:
        return
    _clash(option, path, inputs)
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        refuse(f"{option} {path}: {parent} is a file, not a folder; give another path")
    _refused(check_own_file, option, path, is_own or _is_json,
             "is not output of this script; remove it or choose another path")


def check_output_dir(option: str, path: Path | None, inputs=(), marker: str = "", own=()) -> None:
    """``path`` (a folder this script writes into) may not be an input, lie in an input folder or hold an
    input folder, and must be new, empty, or hold only this script's outputs: ``marker`` (a JSON file
    every finished run writes there) or only names in ``own``."""
    if path is None:
        return
    from fer_export.outputs import is_inside

    _clash(option, path, inputs)
    for what, given in inputs:
        if given is not None and os.path.isdir(given) and is_inside(given, path):
            refuse(f"{option} {path}: holds {what} {given}, an input of this run; write the output elsewhere")
    if path.exists() and not path.is_dir():
        refuse(f"{option} {path}: is a file, not a folder; give a new or empty folder")
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if names and not (marker in names and _is_json(path / marker)) and not names <= set(own):
            refuse(f"{option} {path}: holds files that are not this script's output (no {marker} from an "
                   f"earlier run); give a new or empty folder")


def _is_json(path: Path) -> bool:
    """Whether ``path`` is a file that is empty or parses as JSON."""
    try:
        text = path.read_text()
        if text.strip():
            json.loads(text)
        return True
    except (OSError, ValueError):
        return False


def check_model(option: str, name: str, suffixes=(".onnx",)) -> Path:
    """The file behind a bundled model's name or a path; refused unless it exists with one of ``suffixes``."""
    from fer_export.errors import ArtifactError
    from fer_export.runtime import resolve_model

    try:
        path = resolve_model(name, "cpu")
    except ArtifactError as exc:
        refuse(f"{option} {name}: {str(exc).splitlines()[0]}")
    if not path.is_file():
        refuse(f"{option} {name}: no such file, and not a bundled model name (accurate, fast)")
    if path.suffix.lower() not in suffixes:
        refuse(f"{option} {name}: not a {' or '.join(suffixes)} file; give an exported model or a bundled name "
               f"(accurate, fast)")
    return path


def check_exists(option: str, path: Path | None, folder: bool | None = None) -> None:
    """Refuse a missing ``path`` (``folder``: True must be a folder, False a file, None either)."""
    if path is None:
        return
    ok = path.is_dir() if folder else path.is_file() if folder is False else path.exists()
    if not ok:
        kind = "folder" if folder else "file" if folder is False else "file or folder"
        refuse(f"{option} {path}: no such {kind}; check the path")
