"""Keras multi-exit model -> segment bundle (needs TensorFlow: ``pip install tflite-edge[convert]``)."""

from .convert import ConversionResult, convert, convert_model, load_array, load_keras_model, load_labeled
from .graph import LayerGraph, auto_cuts, graph_from_keras
from .verify import assert_bundle_matches, compare_chain_to_model, exit_accuracies, keras_exit_accuracies

__all__ = [
    "ConversionResult",
    "LayerGraph",
    "assert_bundle_matches",
    "auto_cuts",
    "compare_chain_to_model",
    "convert",
    "convert_model",
    "exit_accuracies",
    "graph_from_keras",
    "keras_exit_accuracies",
    "load_array",
    "load_keras_model",
    "load_labeled",
]
