"""Demo step 1–3: a trained multi-exit model, its int8 bundle and its latency profile.

The trained model is kept in the output folder and reused by the next run, so a second
``make demo`` skips training.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle, load_bundle

__all__ = ["Prepared", "prepare"]

CUTS = ("block_1_out", "block_2_out")
EPOCHS = 12


@dataclass(frozen=True)
class Prepared:
    bundle: Bundle
    profile: dict[str, Any]
    x_val: np.ndarray
    y_val: np.ndarray
    trained_now: bool


def prepare(out: Path, say: Callable[[str], None], *, epochs: int = EPOCHS) -> Prepared:
    """Train (or reuse) the 32x32 digits model, convert it to int8 and profile the bundle."""
    from ..converters.whole import import_tensorflow_quietly

    import_tensorflow_quietly()  # TensorFlow's C++ start-up lines go to the log, not the terminal
    import keras

    from .. import zoo
    from ..converters import convert
    from ..runtime.profile import profile_bundle

    x_train, y_train, x_val, y_val = zoo.digits_data()
    x_train, x_val = zoo.upscale(x_train), zoo.upscale(x_val)
    model_path = out / "model.keras"
    trained_now = not model_path.exists()
    if trained_now:
        say(f"training a 3-exit CNN on {len(x_train)} scikit-learn digits (32x32) for {epochs} epochs")
        model = zoo.train_digits_model(zoo.build_digits32_model(), x_train, y_train, epochs=epochs)
        model.save(model_path)
    else:
        say(f"reusing the trained model {model_path}")
        model = keras.models.load_model(model_path, compile=False)
    np.savez(out / "validation.npz", x=x_val, y=y_val)

    say(f"converting to an int8 bundle cut at {' and '.join(CUTS)}")
    bundle = convert(model, out / "bundle", cuts=CUTS, quantize="int8", calibration=x_train[:200],
                     validation=(x_val, y_val), overwrite=True)
    say("profiling every segment on this machine")
    profile = profile_bundle(load_bundle(bundle.path), repeats=30).to_dict()
    (out / "profile.json").write_text(json.dumps(profile, indent=2))
    return Prepared(bundle, profile, x_val, y_val, trained_now)
