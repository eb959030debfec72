"""Edge TPU segments: a pre-check of what would keep a segment off the Edge TPU, and
compilation of a bundle's segments with Coral's ``edgetpu_compiler`` into recorded variants."""

from .compiler import compile_bundle, compiler_version, parse_compile_log
from .precheck import EDGETPU_OPS, SegmentCheck, check_bundle, check_model

__all__ = [
    "EDGETPU_OPS",
    "SegmentCheck",
    "check_bundle",
    "check_model",
    "compile_bundle",
    "compiler_version",
    "parse_compile_log",
]
