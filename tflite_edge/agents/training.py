"""Training an exit/offload policy with TF-Agents, and exporting it to a tiny TFLite model.

The problem is a contextual bandit: requests arrive on an open loop, so an action changes
the reward of its own request only. The policy's inputs are the context features and the
predicted reward of every action from the planning model (:mod:`.planning`), so it can
learn when the prediction from the throughput estimate is not to be trusted. The agent is
TF-Agents' ``NeuralEpsilonGreedyAgent`` (a reward network over all actions,
epsilon-greedy exploration) or ``LinearUCBAgent``.
Training draws batches of requests from simulated episodes of the training traces; the
agent's collect policy picks the actions and learns only from the rewards of those
actions (bandit feedback), as it would on a device.

The trained greedy policy is saved with ``PolicySaver`` and converted to TFLite with one
signature, ``serving_default``: ``observation`` float32[1, features] -> ``action``
int32[1], where features = the context features + one predicted reward per action. A policy directory holds::

    policy.tflite      the policy for devices (run by tflite_edge.agents.tflite_policy)
    policy.json        actions, features, reference latency, objective, training record
    saved_policy/      the PolicySaver SavedModel
    checkpoints/       TF-Agents checkpoints (training resumes from the latest) and
                       fingerprint.json: what they were trained on (bundle, objective,
                       agent, a digest of the simulated training data); a run with other
                       options refuses to resume from them unless told to restart

TF-Agents needs ``TF_USE_LEGACY_KERAS=1`` before TensorFlow resolves ``tf.keras``; it is
set here, on the TF-Agents import path only, never for user code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._native import native_stderr_logged
from ..errors import PolicyError
from .evaluate import episodes_for
from .objectives import Objective
from .planning import policy_feature_names, policy_observations
from .simulator import Simulator
from .traces import Trace

__all__ = [
    "AGENTS",
    "make_agent",
    "POLICY_FORMAT",
    "TrainConfig",
    "TrainResult",
    "export_tflite",
    "import_tf_agents",
    "training_fingerprint",
    "policy_metadata",
    "train_policy",
]

log = logging.getLogger(__name__)

AGENTS = ("neural-epsilon-greedy", "linucb")
# AutoGraph compiles TF-Agents' code into temporary files whose `is ()` comparisons make
# Python warn at every trace; the user can do nothing about them.
AUTOGRAPH_NOISE = r'"is( not)?" with a literal'

POLICY_FORMAT = 1


def import_tf_agents() -> Any:
    """Import TensorFlow with TF-Agents' Keras setting; a clear error if that is impossible."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        # absl, CUDA probing and Gym's deprecation notice: the log (-v), not the terminal.
        with native_stderr_logged(log, "TensorFlow and TF-Agents start-up"), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import tensorflow as tf
            import tf_agents  # noqa: F401
            from tf_agents.bandits.agents import lin_ucb_agent, neural_epsilon_greedy_agent  # noqa: F401
            from tf_agents.policies import policy_saver  # noqa: F401

            tf.config.list_physical_devices()  # device probing logs land in the capture too
    except ImportError as e:
        raise PolicyError(
            f"training needs TensorFlow and TF-Agents ({e.name} is missing): pip install 'tflite-edge[agents]'"
        ) from e
    except AttributeError as e:
        raise PolicyError(
            "TF-Agents cannot load because tf.keras already resolved to Keras 3 in this process; set "
            "TF_USE_LEGACY_KERAS=1 in the environment (or train in a fresh process, e.g. `tflite-edge policy train`)"
        ) from e
    return tf


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all recorded in policy.json)."""

    agent: str = "neural-epsilon-greedy"
    steps: int = 8000
    batch_size: int = 256
    learning_rate: float = 1e-3
    epsilon: float = 0.1
    hidden_units: tuple[int, ...] = (64, 64)
    ucb_alpha: float = 1.0
    episodes_per_trace: int = 4
    checkpoint_every: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.agent not in AGENTS:
            raise PolicyError(f"unknown agent {self.agent!r}; choose one of {', '.join(AGENTS)}")
        if self.steps < 1 or self.batch_size < 1 or self.episodes_per_trace < 1:
            raise PolicyError("steps, batch_size and episodes_per_trace must be positive")


@dataclass(frozen=True)
class TrainResult:
    policy_dir: Path
    steps: int
    final_loss: float
    seconds: float
    tflite_bytes: int
    metadata: dict[str, Any] = field(repr=False)
    resumed_from: int = 0  # steps already in the checkpoints when this run started


# TrainConfig fields that may change between runs over the same checkpoints.
_RESUMABLE_CONFIG = ("steps", "checkpoint_every")


def training_fingerprint(simulator: Simulator, objective: Objective, config: TrainConfig,
                         observations: np.ndarray, rewards: np.ndarray) -> dict[str, Any]:
    """What checkpoints were trained on: resuming is only right when all of it is unchanged.

    The scenario, traces, platforms and seed enter through a digest of the simulated
    training data itself, so any option that changes what the agent sees changes it.
    """
    digest = hashlib.sha256()
    for array in (observations, rewards):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return {
        "bundle_id": simulator.manifest.bundle_id,
        "objective": asdict(objective),
        "agent": {k: v for k, v in asdict(config).items() if k not in _RESUMABLE_CONFIG},
        "actions": [a.label(simulator.manifest) for a in simulator.actions],
        "training_data_sha256": digest.hexdigest(),
    }


def _fingerprint_json(fingerprint: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(fingerprint))  # tuples become lists, as they are on disk


def _prepare_checkpoints(directory: Path, fingerprint: dict[str, Any], restart: bool) -> None:
    """Keep ``directory``'s checkpoints only when they match ``fingerprint``; record it."""
    marker = directory / "fingerprint.json"
    has_checkpoints = directory.is_dir() and any(p.name != marker.name for p in directory.iterdir())
    if has_checkpoints and restart:
        shutil.rmtree(directory)
    elif has_checkpoints:
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded != _fingerprint_json(fingerprint):
            raise PolicyError(
                f"{directory} holds checkpoints {_difference(recorded, fingerprint)}; resuming would mix them "
                "with this run: pass --restart to train from scratch, or choose another output directory"
            )
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(fingerprint, indent=2) + "\n")


