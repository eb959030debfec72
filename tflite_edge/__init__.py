"""tflite-edge: device-edge co-inference of early-exit neural networks over MQTT.

Importing this package never imports TensorFlow; the converter (``tflite_edge.converters``)
and the learning code (``tflite_edge.agents``) import it when they are used.
"""

from .bundle import Bundle, Manifest, load_bundle
from .errors import TfliteEdgeError
from .runtime import BundleRunner

__version__ = "0.1.0"

__all__ = ["Bundle", "BundleRunner", "Manifest", "TfliteEdgeError", "__version__", "load_bundle"]
