"""Keras multi-exit model -> segment bundle.

Steps: load the model, find the cuts, convert the whole model once (one calibration pass)
with every exit and cut as a named output, carve one segment per stretch between cuts out
of that flatbuffer (and, unless asked not to, one fused file per prefix of two or more
segments, which a device runs instead of handing over between interpreters), verify that
the chain reproduces the whole model and each fused file the chain, measure per-exit
accuracy when validation data is given, and write the bundle atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..arrays import load_array, load_labeled
from ..bundle import QUANTIZATION_MODES, Bundle, CutSpec, ExitSpec, FusedSpec, Manifest, SegmentSpec, write_bundle
from ..bundle.store import check_replaceable, sha256_hex
from ..errors import CalibrationError, ConversionError, CutError, InputError, ModelLoadError
from ..runtime import BundleRunner
from .flatbuffer import WholeModel, extract_segment, read_whole_model
from .graph import LayerGraph, auto_cuts, graph_from_keras
from .verify import assert_bundle_matches, exit_accuracies, fused_matching_chain, keras_exit_accuracies
from .whole import convert_whole_model, import_tensorflow_quietly

__all__ = [
    "ConversionResult", "check_options", "convert", "convert_model", "load_keras_model", "load_array", "load_labeled",
]

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ConversionResult:
    """A written bundle, the whole converted model it was cut from, and the measured accuracies."""

    bundle: Bundle
    whole_model: bytes
    float_accuracy: dict[str, float] | None


def load_keras_model(path: str | os.PathLike[str]) -> Any:
    """Load a ``.keras`` (or ``.h5``) model file, translating every failure to ``ModelLoadError``."""
    import_tensorflow_quietly()
    import keras

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path} does not exist or is not a file")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises ValueError, OSError, zipfile errors, TypeError...
        raise ModelLoadError(f"{path} is not a Keras model that can be loaded: {e}") from e
    if not hasattr(model, "operations") or not getattr(model, "inputs", None):
        raise ModelLoadError(f"{path} holds a {type(model).__name__}; convert needs a functional Keras model")
    return model


def _check_samples(x: np.ndarray, input_shape: tuple[int, ...], what: str) -> np.ndarray:
    if tuple(x.shape) == input_shape:
        x = x[np.newaxis]
    if tuple(x.shape[1:]) != input_shape:
        raise CalibrationError(
            f"{what} has samples of shape {list(x.shape[1:])}, but the model input is {list(input_shape)}"
        )
    if len(x) == 0:
        raise CalibrationError(f"{what} is empty")
    if not np.issubdtype(x.dtype, np.number):
        raise CalibrationError(f"{what} must be numeric, got {x.dtype}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise CalibrationError(f"{what} contains NaN or infinite values")
    return x


def convert(
    model: Any,
    output_dir: str | os.PathLike[str],
    *,
    cuts: Sequence[str] = (),
    auto_cuts: int | None = None,
    quantize: str = "int8",
    calibration: np.ndarray | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    overwrite: bool = False,
    verify_samples: int = 64,
    model_name: str | None = None,
    progress: Progress | None = None,
    fuse: bool = True,
) -> Bundle:
    """Convert a Keras multi-exit model (an object or a ``.keras`` path) to a segment bundle.

    ``cuts`` names layers to cut after; ``auto_cuts`` asks for that many cuts chosen by
    compute balance and activation size instead. ``quantize`` is one of int8 (needs
    ``calibration``: float inputs shaped like the model input), float16, dynamic or none.
    ``validation`` (x, y) adds per-exit accuracy of the bundle and of the float model.
    ``fuse=False`` leaves out the fused prefix files (a smaller bundle whose segments always
    run one interpreter after another).
    """
    return convert_model(
        model, output_dir, cuts=cuts, auto_cuts=auto_cuts, quantize=quantize, calibration=calibration,
        validation=validation, overwrite=overwrite, verify_samples=verify_samples, model_name=model_name,
        progress=progress, fuse=fuse,
    ).bundle


def convert_model(
    model: Any,
    output_dir: str | os.PathLike[str],
    *,
    cuts: Sequence[str] = (),
    auto_cuts: int | None = None,
    quantize: str = "int8",
    calibration: np.ndarray | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    overwrite: bool = False,
    verify_samples: int = 64,
    model_name: str | None = None,
    progress: Progress | None = None,
    fuse: bool = True,
) -> ConversionResult:
    """`convert`, also returning the whole converted model and the float model's accuracy."""
    say = progress or (lambda message: log.info("%s", message))
    check_options(output_dir, cuts=cuts, auto_cuts=auto_cuts, quantize=quantize,
                  has_calibration=calibration is not None, overwrite=overwrite)
    if isinstance(model, (str, os.PathLike)):
        say(f"loading {model}")
        model = load_keras_model(model)

    graph = graph_from_keras(model)
    chosen = graph.check_cuts(list(cuts)) if cuts else auto_cuts_for(graph, auto_cuts or 0, quantize)
    exit_segment = graph.exit_segments(chosen)
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if calibration is not None:
        calibration = _check_samples(np.asarray(calibration), input_shape, "calibration data")
    if validation is not None:
        validation = (_check_samples(np.asarray(validation[0]), input_shape, "validation data"),
                      np.asarray(validation[1]))
    say(f"converting the whole model ({quantize}, {len(graph.exits)} exits, cuts: {', '.join(chosen) or 'none'})")

    outputs = list(dict.fromkeys([*graph.exits, *chosen]))
    whole_bytes = convert_whole_model(model, outputs, quantize=quantize, calibration=calibration)
    whole = read_whole_model(whole_bytes)
    if len(whole.inputs) != 1:
        raise ConversionError(f"the converted model has inputs {sorted(whole.inputs)}; expected one")
    # The signature may name the input after the Keras tensor rather than the input layer.
    whole.inputs = {graph.input_name: next(iter(whole.inputs.values()))}
    missing = [n for n in outputs if n not in whole.outputs]
    if missing:
        raise ConversionError(f"the converted model lost the outputs {missing}; this is a converter bug")

    say(f"cutting {len(chosen) + 1} segment(s)")
    manifest, files = _segment(whole, graph, chosen, exit_segment, quantize, model_name or model.name)
    if fuse and manifest.num_segments > 1:
        manifest = _add_fused_prefixes(whole, manifest, files)

    say("verifying the segment chain against the whole model")
    samples = _verification_inputs(validation, calibration, input_shape, verify_samples)
    with tempfile.TemporaryDirectory(prefix="tflite-edge-convert-") as scratch:
        draft = write_bundle(Path(scratch) / "bundle", manifest, files)
        verification = assert_bundle_matches(draft, whole_bytes, samples)
        fused = fused_matching_chain(draft, samples)
        for dropped in set(manifest.fused) - set(fused):
            log.warning("fused segments [%d, %d) differ from their chain; left out of the bundle",
                        dropped.start, dropped.stop)
            del files[dropped.file]
        accuracy = float_accuracy = measured_on = None
        if validation is not None:
            say(f"measuring per-exit accuracy on {len(validation[0])} validation samples")
            runner = BundleRunner(draft)
            accuracy = exit_accuracies(draft, *validation, runner=runner)
            measured_on = runner.measured_on()
            float_accuracy = keras_exit_accuracies(model, *validation)

    exits = tuple(
        ExitSpec(e.name, e.segment, e.num_classes,
                 None if accuracy is None else accuracy[e.name],
                 None if float_accuracy is None else float_accuracy[e.name])
        for e in manifest.exits
    )
    final = Manifest(
        model_name=manifest.model_name, quantization=quantize, input=manifest.input, segments=manifest.segments,
        exits=exits, cuts=manifest.cuts, converter_version=__version__,
        tensorflow_version=manifest.tensorflow_version, verification=verification, fused=tuple(fused),
        accuracy_measured_on=measured_on,
    )
    bundle = write_bundle(output_dir, final, files, overwrite=overwrite)
    say(f"wrote {output_dir} (bundle {bundle.bundle_id})")
    return ConversionResult(bundle, whole_bytes, float_accuracy)


