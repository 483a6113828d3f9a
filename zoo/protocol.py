"""The paper's three-stage control protocol: expert -> behaviour cloning -> SPPO vs PPO on the binary outcome.

1. **Expert** (:func:`train_expert`): any SB3 algorithm trained on the *dense* counterpart of a task, cached
   on disk and reused.
2. **Start policy** (:func:`collect_demonstrations`, :func:`behaviour_clone`): roll the expert out on the
   sparse task, keep only its *successful* episodes, and clone them into the actor network that every RL
   algorithm starts from (same architecture, same weights). Cloning stops as soon as the start policy's
   success rate (stochastic actions, the way RL will act) lands in a target band, so that it is
   "non-zero but imperfect", as in the paper.
3. **RL** (:func:`run_rl`): SPPO and SB3's PPO from that same actor, on the binary outcome only, each for the
   same number of environment episodes. PPO runs in the paper's setting (GAE with gamma = lambda = 1) and
   with SB3's defaults (0.99 / 0.95); the ablations ``ema`` and ``batch-mean`` run SPPO's update with a
   baseline that ignores the start state (a moving average of past outcomes, the batch's mean outcome).

The success rate of every training episode is recorded, so the curves are on-policy success against
episodes, as in the paper's plots. For the algorithms with a sequence critic (:data:`CALIBRATED_ALGOS`: its
``V(s0)`` is trained even when the update does not use it) :func:`measure_calibration` scores the final
critic on held-out start states against the outcomes the final policy reaches from them (Brier score and
Brier skill score). :func:`summarize` gives the table (start success, final success, episodes to 50% and
80%, calibration).

Each task's settings live in ``zoo/suite.yml`` (:func:`load_task_config`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import sppo_rl.envs  # noqa: F401  (registers the suite's ids)
import torch as th
import yaml
from sppo_rl.envs import get_task
from stable_baselines3 import A2C, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from sppo_rl import SPPO

from .errors import ZooError

__all__ = [
    "CALIBRATED_ALGOS",
    "CALIBRATION_DEFAULTS",
    "RL_ALGOS",
    "TaskConfig",
    "behaviour_clone",
    "calibration_settings",
    "collect_demonstrations",
    "evaluate_success",
    "final_tail",
    "load_task_config",
    "make_start_policy",
    "measure_calibration",
    "run_rl",
    "summarize",
    "train_expert",
]

SUITE_CONFIG = Path(__file__).with_name("suite.yml")
START_POLICY_DIR = Path(__file__).with_name("start_policies")
EXPERT_ALGOS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC, "td3": TD3, "a2c": A2C}

RL_ALGOS = ("sppo", "ppo", "ppo-sb3", "ema", "batch-mean")
"""Stage-3 algorithms: SPPO; PPO in the paper's setting (gamma = lambda = 1); PPO with SB3's 0.99 / 0.95; SPPO's
update with the moving-average baseline (``advantage_estimator="ema"``) or the batch-mean baseline
(``"batch_mean"``) in place of ``V(s0)``."""

SPPO_ESTIMATORS: dict[str, str] = {"sppo": "sppo", "ema": "ema", "batch-mean": "batch_mean"}
"""Stage-3 algorithms that are SPPO's update, and the advantage estimator each uses."""

CALIBRATED_ALGOS = tuple(SPPO_ESTIMATORS)
"""Algorithms whose sequence critic ``V(s0)`` is trained (used by ``sppo``, trained alongside by the others) and
scored by :func:`measure_calibration` at the end of each run."""

CALIBRATION_DEFAULTS: dict[str, int] = {"states": 32, "rollouts": 8, "first_seed": 1_000_000}
"""Calibration measurement (``rl.calibration`` in ``zoo/suite.yml`` overrides it): ``states`` held-out start
states (the resets with seeds ``first_seed``, ``first_seed + 1``, ..., the same for every run, never a training
seed), and ``rollouts`` episodes of the final policy from each."""

