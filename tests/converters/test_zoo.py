"""Exit heads on a keras.applications backbone (weights=None: nothing is downloaded)."""

import numpy as np

from tflite_edge.converters import convert, graph_from_keras
from tflite_edge.runtime import BundleRunner
from tflite_edge.zoo import add_exit_heads


def test_exit_heads_on_mobilenetv2_convert_with_residual_cuts(tmp_path):
    import keras

    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, include_top=False, alpha=0.35)
    model = add_exit_heads(backbone, ["block_5_add", "block_12_add"], 10)
    assert [t._keras_history.operation.name for t in model.outputs] == [
        "exit_block_5_add", "exit_block_12_add", "final"]
    graph = graph_from_keras(model)
    valid = graph.valid_cuts()
    assert "block_5_add" in valid and "block_12_add" in valid
    assert "block_5_project_BN" not in valid  # inside the residual block that block_5_add closes
    calibration = np.random.default_rng(0).uniform(-1, 1, size=(8, 32, 32, 3)).astype(np.float32)
    bundle = convert(model, tmp_path / "b", cuts=["block_5_add", "block_12_add"], calibration=calibration)
    m = bundle.manifest
    assert [(e.name, e.segment) for e in m.exits] == [("exit_block_5_add", 0), ("exit_block_12_add", 1), ("final", 2)]
    assert m.verification.bit_exact
    probabilities = BundleRunner(bundle).predict(calibration[:2])
    assert all(p.shape == (2, 10) for p in probabilities.values())
