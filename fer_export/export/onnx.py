"""ONNX export with torch.onnx's dynamo exporter, as one self-contained file.

The graph takes ``input`` float32 (N, C, H, W), normalised as the spec says, and returns ``logits``
and ``probs`` (softmax in the graph). With ``with_preprocessing=True`` it takes raw uint8 grayscale
crops (N, 1, H, W) of any size instead (see :mod:`.preprocessing`).

Why dynamo and not the legacy TorchScript-based exporter: the legacy one is deprecated (it warns on
every call) and cannot export antialiased resizing; dynamo can, so both graph kinds come from one
exporter. It implements opset 18 and newer only (asking for 17 leaves the file at 18 after a failed
conversion), so a lower ``opset`` is refused rather than silently changed. ``external_data=False``
keeps the weights inside the .onnx file (ResNet18 is 45 MB, far below protobuf's 2 GB limit).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ArtifactError, ExportError
from ..spec import ModelSpec
from .artifact import Artifact, quiet_torch

#: Lowest opset the dynamo exporter implements; the default is the same.
MIN_OPSET = 18
DEFAULT_OPSET = 18
INPUT_NAME, OUTPUT_NAMES = "input", ("logits", "probs")


def export_onnx(model, spec: ModelSpec, path: Path, metadata: dict[str, str], *, opset: int = DEFAULT_OPSET,
                batch: int | str = "dynamic", with_preprocessing: bool = False) -> None:
    """Write ``model`` as ONNX to ``path`` with ``metadata`` in its ``metadata_props``.

    ``batch``: ``"dynamic"`` (default) or a fixed batch size. With ``with_preprocessing`` the height
    and width are dynamic too. An :class:`~.preprocessing.UncertainFlip` model is exported as its
    network, and the graph then gets the flip (:func:`~.flip.add_uncertain_flip`).
    """
    import onnx
    import torch

    from .flip import add_uncertain_flip
    from .preprocessing import LogitsAndProbs, UncertainFlip, WithPreprocessing

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is not supported: the ONNX exporter writes opset {MIN_OPSET} or newer")
    fixed = None if batch == "dynamic" else int(batch)
    if fixed is not None and fixed < 1:
        raise ExportError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    flip_below = model.flip_below if isinstance(model, UncertainFlip) else None
    model = model.model if flip_below is not None else model
    n = fixed or 2  # trace with 2 so batch 1 is never specialised into the graph
    if with_preprocessing:
        module = WithPreprocessing(model, spec).eval()
        example = torch.zeros(n, 1, 48, 40, dtype=torch.uint8)
        dims = {2: torch.export.Dim("height", min=2, max=8192), 3: torch.export.Dim("width", min=2, max=8192)}
    else:
        module = LogitsAndProbs(model).eval()
        example = torch.zeros(n, spec.channels, *spec.input_size)
        dims = {}
    if fixed is None:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    try:
        with quiet_torch(), torch.no_grad():
            program = torch.onnx.export(module, (example,), dynamo=True, verbose=False, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                        dynamic_shapes=(dims or None,), optimize=True)
    except Exception as exc:  # torch.export / onnxscript raise many types
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    proto = program.model_proto
    got = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if got != opset:
        raise ExportError(f"asked for opset {opset} but the exporter wrote opset {got}")
    if flip_below is not None:
        add_uncertain_flip(proto, flip_below)
    _drop_stack_traces(proto)
    _set_props(proto, metadata)
    onnx.save_model(proto, str(path))


#: Node metadata the exporter writes that names the exporting machine's files (a Python stack trace
#: per node): it would publish the user's paths inside the model and make the same export differ by
#: where fer-export is installed.
STACK_TRACE_KEYS = ("pkg.torch.onnx.stack_trace",)


def _drop_stack_traces(proto) -> None:
    for node in [*proto.graph.node, *(n for f in proto.functions for n in f.node)]:
        keep = [(p.key, p.value) for p in node.metadata_props if p.key not in STACK_TRACE_KEYS]
        if len(keep) != len(node.metadata_props):
            del node.metadata_props[:]
            for key, value in keep:
                entry = node.metadata_props.add()
                entry.key, entry.value = key, value


def _set_props(proto, metadata: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def stamp_onnx(path: Path, metadata: dict[str, str]) -> None:
    """Replace the file's ``metadata_props`` with ``metadata``."""
    import onnx

    proto = onnx.load_model(str(path))
    _set_props(proto, metadata)
    onnx.save_model(proto, str(path))


def load_onnx(path: Path, literal: bool = False) -> Artifact:
    """Open an ONNX artifact on the CPU: every output by name, and its metadata. ``literal``: run it
    with graph optimisations off (:func:`fer_export.runtime.open_session`)."""
    from ..runtime import open_session, read_metadata

    sess, _ = open_session(path, "cpu", literal=literal)
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ArtifactError(f"{path}: expected one graph input, found {[i.name for i in inputs]}")
    names = [o.name for o in sess.get_outputs()]

    def run(batch):
        return dict(zip(names, sess.run(names, {inputs[0].name: batch})))

    n = inputs[0].shape[0]
    return Artifact(Path(path), run, read_metadata(sess, path), n if isinstance(n, int) else None)
