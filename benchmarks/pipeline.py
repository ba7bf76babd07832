"""fer-batch end to end against a bare onnxruntime session on the same model and batch size.

    python benchmarks/pipeline.py [--model M.onnx] [--crops 128] [--batch-size 32] [--repeat 3] [--json out.json]

Measures (1) FER2013 face crops/s: the bare session runs already-prepared batches (no decoding,
no resizing, no CSV), fer-batch does everything (decode, resize, batch, infer, write, fsync) and its
wall time includes opening the model; (2) video frames/s with YuNet detection for one shared video,
with fer-batch's per-stage seconds (decode/detect/preprocess are summed over producer threads, so
they can exceed the wall time). Without --model, a randomly initialised ResNet18 at the seed's
224x224 input is exported first (needs torch; speed does not depend on the weights).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import (Parser, check_exists, check_model, check_output_file, default_model, description, machine_info,
                    markdown_table, positive_int, print_report, refuse)
from common import SHARED_DATA
from record import command_line, portable

DATA = SHARED_DATA
CROPS = DATA / "fer2013" / "val"


def bare_session(model: Path, crops: list[Path], batch_size: int) -> float:
    """Crops/s of ``session.run`` alone on prepared batches."""
    from fer_export.preprocess import preprocess, read_gray
    from fer_export.runtime import EmotionClassifier

    clf = EmotionClassifier(model, "cpu", batch_size)
    x = preprocess([read_gray(p) for p in crops], clf.spec)
    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    clf.run(batches[0])  # warm-up
    t0 = time.perf_counter()
    for b in batches:
        clf.run(b)
    return len(x) / (time.perf_counter() - t0)


def fer_batch(inputs, out: Path, **kw):
    from fer_export.batch import BatchConfig, run_batch

    t0 = time.perf_counter()
    report = run_batch(BatchConfig.build(inputs, out, provider="cpu", overwrite=True, progress=False, **kw))
    return report, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = Parser(description=description(__doc__))
    ap.add_argument("--model", metavar="accurate|fast|M.onnx",
                    help="a bundled model's name or an exported ONNX model (default: the bundled accurate model's "
                         "fp32 export, else a random 224 px ResNet18)")
    ap.add_argument("--crops", type=positive_int, default=1000,
                    help="FER2013 val crops to classify (enough that opening the model is amortised)")
    ap.add_argument("--batch-size", type=positive_int, default=32)
    ap.add_argument("--repeat", type=positive_int, default=3, help="crop measurements, best of")
    ap.add_argument("--video", type=Path, default=DATA / "videos" / "pyfeat_WolfgangLanger_Pexels.mp4")
    ap.add_argument("--yunet-model", type=Path, default=DATA / "models" / "face_detection_yunet_2026may.onnx")
    ap.add_argument("--json", type=Path, help="where to write the JSON result (default: a new temporary folder)")
    args = ap.parse_args(argv)
    model = check_model("--model", args.model) if args.model else None
    check_exists("--video", args.video, folder=False)
    check_exists("--yunet-model", args.yunet_model, folder=False)
    crops = sorted(CROPS.rglob("*.jpg"))[:args.crops]
    if not crops:
        refuse(f"no FER2013 crops under {CROPS} to classify; place the shared data there (../shared/data)")
    check_output_file("--json", args.json, [("--model", model), ("--video", args.video),
                                            ("--yunet-model", args.yunet_model), ("the crops folder", CROPS)])
    machine = machine_info()  # before any work of ours: its load average tells whether others are busy
    tmp = Path(tempfile.mkdtemp(prefix="fer-bench-"))
    args.json = args.json or tmp / "benchmark_pipeline.json"
    if model is None:
        model = default_model(tmp)
    bs = args.batch_size

    bare, piped = 0.0, 0.0
    for _ in range(args.repeat):  # alternate, keep the best of each: other work on the machine is noise
        bare = max(bare, bare_session(model, crops, bs))
        report, wall = fer_batch(crops, tmp / "crops.csv", model=model, batch_size=bs, detector="none")
        piped = max(piped, len(crops) / wall)
    vreport, vwall = fer_batch([args.video], tmp / "video.csv", model=model, batch_size=bs, detector="yunet",
                               yunet_model=args.yunet_model)
    result = {
        "command": command_line("pipeline.py", argv), "model": portable(str(model)), "batch_size": bs,
        "crops": len(crops),
        "bare_session_crops_per_s": round(bare, 1), "fer_batch_crops_per_s": round(piped, 1),
        "ratio": round(piped / bare, 3), "crops_stages_s": report.timings,
        "video": portable(str(args.video)), "video_frames": vreport.frames, "video_faces": vreport.faces,
        "video_frames_per_s": round(vreport.frames / vwall, 1), "video_stages_s": vreport.timings,
        "video_wall_s": round(vwall, 2), "machine": machine,
    }
    rows = [[key, result[key]] for key in ("bare_session_crops_per_s", "fer_batch_crops_per_s", "ratio",
                                            "video_frames", "video_faces", "video_frames_per_s", "video_wall_s")]
    rows += [[f"{name} stages (s)", "  ".join(f"{k} {v:.2f}" for k, v in result[f"{name}_stages_s"].items())]
             for name in ("crops", "video")]
    print_report(machine, markdown_table(["measure", "value"], rows), args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