def check_options(
    output_dir: str | os.PathLike[str], *, cuts: Sequence[str] = (), auto_cuts: int | None = None,
    quantize: str = "int8", has_calibration: bool = False, overwrite: bool = False,
) -> None:
    """The checks of `convert`'s options that need no model: callers run them before loading one."""
    if quantize not in QUANTIZATION_MODES:
        raise InputError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATION_MODES)}")
    if cuts and auto_cuts:
        raise InputError("give either explicit cuts or a number of automatic cuts, not both")
    if auto_cuts is not None and auto_cuts < 0:
        raise CutError("--auto-cuts must be zero or positive")
    repeated = sorted({c for c in cuts if list(cuts).count(c) > 1})
    if repeated:
        raise CutError(f"cut layer(s) {', '.join(repeated)} named more than once; give each cut once")
    if Path(output_dir).exists() and not overwrite:
        raise ConversionError(f"{output_dir} already exists; choose another output or pass overwrite (--force)")
    check_replaceable(Path(output_dir), overwrite=overwrite)  # --force replaces only a bundle
    if quantize == "int8" and not has_calibration:
        raise CalibrationError(
            "int8 quantization needs calibration data: pass --calibration FILE.npy (a few hundred "
            "representative inputs), or choose --quantize float16, dynamic or none"
        )


