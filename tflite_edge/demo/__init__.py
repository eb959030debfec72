"""The end-to-end demo behind `make demo` and `tflite-edge demo`.

One command, no prompts: a multi-exit model trained on real data, converted into an int8
segment bundle, a TF-Agents policy trained for an emulated device, a broker, an edge worker
and the device running the shipped policy loop over MQTT on a link that follows a real
bandwidth trace while the world changes, the same requests with planners and every static
action, live telemetry, then a report with plots.
"""

from .run import DemoOptions, DemoResult, run_demo

__all__ = ["DemoOptions", "DemoResult", "run_demo"]
