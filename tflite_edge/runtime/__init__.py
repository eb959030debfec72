"""Running bundle segments with a TFLite interpreter (no TensorFlow needed)."""

from .backends import BACKEND_ORDER, SegmentInterpreter, available_backends, resolve_backend
from .chain import BundleRunner, dequantize, quantize, softmax_confidence

__all__ = [
    "BACKEND_ORDER",
    "BundleRunner",
    "SegmentInterpreter",
    "available_backends",
    "dequantize",
    "quantize",
    "resolve_backend",
    "softmax_confidence",
]
