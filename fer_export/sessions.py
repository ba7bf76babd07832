"""Which model file, and an onnxruntime session for it (torch-free): the models bundled with the
package by name, and sessions on the CPU or CUDA, refused rather than quietly moved to the CPU.
:class:`~fer_export.runtime.EmotionClassifier` opens its sessions here."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ArtifactError, InputError, ProviderError

PROVIDERS = ("auto", "cpu", "cuda")
_ORT = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_MODELS = Path(__file__).parent / "models"
#: The accurate model's fp32 export: what CUDA runs, the reference its int8 copy was gated against,
#: and the teacher the fast model was distilled from.
ACCURATE_FP32 = _MODELS / "fer2013_resnet18.onnx"
#: The models shipped with the package, by the name a user picks them with (``--model fast``,
#: ``EmotionClassifier("fast")``), each as a file per provider (:func:`resolve_model`). ``accurate``
#: is the default; ``fast`` trades some accuracy for speed. On the CPU, ``accurate`` is its int8 QDQ
#: copy, as accurate as the fp32 export and faster where the CPU has int8 instructions (VNNI, AMX);
#: on CUDA, where int8 QDQ graphs gain nothing, the fp32 export. How much: benchmarks/README.md,
#: "int8 on every CPU".
_FAST_INT8 = _MODELS / "fer2013_fast.int8.onnx"
BUNDLED_MODELS = {"accurate": {"cpu": _MODELS / "fer2013_resnet18.int8.onnx", "cuda": ACCURATE_FP32},
                  "fast": {"cpu": _FAST_INT8, "cuda": _FAST_INT8}}
DEFAULT_TIER = "accurate"


def open_session(path: str | Path, provider: str = "auto", threads: int | None = None, spin: bool = True,
                 literal: bool = False):
    """Create an onnxruntime session on the requested provider. Returns ``(session, provider)``.

    ``literal=True``: graph optimisations off, so that every node runs as ONNX defines it. An int8
    QDQ file then runs DequantizeLinear, a float kernel and QuantizeLinear instead of fused int8
    kernels: slower, but the same function on every CPU (the reference int8 kernels must reproduce).

    ``spin=False``: idle intra-op threads sleep instead of busy-waiting for the next operator. For
    callers that run other CPU work beside the session (the batch runners' decoding and face
    detection), spinning threads take the cores that work needs.

    ``cuda`` when CUDA is not usable raises :class:`ProviderError`: onnxruntime itself would log an
    error and quietly run on the CPU, which is exactly what a user asking for CUDA must not get.
    ``auto`` takes CUDA when it really works, else the CPU.
    """
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise ProviderError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    path = Path(path)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1):
        raise InputError(f"threads must be a positive integer or None (onnxruntime's default), got {threads!r}")
    if path.is_dir():
        raise ArtifactError(f"{path}: is a folder, not a model file; pass an .onnx file exported with "
                            "`fer-export onnx`")
    if not path.is_file():
        raise ArtifactError(f"{path}: no such model file")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors are raised, not logged
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if literal:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    have_cuda = _ORT["cuda"] in ort.get_available_providers()
    if provider == "cuda" and not have_cuda:
        raise ProviderError(
            "CUDA was requested but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {ort.get_available_providers()}). Replace it with the GPU build: "
            "pip uninstall -y onnxruntime && pip install --no-deps onnxruntime-gpu; or use --provider cpu"
        )
    wanted = ["cuda", "cpu"] if provider == "cuda" or (provider == "auto" and have_cuda) else ["cpu"]
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=[_ORT[p] for p in wanted])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        if _is_pytorch_file(path):
            raise ArtifactError(f"{path}: is a PyTorch checkpoint, not an ONNX model; export it first with "
                                f"`fer-export onnx {path}`") from exc
        raise ArtifactError(f"{path}: onnxruntime cannot load this model: {exc}") from exc
    used = "cuda" if sess.get_providers()[0] == _ORT["cuda"] else "cpu"
    if provider == "cuda" and used != "cuda":
        raise ProviderError(
            "CUDA was requested but onnxruntime could not start it (missing CUDA/cuDNN libraries or no GPU); "
            "use --provider cpu or fix the CUDA install"
        )
    return sess, used


def _is_pytorch_file(path: Path) -> bool:
    """Whether ``path`` looks like a file torch.save wrote (a zip archive, or a legacy pickle)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" or path.suffix.lower() in (".pth", ".pt", ".ckpt")


def resolve_model(model: str | Path | None = None, provider: str = "cpu") -> Path:
    """The file behind ``model``: a bundled model's name (``accurate``, ``fast``), None for the default
    one, or a path (a file of that name in the working directory needs ``./``: names come first). A
    name gives its ``provider``'s file; ``auto`` gives CUDA's when this onnxruntime has CUDA."""
    name = DEFAULT_TIER if model is None else model
    if isinstance(name, str) and name in BUNDLED_MODELS:
        path = BUNDLED_MODELS[name][_variant(provider)]
        if not path.is_file():
            raise ArtifactError(f"the bundled '{name}' model is missing from this install ({path}); reinstall "
                                f"fer-export, or pass another model (--model PATH: an ONNX model exported with "
                                f"`fer-export onnx`)")
        return path
    return Path(model)


def _variant(provider: str) -> str:
    if provider == "auto":
        import onnxruntime as ort

        return "cuda" if _ORT["cuda"] in ort.get_available_providers() else "cpu"
    return "cuda" if provider == "cuda" else "cpu"
