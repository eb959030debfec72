"""The end-to-end demo behind `make demo` and `tflite-edge demo`.

One command, no prompts: a multi-exit model trained on real data, converted into an int8
segment bundle, a broker, an edge worker and a device talking over MQTT on a link that
follows a real bandwidth trace, a policy choosing exits and partitions, live telemetry,
then a report with plots.
"""

from .run import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
