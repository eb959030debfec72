"""The converter on real Keras models, with real TFLite interpreters."""

import numpy as np
import pytest

from tflite_edge.bundle import load_bundle
from tflite_edge.converters import compare_chain_to_model, convert, convert_model, graph_from_keras
from tflite_edge.converters.graph import auto_cuts
from tflite_edge.errors import CalibrationError, ConversionError, CutError, InputError, ModelLoadError
from tflite_edge.runtime import BundleRunner


def test_int8_bundle_structure(digits_bundle):
    m = digits_bundle.manifest
    assert [s.file for s in m.segments] == ["segment_0.tflite", "segment_1.tflite", "segment_2.tflite"]
    assert [(e.name, e.segment) for e in m.exits] == [("exit_1", 0), ("exit_2", 1), ("final", 2)]
    assert [(c.layer, c.activation_bytes) for c in m.cuts] == [("block_1_out", 256), ("block_2_out", 128)]
    assert [t.name for t in m.segments[0].outputs] == ["exit_1", "block_1_out"]
    assert all(t.dtype == "int8" for s in m.segments for t in (*s.inputs, *s.outputs))
    # Both sides of each cut share one scale and zero point.
    for cut in m.cuts:
        produced = m.segments[cut.segment].output(cut.layer)
        consumed = m.segments[cut.segment + 1].inputs[0]
        assert (produced.scale, produced.zero_point) == (consumed.scale, consumed.zero_point)
    assert m.verification is not None and m.verification.bit_exact and m.verification.max_abs_diff == 0.0


def test_int8_accuracy_within_one_point_of_float(digits_bundle):
    for e in digits_bundle.manifest.exits:
        assert e.accuracy is not None and e.float_accuracy is not None
        assert e.float_accuracy > 0.85, e
        assert abs(e.accuracy - e.float_accuracy) <= 0.01, e


def test_chain_is_bit_exact_against_the_whole_model(digits_model, digits_split, tmp_path):
    x_train, _, x_val, _ = digits_split
    result = convert_model(digits_model, tmp_path / "b", cuts=["block_1_out", "block_2_out"], calibration=x_train[:100])
    check = compare_chain_to_model(result.bundle, result.whole_model, x_val[:200])
    assert check.bit_exact and check.samples == 200


@pytest.mark.parametrize("mode", ["float16", "dynamic", "none"])
def test_float_modes_verify_and_agree_with_keras(mode, digits_model, digits_split, tmp_path):
    _, _, x_val, y_val = digits_split
    bundle = convert(digits_model, tmp_path / mode, auto_cuts=1, quantize=mode, validation=(x_val, y_val))
    m = bundle.manifest
    assert m.quantization == mode and m.num_segments == 2
    assert m.verification.max_abs_diff <= 1e-4
    assert all(t.dtype == "float32" for s in m.segments for t in s.inputs)
    for e in m.exits:
        assert abs(e.accuracy - e.float_accuracy) <= 0.01


def test_residual_model(digits_residual_model, digits_split, tmp_path):
    graph = graph_from_keras(digits_residual_model)
    assert "block_1_conv_b" not in graph.valid_cuts() and "block_1_add" in graph.valid_cuts()
    x_train, _, x_val, y_val = digits_split
    with pytest.raises(CutError, match=r"'block_1_conv_a'.*skip connection.*near it:.*block_1_add"):
        convert(digits_residual_model, tmp_path / "bad", cuts=["block_1_conv_a"], calibration=x_train[:50])
    assert not (tmp_path / "bad").exists()
    bundle = convert(digits_residual_model, tmp_path / "res", auto_cuts=2, calibration=x_train[:100],
                     validation=(x_val, y_val))
    assert bundle.manifest.num_segments == 3 and bundle.manifest.verification.bit_exact
    for e in bundle.manifest.exits:
        assert abs(e.accuracy - e.float_accuracy) <= 0.015


def test_single_output_model_is_partitionable(tmp_path, digits_split):
    import keras

    x_train = digits_split[0]
    inp = keras.Input((8, 8, 1), name="pixels")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    h = keras.layers.Flatten(name="flat")(h)
    out = keras.layers.Dense(10, activation="softmax", name="probs")(h)
    model = keras.Model(inp, out)
    one = convert(model, tmp_path / "one", calibration=x_train[:20])
    assert one.manifest.num_segments == 1 and one.manifest.exit_names == ("probs",)
    two = convert(model, tmp_path / "two", cuts=["flat"], calibration=x_train[:20])
    assert two.manifest.num_segments == 2 and two.manifest.exits[0].segment == 1
    runner = BundleRunner(two)
    assert runner.predict(x_train[:3])["probs"].shape == (3, 10)


