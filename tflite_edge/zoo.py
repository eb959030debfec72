"""Small multi-exit models for examples, tests and the demo (needs Keras).

``add_exit_heads`` turns any Keras backbone into a multi-exit model; ``build_digits_model``
is a 3-exit CNN for scikit-learn's 8x8 digits (1,797 real images, shipped with
scikit-learn, no download) that trains to useful accuracy in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "add_exit_heads",
    "build_digits32_model",
    "build_digits_model",
    "digits_data",
    "train_digits_model",
    "upscale",
]


def _quiet_tensorflow() -> None:
    from .converters.whole import import_tensorflow_quietly

    import_tensorflow_quietly()


def add_exit_heads(
    backbone: Any, layer_names: Sequence[str], num_classes: int, *, final_head: bool = True, name: str | None = None
) -> Any:
    """A model whose outputs are classifier heads after the named layers of ``backbone``.

    Each head is global average pooling (for feature maps) and a softmax dense layer named
    ``exit_<layer>``. With ``final_head`` a head named ``final`` is added after the
    backbone's output; otherwise the backbone's own output is the final exit.
    """
    _quiet_tensorflow()
    import keras

    def head(tensor: Any, label: str) -> Any:
        if len(tensor.shape) > 2:
            tensor = keras.layers.GlobalAveragePooling2D(name=f"{label}_pool")(tensor)
        return keras.layers.Dense(num_classes, activation="softmax", name=label)(tensor)

    exits = [head(backbone.get_layer(n).output, f"exit_{n}") for n in layer_names]
    exits.append(head(backbone.output, "final") if final_head else backbone.output)
    return keras.Model(backbone.inputs, exits, name=name or f"{backbone.name}_exits")


def build_digits_model(*, residual: bool = False, seed: int = 0) -> Any:
    """A 3-exit CNN for 8x8x1 digits: exits ``exit_1``, ``exit_2`` and ``final``.

    With ``residual`` each block has a skip connection, so the layers inside a block are
    not valid cuts; ``block_1_out`` and ``block_2_out`` are valid cuts in both variants.
    """
    _quiet_tensorflow()
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    image = keras.Input((8, 8, 1), name="image")

    def block(x: Any, filters: int, index: int) -> Any:
        y = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block_{index}_conv_a")(x)
        if residual:
            y = layers.Conv2D(filters, 3, padding="same", name=f"block_{index}_conv_b")(y)
            skip = layers.Conv2D(filters, 1, name=f"block_{index}_skip")(x)
            y = layers.Add(name=f"block_{index}_add")([y, skip])
        y = layers.ReLU(name=f"block_{index}_relu")(y)
        return layers.MaxPooling2D(2, name=f"block_{index}_out")(y)

    x = block(image, 16, 1)  # 4x4x16
    # Exit heads are deliberately small, so that earlier exits are cheaper and less accurate
    # (about 92%, 96% and 99% top-1 on the validation split).
    pooled = layers.AveragePooling2D(2, name="exit_1_pool")(x)  # 2x2x16
    exit_1 = layers.Dense(10, activation="softmax", name="exit_1")(layers.Flatten(name="exit_1_flat")(pooled))
    x = block(x, 32, 2)  # 2x2x32
    exit_2 = layers.Dense(10, activation="softmax", name="exit_2")(layers.GlobalAveragePooling2D(name="exit_2_pool")(x))
    x = layers.Conv2D(64, 2, activation="relu", name="block_3_conv")(x)  # 1x1x64
    x = layers.Flatten(name="block_3_flat")(x)
    x = layers.Dense(64, activation="relu", name="block_3_dense")(x)
    final = layers.Dense(10, activation="softmax", name="final")(x)
    name = "digits_residual_exits" if residual else "digits_exits"
    return keras.Model(image, [exit_1, exit_2, final], name=name)


def build_digits32_model(*, seed: int = 0) -> Any:
    """A wider 3-exit CNN for digits upscaled to 32x32 (see `upscale`), used by the demo.

    About 38 M multiply-accumulates per image, so that compute matters next to the link:
    three blocks of two 3x3 convolutions (32, 64, 128 filters) with exits after the first
    two blocks (``exit_1``, ``exit_2``) and a dense classifier (``final``). Valid cuts
    include ``block_1_out`` (16x16x32) and ``block_2_out`` (8x8x64).
    """
    _quiet_tensorflow()
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    image = keras.Input((32, 32, 1), name="image")

    def block(x: Any, filters: int, index: int) -> Any:
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block_{index}_conv_a")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block_{index}_conv_b")(x)
        return layers.MaxPooling2D(2, name=f"block_{index}_out")(x)

    def head(x: Any, index: int, pool: int) -> Any:
        # Pooling to a 2x2 map keeps the early heads cheap and less accurate than the final one.
        x = layers.AveragePooling2D(pool, name=f"exit_{index}_pool")(x)
        x = layers.Flatten(name=f"exit_{index}_flat")(x)
        return layers.Dense(10, activation="softmax", name=f"exit_{index}")(x)

    x = block(image, 32, 1)  # 16x16x32
    exit_1 = head(x, 1, 8)
    x = block(x, 64, 2)  # 8x8x64
    exit_2 = head(x, 2, 4)
    x = block(x, 128, 3)  # 4x4x128
    x = layers.Dense(128, activation="relu", name="block_4_dense")(layers.Flatten(name="block_4_flat")(x))
    final = layers.Dense(10, activation="softmax", name="final")(x)
    return keras.Model(image, [exit_1, exit_2, final], name="digits32_exits")


def upscale(x: np.ndarray, factor: int = 4) -> np.ndarray:
    """Nearest-neighbour upscaling of (N, H, W, C) images (8x8 digits -> 32x32)."""
    return np.repeat(np.repeat(x, factor, axis=1), factor, axis=2)


def digits_data(
    *, validation_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as (x_train, y_train, x_val, y_val); x in [0, 1], shape (N, 8, 8, 1)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(len(x) * (1 - validation_fraction))
    train, val = order[:split], order[split:]
    return x[train], y[train], x[val], y[val]


def train_digits_model(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int = 30, seed: int = 0) -> Any:
    """Train every exit jointly (equal loss weights) and return the model."""
    _quiet_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    outputs = len(model.outputs)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=["sparse_categorical_crossentropy"] * outputs)
    model.fit(x, [y] * outputs, epochs=epochs, batch_size=64, verbose=0)
    return model
