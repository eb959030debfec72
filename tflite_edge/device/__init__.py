"""The device side of co-inference: plans, the early-exit rule, the runtime and its results.

Light on purpose: numpy, paho-mqtt and a TFLite interpreter; never TensorFlow.
"""

from .plan import ExitRule, Plan, ResolvedPlan, entropy_nats, resolve_plan
from .result import InferenceResult
from .runtime import DeviceRuntime, ResultHook

__all__ = [
    "DeviceRuntime",
    "ExitRule",
    "InferenceResult",
    "Plan",
    "ResolvedPlan",
    "ResultHook",
    "entropy_nats",
    "resolve_plan",
]
