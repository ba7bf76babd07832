"""The embeddable artifact from an existing ONNX model: raw uint8 crops in, preprocessing inside.

``fer-export embed MODEL.onnx`` turns a normalised-input ONNX file (the bundled
model has no checkpoint beside it) into the one-file artifact a host embeds (Node.js, a browser,
any onnxruntime): it composes, with ``onnx.compose``, the same preprocessing subgraph the PyTorch
export traces (:class:`.preprocessing.WithPreprocessing`: Cast; antialiased bilinear Resize of the
width, then of the height, each rounded half up to whole gray levels as PIL does; /255, channels,
-mean, /std) in front of the model's input. The weights, outputs, TTA and precision are the
source's; the metadata says ``fer_export.input: uint8`` and keeps the source checkpoint's sha256, so
``fer-export verify OUT --against CKPT`` still works.

Like every export, the result is gated before it is put in place: the new graph on raw crops is
compared with the source model fed by the Python preprocessing (:mod:`fer_export.preprocess`),
with the with-preprocessing tolerance (int8 models: the int8 one). Needs ``onnx``, not torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ExportError
from ..spec import META_INPUT, META_PARITY, ModelSpec
from ..spec import INPUT_NORMALIZED, INPUT_UINT8
from ..outputs import check_outputs
from .formats import check_suffix, sibling
from .gate import ExportResult, gate_outputs, settle, temp_beside, write_artifact
from .onnx import MIN_OPSET, _set_props, load_onnx, stamp_onnx

PREFIX = "fer_preprocess/"  # names of the composed nodes and tensors, clear of the exporter's own


def preprocessing_graph(spec: ModelSpec, opset: int, ir_version: int):
    """uint8 (N, 1, H, W), any H and W -> float32 (N, C, *spec.input_size), normalised: a ModelProto."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    p = PREFIX
    c = spec.channels
    consts = {
        "height": np.asarray(spec.input_size[:1], dtype=np.int64),
        "width": np.asarray(spec.input_size[1:], dtype=np.int64),
        "half": np.asarray(0.5, dtype=np.float32),
        "lo": np.asarray(0.0, dtype=np.float32),
        "hi": np.asarray(255.0, dtype=np.float32),
        "channels": np.asarray([1, c, 1, 1], dtype=np.int64),
        "mean": np.asarray(spec.mean, dtype=np.float32).reshape(1, c, 1, 1),
        "std": np.asarray(spec.std, dtype=np.float32).reshape(1, c, 1, 1),
    }
    # PIL's resize as the graph can do it: antialiased bilinear, the width pass first, then the height
    # pass, each rounded half up to whole gray levels (PIL keeps 8-bit pixels between its two passes).
    # The Resize attributes are the ones torch's dynamo exporter writes for F.interpolate(bilinear, antialias).
    resize = dict(mode="linear", antialias=1, coordinate_transformation_mode="half_pixel", exclude_outside=1,
                  keep_aspect_ratio_policy="stretch", nearest_mode="floor", cubic_coeff_a=-0.75,
                  extrapolation_value=0.0)
    nodes = [
        helper.make_node("Cast", [p + "raw"], [p + "float"], to=TensorProto.FLOAT),
        helper.make_node("Shape", [p + "raw"], [p + "nch"], start=0, end=3),
        helper.make_node("Shape", [p + "raw"], [p + "nc"], start=0, end=2),
        helper.make_node("Concat", [p + "nch", p + "width"], [p + "sizes_w"], axis=0),
        helper.make_node("Concat", [p + "nc", p + "height", p + "width"], [p + "sizes_hw"], axis=0),
    ]
    x = p + "float"
    for step, sizes in (("w", p + "sizes_w"), ("h", p + "sizes_hw")):
        nodes += [
            helper.make_node("Resize", [x, "", "", sizes], [p + f"resized_{step}"], **resize),
            helper.make_node("Add", [p + f"resized_{step}", p + "half"], [p + f"plus_half_{step}"]),
            helper.make_node("Floor", [p + f"plus_half_{step}"], [p + f"rounded_{step}"]),
            helper.make_node("Clip", [p + f"rounded_{step}", p + "lo", p + "hi"], [p + f"pixels_{step}"]),
        ]
        x = p + f"pixels_{step}"
    nodes += [
        helper.make_node("Div", [x, p + "hi"], [p + "scaled"]),
        helper.make_node("Expand", [p + "scaled", p + "channels"], [p + "expanded"]),
        helper.make_node("Sub", [p + "expanded", p + "mean"], [p + "centred"]),
        helper.make_node("Div", [p + "centred", p + "std"], [p + "out"]),
    ]
    graph = helper.make_graph(
        nodes, "fer_preprocess",
        [helper.make_tensor_value_info(p + "raw", TensorProto.UINT8, ["batch", 1, "height", "width"])],
        [helper.make_tensor_value_info(p + "out", TensorProto.FLOAT, ["batch", c, *spec.input_size])],
        [numpy_helper.from_array(v, p + k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def with_preprocessing(source_proto, spec: ModelSpec):
    """``source_proto`` (normalised float input) with :func:`preprocessing_graph` composed in front.
    The new graph's input is named like the source's (``input``); metadata is left to the caller."""
    import onnx
    from onnx import compose

    graph_inputs = [i.name for i in source_proto.graph.input
                    if i.name not in {t.name for t in source_proto.graph.initializer}]
    if len(graph_inputs) != 1:
        raise ArtifactError(f"expected a model with one input, found {graph_inputs}")
    opset = next((o.version for o in source_proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ExportError(f"the model uses opset {opset}; the in-graph antialiased resize needs opset {MIN_OPSET} "
                          f"or newer: re-export it with `fer-export onnx CHECKPOINT --with-preprocessing`")
    pre = preprocessing_graph(spec, opset, source_proto.ir_version)
    merged = compose.merge_models(pre, source_proto, io_map=[(PREFIX + "out", graph_inputs[0])])
    name = graph_inputs[0]  # give the raw input the source's name back
    for node in merged.graph.node:
        node.input[:] = [name if x == PREFIX + "raw" else x for x in node.input]
    merged.graph.input[0].name = name
    onnx.checker.check_model(merged)
    return merged


def source_reference(path: Path, spec: ModelSpec):
    """The source ONNX model on raw uint8 (N, 1, H, W) crops, through the Python preprocessing."""
    from ..preprocess import preprocess
    from ..runtime import open_session

    sess, _ = open_session(path, "cpu")
    names = [o.name for o in sess.get_outputs()]
    name = sess.get_inputs()[0].name

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, sess.run(names, {name: preprocess(list(batch[:, 0]), spec)})))

    return run


def embed_path(source: str | Path, output: str | Path | None = None) -> Path:
    """Where :func:`embed_onnx` puts the embeddable copy of ``source``: ``output``, else ``NAME.embed.onnx``."""
    return Path(output) if output else sibling(Path(source), "embed")


def embed_onnx(source: str | Path, output: str | Path | None = None, *, data: str | Path | None = None) -> ExportResult:
    """Write ``source`` (an ONNX file exported by fer-export) with its preprocessing inside, gated by a
    parity check against ``source`` + the Python preprocessing. Default output: ``NAME.embed.onnx``.
    Raises :class:`ParityError` (the file is kept as ``NAME.failed.onnx``) when the check fails."""
    from ..errors import require

    onnx = require("onnx", "train", "fer-export embed MODEL.onnx")
    from ..parity import compare, input_sets, tolerance_for

    source = Path(source)
    art = load_onnx(source)
    spec = art.spec
    if art.input_format != INPUT_NORMALIZED:
        raise ExportError(f"{source}: already takes {art.input_format!r} input; nothing to add")
    if art.batch is not None:
        raise ExportError(f"{source}: has a fixed batch of {art.batch}; the embeddable graph needs a dynamic "
                          f"batch: export the checkpoint with `fer-export onnx CHECKPOINT --with-preprocessing`")
    final = embed_path(source, output)
    if final.resolve() == source.resolve():
        raise ExportError(f"{final}: the output would overwrite its source; choose another path with -o")
    check_outputs([("the source model", source)], gate_outputs(final, "the embeddable model"))
    if output:
        check_suffix("onnx", output)
    metadata = {**art.metadata, META_INPUT: INPUT_UINT8}
    metadata.pop(META_PARITY, None)
    tmp = temp_beside(final)

    def write():
        proto = with_preprocessing(onnx.load_model(str(source)), spec)
        _set_props(proto, metadata)
        onnx.save_model(proto, str(tmp))
        candidate = load_onnx(tmp)
        return compare(source_reference(source, spec), candidate.run, input_sets(spec, INPUT_UINT8, data),
                       tolerance_for(candidate))

    report = write_artifact(write, tmp, final)
    return settle(ExportResult("onnx", final, report), tmp, final, stamp_onnx, metadata, "onnx --with-preprocessing")