def auto_cuts_for(graph: LayerGraph, count: int, quantize: str) -> list[str]:
    """Automatic cuts, with activation sizes weighted by the bytes per element of ``quantize``."""
    return auto_cuts(graph, count, dtype_bytes=1 if quantize == "int8" else 4)


def _segment(
    whole: WholeModel, graph: LayerGraph, cuts: list[str], exit_segment: dict[str, int], quantize: str, name: str
) -> tuple[Manifest, dict[str, bytes]]:
    import tensorflow as tf

    input_name = graph.input_name
    segments, files = [], {}
    for index in range(len(cuts) + 1):
        inputs = [input_name] if index == 0 else [cuts[index - 1]]
        outputs = [e for e in graph.exits if exit_segment[e] == index]
        if index < len(cuts):
            outputs.append(cuts[index])
        if not outputs:
            raise ConversionError(f"segment {index} would have no outputs")
        try:
            data = extract_segment(whole, inputs, outputs)
        except ConversionError as e:
            # The Keras graph separates here but the converted one does not (an operator fused
            # across the cut): name the cut and the way out instead of the tensor.
            if index == 0:
                raise
            raise CutError(f"cannot cut at {cuts[index - 1]!r}: in the converted model a layer after it reads a "
                           f"tensor from before it ({e}); choose another cut from --list-cuts") from e
        file = f"segment_{index}.tflite"
        files[file] = data
        segments.append(
            SegmentSpec(
                index=index, file=file, sha256=sha256_hex(data), size_bytes=len(data),
                inputs=tuple(_spec(whole, n) for n in inputs), outputs=tuple(_spec(whole, n) for n in outputs),
            )
        )
    exits = tuple(
        ExitSpec(e, exit_segment[e], int(np.prod(whole.tensor_spec(e, whole.outputs[e]).shape[1:])))
        for e in graph.exits
    )
    cut_specs = tuple(CutSpec(c, i, _spec(whole, c).bytes) for i, c in enumerate(cuts))
    user_input = _spec(whole, input_name)
    model_input = type(user_input)(input_name, user_input.shape, "float32")
    manifest = Manifest(
        model_name=name, quantization=quantize, input=model_input, segments=tuple(segments), exits=exits,
        cuts=cut_specs, converter_version=__version__, tensorflow_version=tf.__version__,
    )
    return manifest, files


def _add_fused_prefixes(whole: WholeModel, manifest: Manifest, files: dict[str, bytes]) -> Manifest:
    """Carve segments [0, K) as one file for every K >= 2 (the runs a device makes before it
    offloads or answers); each writes every output of the segments it covers."""
    fused = []
    for stop in range(2, manifest.num_segments + 1):
        outputs = tuple(t.name for s in manifest.segments[:stop] for t in s.outputs)
        data = extract_segment(whole, [manifest.input.name], list(outputs))
        file = f"fused_0_{stop}.tflite"
        files[file] = data
        fused.append(FusedSpec(0, stop, file, sha256_hex(data), len(data), outputs))
    return dataclasses.replace(manifest, fused=tuple(fused))


def _spec(whole: WholeModel, name: str) -> Any:
    index = whole.inputs.get(name, whole.outputs.get(name))
    if index is None:
        raise ConversionError(f"tensor {name!r} is not a named input or output of the converted model")
    return whole.tensor_spec(name, index)


def _verification_inputs(
    validation: tuple[np.ndarray, np.ndarray] | None, calibration: np.ndarray | None,
    input_shape: tuple[int, ...], count: int,
) -> np.ndarray:
    if validation is not None:
        return validation[0][:count]
    if calibration is not None:
        return calibration[:count]
    # Without data, seeded uniform inputs still exercise every operator.
    return np.random.default_rng(0).uniform(0.0, 1.0, size=(min(count, 8), *input_shape)).astype(np.float32)