def _difference(recorded: dict[str, Any] | None, fingerprint: dict[str, Any]) -> str:
    if not isinstance(recorded, dict):
        return "without a record of what they were trained on"
    current = _fingerprint_json(fingerprint)
    names = {"bundle_id": "bundle", "objective": "objective", "agent": "agent settings",
             "actions": "actions", "training_data_sha256": "scenario (traces, platforms, deadlines or seed)"}
    changed = [label for key, label in names.items() if recorded.get(key) != current.get(key)]
    return "trained with another " + ", ".join(changed or ["configuration"])


def policy_metadata(simulator: Simulator, objective: Objective, config: TrainConfig, **extra: Any) -> dict[str, Any]:
    """What a device needs besides the TFLite file: the action table and the feature recipe."""
    return {
        "format": POLICY_FORMAT,
        "bundle_id": simulator.manifest.bundle_id,
        "features": policy_feature_names(simulator),
        "reference_ms": simulator.reference_ms,
        "planning_model": simulator.planning_model.to_dict(),
        "actions": [
            {"exit": a.exit, "exit_name": simulator.manifest.exits[a.exit].name, "partition": a.partition,
             "threshold": a.threshold, "label": a.label(simulator.manifest)}
            for a in simulator.actions
        ],
        "objective": asdict(objective),
        "config": asdict(config),
        **extra,
    }


