"""int8 schemes side by side: which weights give the same answers on every CPU, at what accuracy and speed.

    python benchmarks/int8_schemes.py [--model accurate|M.onnx] [--data DIR] [--calib DIR]
                                      [--limit-per-class N] [--emulate-cpu EPYC-Milan] [--json out.json]

``--model`` is an fp32 ONNX file (default: the bundled accurate model's fp32 file). Each scheme
quantises it on the same 256 images of ``--calib`` (default: the training split beside ``--data``),
seed 0, then is measured on the labelled ``--data`` (default PublicTest):

- ``7bit``: uint8 activations, 7-bit int8 weights (-64..64): fer-export's scheme;
- ``full``: the same with full-range int8 weights (-127..127), which CPUs without VNNI saturate;
- ``u8u8``: uint8 weights, which no CPU saturates, but which VNNI and AMX do not accelerate.

Per scheme: whether its weights can saturate (:func:`fer_export.export.quantize.saturation_problems`),
top-1 accuracy as this CPU's int8 kernels run it and as its literal run (graph optimisations off,
no int8 kernels: the file's own definition), their agreement, and images/s at batch 32 on one and
two threads. ``--emulate-cpu NAME`` also runs each file's int8 kernels on ``--emulate-faces`` faces
under ``qemu-x86_64 -cpu NAME`` (Debian's ``qemu-user``), which executes the instruction set of that
CPU model (``EPYC-Milan``: Zen 3, AVX2 without VNNI), and reports their agreement with the literal run.
Every figure holds for the CPU named in the machine line; speeds need an idle machine.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (Parser, check_exists, check_model, check_output_file, description, machine_info,  # noqa: E402
                    markdown_table, positive_int, print_report)
from common import SHARED_DATA  # noqa: E402
from record import command_line, portable  # noqa: E402

DATA = SHARED_DATA / "fer2013" / "val"
SEED = 0


def schemes() -> dict[str, dict]:
    """quantize_static options per scheme, over fer-export's own (quantize.quantize_sample)."""
    from onnxruntime.quantization import QuantType

    return {"7bit": {}, "full": {"reduce_range": False},
            "u8u8": {"reduce_range": False, "weight_type": QuantType.QUInt8}}


#: Run by the emulated CPU: the file's int8 kernels on the saved inputs, probabilities saved.
_EMULATED = """
import sys, numpy as np, onnxruntime as ort
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
np.save(sys.argv[3], sess.run(["probs"], {"input": np.load(sys.argv[2])})[0])
"""


def emulated_probs(path: Path, x: np.ndarray, cpu: str, work: Path) -> np.ndarray:
    """The model at ``path`` on ``x`` as the CPU model ``cpu`` computes it (under qemu-user)."""
    np.save(work / "x.npy", x)
    out = work / "p.npy"
    run = subprocess.run(["qemu-x86_64", "-cpu", cpu, sys.executable, "-c", _EMULATED, str(path), str(work / "x.npy"),
                          str(out)], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"qemu-x86_64 -cpu {cpu} failed: {run.stderr.strip().splitlines()[-1:]}")
    return np.load(out)


