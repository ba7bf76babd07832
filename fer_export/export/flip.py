"""``hflip-uncertain``: mirror only the faces the model is unsure of, inside an ONNX graph.

Averaging every face with its mirror (``--tta hflip``) costs a second pass for every face. Most faces
do not need it: a face the model already gives a probability of ``flip_below`` or more rarely
changes its answer when mirrored. This graph runs the model once, picks the rows whose top
probability is below ``flip_below``, runs the model again on those rows mirrored, and replaces their
logits by the mean of the two passes (as ``hflip`` does for every row). With the bundled fast model
and ``flip_below=0.6`` about a third of PublicTest's faces are mirrored: most of ``hflip``'s gain for
a third of its extra work.

The rewrite works on any plain ONNX file fer-export wrote, fp32 or int8 QDQ (:func:`add_uncertain_flip`
copies the graph's nodes once and shares the weights), so it is applied after quantisation: the
int8 copy is calibrated on the plain graph, then gets the flip. Its gate compares the new file
with :class:`FlipReference`, the source file run twice and combined in numpy, and, from a checkpoint,
with :class:`~.preprocessing.UncertainFlip` in PyTorch.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ExportError
from ..runtime import softmax
from ..spec import META_FLIP_BELOW, META_TTA, UNCERTAIN
#: The default threshold on the top probability: chosen for the bundled fast model on the training
#: images (``python -m training.flip_threshold``: the lowest threshold in steps of 0.05 whose accuracy
#: there is within 0.05 points of mirroring every face).
FLIP_BELOW = 0.6
#: The tensor holding the first pass's logits (every row, before any is mirrored).
FIRST_PASS = "plain/logits"
#: Prefixes of the tensors the rewrite adds: the mirrored copy of the network, and the selection.
_COPY, _SEL = "flip/", "flip_select/"


def check_threshold(flip_below: float) -> float:
    """``flip_below`` as a float in (0, 1], else an ExportError (1 mirrors every face)."""
    try:
        value = float(flip_below)
    except (TypeError, ValueError):
        raise ExportError(f"flip_below must be a number in (0, 1], got {flip_below!r}") from None
    if not (0 < value <= 1):
        raise ExportError(f"flip_below must be in (0, 1] (the top probability below which a face is also "
                          f"read mirrored), got {value}")
    return value


def unsure(logits: np.ndarray, flip_below: float) -> np.ndarray:
    """The rows whose softmax top probability is below ``flip_below``: those the graph mirrors too."""
    return np.flatnonzero(softmax(logits).max(axis=1) < np.float32(flip_below))


def mix(logits: np.ndarray, mirrored_logits, flip_below: float) -> np.ndarray:
    """The rule in numpy: the :func:`unsure` rows get the mean of their logits and
    ``mirrored_logits(rows)`` (the model on those rows mirrored)."""
    rows, out = unsure(logits, flip_below), logits.copy()
    if len(rows):
        out[rows] = (logits[rows] + mirrored_logits(rows)) / 2
    return out


class FlipReference:
    """What the rewritten file must compute, from its source artifact: ``run(x)`` like an artifact's."""

    def __init__(self, source, flip_below: float):
        self.source, self.flip_below = source, check_threshold(flip_below)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        def mirrored(rows):
            return self.source.run(np.ascontiguousarray(x[rows, ..., ::-1]))["logits"]

        logits = mix(self.source.run(x)["logits"], mirrored, self.flip_below)
        return {"logits": logits, "probs": softmax(logits)}


