"""Segment bundles: the manifest and the directory that holds it."""

from .manifest import (
    QUANTIZATION_MODES,
    SCHEMA_VERSION,
    CutSpec,
    ExitSpec,
    FusedSpec,
    Manifest,
    MeasuredOn,
    SegmentSpec,
    SegmentVariant,
    TensorSpec,
    Verification,
)
from .store import MANIFEST_NAME, Bundle, check_chain, load_bundle, write_bundle

__all__ = [
    "MANIFEST_NAME",
    "QUANTIZATION_MODES",
    "SCHEMA_VERSION",
    "Bundle",
    "CutSpec",
    "ExitSpec",
    "FusedSpec",
    "Manifest",
    "MeasuredOn",
    "SegmentSpec",
    "SegmentVariant",
    "TensorSpec",
    "Verification",
    "check_chain",
    "load_bundle",
    "write_bundle",
]