def measure(model: Path, data: Path, calib: Path, limit_per_class: int | None, emulate: str | None,
            emulate_faces: int) -> dict:
    from fer_export.export.quantize import (CALIB_IMAGES, images_per_second, labelled_batch, outputs,
                                            quantize_sample, saturation_problems)
    from fer_export.folders import image_files, sample_of
    from fer_export.runtime import EmotionClassifier

    spec = EmotionClassifier(model, "cpu", self_check=False).spec
    x, y = labelled_batch(data, spec, limit_per_class)
    reference = outputs(model, x, "probs")
    rows = [{"scheme": "fp32", "file": portable(str(model)), "accuracy": float((reference.argmax(1) == y).mean()),
             "images_per_s_1": images_per_second(model, spec, threads=1),
             "images_per_s_2": images_per_second(model, spec, threads=2)}]
    sample = sample_of(image_files(calib), CALIB_IMAGES, SEED)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, scheme in schemes().items():
            path = work / f"{name}.onnx"
            quantize_sample(model, path, spec, sample, **scheme)
            fused, literal = outputs(path, x, "probs"), outputs(path, x, "probs", literal=True)
            row = {"scheme": name, "saturating_tensors": len(saturation_problems(path)),
                   "accuracy": float((fused.argmax(1) == y).mean()),
                   "accuracy_literal": float((literal.argmax(1) == y).mean()),
                   "agreement_literal": float((fused.argmax(1) == literal.argmax(1)).mean()),
                   "max_diff_literal": float(np.abs(fused - literal).max()),
                   "agreement_fp32": float((fused.argmax(1) == reference.argmax(1)).mean()),
                   "images_per_s_1": images_per_second(path, spec, threads=1),
                   "images_per_s_2": images_per_second(path, spec, threads=2)}
            if emulate:
                faces = np.linspace(0, len(x) - 1, emulate_faces).astype(int)
                probs = emulated_probs(path, x[faces], emulate, work)
                row |= {"emulated_agreement": float((probs.argmax(1) == literal[faces].argmax(1)).mean()),
                        "emulated_max_diff": float(np.abs(probs - literal[faces]).max())}
            rows.append(row)
            print(f"{name}: {row}", file=sys.stderr, flush=True)
    return {"model": portable(str(model)), "data": portable(str(data)), "images": len(y), "calib": portable(str(calib)),
            "seed": SEED,
            "emulated_cpu": emulate, "emulated_faces": emulate_faces if emulate else None, "schemes": rows}


def table(result: dict) -> str:
    pct = lambda v: None if v is None else f"{100 * v:.2f}"  # noqa: E731
    headers = ["scheme", "saturating tensors", "accuracy %", "literal run %", "agrees with literal %",
               "max prob diff", "img/s 1 thread", "img/s 2 threads"]
    if result["emulated_cpu"]:
        headers.append(f"agrees with literal on {result['emulated_cpu']} %")
    body = []
    for r in result["schemes"]:
        row = [r["scheme"], r.get("saturating_tensors"), pct(r["accuracy"]), pct(r.get("accuracy_literal")),
               pct(r.get("agreement_literal")), None if "max_diff_literal" not in r else f"{r['max_diff_literal']:.4f}",
               f"{r['images_per_s_1']:.0f}", f"{r['images_per_s_2']:.0f}"]
        if result["emulated_cpu"]:
            row.append(pct(r.get("emulated_agreement")))
        body.append(row)
    return markdown_table(headers, body)


def main(argv=None) -> int:
    ap = Parser(description=description(__doc__))
    ap.add_argument("--model", default="accurate", help="an fp32 ONNX file (default: the accurate model's fp32 file)")
    ap.add_argument("--data", type=Path, default=DATA, help="labelled folder: <emotion>/*.jpg")
    ap.add_argument("--calib", type=Path, help="images to calibrate on (default: train/ beside --data)")
    ap.add_argument("--limit-per-class", type=positive_int, help="at most N images per class (seeded sample)")
    ap.add_argument("--emulate-cpu", metavar="NAME", help="also run the int8 kernels under qemu-x86_64 -cpu NAME")
    ap.add_argument("--emulate-faces", type=positive_int, default=16, help="faces run under emulation (slow)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    from fer_export.runtime import ACCURATE_FP32

    model = ACCURATE_FP32 if args.model == "accurate" else check_model("--model", args.model)
    calib = args.calib or args.data.parent / "train"
    check_exists("--data", args.data, folder=True)
    check_exists("--calib", calib, folder=True)
    if calib.resolve() == args.data.resolve():
        ap.error("--calib must not be the folder accuracy is measured on")
    if args.emulate_cpu and not shutil.which("qemu-x86_64"):
        ap.error("--emulate-cpu needs qemu-x86_64 (apt-get install qemu-user)")
    check_output_file("--json", args.json, [("--data", args.data), ("--calib", calib), ("--model", model)])
    machine = machine_info()
    result = measure(model, args.data, calib, args.limit_per_class, args.emulate_cpu, args.emulate_faces)
    result |= {"command": command_line("int8_schemes.py", argv), "machine": machine}
    print_report(machine, table(result), args.json, result,
                 note=f"\n{result['images']} images of {result['data']}; each scheme calibrated on 256 images of "
                      f"{result['calib']} (seed {SEED}); batch 32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
