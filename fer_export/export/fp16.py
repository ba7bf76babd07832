"""``fer-export fp16 MODEL.onnx``: the fp16 copy of an fp32 ONNX file fer-export wrote, for GPUs.

:func:`to_fp16` rewrites the graph so that the network's arithmetic ops (:data:`FP16_OPS`: convolutions,
matrix products, activations, pooling, element-wise arithmetic and the ops that only move data) take and
give float16, with their weights stored as float16 (half the file). Every other op stays float32, with a
Cast on each side: the final Softmax (an exponent that float16 saturates early), Resize, normalisation
layers and anything not on the list. The graph's inputs and outputs stay float32, named as before, so
every consumer (EmotionClassifier, fer-batch, fer-eval, ``fer-export embed`` and ``flip``) runs the file
unchanged, and ``probs`` stays ``Softmax(logits)`` in float32.

onnxruntime's CPU provider has almost no float16 kernels: it casts the weights back to float32 when it
loads the file and computes in float32, so on a CPU the file is no faster than fp32 (often slower: fewer
ops fuse) and shows only the rounding of the weights. Its gain (half the memory traffic, tensor cores)
is on GPUs.

The gate compares the new file with its fp32 source (which passed its own parity check against
PyTorch) on random inputs, face crops (real ones with ``data``) and the bundled probe faces, with the
fp16 tolerance :data:`fer_export.parity.FP16`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import ExportError
from ..outputs import check_outputs
from ..spec import (INPUT_NORMALIZED, META_PARITY, META_PRECISION, META_PROBE, META_SOURCE_PARITY, META_TTA,
                    META_VERSION, UNCERTAIN)
from .formats import FORMATS, check_suffix, open_artifact, sibling
from .gate import ExportResult, gate_outputs, settle, temp_beside, write_artifact
from .onnx import _set_props, load_onnx, stamp_onnx

#: Ops computed in float16. Each is exact or well conditioned in float16 given float16 inputs, and its
#: non-float inputs (shapes, axes, indices) are left as they are. Every other op stays float32.
FP16_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul",
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax",
    "Add", "Sub", "Mul", "Div", "Neg", "Max", "Min",
    "Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice",
    "Gather", "Pad", "Expand",
})
#: Prefix of every tensor and node the rewrite adds, clear of the exporter's names.
PREFIX = "fp16/"
_F32, _F16 = 1, 10  # onnx.TensorProto.FLOAT, FLOAT16
_FP16_MAX = float(np.finfo(np.float16).max)


def _elem_types(proto) -> dict[str, int]:
    """Every tensor's element type, from ONNX shape inference (the exporter's value_info may be partial)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise ExportError(f"ONNX cannot infer the graph's types: {str(exc).strip().splitlines()[0]}") from None
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for v in (*g.input, *g.output, *g.value_info):
        types[v.name] = v.type.tensor_type.elem_type
    return types


def _half_weights(graph, consumers: dict[str, list[bool]]) -> dict[tuple[str, int], str]:
    """Store as float16 each float32 weight that a float16 op reads: in place when only float16 ops read
    it, else as a float16 copy beside the float32 one. Returns ``{(weight, precision): name holding it}``."""
    from onnx import numpy_helper

    outputs = {o.name for o in graph.output}
    where = {}
    for t in list(graph.initializer):
        name = t.name
        if t.data_type != _F32:
            continue
        where[name, _F32] = name
        if not any(consumers.get(name, [])):
            continue
        values = numpy_helper.to_array(t)
        if np.abs(values[np.isfinite(values)]).max(initial=0) > _FP16_MAX:
            raise ExportError(f"weight {name!r} has values beyond float16's range (±{_FP16_MAX:g})")
        held = name if all(consumers[name]) and name not in outputs else PREFIX + name
        fp16 = numpy_helper.from_array(values.astype(np.float16), held)
        if held == name:
            t.CopyFrom(fp16)
            del where[name, _F32]
        else:
            graph.initializer.append(fp16)
        where[name, _F16] = held
    return where


