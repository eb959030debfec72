"""Converting the whole Keras model to one TFLite flatbuffer with named outputs.

Keras 3 models lose output names in TFLite signatures and reorder outputs, so the model is
rebuilt with a dict of outputs: every exit and every cut activation comes out under its
layer name. (A hand-written ``tf.function`` left READ_VARIABLE ops in the graph that broke
int8 calibration; ``from_keras_model`` freezes the variables.) Calibration happens once,
for the whole model, which gives both sides of every cut the same scale and zero point.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._native import native_stderr_logged
from ..errors import CalibrationError, ConversionError

__all__ = ["convert_whole_model"]

log = logging.getLogger(__name__)


def convert_whole_model(
    model: Any,
    output_layers: Sequence[str],
    *,
    quantize: str,
    calibration: np.ndarray | None,
) -> bytes:
    """Convert ``model`` with the named layers' outputs as signature outputs."""
    import_tensorflow_quietly()
    import keras
    import tensorflow as tf

    tensors = {name: model.get_layer(name).output if name in _layer_names(model) else _op_output(model, name)
               for name in output_layers}
    # A dict-output functional model keeps the dict keys as signature output names.
    extended = keras.Model(model.inputs, tensors, name=f"{model.name}_segmented")
    # Batch size 1, as devices serve requests: shapes become static, so Flatten is one
    # RESHAPE instead of SHAPE/STRIDED_SLICE/PACK/RESHAPE (leaner, and friendlier to TFLM).
    source = model.inputs[0]
    fixed_input = keras.Input(batch_shape=(1, *source.shape[1:]), name=source._keras_history.operation.name)
    extended = keras.Model(fixed_input, extended(fixed_input), name=f"{model.name}_segmented")
    converter = tf.lite.TFLiteConverter.from_keras_model(extended)
    return _run_converter(tf, converter, quantize, calibration)


def _run_converter(tf: Any, converter: Any, quantize: str, calibration: np.ndarray | None) -> bytes:
    if quantize == "int8":
        if calibration is None:
            raise CalibrationError(
                "int8 quantization needs calibration data: pass --calibration FILE.npy (a few hundred "
                "representative inputs), or choose --quantize float16, dynamic or none"
            )
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize != "none":
        raise ConversionError(f"unknown quantization {quantize!r}; choose int8, float16, dynamic or none")
    # Keras' export step prints a summary of the SavedModel to stdout, the calibrator prints
    # its settings from C++ to stderr, and TensorFlow warns that int8 input needs no input
    # statistics (we set them by calibration): keep all of it in the debug log.
    captured = io.StringIO()
    with native_stderr_logged(log, "converter output (C++)"):
        try:
            with contextlib.redirect_stdout(captured), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
                return bytes(converter.convert())
        except Exception as e:  # the converter raises ConverterError, RuntimeError, ValueError...
            raise ConversionError(f"TFLite conversion failed ({quantize}): {e}") from e
        finally:
            if captured.getvalue().strip():
                log.info("converter output:\n%s", captured.getvalue().rstrip())


def import_tensorflow_quietly() -> None:
    """Import TensorFlow once with its start-up lines (written from C++ before any logging is
    set up: oneDNN notes, CUDA probing) moved to the debug log instead of the terminal."""
    if "tensorflow" in sys.modules:
        return
    with native_stderr_logged(log, "TensorFlow start-up"):
        import tensorflow

        tensorflow.config.list_physical_devices()  # device probing logs (no CUDA here) land here too


def _layer_names(model: Any) -> set[str]:
    return {layer.name for layer in model.layers}


def _op_output(model: Any, name: str) -> Any:
    # Functional graphs may contain bare operations (keras.ops.*) that are not layers.
    for op in model.operations:
        if op.name == name:
            return op.output
    raise ConversionError(f"the model has no layer named {name!r}")


def _representative(calibration: np.ndarray) -> Iterator[list[np.ndarray]]:
    for sample in calibration:
        yield [np.asarray(sample, dtype=np.float32)[np.newaxis]]
