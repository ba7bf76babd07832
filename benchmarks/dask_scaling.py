"""fer-batch in local mode against ``--dask local:N`` on the same folder.

    python benchmarks/dask_scaling.py [--model M.onnx] [--crops 200] [--video V.mp4] [--every-n 2]
                                      [--workers 2] [--json dask_scaling.json]

The folder holds FER2013 val face crops (classified whole) and one video (YuNet detection), linked
into a temporary folder. Each mode runs once, as the CLI would, and its wall time includes opening
the model; the Dask run's also includes starting the LocalCluster (measured on its own beside it, so
the table shows both). The rows of the two CSVs are compared: equal except probabilities, whose
largest difference is reported. Without --model, a randomly initialised ResNet18 at the seed's
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


def cluster_start_s(workers: int) -> float:
    """Seconds to start (and close) a LocalCluster of ``workers`` processes with a client on it."""
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as c, \
            Client(c) as client:
        client.wait_for_workers(workers)
        return time.perf_counter() - t0


def run(folder: Path, out: Path, cluster: str | None, **kw):
    """``(report, wall seconds)`` of one fer-batch run, locally or on ``cluster``."""
    from fer_export.batch import BatchConfig, run_batch

    cfg = BatchConfig.build([folder], out, provider="cpu", overwrite=True, progress=False, **kw)
    t0 = time.perf_counter()
    report = run_batch(cfg, cluster)
    return report, time.perf_counter() - t0


def compare(a: Path, b: Path) -> tuple[bool, float | None]:
    """Whether the CSVs have the same rows but for probabilities, and the largest probability difference."""
    import numpy as np

    from fer_export.batch.results import labels_of, read_results

    x, y = read_results(a), read_results(b)
    probs = [*labels_of(x), "confidence"]
    rest = [c for c in x.columns if c not in probs]
    if list(x.columns) != list(y.columns) or not x[rest].equals(y[rest]):
        return False, None
    return True, float(np.nanmax(np.abs(x[probs].to_numpy(float) - y[probs].to_numpy(float)), initial=0.0))


def main(argv=None) -> int:
    ap = Parser(description=description(__doc__))
    ap.add_argument("--model", metavar="accurate|fast|M.onnx",
                    help="a bundled model's name or an exported ONNX model (default: the bundled accurate model's "
                         "fp32 export, else a random 224 px ResNet18)")
    ap.add_argument("--crops", type=positive_int, default=200, help="FER2013 val crops in the folder")
    ap.add_argument("--video", type=Path, default=DATA / "videos" / "faceanon_video.mp4")
    ap.add_argument("--every-n", type=positive_int, default=2, help="use every n-th video frame")
    ap.add_argument("--workers", type=positive_int, default=2, help="Dask worker processes (--dask local:N)")
    ap.add_argument("--yunet-model", type=Path, default=DATA / "models" / "face_detection_yunet_2026may.onnx")
    ap.add_argument("--json", type=Path, default=Path("dask_scaling.json"))
    args = ap.parse_args(argv)
    model = check_model("--model", args.model) if args.model else None
    check_exists("--video", args.video, folder=False)
    check_exists("--yunet-model", args.yunet_model, folder=False)
    crops = DATA / "fer2013" / "val"
    if not crops.is_dir():
        refuse(f"no FER2013 crops under {crops} to classify; place the shared data there (../shared/data)")
    check_output_file("--json", args.json, [("--model", model), ("--video", args.video),
                                            ("--yunet-model", args.yunet_model), ("the crops folder", crops)])
    machine = machine_info()  # before any work of ours: its load average tells whether others are busy
    tmp = Path(tempfile.mkdtemp(prefix="fer-dask-bench-"))
    if model is None:
        model = default_model(tmp)
    folder = tmp / "inputs"
    folder.mkdir()
    for k, crop in enumerate(sorted(crops.rglob("*.jpg"))[:args.crops]):
        (folder / f"crop{k:05d}{crop.suffix}").symlink_to(crop.resolve())
    (folder / args.video.name).symlink_to(args.video.resolve())

    kw = dict(model=model, yunet_model=args.yunet_model, every_n=args.every_n)
    cluster = f"local:{args.workers}"
    local, local_s = run(folder, tmp / "local.csv", None, **kw)
    dask, dask_s = run(folder, tmp / "dask.csv", cluster, **kw)
    start_s = cluster_start_s(args.workers)
    same, diff = compare(tmp / "local.csv", tmp / "dask.csv")
    modes = [("local", local, local_s, 0.0), (f"--dask {cluster}", dask, dask_s, start_s)]
    result = {
        "command": command_line("dask_scaling.py", argv), "model": portable(str(model)), "crops": args.crops,
        "video": portable(str(args.video)), "every_n": args.every_n,
        "same_rows": same, "max_prob_diff": diff, "machine": machine,
        "runs": [{"mode": name, "frames": r.frames, "faces": r.faces, "wall_s": round(s, 2),
                  "cluster_start_s": round(start, 2), "frames_per_s": round(r.frames / s, 1),
                  "frames_per_s_after_start": round(r.frames / max(1e-9, s - start), 1),
                  "speedup": round(local_s / s, 2), "stages_s": r.timings} for name, r, s, start in modes],
    }
    headers = ["mode", "frames", "faces", "wall s", "cluster start s", "frames/s", "frames/s after start", "speed-up"]
    rows = [[r["mode"], r["frames"], r["faces"], r["wall_s"], r["cluster_start_s"], r["frames_per_s"],
             r["frames_per_s_after_start"], r["speedup"]] for r in result["runs"]]
    print_report(machine, markdown_table(headers, rows), args.json, result,
                 note=f"\nsame rows: {same}; largest probability difference: {diff}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