FINAL_FRACTION = 0.1
"""Final success is the mean over the last ``FINAL_FRACTION`` of a run's episodes (at least one window)."""


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TaskConfig:
    """Settings of the protocol for one sparse task (one entry of ``zoo/suite.yml``).

    :param env_id: the sparse task's id (its dense counterpart comes from the suite table)
    :param net_arch: hidden sizes of the actor (and of each critic)
    :param expert: ``algo``, ``timesteps``, ``n_envs``, ``normalize`` and ``kwargs`` of the stage-1 expert
    :param demos: successful expert episodes to collect
    :param bc: behaviour cloning: ``lr``, ``batch_size``, ``epochs_per_check``, ``max_epochs``,
        ``target`` (low, high) success band, ``eval_episodes``
    :param rl: stage 3: ``episodes`` (budget per run), ``n_envs``, ``episodes_per_update``, ``n_epochs``,
        ``learning_rate``, ``sppo`` and ``ppo`` (extra keyword arguments)
    """

    env_id: str
    net_arch: list[int]
    expert: dict[str, Any]
    demos: int
    bc: dict[str, Any]
    rl: dict[str, Any]

    @property
    def dense_id(self) -> str:
        """The dense counterpart's id."""
        return get_task(self.env_id).dense_id

    @property
    def horizon(self) -> int:
        """The task's horizon H."""
        return get_task(self.env_id).horizon

    def expert_fingerprint(self) -> str:
        """A short hash of everything that defines the expert (its cache key)."""
        blob = json.dumps({"env": self.dense_id, "expert": self.expert, "net_arch": self.net_arch}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def load_task_config(env_id: str, path: str | Path = SUITE_CONFIG) -> TaskConfig:
    """Read one task's protocol settings from ``zoo/suite.yml`` (or another file of that format).

    :param env_id: a sparse id of the suite
    :param path: the YAML file
    :return: the settings
    :raises KeyError: naming the known ids, if ``env_id`` has no entry
    """
    with open(path) as f:
        data = yaml.safe_load(f)
    if env_id not in data:
        raise KeyError(f"No protocol settings for {env_id!r} in {path}; known: {', '.join(sorted(data))}")
    entry = data[env_id]
    return TaskConfig(env_id=env_id, **entry)


# ---------------------------------------------------------------------------------------------------------
# Stage 1: expert on the dense counterpart
# ---------------------------------------------------------------------------------------------------------


def _make_env(env_id: str, n_envs: int, seed: int) -> VecEnv:
    return make_vec_env(env_id, n_envs=n_envs, seed=seed)


def _expert_success(model: BaseAlgorithm, normalizer: VecNormalize | None, env_id: str, n_episodes: int) -> float:
    """Deterministic success rate of an expert on the sparse task (4 envs, seed 123)."""
    env = _make_env(env_id, 4, 123)
    successes: list[float] = []
    obs: Any = env.reset()
    while len(successes) < n_episodes:
        policy_obs = normalizer.normalize_obs(obs) if normalizer is not None else obs
        action, _ = model.predict(policy_obs, deterministic=True)
        obs, _, dones, infos = env.step(action)
        successes += [float(info.get("is_success", False)) for done, info in zip(dones, infos, strict=True) if done]
    env.close()
    return float(np.mean(successes[:n_episodes]))


def train_expert(config: TaskConfig, cache_dir: str | Path, verbose: int = 0) -> Path:
    """Train (or reuse) the stage-1 expert on the dense counterpart.

    The expert is cached as ``<cache_dir>/expert_<dense id>_<fingerprint>.zip`` (plus its VecNormalize
    statistics when ``normalize`` is set); a later call with the same settings loads it instead of training.

    With ``check_every`` in the ``expert`` settings, training runs in chunks of that many steps; after each
    chunk the deterministic success rate on the *sparse* task is measured over ``check_episodes`` episodes
    (default 20) and the best expert so far is kept (ties go to the later one); training stops early once it
    reaches ``stop_at`` (default 1.0). Without it, the expert after ``timesteps`` steps is kept.

    :param config: the task's settings (``expert``: ``algo``, ``timesteps``, ``n_envs``, ``normalize``, ``seed``,
        ``kwargs``, and optionally ``check_every``, ``check_episodes``, ``stop_at``)
    :param cache_dir: where experts are kept
    :param verbose: print each check (and SB3's own output at ``verbose >= 2``)
    :return: the path of the saved expert
    :raises RuntimeError: if no check found a successful expert
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"expert_{config.dense_id}_{config.expert_fingerprint()}.zip"
    if path.exists():
        return path
    spec = config.expert
    seed = int(spec.get("seed", 0))
    algo_cls = EXPERT_ALGOS[spec["algo"]]
    env = _make_env(config.dense_id, spec.get("n_envs", 1), seed)
    if spec.get("normalize"):
        env = VecNormalize(env, gamma=spec.get("kwargs", {}).get("gamma", 0.99))
    normalizer = env if isinstance(env, VecNormalize) else None
    kwargs = dict(spec.get("kwargs", {}))
    policy_kwargs = dict(kwargs.pop("policy_kwargs", {}))
    policy_kwargs.setdefault("net_arch", list(spec.get("net_arch", config.net_arch)))
    kwargs.setdefault("device", "cpu")  # small MLPs: the CPU is faster than a GPU here
    model = algo_cls("MlpPolicy", env, seed=seed, verbose=max(0, verbose - 1), policy_kwargs=policy_kwargs, **kwargs)
    tmp = path.with_name(path.stem + ".tmp.zip")
    norm_path = path.with_suffix(".vecnormalize.pkl")
    total = int(spec["timesteps"])
    check_every = spec.get("check_every")
    if not check_every:
        model.learn(total)
        model.save(tmp)
        if normalizer is not None:
            normalizer.save(str(norm_path))
    else:
        best = -1.0
        while model.num_timesteps < total:
            model.learn(int(check_every), reset_num_timesteps=False)
            success = _expert_success(model, normalizer, config.env_id, int(spec.get("check_episodes", 20)))
            if verbose:
                print(f"  expert {model.num_timesteps:>8d} steps: sparse success {success:.2f}", flush=True)
            if success >= best and success > 0:
                best = success
                model.save(tmp)
                if normalizer is not None:
                    normalizer.save(str(norm_path))
            if success >= float(spec.get("stop_at", 1.0)):
                break
        if best <= 0:
            raise RuntimeError(
                f"The expert for {config.env_id} never succeeded on the sparse task in {model.num_timesteps} "
                "steps; change expert in zoo/suite.yml"
            )
    tmp.rename(path)  # only a finished expert appears under its final name
    return path


def load_expert(config: TaskConfig, path: str | Path) -> tuple[BaseAlgorithm, VecNormalize | None]:
    """Load an expert and, if it was trained with one, its (frozen) observation normaliser."""
    path = Path(path)
    algo_cls = EXPERT_ALGOS[config.expert["algo"]]
    model = algo_cls.load(path, device="cpu")
    norm_path = path.with_suffix(".vecnormalize.pkl")
    normalizer = None
    if norm_path.exists():
        normalizer = VecNormalize.load(str(norm_path), _make_env(config.env_id, 1, 0))
        normalizer.training = False
        normalizer.norm_reward = False
    return model, normalizer


# ---------------------------------------------------------------------------------------------------------
# Stage 2: successful demonstrations -> behaviour cloning -> start policy
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Demonstrations:
    """Successful expert episodes on the sparse task, flattened."""

    observations: np.ndarray
    """``(N, *obs_shape)`` raw observations of the sparse env"""
    actions: np.ndarray
    """``(N, *action_shape)`` the expert's actions"""
    n_episodes: int
    """successful episodes kept"""
    n_tried: int
    """episodes rolled out to find them"""

    @property
    def expert_success_rate(self) -> float:
        """Fraction of the expert's episodes on the sparse task that succeeded."""
        return self.n_episodes / max(self.n_tried, 1)


def collect_demonstrations(
    config: TaskConfig, expert_path: str | Path, seed: int = 0, max_episodes: int | None = None
) -> Demonstrations:
    """Roll the expert out (deterministic actions) on the sparse task and keep its successful episodes.

    :param config: the task's settings (``demos`` successful episodes are collected)
    :param expert_path: the expert from :func:`train_expert`
    :param seed: seed of the environment
    :param max_episodes: give up after this many episodes (default: 20 x ``demos``)
    :return: the demonstrations
    :raises RuntimeError: if the expert never succeeds on the sparse task
    """
    expert, normalizer = load_expert(config, expert_path)
    env = gymnasium.make(config.env_id)
    max_episodes = max_episodes or 20 * config.demos
    obs_list: list[np.ndarray] = []
    act_list: list[np.ndarray] = []
    kept = tried = 0
    while kept < config.demos and tried < max_episodes:
        obs, _ = env.reset(seed=seed + tried)
        episode_obs, episode_act = [], []
        done = False
        info: dict[str, Any] = {}
        while not done:
            policy_obs: Any = normalizer.normalize_obs(obs[None])[0] if normalizer is not None else obs  # type: ignore[index]
            action, _ = expert.predict(policy_obs, deterministic=True)
            episode_obs.append(np.array(obs))
            episode_act.append(np.array(action))
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        tried += 1
        if info.get("is_success"):
            kept += 1
            obs_list.extend(episode_obs)
            act_list.extend(episode_act)
    env.close()
    if kept == 0:
        raise RuntimeError(
            f"The expert for {config.env_id} succeeded in none of {tried} episodes on the sparse task; "
            "train it longer (expert.timesteps in zoo/suite.yml)"
        )
    return Demonstrations(np.stack(obs_list), np.stack(act_list), kept, tried)


def make_rl_env(config: TaskConfig, seed: int, n_envs: int | None = None) -> VecEnv:
    """The sparse task as a VecEnv for stage 3 (and for measuring the start policy)."""
    return _make_env(config.env_id, n_envs or int(config.rl["n_envs"]), seed)


def make_start_policy(config: TaskConfig, env: VecEnv) -> SPPO:
    """An SPPO model whose actor has the shared start architecture (its actor is what gets cloned)."""
    net_arch = dict(pi=list(config.net_arch), vf=list(config.net_arch))
    return SPPO("MlpPolicy", env, policy_kwargs=dict(net_arch=net_arch), seed=0, device="cpu")


class SuccessRecorder(BaseCallback):
    """Record the outcome of every finished training episode and stop after a budget of episodes.

    :param max_episodes: stop training once this many episodes have finished (``None``: never)
    """

    def __init__(self, max_episodes: int | None = None) -> None:
        super().__init__()
        self.max_episodes = max_episodes
        self.successes: list[float] = []

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done:
                self.successes.append(float(info.get("is_success", False)))
        return self.max_episodes is None or len(self.successes) < self.max_episodes


def evaluate_success(policy: ActorCriticPolicy, env: VecEnv, n_episodes: int, deterministic: bool = False) -> float:
    """Success rate of a policy over ``n_episodes`` episodes (stochastic actions by default, as RL acts)."""
    successes: list[float] = []
    obs: Any = env.reset()
    while len(successes) < n_episodes:
        action, _ = policy.predict(obs, deterministic=deterministic)
        if isinstance(env.action_space, gymnasium.spaces.Box):
            action = np.clip(action, env.action_space.low, env.action_space.high)
        obs, _, dones, infos = env.step(action)
        for done, info in zip(dones, infos, strict=True):
            if done:
                successes.append(float(info.get("is_success", False)))
    return float(np.mean(successes[:n_episodes]))


@dataclasses.dataclass
class CloneResult:
    """What :func:`behaviour_clone` did."""

    actor_state: dict[str, th.Tensor]
    start_success: float
    epochs: int
    history: list[tuple[int, float, float]]
    """(epoch, NLL loss, success rate) at each check"""


def behaviour_clone(config: TaskConfig, demos: Demonstrations, seed: int = 0, verbose: int = 1) -> CloneResult:
    """Clone the demonstrations into the shared actor by maximum likelihood, stopping in the target band.

    Every ``epochs_per_check`` epochs the stochastic policy's success rate on the sparse task is measured
    (``eval_episodes`` episodes). Cloning stops at the first check inside ``target = [low, high]``; if a
    check overshoots (``> high``) the previous check's weights are kept when they were above zero, so the
    start policy is non-zero but imperfect. If no check lands in the band by ``max_epochs``, the last one
    is kept (the caller sees its success rate).

    :param config: the task's settings (``bc`` section)
    :param demos: successful expert episodes
    :param seed: seed of the clone's initialisation, minibatches and evaluation episodes
    :param verbose: print each check
    :return: the actor weights and the start success rate
    """
    bc = config.bc
    th.manual_seed(seed)
    np.random.seed(seed)
    env = make_rl_env(config, seed=10_000 + seed)
    model = make_start_policy(config, env)
    policy = model.policy
    optimizer = th.optim.Adam(policy.actor_parameters(), lr=float(bc.get("lr", 1e-3)))
    obs = th.as_tensor(demos.observations, dtype=th.float32)
    actions = th.as_tensor(demos.actions)
    n = len(obs)
    batch_size = int(bc.get("batch_size", 256))
    low, high = (float(x) for x in bc.get("target", (0.2, 0.7)))
    eval_episodes = int(bc.get("eval_episodes", 50))
    history: list[tuple[int, float, float]] = []
    previous: tuple[dict[str, th.Tensor], float, int] | None = None
    epoch = 0
    success = evaluate_success(policy, env, eval_episodes)
    history.append((0, float("nan"), success))
    while epoch < int(bc.get("max_epochs", 200)) and not (low <= success <= high):
        if success > high and previous is not None and previous[1] > 0:
            break
        previous = ({k: v.clone() for k, v in policy.actor_state_dict().items()}, success, epoch)
        losses = []
        for _ in range(int(bc.get("epochs_per_check", 5))):
            perm = th.randperm(n)
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                log_prob, _ = policy.log_prob_and_entropy(obs[idx], actions[idx])
                loss = -log_prob.mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            epoch += 1
        success = evaluate_success(policy, env, eval_episodes)
        history.append((epoch, float(np.mean(losses)), success))
        if verbose:
            print(f"  BC epoch {epoch:4d}: NLL {np.mean(losses):8.4f}, start success {success:.2f}", flush=True)
    state, final_success, final_epoch = policy.actor_state_dict(), success, epoch
    if success > high and previous is not None and previous[1] > 0:
        state, final_success, final_epoch = previous
    env.close()
    return CloneResult({k: v.detach().clone() for k, v in state.items()}, final_success, final_epoch, history)


def start_policy_path(env_id: str, directory: str | Path = START_POLICY_DIR) -> Path:
    """Where the committed start policy of a task lives."""
    return Path(directory) / f"{env_id}.pt"


def save_start_policy(path: str | Path, clone: CloneResult, config: TaskConfig, demos: Demonstrations) -> None:
    """Save the cloned actor (a few tens of kB) with what produced it."""
    meta = {
        "env_id": config.env_id,
        "net_arch": config.net_arch,
        "start_success": clone.start_success,
        "bc_epochs": clone.epochs,
        "bc_history": clone.history,
        "demos": demos.n_episodes,
        "expert_success_rate": demos.expert_success_rate,
        "expert": config.expert,
        "bc": config.bc,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    th.save({"actor": clone.actor_state, "meta": _plain(meta)}, path)


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python numbers and lists: what ``torch.load(weights_only=True)``
    reads back."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def _refused_global(err: Exception) -> str:
    """What ``torch.load(weights_only=True)`` refused, from its (long) message."""
    match = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    if match:
        return f"it needs {match.group(1)} to unpickle"
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def load_start_policy(path: str | Path) -> tuple[dict[str, th.Tensor], dict[str, Any]]:
    """Load a start policy saved by :func:`save_start_policy`: (actor weights, metadata).

    The file is read with ``torch.load(weights_only=True)``: tensors and plain Python values only, so a crafted
    file cannot run code while it loads (a full unpickle would run whatever the file asks for).

    :param path: the ``.pt`` file
    :return: the actor's state dict and the metadata
    :raises ZooError: if the file cannot be read that way or is not a start policy
    """
    try:
        blob = th.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for refused objects; RuntimeError, EOFError... for broken files
        raise ZooError(
            f"Start policy {path}: refused, not a file of tensors and plain values ({_refused_global(err)}); "
            "start policies are loaded without running code from the file: rebuild it with --rebuild-start"
        ) from None
    actor = blob.get("actor") if isinstance(blob, dict) else None
    meta = blob.get("meta") if isinstance(blob, dict) else None
    if not isinstance(actor, dict) or not isinstance(meta, dict):
        raise ZooError(f"Start policy {path}: not a start policy (expected a dict with 'actor' and 'meta')")
    if not all(isinstance(v, th.Tensor) for v in actor.values()):
        raise ZooError(f"Start policy {path}: its 'actor' entry is not a state dict of tensors")
    return actor, meta


# ---------------------------------------------------------------------------------------------------------
# Stage 3: RL on the binary outcome
# ---------------------------------------------------------------------------------------------------------


def _ppo_rollout(config: TaskConfig) -> tuple[int, int]:
    """PPO's n_steps and batch_size: a rollout of about ``episodes_per_update`` full-horizon episodes and as
    many minibatches per epoch as SPPO has."""
    rl = config.rl
    n_envs = int(rl["n_envs"])
    n_steps = max(1, math.ceil(int(rl["episodes_per_update"]) * config.horizon / n_envs))
    n_minibatches = max(1, math.ceil(int(rl["episodes_per_update"]) / int(rl.get("batch_episodes", 8))))
    batch_size = max(2, n_steps * n_envs // n_minibatches)
    return n_steps, batch_size


def build_rl_model(algo: str, config: TaskConfig, env: VecEnv, seed: int) -> BaseAlgorithm:
    """SPPO, PPO (gamma = lambda = 1), PPO (SB3 defaults 0.99 / 0.95), or SPPO's update with the ``ema`` or the
    ``batch-mean`` baseline, with the shared actor architecture.

    Shared: actor architecture, actor learning rate, epochs, clip range, environments and episodes per update.
    ``ema`` and ``batch-mean`` are SPPO in every setting (``rl.sppo`` included) but the advantage estimator;
    ``rl.ema`` / ``rl.batch-mean`` add keyword arguments (e.g. ``advantage_estimator_kwargs: {decay: 0.99}``).
    """
    rl = config.rl
    net_arch = dict(pi=list(config.net_arch), vf=list(config.net_arch))
    common: dict[str, Any] = dict(
        learning_rate=float(rl["learning_rate"]), n_epochs=int(rl["n_epochs"]), seed=seed, device="cpu"
    )
    if algo in SPPO_ESTIMATORS:
        extra = {**rl.get("sppo", {}), **(rl.get(algo, {}) if algo != "sppo" else {})}
        extra.setdefault("advantage_estimator", SPPO_ESTIMATORS[algo])
        return SPPO(
            "MlpPolicy",
            env,
            n_episodes=int(rl["episodes_per_update"]),
            batch_episodes=int(rl.get("batch_episodes", 8)),
            policy_kwargs=dict(net_arch=net_arch),
            **common,
            **extra,
        )
    if algo in ("ppo", "ppo-sb3"):
        n_steps, batch_size = _ppo_rollout(config)
        gamma, lam = (1.0, 1.0) if algo == "ppo" else (0.99, 0.95)
        return PPO(
            "MlpPolicy",
            env,
            n_steps=n_steps,
            batch_size=batch_size,
            gamma=gamma,
            gae_lambda=lam,
            policy_kwargs=dict(net_arch=net_arch),
            **common,
            **rl.get("ppo", {}),
        )
    raise ValueError(f"Unknown stage-3 algorithm {algo!r}; choose from {', '.join(RL_ALGOS)}")


def load_actor(model: BaseAlgorithm, actor_state: dict[str, th.Tensor]) -> None:
    """Put the start actor into an SPPO or PPO model (PPO's critic keeps its fresh initialisation)."""
    policy: Any = model.policy
    if hasattr(policy, "load_actor_state_dict"):
        policy.load_actor_state_dict(actor_state)
        return
    own = policy.state_dict()
    missing = [k for k in actor_state if k not in own]
    if missing:
        raise KeyError(f"The model has no parameters named {missing}")
    own.update(actor_state)
    policy.load_state_dict(own)


@dataclasses.dataclass
class RLRun:
    """One stage-3 run: the outcome of every training episode, in order."""

    algo: str
    seed: int
    successes: list[float]
    seconds: float
    timesteps: int
    calibration: dict[str, Any] | None = None
    """:func:`measure_calibration`'s result for the final critic (algorithms of :data:`CALIBRATED_ALGOS`)"""

    def curve(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        """Success rate per block of ``window`` consecutive episodes: (episodes at block end, rate)."""
        s = np.asarray(self.successes, dtype=float)
        n_blocks = len(s) // window
        rates = s[: n_blocks * window].reshape(n_blocks, window).mean(axis=1)
        return (np.arange(1, n_blocks + 1) * window), rates


def final_tail(successes: Sequence[float], window: int, fraction: float = FINAL_FRACTION) -> list[float]:
    """The last ``fraction`` of a run's outcomes, at least ``window`` of them: what "final success" averages.

    :param successes: the outcome of every training episode, in order
    :param window: the fewest outcomes to keep
    :param fraction: the share of the run to keep
    :return: the outcomes of the tail
    """
    tail = max(window, int(len(successes) * fraction))
    return list(successes[-tail:])


def calibration_settings(config: TaskConfig) -> dict[str, int]:
    """:data:`CALIBRATION_DEFAULTS` updated with the task's ``rl.calibration`` entry."""
    settings = {**CALIBRATION_DEFAULTS, **config.rl.get("calibration", {})}
    return {key: int(value) for key, value in settings.items()}


def _policy_outcomes(
    model: BaseAlgorithm, env_id: str, seeds: Sequence[int], n_rollouts: int
) -> tuple[np.ndarray, np.ndarray]:
    """Start observations ``(len(seeds), *obs_shape)`` and outcomes ``(len(seeds), n_rollouts)`` of the model's
    policy (stochastic actions, as in training) run ``n_rollouts`` times from each start state
    ``env.reset(seed=s)``; every episode runs in lockstep in its own env, and the policy acts on all unfinished
    ones at once."""
    envs = [gymnasium.make(env_id) for _ in range(len(seeds) * n_rollouts)]
    observations = np.stack([env.reset(seed=int(seeds[i // n_rollouts]))[0] for i, env in enumerate(envs)])
    starts = observations[::n_rollouts].copy()
    outcomes = np.zeros(len(envs))
    alive = np.ones(len(envs), dtype=bool)
    box = isinstance(envs[0].action_space, gymnasium.spaces.Box)
    while alive.any():
        idx = np.flatnonzero(alive)
        actions, _ = model.policy.predict(observations[idx], deterministic=False)
        if box:
            actions = np.clip(actions, envs[0].action_space.low, envs[0].action_space.high)  # type: ignore[attr-defined]
        for i, action in zip(idx, actions, strict=True):
            observation, _, terminated, truncated, info = envs[i].step(action)
            observations[i] = observation
            if terminated or truncated:
                alive[i] = False
                outcomes[i] = float(info.get("is_success", False))
    for env in envs:
        env.close()
    return starts, outcomes.reshape(len(seeds), n_rollouts)


def measure_calibration(
    model: SPPO,
    env_id: str,
    train_outcome_mean: float,
    n_states: int = CALIBRATION_DEFAULTS["states"],
    n_rollouts: int = CALIBRATION_DEFAULTS["rollouts"],
    first_seed: int = CALIBRATION_DEFAULTS["first_seed"],
    policy_seed: int = 0,
) -> dict[str, Any]:
    """Score the sequence critic ``V(s0)`` on held-out start states against what the policy then reaches.

    The start states are ``env.reset(seed=first_seed + m)`` for ``m < n_states``; from each, the policy runs
    ``n_rollouts`` episodes (stochastic actions; torch seeded with ``policy_seed``), and each episode's outcome
    ``R_mk`` is compared with the critic's prediction ``V_m`` for that start state:

    - ``brier``: ``mean((V_m - R_mk) ** 2)``;
    - ``brier_constant`` and ``bss``: the same for the constant ``c = train_outcome_mean`` (what a baseline that
      ignores the start state knows: the mean outcome of the end of training), and the Brier skill score
      ``1 - brier / brier_constant``: > 0 when the critic predicts better than that constant;
    - ``bss_base_rate``: the skill score against the held-out episodes' own mean ``p`` (Brier ``p (1 - p)``,
      the best any constant can do, known only afterwards): > 0 only if the critic tells start states apart;
    - ``start_state_share``: the share of the outcomes' variance that the start state explains, estimated
      from the per-state success rates ``p_m`` (``1 - mean(p_m (1 - p_m)) K / (K - 1) / (p (1 - p))``): the
      ceiling of ``bss_base_rate`` for a perfect critic (0 when the start state does not matter);
    - ``ema_baseline`` and ``brier_ema_baseline`` when the model's estimator is the moving average: its value
      at the end of training, and its Brier score as a constant predictor.

    :param model: a trained SPPO model (any advantage estimator; its critic is trained in every case)
    :param env_id: the sparse task
    :param train_outcome_mean: the constant predictor ``c``
    :param n_states: held-out start states ``M``
    :param n_rollouts: episodes per start state ``K`` (>= 2)
    :param first_seed: reset seed of the first start state
    :param policy_seed: torch seed of the policy's action sampling
    :return: the scores above and the raw data (``predictions``, ``success_per_state``)
    :raises ValueError: if ``n_states < 1`` or ``n_rollouts < 2``
    """
    if n_states < 1 or n_rollouts < 2:
        raise ValueError(f"need at least 1 start state and 2 rollouts each, got {n_states} and {n_rollouts}")
    seeds = [first_seed + m for m in range(n_states)]
    th.manual_seed(policy_seed)
    starts, outcomes = _policy_outcomes(model, env_id, seeds, n_rollouts)
    with th.no_grad():
        obs_tensor, _ = model.policy.obs_to_tensor(starts)
        predictions = model.policy.critic.baseline(obs_tensor).double().cpu().numpy().reshape(-1)
    brier = float(np.mean((predictions[:, None] - outcomes) ** 2))
    brier_constant = float(np.mean((train_outcome_mean - outcomes) ** 2))
    rate = float(outcomes.mean())
    base_rate_brier = rate * (1.0 - rate)
    per_state = outcomes.mean(axis=1)
    within = float(np.mean(per_state * (1.0 - per_state))) * n_rollouts / (n_rollouts - 1)
    result: dict[str, Any] = {
        "states": n_states,
        "rollouts": n_rollouts,
        "first_seed": first_seed,
        "held_out_success": rate,
        "train_outcome_mean": float(train_outcome_mean),
        "prediction_mean": float(predictions.mean()),
        "brier": brier,
        "brier_constant": brier_constant,
        "bss": _skill(brier, brier_constant),
        "bss_base_rate": _skill(brier, base_rate_brier),
        "start_state_share": _skill(within, base_rate_brier),
        "predictions": predictions.tolist(),
        "success_per_state": per_state.tolist(),
    }
    ema = getattr(model, "advantage_fn", None)
    if model.advantage_estimator == "ema" and getattr(ema, "baseline", None) is not None:
        value = float(ema.baseline)  # type: ignore[union-attr]
        result["ema_baseline"] = value
        result["brier_ema_baseline"] = float(np.mean((value - outcomes) ** 2))
    return result


def _skill(score: float, reference: float) -> float | None:
    """``1 - score / reference``; ``None`` when the reference is 0 (every outcome the same and predicted)."""
    return None if reference <= 0 else 1.0 - score / reference


def run_rl(algo: str, config: TaskConfig, actor_state: dict[str, th.Tensor], seed: int) -> RLRun:
    """Stage 3 for one algorithm and seed: RL on the binary outcome from the start actor, for the budget of
    ``rl.episodes`` training episodes; then, for :data:`CALIBRATED_ALGOS`, :func:`measure_calibration` (not
    counted in :attr:`RLRun.seconds`, recorded in the result's ``seconds``)."""
    th.set_num_threads(1)
    env = make_rl_env(config, seed=seed)
    model = build_rl_model(algo, config, env, seed)
    load_actor(model, actor_state)
    episodes = int(config.rl["episodes"])
    recorder = SuccessRecorder(max_episodes=episodes)
    start = time.perf_counter()
    model.learn(total_timesteps=10**12, callback=recorder)
    seconds = time.perf_counter() - start
    env.close()
    successes = recorder.successes[:episodes]
    calibration = None
    if isinstance(model, SPPO):
        window = int(config.rl.get("window", max(1, episodes // 30)))
        settings = calibration_settings(config)
        t0 = time.perf_counter()
        calibration = measure_calibration(
            model,
            config.env_id,
            float(np.mean(final_tail(successes, window))),
            n_states=settings["states"],
            n_rollouts=settings["rollouts"],
            first_seed=settings["first_seed"],
            policy_seed=seed,
        )
        calibration["seconds"] = time.perf_counter() - t0
    return RLRun(algo, seed, successes, seconds, int(model.num_timesteps), calibration)


# ---------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------


def episodes_to_reach(run: RLRun, level: float, window: int) -> int | None:
    """First episode count at which the success rate over the last ``window`` episodes reaches ``level``."""
    s = np.asarray(run.successes, dtype=float)
    if len(s) < window:
        return None
    moving = np.convolve(s, np.ones(window) / window, mode="valid")
    hits = np.flatnonzero(moving >= level)
    return int(hits[0] + window) if hits.size else None


CALIBRATION_KEYS = ("brier", "brier_constant", "bss", "bss_base_rate", "start_state_share", "held_out_success")
"""Scores of :func:`measure_calibration` that :func:`summarize` aggregates over seeds."""


def _summarize_calibration(sel: Sequence[RLRun]) -> dict[str, Any] | None:
    """Mean, min, max and per-seed values of the calibration scores of some runs (``None`` if none has any)."""
    measured = [r.calibration for r in sel if r.calibration is not None]
    if not measured:
        return None
    out: dict[str, Any] = {"states": measured[0]["states"], "rollouts": measured[0]["rollouts"]}
    keys = CALIBRATION_KEYS + (("brier_ema_baseline",) if all("brier_ema_baseline" in c for c in measured) else ())
    for key in keys:
        values = [c[key] for c in measured]
        finite = [float(v) for v in values if v is not None]
        out[key] = {
            "mean": float(np.mean(finite)) if finite else None,
            "min": float(np.min(finite)) if finite else None,
            "max": float(np.max(finite)) if finite else None,
            "per_seed": values,
        }
    return out


def summarize(
    runs: Sequence[RLRun], start_success: float, window: int, final_fraction: float = FINAL_FRACTION
) -> list[dict]:
    """Per algorithm: start success, final success (last ``final_fraction`` of episodes; mean and spread over
    seeds), episodes to reach 50% and 80% (median over seeds; ``None`` if a seed never reached it), and the
    critic's calibration (``calibration``: each score's mean, min, max and per-seed values; ``None`` for the
    algorithms without a sequence critic)."""
    rows = []
    for algo in dict.fromkeys(r.algo for r in runs):
        sel = [r for r in runs if r.algo == algo]
        finals = [float(np.mean(final_tail(r.successes, window, final_fraction))) for r in sel]
        reach = {}
        for level in (0.5, 0.8):
            hits = [episodes_to_reach(r, level, window) for r in sel]
            reached = [h for h in hits if h is not None]
            reach[level] = {
                "median": float(np.median(reached)) if len(reached) == len(hits) else None,
                "per_seed": hits,
            }
        rows.append(
            {
                "algo": algo,
                "seeds": [r.seed for r in sel],
                "start_success": start_success,
                "final_success_mean": float(np.mean(finals)),
                "final_success_min": float(np.min(finals)),
                "final_success_max": float(np.max(finals)),
                "final_success_per_seed": finals,
                "episodes_to_50": reach[0.5],
                "episodes_to_80": reach[0.8],
                "seconds_mean": float(np.mean([r.seconds for r in sel])),
                "episodes": int(np.median([len(r.successes) for r in sel])),
                "calibration": _summarize_calibration(sel),
            }
        )
    return rows