def to_fp16(proto):
    """Rewrite an fp32 ONNX ``ModelProto`` in place: :data:`FP16_OPS` nodes compute in float16, their
    float32 weights become float16, Casts join float16 and float32 parts, and the graph's inputs and
    outputs keep their names and float32. Returns the proto. An ExportError when the graph has control
    flow, was converted already, or has a weight beyond float16's range."""
    from onnx import helper

    graph = proto.graph
    if any(a.type in (a.GRAPH, a.GRAPHS) for n in graph.node for a in n.attribute):
        raise ExportError("graphs with control flow (If/Loop/Scan) are not supported")
    if any(x.startswith(PREFIX) for n in graph.node for x in (n.name, *n.input, *n.output)):
        raise ExportError(f"the graph already has tensors named {PREFIX}...: it was converted already")
    types = _elem_types(proto)
    half = [n.op_type in FP16_OPS and n.domain in ("", "ai.onnx") for n in graph.node]
    consumers: dict[str, list[bool]] = {}  # tensor -> whether each node reading it is float16
    for n, h in zip(graph.node, half):
        for x in n.input:
            consumers.setdefault(x, []).append(h)
    where = _half_weights(graph, consumers)  # (tensor, precision) -> the name holding it
    where.update({(v.name, _F32): v.name for v in graph.input if v.type.tensor_type.elem_type == _F32})
    outputs = {o.name for o in graph.output}
    nodes = []

    def get(name: str, want: int) -> str:
        """The name holding ``name`` at precision ``want``, adding a Cast the first time it is needed."""
        if (name, want) not in where:
            have = _F16 if want == _F32 else _F32
            cast = f"{PREFIX}{'to32' if want == _F32 else 'to16'}/{name}"
            nodes.append(helper.make_node("Cast", [where[name, have]], [cast], name=cast, to=want))
            where[name, want] = cast
        return where[name, want]

    for n, h in zip(list(graph.node), half):
        want = _F16 if h else _F32
        new = [get(x, want) if x and types.get(x) == _F32 else x for x in n.input]
        del n.input[:]
        n.input.extend(new)
        nodes.append(n)
        for i, y in enumerate(n.output):
            if types.get(y) != _F32:
                continue
            where[y, want] = y
            if h and y in outputs:
                # a graph output keeps its name and float32: the node writes a float16 copy, cast back at
                # once, which float32 consumers (the Softmax) read as before
                n.output[i] = where[y, _F16] = PREFIX + y
                nodes.append(helper.make_node("Cast", [PREFIX + y], [y], name=f"{PREFIX}to32/{y}", to=_F32))
                where[y, _F32] = y
    del graph.node[:]
    graph.node.extend(nodes)
    fp16 = {name for (name, p), held in where.items() if p == _F16 and held == name}
    for v in graph.value_info:
        if v.name in fp16:
            v.type.tensor_type.elem_type = _F16
    return proto


def fp16_problems(source) -> list[str]:
    """Why an opened artifact cannot be the source of an fp16 copy: it must be a plain (normalised-input)
    fp32 ONNX file that passed its own parity check and does not mirror its unsure faces yet."""
    problems = []
    if source.path.suffix.lower() != FORMATS["onnx"].suffix or source.precision != "fp32":
        problems.append(f"it must be an fp32 ONNX file, not {source.precision} {source.path.suffix}")
    if source.input_format != INPUT_NORMALIZED:
        problems.append("it takes uint8 crops; make the fp16 copy of the plain file, then embed it "
                        "(fer-export embed NAME.fp16.onnx)")
    if not source.passed_parity:
        problems.append("it has not passed its parity check; export the fp32 model first (fer-export onnx)")
    if source.metadata.get(META_TTA) == UNCERTAIN:
        problems.append(f"it mirrors uncertain faces in a second pass ({UNCERTAIN}), whose threshold float16 would "
                        f"move; make the fp16 copy of the plain file, then add the flip (fer-export flip NAME.fp16.onnx)")
    return problems


def input_sets(spec, data: str | Path | None, batch: int | None) -> dict[str, np.ndarray]:
    """The parity check's inputs (:func:`fer_export.parity.input_sets`) and the bundled probe faces,
    real faces that every check has even without ``data``."""
    from ..parity import input_sets as parity_inputs
    from ..preprocess import preprocess
    from ..probe import probe_faces

    sets = parity_inputs(spec, INPUT_NORMALIZED, data, batch=batch)
    x = preprocess(list(probe_faces()), spec)
    if batch:  # a fixed-batch graph takes exactly `batch` rows
        x = np.resize(x, (batch, *x.shape[1:]))
    return sets | {f"probe faces[{len(x)}]": x}


def export_fp16(model: str | Path, output: str | Path | None = None, *,
                data: str | Path | None = None) -> ExportResult:
    """Write the fp16 copy (:func:`to_fp16`) of ``model``, an fp32 ONNX file fer-export wrote, to
    ``output`` (default ``NAME.fp16.onnx``), gated against ``model`` with :data:`fer_export.parity.FP16`
    on random inputs, face crops (sampled from ``data`` when given, else synthetic) and the bundled
    probe faces. It keeps the source's contract (spec, framing, TTA, source sha256) and its gate record
    (``META_SOURCE_PARITY``), and gets its own self-check probe. Raises :class:`ParityError` (the file
    kept as ``NAME.failed.onnx``) when the check fails."""
    from ..errors import require
    from ..parity import FP16, compare

    onnx = require("onnx", "train", "fer-export fp16 MODEL.onnx")
    model = Path(model)
    source = open_artifact(model)
    problems = fp16_problems(source)
    if problems:
        raise ExportError(f"{model}: cannot make an fp16 model from this file: {'; '.join(problems)}")
    final = Path(output) if output else sibling(model, "fp16")
    if output:
        check_suffix("onnx", final)
    check_outputs([("the model", model)], gate_outputs(final, "the fp16 model"))
    metadata = {k: v for k, v in source.metadata.items() if k not in (META_PARITY, META_PROBE)}
    metadata.update({META_SOURCE_PARITY: source.metadata[META_PARITY], META_PRECISION: "fp16",
                     META_VERSION: __version__})
    tmp = temp_beside(final)

    def write():
        proto = to_fp16(onnx.load_model(str(model)))
        _set_props(proto, metadata)
        onnx.save_model(proto, str(tmp))
        candidate = load_onnx(tmp)
        return compare(source.run, candidate.run, input_sets(source.spec, data, candidate.batch), FP16)

    report = write_artifact(write, tmp, final)
    return settle(ExportResult("onnx", final, report), tmp, final, stamp_onnx, metadata, "fp16 export")
