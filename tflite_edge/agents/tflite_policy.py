"""Running a trained policy on a device: the TFLite file through the segment interpreters.

No TensorFlow and no TF-Agents: the policy is a TFLite model with a ``serving_default``
signature (``observation`` float32[1, features] -> ``action`` int32[1]) run by the same
backends as the bundle's segments (LiteRT, tflite-runtime or TensorFlow Lite), plus
``policy.json``, which maps action indices to (exit, partition, threshold) and records
how features are computed. The device computes features from its measured context with
:func:`tflite_edge.agents.simulator.observation_from_context`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PolicyError
from ..runtime.backends import SegmentInterpreter
from .baselines import Policy
from .objectives import Objective
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
        self._interpreter = SegmentInterpreter(model, backend=backend, label=f"policy {root}")
        if self._interpreter.input_names != ["observation"] or self._interpreter.output_names != ["action"]:
            raise PolicyError(f"{model_path} must map `observation` to `action`, it has inputs "
                              f"{self._interpreter.input_names} and outputs {self._interpreter.output_names}")

    @staticmethod
    def _check(metadata: Any, root: Path) -> dict[str, Any]:
        if not isinstance(metadata, dict) or metadata.get("format") != _FORMAT:
            raise PolicyError(f"{root}/policy.json: not a policy description of format {_FORMAT}")
        for key in ("bundle_id", "features", "reference_ms", "actions"):
            if key not in metadata:
                raise PolicyError(f"{root}/policy.json: missing {key!r}")
        if list(metadata["features"]) != list(OBSERVATION_FEATURES):
            raise PolicyError(f"{root}/policy.json: the policy was trained on features {metadata['features']}, "
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

    def decide_index(self, observation: np.ndarray) -> int:
        """The action index for one observation vector (float32[features])."""
        feed = np.asarray(observation, dtype=np.float32).reshape(1, len(OBSERVATION_FEATURES))
        index = int(self._interpreter.run({"observation": feed})["action"].reshape(-1)[0])
        if not 0 <= index < len(self.actions):
            raise PolicyError(f"the policy returned action {index}, outside its {len(self.actions)} actions")
        return index

    def act(self, **context: float) -> Action:
        """The action for a measured context (keyword arguments of ``observation_from_context``)."""
        return self.actions[self.decide_index(observation_from_context(reference_ms=self.reference_ms, **context)[0])]

    def decide(self, simulator: Simulator, episode: Episode, objective: Objective) -> np.ndarray:
        if list(self.labels) != simulator.action_labels():
            raise PolicyError("the policy was trained for other actions than this simulator offers "
                              f"({len(self.labels)} vs {len(simulator.actions)}); simulate with the training options")
        return np.array([self.decide_index(x) for x in episode.observations()], dtype=np.int64)
