"""Tiny ONNX annotators written by the tests (onnx.helper and numpy): a 1×1 convolution that reads one input
channel as the depth, so the preprocessing and postprocessing around the net can be checked exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def channel_depth_model(path: Path, channel: int = 0, *, scale: float = 1.0, four_d: bool = True) -> Path:
    """An ONNX model ``image (1×3×H×W float32) → depth``: ``scale ×`` input channel ``channel``, as
    ``1×1×H×W`` (``four_d``) or ``1×H×W``; H and W are free."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((1, 3, 1, 1), dtype=np.float32)
    weight[0, channel, 0, 0] = scale
    nodes = [helper.make_node("Conv", ["image", "w"], ["d4"], kernel_shape=[1, 1])]
    inits = [numpy_helper.from_array(weight, "w")]
    out_name, out_shape = "d4", [1, 1, "h", "w"]
    if not four_d:
        inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"))
        nodes.append(helper.make_node("Squeeze", ["d4", "axis"], ["depth"]))
        out_name, out_shape = "depth", [1, "h", "w"]
    graph = helper.make_graph(
        nodes,
        "tiny-depth",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