@pytest.mark.parametrize("model", ["digits_model", "digits_residual_model"])
def test_every_listed_cut_converts(model, request, digits_split, tmp_path):
    # What --list-cuts offers (and --auto-cuts picks from) must convert: all of them at once.
    keras_model = request.getfixturevalue(model)
    graph = graph_from_keras(keras_model)
    listed = graph.valid_cuts()
    assert "block_3_flat" not in listed and "block_3_conv" in listed  # a Flatten is folded by the converter
    assert "drops unit dimensions" in graph.cut_problem("block_3_flat")
    x_train = digits_split[0]
    bundle = convert(keras_model, tmp_path / "b", cuts=listed, calibration=x_train[:50])
    assert [c.layer for c in bundle.manifest.cuts] == listed
    assert bundle.manifest.verification is not None and bundle.manifest.verification.bit_exact
    for count in range(1, len(listed) + 1):
        assert set(auto_cuts(graph, count)) <= set(listed)


def test_bad_inputs_are_clear_errors(digits_model, digits_model_file, tmp_path):
    with pytest.raises(CalibrationError, match="needs calibration data"):
        convert(digits_model, tmp_path / "a", cuts=["block_1_out"])
    with pytest.raises(CalibrationError, match=r"shape \[28, 28\].*model input is \[8, 8, 1\]"):
        convert(digits_model, tmp_path / "a", calibration=np.zeros((4, 28, 28), np.float32))
    with pytest.raises(CalibrationError, match="NaN"):
        convert(digits_model, tmp_path / "a", calibration=np.full((4, 8, 8, 1), np.nan, np.float32))
    with pytest.raises(CutError, match="no layer named 'block_9'"):
        convert(digits_model, tmp_path / "a", cuts=["block_9"], quantize="none")
    with pytest.raises(InputError, match="not both"):
        convert(digits_model, tmp_path / "a", cuts=["block_1_out"], auto_cuts=1, quantize="none")
    with pytest.raises(InputError, match="unknown quantization"):
        convert(digits_model, tmp_path / "a", quantize="int4")
    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a Keras model"):
        convert(not_a_model, tmp_path / "a", quantize="none")
    with pytest.raises(ModelLoadError, match="does not exist"):
        convert(tmp_path / "missing.keras", tmp_path / "a", quantize="none")
    assert not (tmp_path / "a").exists()
    # A model path works as well as a model object.
    bundle = convert(digits_model_file, tmp_path / "from_file", quantize="none")
    assert load_bundle(bundle.path).manifest.model_name == "digits_exits"
    with pytest.raises(ConversionError, match="already exists"):
        convert(digits_model_file, tmp_path / "from_file", quantize="none")


def test_failed_conversion_leaves_nothing_behind(digits_model, tmp_path, monkeypatch):
    import importlib

    convert_module = importlib.import_module("tflite_edge.converters.convert")

    def broken(*args, **kwargs):
        raise ConversionError("simulated converter failure")

    monkeypatch.setattr(convert_module, "convert_whole_model", broken)
    with pytest.raises(ConversionError, match="simulated"):
        convert(digits_model, tmp_path / "out", quantize="none")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-o", "EXISTING"], "already exists; choose another output or pass overwrite (--force)"),
        (["--cut", "block_1_out", "--cut", "block_1_out"], "block_1_out named more than once"),
        (["--cut", "block_1_out", "--auto-cuts", "2"], "not both"),
        (["--auto-cuts", "-1"], "zero or positive"),
        (["--auto-cuts", "1", "--quantize", "int8"], "needs calibration data"),
        (["--list-cuts", "--cut", "block_1_out"], "drop --cut"),
    ],
)
def test_convert_checks_its_options_before_loading_the_model(digits_model_file, tmp_path, extra, message):
    import subprocess
    import sys

    existing = tmp_path / "existing"
    existing.mkdir()
    extra = [str(existing) if a == "EXISTING" else a for a in extra]
    output = [] if "-o" in extra else ["-o", str(tmp_path / "new")]
    done = subprocess.run([sys.executable, "-m", "tflite_edge", "convert", str(digits_model_file), *output, *extra],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.splitlines() == [done.stderr.splitlines()[-1]] and message in done.stderr, done.stderr
    assert "loading" not in done.stderr  # refused before the model (and TensorFlow) was loaded
