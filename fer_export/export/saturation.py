"""int8 weights that cannot saturate: the bound every CPU computes exactly, its check on a file, and
the rewrite of a file's weights to meet it (torch-free; needs the ``onnx`` package).

On x86 CPUs without VNNI, onnxruntime multiplies uint8 activations by int8 weights with AVX2's
``vpmaddubsw``, which adds each pair of products into a saturating int16. Weights within
:data:`MAX_WEIGHT_MAGNITUDE` of their zero point keep every such sum in range, so the file computes
the same function there as on a VNNI or AMX CPU (see :mod:`.quantize`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ExportError

#: Largest |weight - zero point| of a quantised weight such that no int16 sum of two uint8 x int8
#: products can saturate: 2 x 255 x 64 = 32,640 <= 32,767. 7-bit weights (``reduce_range``) meet it.
MAX_WEIGHT_MAGNITUDE = 64


def along(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A DequantizeLinear's per-channel scale or zero point ``v`` (1-D) shaped to broadcast along
    ``axis`` of an ``ndim``-D weight; a per-tensor one (a scalar) as it is."""
    if np.ndim(v) != 1 or ndim < 2:
        return v
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return np.reshape(v, shape)


def _weight_dequantizers(graph) -> list:
    """The DequantizeLinear nodes of ``graph`` whose input is an int8 initializer: its quantised weights
    (each listed once, though the flip's copy of the network runs them twice)."""
    import onnx

    int8 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    seen, nodes = set(), []
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in int8 and node.input[0] not in seen:
            seen.add(node.input[0])
            nodes.append(node)
    return nodes


def saturation_problems(path: str | Path) -> list[str]:
    """The int8 weight tensors of the ONNX file at ``path`` that can saturate a non-VNNI CPU's int16 sum
    of two uint8 x int8 products: ``max |w - zero_point| > MAX_WEIGHT_MAGNITUDE`` (as "name: N"). An
    empty list is the guarantee that every CPU computes the file as ONNX defines it."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_model(str(path)).graph
    values = {i.name: i for i in graph.initializer}
    problems = []
    for node in _weight_dequantizers(graph):
        q = numpy_helper.to_array(values[node.input[0]]).astype(np.int32)
        zero = (numpy_helper.to_array(values[node.input[2]]).astype(np.int32)
                if len(node.input) > 2 and node.input[2] in values else np.zeros((), np.int32))
        zero = along(zero, q.ndim, next((a.i for a in node.attribute if a.name == "axis"), 1))
        worst = int(np.abs(q - zero).max()) if q.size else 0
        if worst > MAX_WEIGHT_MAGNITUDE:
            problems.append(f"{node.input[0]}: {worst}")
    return problems


def requantize_weights(proto) -> int:
    """Rewrite an int8 QDQ ``ModelProto`` (fer-export's, or onnxruntime's QDQ format with symmetric int8
    weights) in place so that every weight tensor has 7-bit values (-64..64): each channel's scale is
    its largest |weight| / 64 and its values are rounded again; the int32 bias of a Conv or Gemm that
    uses the weight is rescaled with it (its scale is the input's times the weight's). The activations'
    calibration is kept. Returns how many weight tensors were rewritten."""
    from onnx import numpy_helper

    graph = proto.graph
    values = {i.name: i for i in graph.initializer}
    users = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            users.setdefault(name, []).append((node, i))
    dq_of = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    changed = 0
    for node in _weight_dequantizers(graph):
        q = numpy_helper.to_array(values[node.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(values[node.input[1]]).astype(np.float64)
        if len(node.input) > 2 and node.input[2] in values and numpy_helper.to_array(values[node.input[2]]).any():
            raise ExportError(f"weight {node.input[0]} has a nonzero zero point; only symmetric int8 weights "
                              "can be requantised")
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % q.ndim
        w = q * along(scale, q.ndim, axis)
        others = tuple(d for d in range(q.ndim) if d != axis) if scale.ndim else None
        peak = np.abs(w).max(axis=others) if scale.ndim else np.abs(w).max()
        new_scale = np.where(peak > 0, peak / MAX_WEIGHT_MAGNITUDE, scale)
        new_q = np.clip(np.rint(w / along(new_scale, q.ndim, axis)), -MAX_WEIGHT_MAGNITUDE, MAX_WEIGHT_MAGNITUDE)
        values[node.input[0]].CopyFrom(numpy_helper.from_array(new_q.astype(np.int8), node.input[0]))
        values[node.input[1]].CopyFrom(numpy_helper.from_array(new_scale.astype(np.float32), node.input[1]))
        ratio = new_scale / scale
        for op, _ in (u for out in node.output for u in users.get(out, ()) if u[1] == 1):  # the weight input
            bias = dq_of.get(op.input[2]) if len(op.input) > 2 else None
            if bias is None or bias.input[0] not in values or bias.input[1] not in values:
                continue
            b_scale = numpy_helper.to_array(values[bias.input[1]]).astype(np.float64)
            b = numpy_helper.to_array(values[bias.input[0]]).astype(np.float64) * b_scale
            new_b_scale = b_scale * ratio
            values[bias.input[0]].CopyFrom(numpy_helper.from_array(
                np.rint(b / new_b_scale).astype(np.int32), bias.input[0]))
            values[bias.input[1]].CopyFrom(numpy_helper.from_array(new_b_scale.astype(np.float32), bias.input[1]))
        changed += 1
    return changed
