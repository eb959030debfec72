"""Policies that choose the exit and the partition per request.

Everything importable from here is numpy only: bandwidth traces (:mod:`.traces`), compute,
power and radio profiles (:mod:`.profiles`, :mod:`.radio`), objectives, the trace-driven
simulator, a Gymnasium-style environment, the baselines and the oracle, and the comparison
table. TF-Agents code lives in :mod:`.tf_env` and is imported only on request.
"""

from __future__ import annotations

from .baselines import BASELINES, Policy, make_policy
from .env import CoInferenceEnv
from .evaluate import PolicyResult, compare, format_table
from .objectives import OBJECTIVES, Objective, get_objective
from .profiles import PLATFORMS, LatencyProfile, Platform, get_platform, load_profile
from .radio import RADIO_MODELS, RadioPowerModel, get_radio
from .simulator import OBSERVATION_FEATURES, Action, Episode, ExitSamples, Outcomes, Scenario, Simulator
from .traces import Trace, load_trace, load_traces, markov_trace, split_traces, step_trace

__all__ = [
    "BASELINES",
    "OBJECTIVES",
    "OBSERVATION_FEATURES",
    "PLATFORMS",
    "RADIO_MODELS",
    "Action",
    "CoInferenceEnv",
    "Episode",
    "ExitSamples",
    "LatencyProfile",
    "Objective",
    "Outcomes",
    "Platform",
    "Policy",
    "PolicyResult",
    "RadioPowerModel",
    "Scenario",
    "Simulator",
    "Trace",
    "compare",
    "format_table",
    "get_objective",
    "get_platform",
    "get_radio",
    "load_profile",
    "load_trace",
    "load_traces",
    "make_policy",
    "markov_trace",
    "split_traces",
    "step_trace",
]
