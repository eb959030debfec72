"""Online policy updates on the edge: devices' experience in, a signed retained policy out.

``OnlineAgent`` subscribes to ``{prefix}/dev/+/experience``, keeps the last ``capacity``
(context, action, reward) records in an ``ExperienceReplay``, and every ``update_every_s``
seconds with at least ``min_new_records`` new records it continues training the policy:
TF-Agents' bandit agent is restored from the policy directory's checkpoints (the weights
`tflite-edge policy train` ended with, or the latest online update) and takes ``steps``
gradient steps on batches drawn from the replay, with the actions the devices took and the
rewards they measured (bandit feedback, as in training). The greedy policy is exported to
TFLite, signed with Ed25519 and published, retained, on ``{prefix}/policy/{bundle_id}``
with the next version number (see :mod:`.policy_message`).

Files under ``work_dir`` (default ``POLICY_DIR/online``)::

    state.json        {"version": N}: the last published version (restarts continue from it)
    checkpoints/      the agent's weights after the latest update
    v{N}/             the exported policy of version N (policy.tflite, policy.json, policy.sig)

TensorFlow and TF-Agents are imported when the trainer is made, never by a device.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import PolicyError
from ..transport.protocol import DEFAULT_PREFIX
from .policy_message import PolicyPackage, policy_topic, sign_policy_message
from .tflite_policy import TFLitePolicy

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..telemetry.schema import ExperienceRecord
    from ..telemetry.subscriber import Received, TelemetrySubscriber
    from ..transport.mqtt import MqttClient

__all__ = ["CONTEXT_KEYS", "AgentConfig", "ExperienceReplay", "OnlineAgent", "OnlineTrainer", "UpdateSchedule"]

log = logging.getLogger(__name__)

#: The context keys a device's experience record must carry (``device.policy_loop.LiveContext``).
CONTEXT_KEYS = ("throughput_mbps", "throughput_std_mbps", "rtt_ms", "deadline_ms", "power_budget_mw",
                "device_speed", "edge_load")
MAX_ABS_REWARD = 1e3  # rewards of every objective are O(1); anything far beyond is not a measurement
KEEP_VERSIONS = 2


class ExperienceReplay:
    """The last ``capacity`` usable (context, action index, reward) records.

    Actions are matched by label to ``labels`` (the policy's action table); records without
    the context keys, with unknown actions or non-finite numbers are counted in
    ``skipped`` and dropped.
    """

    def __init__(self, labels: Sequence[str], capacity: int = 50_000) -> None:
        if capacity < 1:
            raise PolicyError("the replay capacity must be at least 1")
        self._index = {label: i for i, label in enumerate(labels)}
        self._rows: deque[tuple[tuple[float, ...], int, float]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self.added = 0
        self.skipped = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def add(self, record: ExperienceRecord) -> bool:
        """Keep one record if it is usable; True when kept."""
        context = [record.context.get(k) for k in CONTEXT_KEYS]
        label = record.action.get("label")
        index = self._index.get(label) if isinstance(label, str) else None
        reward = record.reward
        if (index is None or any(v is None or not math.isfinite(v) for v in context)
                or not math.isfinite(reward) or abs(reward) > MAX_ABS_REWARD):
            with self._lock:
                self.skipped += 1
            return False
        with self._lock:
            self._rows.append((tuple(float(v) for v in context), index, float(reward)))  # type: ignore[arg-type]
            self.added += 1
        return True

    def arrays(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """(context columns by key, action indices, rewards) of every record held."""
        with self._lock:
            rows = list(self._rows)
        if not rows:
            raise PolicyError("the replay is empty")
        contexts = np.array([r[0] for r in rows], dtype=np.float64)
        return ({k: contexts[:, i] for i, k in enumerate(CONTEXT_KEYS)},
                np.array([r[1] for r in rows], dtype=np.int32), np.array([r[2] for r in rows], dtype=np.float32))


class OnlineTrainer:
    """TF-Agents' bandit agent of a trained policy directory, trained further on replayed experience."""

    def __init__(self, policy_dir: str | os.PathLike[str], work_dir: str | os.PathLike[str] | None = None, *,
                 batch_size: int = 64, seed: int = 0) -> None:
        from .training import TrainConfig, import_tf_agents, make_agent

        self.policy_dir = Path(policy_dir)
        self.work_dir = Path(work_dir) if work_dir is not None else self.policy_dir / "online"
        self.features_policy = TFLitePolicy(self.policy_dir)  # computes features the way devices do
        self.metadata: dict[str, Any] = dict(self.features_policy.metadata)
        config_doc = dict(self.metadata.get("config", {}))
        if "hidden_units" in config_doc:
            config_doc["hidden_units"] = tuple(config_doc["hidden_units"])
        try:
            self.config = TrainConfig(**config_doc)
        except TypeError as e:
            raise PolicyError(f"{self.policy_dir}/policy.json has no usable training config: {e}") from e
        self.batch_size = batch_size
        self.num_features = self.features_policy.num_features
        self.num_actions = len(self.features_policy.actions)
        self._rng = np.random.default_rng(seed)
        tf = self.tf = import_tf_agents()
        from tf_agents.trajectories import time_step as ts
        from tf_agents.trajectories import trajectory
        from tf_agents.utils import common

        tf.random.set_seed(seed)
        self.agent = make_agent(tf, self.config, self.num_features, self.num_actions)
        self.agent.initialize()
        self.steps_done = tf.Variable(0, dtype=tf.int64, name="steps_done")
        base = self.policy_dir / "checkpoints"
        online = self.work_dir / "checkpoints"
        if not (online.is_dir() and any(online.iterdir())) and not (base.is_dir() and any(base.iterdir())):
            raise PolicyError(f"{self.policy_dir} has no checkpoints/ to continue from; train it with "
                              "`tflite-edge policy train` (TF-Agents checkpoints are kept there)")
        restore_from = online if online.is_dir() and any(online.iterdir()) else base
        status = common.Checkpointer(ckpt_dir=str(restore_from), max_to_keep=2, agent=self.agent,
                                     global_step=self.steps_done).initialize_or_restore()
        status.assert_existing_objects_matched()
        # The optimizer's slots exist only after the first update, which restores them then
        # (deferred restoration); without an update TensorFlow would warn about them at exit.
        status.expect_partial()
        self._checkpointer = common.Checkpointer(ckpt_dir=str(online), max_to_keep=2, agent=self.agent,
                                                 global_step=self.steps_done)
        log.info("online trainer restored %s at step %d", restore_from, int(self.steps_done.numpy()))
        batch = batch_size
        mid = tf.fill([batch, 1], ts.StepType.MID)
        info = self.agent.collect_data_spec.policy_info
        agent = self.agent

        @tf.function
        def learn(obs: Any, action: Any, reward: Any) -> Any:
            experience = trajectory.Trajectory(
                step_type=mid, observation=obs[:, None, :], action=action[:, None], policy_info=info,
                next_step_type=mid, reward=reward[:, None], discount=tf.zeros([batch, 1]),
            )
            return agent.train(experience).loss

        self._learn = learn

    def update(self, replay: ExperienceReplay, steps: int) -> float:
        """``steps`` gradient steps on batches drawn from ``replay``; returns the last loss."""
        contexts, actions, rewards = replay.arrays()
        features = self.features_policy.features(**contexts).astype(np.float32)
        tf = self.tf
        from .training import AUTOGRAPH_NOISE

        loss = float("nan")
        with warnings.catch_warnings():  # the first call traces TF-Agents' code through AutoGraph
            warnings.filterwarnings("ignore", message=AUTOGRAPH_NOISE, category=SyntaxWarning)
            for _ in range(steps):
                rows = self._rng.integers(len(actions), size=self.batch_size)
                loss = float(self._learn(tf.constant(features[rows]), tf.constant(actions[rows]),
                                         tf.constant(rewards[rows])))
                self.steps_done.assign_add(1)
        self._checkpointer.save(global_step=self.steps_done)
        return loss

    def export(self, out_dir: Path, **online: Any) -> Path:
        """Export the greedy policy to ``out_dir`` (policy.tflite + policy.json with ``online`` facts)."""
        from .training import export_tflite

        out_dir.mkdir(parents=True, exist_ok=True)
        greedy = getattr(self.agent.policy, "wrapped_policy", self.agent.policy)
        export_tflite(self.tf, greedy, self.num_features, out_dir)
        metadata = {**self.metadata, "trained_steps": int(self.steps_done.numpy()), "online": online,
                    "config": {**self.metadata.get("config", {}), **{"hidden_units": list(self.config.hidden_units)}}}
        (out_dir / "policy.json").write_text(json.dumps(metadata, indent=2) + "\n")
        return out_dir


@dataclass(frozen=True)
class UpdateSchedule:
    """When and how the online agent learns: every ``update_every_s`` with at least
    ``min_new_records`` new records, ``steps`` gradient steps on batches of ``batch_size``
    from a replay of the last ``capacity`` records (``seed`` for the batches)."""

    update_every_s: float = 30.0
    min_new_records: int = 64
    steps: int = 100
    batch_size: int = 64
    capacity: int = 50_000
    seed: int = 0


@dataclass(frozen=True)
class AgentConfig:
    """Where the online agent publishes and keeps its state.

    ``bundle_id`` (when given) must be the policy's bundle; ``topic`` defaults to
    ``{prefix}/policy/{bundle_id}``; ``work_dir`` to ``POLICY_DIR/online``.
    """

    bundle_id: str | None = None
    prefix: str = DEFAULT_PREFIX
    topic: str | None = None
    work_dir: str | os.PathLike[str] | None = None
    connect_timeout_s: float = 10.0
    schedule: UpdateSchedule = field(default_factory=UpdateSchedule)


class OnlineAgent:
    """Collects experience over MQTT, updates the policy, and publishes signed versions.

    Call ``start()`` (connects, publishes the current policy as the next version), then
    ``run(...)`` or ``update_once()`` yourself; ``stop()`` disconnects. ``on_publish(version,
    path)`` is called after each publication.
    """

    def __init__(
        self,
        broker_url: str,
        policy_dir: str | os.PathLike[str],
        private_key: Ed25519PrivateKey,
        config: AgentConfig = AgentConfig(),
        *,
        on_publish: Callable[[int, Path], None] | None = None,
    ) -> None:
        self.config = config
        schedule = config.schedule
        self.policy_dir = Path(policy_dir)
        self.work_dir = Path(config.work_dir) if config.work_dir is not None else self.policy_dir / "online"
        base = TFLitePolicy(self.policy_dir)
        if config.bundle_id is not None and base.bundle_id != config.bundle_id:
            raise PolicyError(f"{self.policy_dir} was trained for bundle {base.bundle_id!r}, not {config.bundle_id!r}")
        self.bundle_id = base.bundle_id
        self.topic = config.topic or policy_topic(config.prefix, self.bundle_id)
        self.prefix = config.prefix
        self.private_key = private_key
        self.update_every_s = schedule.update_every_s
        self.min_new_records = schedule.min_new_records
        self.steps = schedule.steps
        self.batch_size = schedule.batch_size
        self.seed = schedule.seed
        self.connect_timeout_s = config.connect_timeout_s
        self.on_publish = on_publish
        self.replay = ExperienceReplay(base.labels, schedule.capacity)
        self.version = self._read_state()
        self.updates = 0
        self.policy_rejections_reported = 0
        self._broker_url = broker_url
        self._trainer: OnlineTrainer | None = None
        self._client: MqttClient | None = None
        self._subscriber: TelemetrySubscriber | None = None
        self._used = 0

    # -- state --------------------------------------------------------------------------
    def _read_state(self) -> int:
        path = self.work_dir / "state.json"
        try:
            version = json.loads(path.read_text()).get("version", 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, AttributeError) as e:
            raise PolicyError(f"{path} is unreadable ({e}); delete it to start the version count again") from e
        if not isinstance(version, int) or version < 0:
            raise PolicyError(f"{path}: version must be a non-negative integer")
        return version

    def _write_state(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.work_dir / ".state.json.tmp"
        tmp.write_text(json.dumps({"version": self.version, "bundle_id": self.bundle_id}) + "\n")
        tmp.replace(self.work_dir / "state.json")

    def latest_policy_dir(self) -> Path:
        """The newest exported version's directory, or the trained policy directory."""
        exported = self.work_dir / f"v{self.version}"
        return exported if (exported / "policy.tflite").is_file() else self.policy_dir

    # -- MQTT ---------------------------------------------------------------------------
    def start(self) -> OnlineAgent:
        """Load the trainer, connect, publish the current policy and subscribe to experience."""
        from ..telemetry.subscriber import TelemetrySubscriber
        from ..transport.mqtt import connect_and_start, make_client

        self._trainer = OnlineTrainer(self.policy_dir, self.work_dir, batch_size=self.batch_size, seed=self.seed)
        self._client = make_client(self._broker_url, f"tflite-edge-agent-{self.bundle_id[:16]}-{os.getpid()}")
        connect_and_start(self._client, self.connect_timeout_s)
        self.publish(self.latest_policy_dir())
        self._subscriber = TelemetrySubscriber(self._broker_url, self._on_message, prefix=self.prefix,
                                               experience=True).start(self.connect_timeout_s)
        return self

    def stop(self) -> None:
        if self._subscriber is not None:
            self._subscriber.stop()
            self._subscriber = None
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def __enter__(self) -> OnlineAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_message(self, received: Received) -> None:
        from ..telemetry.schema import ExperienceBatch

        message = received.message
        if not isinstance(message, ExperienceBatch):
            return
        for record in message.records:
            if record.context.get("policy_rejections"):
                self.policy_rejections_reported += int(record.context["policy_rejections"] or 0)
                log.warning("device %s reports %d rejected policy update(s)", message.device_id,
                            int(record.context["policy_rejections"] or 0))
            self.replay.add(record)

    def publish(self, policy_dir: Path) -> int:
        """Sign ``policy_dir`` as the next version and publish it retained; returns the version."""
        if self._client is None:
            raise PolicyError("the agent is not connected: call start() first")
        version = self.version + 1
        payload = sign_policy_message(PolicyPackage.from_directory(policy_dir, version), self.private_key)
        info = self._client.publish(self.topic, payload, qos=1, retain=True)
        try:
            info.wait_for_publish(timeout=self.connect_timeout_s)
        except (RuntimeError, ValueError) as e:
            raise PolicyError(f"policy version {version} could not be published on {self.topic}: {e}") from e
        if not info.is_published():
            raise PolicyError(f"the broker did not acknowledge policy version {version} on {self.topic} "
                              f"within {self.connect_timeout_s:g} s")
        self.version = version
        self._write_state()
        log.info("published policy version %d (%d bytes, from %s) on %s", version, len(payload), policy_dir,
                 self.topic)
        if self.on_publish is not None:
            self.on_publish(version, policy_dir)
        return version

    # -- learning -----------------------------------------------------------------------
    def new_records(self) -> int:
        return self.replay.added - self._used

    def update_once(self) -> int | None:
        """Train on the replay and publish a new version if enough new records came in."""
        if self._trainer is None:
            raise PolicyError("the agent is not started: call start() first")
        added = self.replay.added
        if added - self._used < self.min_new_records:
            return None
        started = time.perf_counter()
        loss = self._trainer.update(self.replay, self.steps)
        self._used = added
        self.updates += 1
        out = self.work_dir / f"v{self.version + 1}"
        self._trainer.export(out, version=self.version + 1, records=len(self.replay), records_total=added,
                             updates=self.updates, steps=self.steps, loss=loss, base=str(self.policy_dir),
                             trainer=asdict_config(self._trainer))
        from ..security.signing import sign_policy

        sign_policy(out, self.private_key)
        version = self.publish(out)
        for old in sorted(self.work_dir.glob("v*"), key=_version_of)[:-KEEP_VERSIONS]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("update %d: %d steps on %d records (loss %.5f) in %.1f s -> version %d", self.updates, self.steps,
                 len(self.replay), loss, time.perf_counter() - started, version)
        return version

    def run(self, *, duration_s: float | None = None, max_updates: int | None = None,
            stop: threading.Event | None = None, poll_s: float = 0.5) -> None:
        """Update every ``update_every_s`` until ``duration_s`` passed, ``max_updates`` were
        published, or ``stop`` is set."""
        stop = stop or threading.Event()
        end = None if duration_s is None else time.monotonic() + duration_s
        next_update = time.monotonic() + self.update_every_s
        while not stop.is_set() and (end is None or time.monotonic() < end):
            if max_updates is not None and self.updates >= max_updates:
                return
            if time.monotonic() >= next_update:
                self.update_once()
                next_update = time.monotonic() + self.update_every_s
            stop.wait(poll_s)


def asdict_config(trainer: OnlineTrainer) -> Mapping[str, Any]:
    """The trainer's settings as recorded in an exported policy.json."""
    return {"batch_size": trainer.batch_size, "agent": asdict(trainer.config)["agent"]}


def _version_of(path: Path) -> int:
    try:
        return int(path.name[1:])
    except ValueError:
        return -1