def _training_data(simulator: Simulator, traces: Sequence[Trace], objective: Objective,
                   config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    observations, rewards = [], []
    for repeat in range(config.episodes_per_trace):
        for episode in episodes_for(simulator, traces, seed=config.seed * 7919 + repeat):
            observations.append(policy_observations(simulator, episode, objective))
            rewards.append(simulator.rewards(episode, simulator.outcomes(episode), objective).astype(np.float32))
    return np.concatenate(observations), np.concatenate(rewards)


def make_agent(tf: Any, config: TrainConfig, features: int, actions: int) -> Any:
    """The TF-Agents bandit agent ``config`` names, for ``features`` context features and ``actions`` arms."""
    from tf_agents.bandits.agents import lin_ucb_agent, neural_epsilon_greedy_agent
    from tf_agents.networks import q_network
    from tf_agents.specs import tensor_spec
    from tf_agents.trajectories import time_step as ts

    observation_spec = tensor_spec.TensorSpec([features], tf.float32, name="observation")
    time_step_spec = ts.time_step_spec(observation_spec)
    action_spec = tensor_spec.BoundedTensorSpec([], tf.int32, 0, actions - 1, name="action")
    if config.agent == "linucb":
        return lin_ucb_agent.LinearUCBAgent(
            time_step_spec, action_spec, alpha=config.ucb_alpha, enable_summaries=False, dtype=tf.float32
        )
    network = q_network.QNetwork(observation_spec, action_spec, fc_layer_params=config.hidden_units)
    return neural_epsilon_greedy_agent.NeuralEpsilonGreedyAgent(
        time_step_spec, action_spec, reward_network=network,
        optimizer=tf.keras.optimizers.Adam(learning_rate=config.learning_rate),
        epsilon=config.epsilon, enable_summaries=False,
    )


def train_policy(
    simulator: Simulator,
    traces: Sequence[Trace],
    objective: Objective,
    output_dir: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    progress: Callable[[int, float], None] | None = None,
    progress_every: int = 250,
    record: dict[str, Any] | None = None,
    restart: bool = False,
    on_resume: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train on ``traces``, checkpoint into ``output_dir`` and export ``policy.tflite`` + ``policy.json``.

    Training resumes from ``output_dir/checkpoints`` only when they were made with the same
    bundle, objective, agent settings and training data (see `training_fingerprint`);
    otherwise ``PolicyError``, or, with ``restart``, the old checkpoints are discarded.
    ``on_resume(step)`` is called when training continues from a checkpoint.
    ``progress(step, loss)`` is called every ``progress_every`` steps; ``record`` is stored
    in policy.json as is (the CLI keeps its simulation options there).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=AUTOGRAPH_NOISE, category=SyntaxWarning)
        return _train_policy(simulator, traces, objective, Path(output_dir), config or TrainConfig(),
                             progress=progress, progress_every=progress_every, record=record, restart=restart,
                             on_resume=on_resume)


def _train_policy(
    simulator: Simulator, traces: Sequence[Trace], objective: Objective, out: Path, config: TrainConfig, *,
    progress: Callable[[int, float], None] | None, progress_every: int, record: dict[str, Any] | None,
    restart: bool, on_resume: Callable[[int], None] | None,
) -> TrainResult:
    if not traces:
        raise PolicyError("training needs at least one trace")
    tf = import_tf_agents()
    from tf_agents.trajectories import time_step as ts
    from tf_agents.trajectories import trajectory
    from tf_agents.utils import common

    out.mkdir(parents=True, exist_ok=True)
    tf.random.set_seed(config.seed)
    tf.config.experimental.enable_op_determinism()  # the same seed gives the same policy
    rng = np.random.default_rng(config.seed)
    observations, rewards = _training_data(simulator, traces, objective, config)
    features, actions = observations.shape[1], rewards.shape[1]
    _prepare_checkpoints(out / "checkpoints", training_fingerprint(simulator, objective, config, observations, rewards),
                         restart)

    agent = make_agent(tf, config, features, actions)
    agent.initialize()
    # Our own step count: LinearUCBAgent advances its train_step_counter by the batch size.
    step_counter = tf.Variable(0, dtype=tf.int64, name="steps_done")
    checkpointer = common.Checkpointer(ckpt_dir=str(out / "checkpoints"), max_to_keep=2, agent=agent,
                                       global_step=step_counter)
    checkpointer.initialize_or_restore()
    batch = config.batch_size
    collect = agent.collect_policy
    info = agent.collect_data_spec.policy_info
    mid = tf.fill([batch, 1], ts.StepType.MID)

    @tf.function
    def choose(obs: Any) -> Any:
        step = ts.TimeStep(tf.fill([batch], ts.StepType.MID), tf.zeros([batch]), tf.ones([batch]), obs)
        return collect.action(step).action

    @tf.function
    def learn(obs: Any, action: Any, reward: Any) -> Any:
        experience = trajectory.Trajectory(
            step_type=mid, observation=obs[:, None, :], action=action[:, None], policy_info=info,
            next_step_type=mid, reward=reward[:, None], discount=tf.zeros([batch, 1]),
        )
        return agent.train(experience).loss

    started = time.perf_counter()
    loss = float("nan")
    first = int(step_counter.numpy())
    if first and on_resume is not None:
        on_resume(first)
    for step in range(first, config.steps):
        rows = rng.integers(len(observations), size=batch)
        obs = tf.constant(observations[rows])
        chosen = choose(obs).numpy()
        reward = tf.constant(rewards[rows, chosen])
        loss = float(learn(obs, tf.constant(chosen, tf.int32), reward))
        step_counter.assign_add(1)
        done = step + 1
        if progress is not None and (done % progress_every == 0 or done == config.steps):
            progress(done, loss)
        if done % config.checkpoint_every == 0:
            checkpointer.save(global_step=step_counter)
    checkpointer.save(global_step=step_counter)
    seconds = time.perf_counter() - started

    # Devices exploit: export the greedy policy (an epsilon-greedy policy wraps it).
    greedy = getattr(agent.policy, "wrapped_policy", agent.policy)
    tflite = export_tflite(tf, greedy, features, out)
    metadata = policy_metadata(
        simulator, objective, config,
        agent=config.agent, trained_steps=int(step_counter.numpy()), final_loss=loss,
        training_traces=[t.name for t in traces], training_requests=int(len(observations)),
        training_seconds=round(seconds, 3), record=record or {},
    )
    (out / "policy.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return TrainResult(out, int(step_counter.numpy()), loss, seconds, len(tflite), metadata, resumed_from=first)


def _demote_signature_renames(record: logging.LogRecord) -> bool:
    """PolicySaver's names such as `0/step_type` are renamed for tf.function (absl warns on
    each): information only, shown with -v."""
    if "is not a valid tf.function parameter name" not in record.getMessage():
        return True
    record.levelno, record.levelname = logging.INFO, "INFO"
    return logging.getLogger().isEnabledFor(logging.INFO)


def export_tflite(tf: Any, policy: Any, features: int, out: Path) -> bytes:
    """Save ``policy`` with PolicySaver, then convert its greedy action to ``policy.tflite``."""
    absl = logging.getLogger("absl")
    absl.addFilter(_demote_signature_renames)
    try:
        with warnings.catch_warnings():
            # TF-Agents' distribution specs are not registered types; the SavedModel is only a step
            # on the way to the TFLite file, so TensorFlow's note about reloading it elsewhere is noise.
            warnings.filterwarnings("ignore", message="Encoding a StructuredValue")
            warnings.filterwarnings("ignore", message=AUTOGRAPH_NOISE, category=SyntaxWarning)
            return _export_tflite(tf, policy, features, out)
    finally:
        absl.removeFilter(_demote_signature_renames)


def _export_tflite(tf: Any, policy: Any, features: int, out: Path) -> bytes:
    from tf_agents.policies import policy_saver
    from tf_agents.trajectories import time_step as ts

    saved_dir = out / "saved_policy"
    policy_saver.PolicySaver(policy, batch_size=None).save(str(saved_dir))
    loaded = tf.saved_model.load(str(saved_dir))

    # One fixed-shape signature with named input and output, so devices run it through
    # the same interpreter wrapper as the segments (serving_default, names not order).
    @tf.function(input_signature=[tf.TensorSpec([1, features], tf.float32, name="observation")])
    def serve(observation: Any) -> dict[str, Any]:
        step = ts.TimeStep(tf.fill([1], ts.StepType.MID), tf.zeros([1]), tf.ones([1]), observation)
        return {"action": tf.cast(loaded.action(step).action, tf.int32)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], loaded)
    try:
        flatbuffer = converter.convert()
    except Exception as e:  # the converter raises ConverterError and plain exceptions alike
        raise PolicyError(f"the trained policy does not convert to TFLite: {e}") from e
    (out / "policy.tflite").write_bytes(flatbuffer)
    return bytes(flatbuffer)
