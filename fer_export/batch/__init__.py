"""The batch side (torch-free): folders of images and videos in, a results CSV out.

Stages, each a module: :mod:`.sources` (input files, video frames, seeking), :mod:`.faces`
(detection; :mod:`.yunet` decodes YuNet), :mod:`.crops` (faces cut out, and a picture's views),
:mod:`.tracking` (track ids through a video), :mod:`.results` (the CSV schema, the crash-safe writer
and its journal, summaries) and :mod:`.annotate` (pictures drawn from the results). :mod:`.settings`
owns every option, in named parts a stage takes whole, and :mod:`.config` puts them together into a
run. The layer both runners share: :mod:`.models` (opening them), :mod:`.per_input` (the work on one
input), :mod:`.commit` (the ordered commit and the journal's settings), :mod:`.checks` (the outputs
checked before a run) and :mod:`.runner` (the shape of a run). The runners sit side by side:
:mod:`.local` (threads on this machine) and :mod:`.dask` (a Dask cluster).

>>> from fer_export.batch import BatchConfig, run_batch
>>> report = run_batch(BatchConfig.build(["faces/"], "results.csv", detector="yunet"))
>>> report.return_code
0
"""
from __future__ import annotations

from .config import BatchConfig, WorkConfig
from .results import BatchReport
from .runner import Log
from .settings import CropSettings, DetectionSettings, ModelSettings, SamplingSettings

__all__ = ["BatchConfig", "BatchReport", "CropSettings", "DetectionSettings", "ModelSettings", "SamplingSettings",
           "WorkConfig", "run_batch"]


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
