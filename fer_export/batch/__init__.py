"""The batch side (torch-free): folders of images and videos in, a results CSV out.

Stages, each a module: :mod:`.sources` (input files, video frames, seeking), :mod:`.faces`
(detection and cropping), :mod:`.tracking` (track ids through a video), :mod:`.results` (the CSV
schema, the crash-safe writer and its journal, summaries) and :mod:`.annotate` (pictures drawn from
the results). :mod:`.config` owns every option; :mod:`.work` is the layer both runners share (the
per-input work, the ordered commit, the prologue and the progress bar). The runners sit side by
side: :mod:`.local` (threads on this machine) and :mod:`.dask` (a Dask cluster).

>>> from fer_export.batch import BatchConfig, run_batch
>>> report = run_batch(BatchConfig.build(["faces/"], "results.csv", detector="yunet"))
>>> report.return_code
0
"""
from __future__ import annotations

from .config import BatchConfig, WorkConfig
from .results import BatchReport
from .work import Log

__all__ = ["BatchConfig", "BatchReport", "WorkConfig", "run_batch"]


def run_batch(config: BatchConfig, cluster: str | None = None, log: Log = lambda s: None) -> BatchReport:
    """Classify every face in ``config.inputs``; write the results CSV (and the extras it asks for).

    ``cluster``: None runs on this machine's threads; ``local``, ``local:N`` or a scheduler address
    (``tcp://HOST:8786``) runs on Dask (needs ``fer-export[dask]``), with the same CSV.
    Raises :class:`~fer_export.errors.FerExportError` for problems with the options, the model, the
    detector, the cluster or the output file; problems with single inputs become ``error`` rows.
    """
    if cluster is None:
        from .local import run_local

        return run_local(config, log)
    from .dask import run_dask

    return run_dask(config, cluster, log)