def add_uncertain_flip(proto, flip_below: float):
    """Rewrite an ONNX ``ModelProto`` (one input ``(N, C, H, W)``; outputs ``logits`` and ``probs =
    Softmax(logits)``, as fer-export writes them) in place so that rows whose top probability is below
    ``flip_below`` are also run mirrored (width axis) and get the mean of both passes' logits. The
    network's nodes are copied once under ``flip/``; the weights (initializers) are shared."""
    from onnx import helper, numpy_helper

    flip_below = check_threshold(flip_below)
    graph = proto.graph
    if len(graph.input) != 1 or [o.name for o in graph.output] != ["logits", "probs"]:
        raise ExportError("the graph must have one input and the outputs logits, probs (a file fer-export wrote)")
    softmax = [n for n in graph.node if list(n.output) == ["probs"]]
    if len(softmax) != 1 or softmax[0].op_type != "Softmax" or list(softmax[0].input) != ["logits"]:
        raise ExportError("the graph's probs output must be Softmax(logits)")
    if any(a.type in (a.GRAPH, a.GRAPHS) for n in graph.node for a in n.attribute):
        raise ExportError("graphs with control flow (If/Loop/Scan) are not supported")
    if any(name.startswith((_COPY, _SEL)) for n in graph.node for name in (*n.input, *n.output)):
        raise ExportError("the graph already has a flip (tensors named flip/...)")
    source = graph.input[0].name
    body = [n for n in graph.node if n is not softmax[0]]
    produced = {o for n in body for o in n.output} | {source}
    first = FIRST_PASS

    def copy(node, rename, prefix=""):
        new = helper.make_node(node.op_type, [rename(i) for i in node.input], [rename(o) for o in node.output],
                               name=prefix + node.name if node.name else "", domain=node.domain)
        new.attribute.extend(node.attribute)
        return new

    def plain(name):
        return first if name == "logits" else name

    def mirrored(name):  # inside the copy: every computed tensor renamed, the weights shared
        return _COPY + name if name in produced else name

    def const(name, value, dtype):
        graph.initializer.append(numpy_helper.from_array(np.array(value, dtype), _SEL + name))
        return _SEL + name

    one, minus_one, axis3, half = (const("one", [1], np.int64), const("minus_one", [-1], np.int64),
                                   const("axis3", [3], np.int64), const("half", 0.5, np.float32))
    threshold, end = const("threshold", flip_below, np.float32), const("end", [np.iinfo(np.int64).min], np.int64)
    s = _SEL.__add__
    select = [
        helper.make_node("Softmax", [first], [s("probs")], axis=1),
        helper.make_node("ReduceMax", [s("probs"), one], [s("top")], keepdims=0),
        helper.make_node("Less", [s("top"), threshold], [s("unsure")]),
        helper.make_node("NonZero", [s("unsure")], [s("nonzero")]),
        helper.make_node("Reshape", [s("nonzero"), minus_one], [s("rows")]),
        helper.make_node("Gather", [source, s("rows")], [s("picked")], axis=0),
        helper.make_node("Slice", [s("picked"), minus_one, end, axis3, minus_one], [_COPY + source]),
    ]
    combine = [
        helper.make_node("Gather", [first, s("rows")], [s("first")], axis=0),
        helper.make_node("Add", [s("first"), _COPY + "logits"], [s("sum")]),
        helper.make_node("Mul", [s("sum"), half], [s("mean")]),
        helper.make_node("Unsqueeze", [s("rows"), one], [s("index")]),
        helper.make_node("ScatterND", [first, s("index"), s("mean")], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    nodes = [copy(n, plain) for n in body] + select + [copy(n, mirrored, _COPY) for n in body] + combine
    del graph.node[:]
    graph.node.extend(nodes)
    keep = [v for v in graph.value_info if v.name != "logits"]
    del graph.value_info[:]
    graph.value_info.extend(keep)
    return proto


def threshold_of(metadata: dict[str, str]) -> float | None:
    """The ``flip_below`` an artifact's metadata records (None when its TTA is not ``hflip-uncertain``)."""
    if metadata.get(META_TTA) != UNCERTAIN:
        return None
    try:
        value = float(metadata.get(META_FLIP_BELOW, "nan"))
    except ValueError:
        value = math.nan
    if not (0 < value <= 1):
        raise ExportError(f"its '{META_FLIP_BELOW}' metadata is missing or invalid: {metadata.get(META_FLIP_BELOW)!r}")
    return value
