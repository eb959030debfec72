"""Running a trained policy on a device: the TFLite file through the segment interpreters.

No TensorFlow and no TF-Agents: the policy is a TFLite model with a ``serving_default``
signature (``observation`` float32[1, features] -> ``action`` int32[1]) run by the same
backends as the bundle's segments (LiteRT, tflite-runtime or TensorFlow Lite), plus
``policy.json``, which maps action indices to (exit, partition, threshold) and holds what
the features need: the reference latency, the objective and the planning model. Features
are the context (:func:`tflite_edge.agents.simulator.observation_from_context`) followed
by every action's reward as the planning model predicts it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PolicyError
from ..runtime.backends import SegmentInterpreter
from .baselines import Policy
from .objectives import Objective
from .planning import PlanningModel
from .simulator import OBSERVATION_FEATURES, Action, Episode, Simulator, observation_from_context

__all__ = ["MAX_POLICY_BYTES", "TFLitePolicy"]

# A policy is a few kilobytes; refuse anything implausible before reading it into memory
# (policies may arrive over the network).
MAX_POLICY_BYTES = 4 * 1024 * 1024
_FORMAT = 1


class TFLitePolicy(Policy):
    """A trained exit/offload policy loaded from a policy directory (policy.tflite + policy.json)."""

    name = "learned"

    def __init__(self, policy_dir: str | os.PathLike[str], *, backend: str | None = None) -> None:
        root = Path(policy_dir)
        model_path, meta_path = root / "policy.tflite", root / "policy.json"
        try:
            size = model_path.stat().st_size
            if size > MAX_POLICY_BYTES:
                raise PolicyError(f"{model_path}: {size} bytes is too large for a policy (limit {MAX_POLICY_BYTES})")
            model = model_path.read_bytes()
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise PolicyError(f"{root} is not a policy directory (needs policy.tflite and policy.json): "
                              "train one with `tflite-edge policy train`") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PolicyError(f"cannot read the policy in {root}: {e}") from e
        self.metadata = self._check(metadata, root)
        self.actions = tuple(
            Action(int(a["exit"]), int(a["partition"]), None if a["threshold"] is None else float(a["threshold"]))
            for a in self.metadata["actions"]
        )
        self.labels = tuple(str(a["label"]) for a in self.metadata["actions"])
        self.reference_ms = float(self.metadata["reference_ms"])
        self.bundle_id = str(self.metadata["bundle_id"])
        self.planning_model = PlanningModel.from_dict(self.metadata["planning_model"])
        if self.planning_model.num_actions != len(self.actions):
            raise PolicyError(f"{root}/policy.json: the planning model and the action list disagree")
        objective = self.metadata["objective"]
        self.objective = Objective(str(objective["name"]), float(objective["accuracy_floor"]),
                                   float(objective["miss_penalty"]))
        self.num_features = len(OBSERVATION_FEATURES) + len(self.actions)
        self._feed = np.zeros((1, self.num_features), dtype=np.float32)
        self._interpreter = SegmentInterpreter(model, backend=backend, label=f"policy {root}")
        if self._interpreter.input_names != ["observation"] or self._interpreter.output_names != ["action"]:
            raise PolicyError(f"{model_path} must map `observation` to `action`, it has inputs "
                              f"{self._interpreter.input_names} and outputs {self._interpreter.output_names}")

    @staticmethod
    def _check(metadata: Any, root: Path) -> dict[str, Any]:
        if not isinstance(metadata, dict) or metadata.get("format") != _FORMAT:
            raise PolicyError(f"{root}/policy.json: not a policy description of format {_FORMAT}")
        for key in ("bundle_id", "features", "reference_ms", "actions", "planning_model", "objective"):
            if key not in metadata:
                raise PolicyError(f"{root}/policy.json: missing {key!r}")
        features = list(metadata["features"])
        if features[: len(OBSERVATION_FEATURES)] != list(OBSERVATION_FEATURES):
            raise PolicyError(f"{root}/policy.json: the policy was trained on features {features[:8]}, "
                              f"this tflite-edge computes {list(OBSERVATION_FEATURES)}; train it again")
        actions = metadata["actions"]
        if not isinstance(actions, list) or not actions or not all(
            isinstance(a, dict) and {"exit", "partition", "threshold", "label"} <= a.keys() for a in actions
        ):
            raise PolicyError(f"{root}/policy.json: `actions` must list exit, partition, threshold and label")
        return metadata

    @property
    def backend_name(self) -> str:
        return self._interpreter.backend.name

    def features(
        self,
        *,
        throughput_mbps: np.ndarray | float,
        throughput_std_mbps: np.ndarray | float,
        rtt_ms: np.ndarray | float,
        deadline_ms: np.ndarray | float,
        power_budget_mw: np.ndarray | float,
        device_speed: np.ndarray | float,
        edge_load: np.ndarray | float,
    ) -> np.ndarray:
        """The policy's inputs for measured contexts (scalars: one row; arrays: one row each)."""
        context = observation_from_context(
            throughput_mbps=throughput_mbps, throughput_std_mbps=throughput_std_mbps, rtt_ms=rtt_ms,
            deadline_ms=deadline_ms, power_budget_mw=power_budget_mw, device_speed=device_speed,
            edge_load=edge_load, reference_ms=self.reference_ms,
        )
        predicted = self.planning_model.predicted_rewards(
            self.objective, throughput_mbps=throughput_mbps, rtt_ms=rtt_ms, device_speed=device_speed,
            edge_load=edge_load, deadline_ms=deadline_ms, power_budget_mw=power_budget_mw,
        )
        return np.concatenate([context, predicted.astype(np.float32)], axis=1)

    def decide_index(self, features: np.ndarray) -> int:
        """The action index for one feature vector (float32[num_features], from ``features``)."""
        feed = np.asarray(features, dtype=np.float32).reshape(1, self.num_features)
        index = int(self._interpreter.run({"observation": feed})["action"].reshape(-1)[0])
        if not 0 <= index < len(self.actions):
            raise PolicyError(f"the policy returned action {index}, outside its {len(self.actions)} actions")
        return index

    def act(
        self,
        *,
        throughput_mbps: float,
        throughput_std_mbps: float,
        rtt_ms: float,
        deadline_ms: float,
        power_budget_mw: float,
        device_speed: float,
        edge_load: float,
    ) -> Action:
        """The action for one measured context; the same features as ``features``, on a fast scalar path."""
        throughput = max(float(throughput_mbps), 1e-6)
        context = (
            math.log2(throughput), throughput_std_mbps / throughput, rtt_ms / 100.0,
            math.log2(deadline_ms / self.reference_ms), power_budget_mw / 1000.0, device_speed, edge_load, 1.0,
        )
        self._feed[0, : len(context)] = context
        self._feed[0, len(context):] = self.planning_model.predicted_rewards_one(
            self.objective, throughput_mbps=throughput, rtt_ms=rtt_ms, device_speed=device_speed,
            edge_load=edge_load, deadline_ms=deadline_ms, power_budget_mw=power_budget_mw,
        )
        return self.actions[self.decide_index(self._feed)]

    def decide(self, simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
        if list(self.labels) != simulator.action_labels():
            raise PolicyError("the policy was trained for other actions than this simulator offers "
                              f"({len(self.labels)} vs {len(simulator.actions)}); simulate with the training options")
        # Features computed the way a device does (from policy.json), not by the simulator.
        features = self.features(
            throughput_mbps=episode.est_mbps, throughput_std_mbps=episode.std_mbps, rtt_ms=episode.rtt_est_ms,
            deadline_ms=episode.deadline_ms, power_budget_mw=episode.power_budget_mw,
            device_speed=episode.device_speed, edge_load=episode.edge_load,
        )
        return np.array([self.decide_index(x) for x in features], dtype=np.int64)
