"""The three-stage control protocol (``sppo_rl.zoo.protocol``) and ``sppo-zoo suite``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch as th
import yaml
from sppo_rl.envs import get_task, paper_ids
from sppo_rl.zoo import protocol
from sppo_rl.zoo.control_suite import format_table, prepare_start_policy
from sppo_rl.zoo.errors import ZooError

CARTPOLE = "SparsePrecisionCartPole-v0"
PAPER_TASKS = paper_ids()


def small_config(**rl: object) -> protocol.TaskConfig:
    """Precision CartPole's settings with stage 3 shrunk to rollouts of 8 episodes on 4 envs."""
    config = protocol.load_task_config(CARTPOLE)
    config.rl.update({"n_envs": 4, "episodes_per_update": 8, "batch_episodes": 4, "n_epochs": 1, **rl})
    return config


# --- settings ------------------------------------------------------------------------------------------------


def test_suite_yml_covers_the_paper_tasks_with_valid_settings() -> None:
    data = yaml.safe_load(protocol.SUITE_CONFIG.read_text())
    assert set(PAPER_TASKS) <= set(data)
    for env_id in data:
        config = protocol.load_task_config(env_id)
        assert config.dense_id == get_task(env_id).dense_id
        assert config.expert["algo"] in protocol.EXPERT_ALGOS
        low, high = config.bc["target"]
        assert 0 < low < high < 1, env_id  # a non-zero but imperfect start
        assert config.rl["episodes"] >= config.rl["episodes_per_update"] >= 1


def test_unknown_task_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"known: .*SparsePrecisionCartPole-v0"):
        protocol.load_task_config("CartPole-v1")


def test_expert_fingerprint_follows_the_expert_settings() -> None:
    a, b = protocol.load_task_config(CARTPOLE), protocol.load_task_config(CARTPOLE)
    assert a.expert_fingerprint() == b.expert_fingerprint()
    b.expert["timesteps"] += 1
    assert a.expert_fingerprint() != b.expert_fingerprint()
    b = protocol.load_task_config(CARTPOLE)
    b.rl["episodes"] += 1  # stage 3 does not change the expert
    assert a.expert_fingerprint() == b.expert_fingerprint()


# --- stage 1 -------------------------------------------------------------------------------------------------


def test_expert_is_cached_and_reused(tmp_path: Path) -> None:
    config = protocol.load_task_config(CARTPOLE)
    config.expert = {"algo": "ppo", "timesteps": 128, "n_envs": 2, "kwargs": {"n_steps": 64, "batch_size": 64}}
    path = protocol.train_expert(config, tmp_path)
    assert path.exists() and path.name.startswith(f"expert_{config.dense_id}_")
    mtime = path.stat().st_mtime_ns
    assert protocol.train_expert(config, tmp_path) == path
    assert path.stat().st_mtime_ns == mtime  # loaded, not retrained
    assert not list(tmp_path.glob("*.tmp.zip"))


def test_expert_that_never_succeeds_is_an_error_not_a_cached_file(tmp_path: Path) -> None:
    config = protocol.load_task_config(CARTPOLE)
    config.expert = {
        "algo": "ppo",
        "timesteps": 128,
        "n_envs": 2,
        "check_every": 128,
        "check_episodes": 2,
        "kwargs": {"n_steps": 64, "batch_size": 64, "learning_rate": 0.0},  # a random policy: never within 0.5 deg
    }
    with pytest.raises(RuntimeError, match="never succeeded"):
        protocol.train_expert(config, tmp_path)
    assert not list(tmp_path.glob("expert_*.zip"))


# --- stage 2 -------------------------------------------------------------------------------------------------


def test_behaviour_cloning_fits_the_demonstrated_actions() -> None:
    """Clone a scripted rule (push towards the pole's fall) and check that the clone picks its actions."""
    rng = np.random.default_rng(0)
    obs = rng.normal(scale=[0.5, 0.5, 0.05, 0.5], size=(2000, 4)).astype(np.float32)
    actions = (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)
    demos = protocol.Demonstrations(obs, actions, n_episodes=10, n_tried=20)
    assert demos.expert_success_rate == 0.5
    config = protocol.load_task_config(CARTPOLE)
    config.bc = {"lr": 3e-3, "batch_size": 256, "epochs_per_check": 5, "max_epochs": 10, "target": [0.98, 0.99]}
    config.bc["eval_episodes"] = 4
    config.rl["n_envs"] = 4
    clone = protocol.behaviour_clone(config, demos, verbose=0)
    losses = [loss for _, loss, _ in clone.history[1:]]
    assert losses[-1] < losses[0] < np.log(2)
    env = protocol.make_rl_env(config, seed=0)
    model = protocol.make_start_policy(config, env)
    model.policy.load_actor_state_dict(clone.actor_state)
    predicted, _ = model.policy.predict(obs, deterministic=True)
    assert np.mean(predicted == actions) > 0.9


def test_committed_start_policies_are_small_and_match_the_settings() -> None:
    files = sorted(protocol.START_POLICY_DIR.glob("*.pt"))
    assert files, "no start policy is committed"
    for path in files:
        assert path.stat().st_size < 1_000_000
        actor, meta = protocol.load_start_policy(path)
        config = protocol.load_task_config(path.stem)
        assert meta["env_id"] == path.stem
        assert list(meta["net_arch"]) == list(config.net_arch)
        assert 0.0 < meta["start_success"] < 1.0  # non-zero but imperfect
        env = protocol.make_rl_env(config, seed=0, n_envs=1)
        protocol.make_start_policy(config, env).policy.load_actor_state_dict(actor)  # loads without error


def test_start_policy_of_another_task_is_refused(tmp_path: Path) -> None:
    config = protocol.load_task_config(CARTPOLE)
    actor, meta = protocol.load_start_policy(protocol.start_policy_path(CARTPOLE))
    path = tmp_path / "start.pt"
    th.save({"actor": actor, "meta": {**meta, "env_id": "SparsePendulum-v0"}}, path)
    with pytest.raises(ZooError, match="--rebuild-start"):
        prepare_start_policy(config, path, tmp_path, verbose=0)


# --- stage 3 -------------------------------------------------------------------------------------------------


def test_ppo_rollout_holds_the_same_episodes_and_minibatches_as_sppo() -> None:
    config = protocol.load_task_config(CARTPOLE)
    config.rl.update({"n_envs": 8, "episodes_per_update": 64, "batch_episodes": 8})
    n_steps, batch_size = protocol._ppo_rollout(config)
    assert n_steps * 8 == 64 * 200  # 64 full-horizon episodes
    assert (n_steps * 8) // batch_size == 64 // 8  # 8 minibatches, as SPPO's 64 / 8 episodes


@pytest.mark.parametrize(("algo", "gamma", "lam"), [("ppo", 1.0, 1.0), ("ppo-sb3", 0.99, 0.95), ("ema", 1.0, 1.0)])
def test_every_algorithm_starts_from_the_same_actor(algo: str, gamma: float, lam: float) -> None:
    config = small_config()
    actor, _ = protocol.load_start_policy(protocol.start_policy_path(CARTPOLE))
    models = {}
    for name in ("sppo", algo):
        model = protocol.build_rl_model(name, config, protocol.make_rl_env(config, seed=1), seed=1)
        protocol.load_actor(model, actor)
        models[name] = model
    if algo.startswith("ppo"):
        assert (models[algo].gamma, models[algo].gae_lambda) == (gamma, lam)
    obs = th.as_tensor(np.random.default_rng(0).normal(size=(32, 4)), dtype=th.float32)
    probs = {name: m.policy.get_distribution(obs).distribution.probs for name, m in models.items()}
    th.testing.assert_close(probs["sppo"], probs[algo])


@pytest.mark.parametrize(("algo", "estimator"), [("sppo", "sppo"), ("ema", "ema"), ("batch-mean", "batch_mean")])
def test_baseline_ablations_are_sppo_with_another_estimator(algo: str, estimator: str) -> None:
    config = small_config()
    model = protocol.build_rl_model(algo, config, protocol.make_rl_env(config, seed=0), seed=0)
    assert isinstance(model, protocol.SPPO) and model.advantage_estimator == estimator
    assert (model.n_episodes, model.batch_episodes, model.n_epochs) == (8, 4, 1)  # SPPO's settings, all shared
    assert algo in protocol.RL_ALGOS and algo in protocol.CALIBRATED_ALGOS


def test_ablation_options_come_from_its_own_entry() -> None:
    config = small_config(ema={"advantage_estimator_kwargs": {"decay": 0.5}})
    model = protocol.build_rl_model("ema", config, protocol.make_rl_env(config, seed=0), seed=0)
    assert model.advantage_fn.decay == 0.5


def test_unknown_stage3_algorithm() -> None:
    config = small_config()
    with pytest.raises(ValueError, match="sppo, ppo, ppo-sb3, ema, batch-mean"):
        protocol.build_rl_model("a2c", config, protocol.make_rl_env(config, seed=0), seed=0)


def test_run_rl_records_exactly_the_episode_budget() -> None:
    config = small_config(episodes=12, calibration={"states": 3, "rollouts": 2})
    actor, _ = protocol.load_start_policy(protocol.start_policy_path(CARTPOLE))
    for algo in ("sppo", "ppo", "ema"):
        run = protocol.run_rl(algo, config, actor, seed=0)
        assert len(run.successes) == 12
        assert set(run.successes) <= {0.0, 1.0}
        assert run.timesteps >= 12 * 1  # at least one step per episode
        if algo == "ppo":
            assert run.calibration is None
            continue
        assert run.calibration is not None
        assert (run.calibration["states"], run.calibration["rollouts"]) == (3, 2)
        assert len(run.calibration["predictions"]) == len(run.calibration["success_per_state"]) == 3
        # the constant predictor is the mean outcome of the end of training (here the last window of 100 episodes)
        assert run.calibration["train_outcome_mean"] == float(np.mean(run.successes))
        assert "ema_baseline" not in run.calibration  # the budget ended before the first update: no average yet


# --- calibration ---------------------------------------------------------------------------------------------


def _model_with_critic(algo: str, predictions: list[float]) -> protocol.SPPO:
    """A CartPole SPPO model whose critic predicts ``predictions`` for the held-out start states."""
    config = small_config()
    model = protocol.build_rl_model(algo, config, protocol.make_rl_env(config, seed=0), seed=0)
    model.policy.critic.baseline = lambda obs: th.tensor(predictions[: len(obs)])  # type: ignore[method-assign]
    return model


def test_calibration_scores_closed_form(monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    monkeypatch.setattr(protocol, "_policy_outcomes", lambda *args: (np.zeros((2, 4), np.float32), outcomes))
    model = _model_with_critic("ema", [0.5, 0.0])
    model.advantage_fn.baseline = 0.5
    result = protocol.measure_calibration(model, CARTPOLE, train_outcome_mean=0.25, n_states=2, n_rollouts=4)
    assert result["brier"] == pytest.approx(0.125)  # (4 * 0.25 + 4 * 0) / 8
    assert result["brier_constant"] == pytest.approx(0.1875)  # (2 * 0.75 ** 2 + 6 * 0.25 ** 2) / 8
    assert result["bss"] == pytest.approx(1 / 3)
    assert result["held_out_success"] == 0.25
    assert result["bss_base_rate"] == pytest.approx(1 / 3)  # the constant 0.25 is the base rate here
    # within-state variance: mean(0.5 * 0.5, 0) * 4 / 3 = 1 / 6 of a total 0.1875
    assert result["start_state_share"] == pytest.approx(1 - (1 / 6) / 0.1875)
    assert result["success_per_state"] == [0.5, 0.0]
    assert result["ema_baseline"] == 0.5 and result["brier_ema_baseline"] == pytest.approx(0.25)


def test_calibration_skill_is_undefined_when_nothing_varies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "_policy_outcomes", lambda *args: (np.zeros((2, 4), np.float32), np.ones((2, 4))))
    result = protocol.measure_calibration(_model_with_critic("sppo", [0.9, 0.8]), CARTPOLE, 1.0, 2, 4)
    assert result["brier"] == pytest.approx((0.01 + 0.04) / 2) and result["bss"] is None
    with pytest.raises(ValueError, match="2 rollouts"):
        protocol.measure_calibration(_model_with_critic("sppo", [0.5]), CARTPOLE, 0.5, 1, 1)


def test_calibration_rollouts_share_their_start_state_and_brier_decomposes() -> None:
    config = small_config()
    model = protocol.build_rl_model("sppo", config, protocol.make_rl_env(config, seed=0), seed=0)
    actor, _ = protocol.load_start_policy(protocol.start_policy_path(CARTPOLE))
    protocol.load_actor(model, actor)
    starts, outcomes = protocol._policy_outcomes(model, CARTPOLE, [7, 8], 3)
    for row, seed in zip(starts, (7, 8), strict=True):
        np.testing.assert_array_equal(row, gymnasium.make(CARTPOLE).reset(seed=seed)[0])
    assert outcomes.shape == (2, 3) and set(outcomes.ravel()) <= {0.0, 1.0}
    result = protocol.measure_calibration(model, CARTPOLE, 0.3, n_states=4, n_rollouts=3)
    v, p = np.array(result["predictions"]), np.array(result["success_per_state"])
    # binary outcomes: mean_k (v - R_k)^2 = (v - p)^2 + p (1 - p) for every state
    assert result["brier"] == pytest.approx(float(np.mean((v - p) ** 2 + p * (1 - p))))
    assert np.all((v > 0) & (v < 1))  # the Bernoulli head's probabilities


# --- summary -------------------------------------------------------------------------------------------------


def _run(algo: str, seed: int, successes: list[float]) -> protocol.RLRun:
    return protocol.RLRun(algo, seed, successes, seconds=60.0, timesteps=len(successes))


def test_curve_and_episodes_to_reach_closed_form() -> None:
    run = _run("sppo", 0, [0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    x, y = run.curve(window=4)
    np.testing.assert_array_equal(x, [4, 8])
    np.testing.assert_allclose(y, [0.0, 1.0])
    # moving mean over 4 episodes: first >= 0.5 after episode 6, first >= 0.8 (i.e. 1.0) after episode 8
    assert protocol.episodes_to_reach(run, 0.5, window=4) == 6
    assert protocol.episodes_to_reach(run, 0.8, window=4) == 8
    assert protocol.episodes_to_reach(_run("ppo", 0, [0.0] * 10), 0.5, window=4) is None


def test_summarize_aggregates_calibration_and_the_table_shows_it() -> None:
    def calibrated(seed: int, brier: float, bss: float | None) -> protocol.RLRun:
        run = _run("sppo", seed, [1.0] * 8)
        scores = dict.fromkeys(protocol.CALIBRATION_KEYS, 0.5)
        run.calibration = {"states": 32, "rollouts": 8, **scores, "brier": brier, "bss": bss}
        return run

    runs = [calibrated(0, 0.1, 0.2), calibrated(1, 0.2, None), calibrated(2, 0.3, -0.4), _run("ppo", 0, [0.0] * 8)]
    rows = {row["algo"]: row for row in protocol.summarize(runs, start_success=0.5, window=4)}
    calibration = rows["sppo"]["calibration"]
    assert calibration["brier"] == {"mean": pytest.approx(0.2), "min": 0.1, "max": 0.3, "per_seed": [0.1, 0.2, 0.3]}
    assert calibration["bss"]["mean"] == pytest.approx(-0.1) and calibration["bss"]["per_seed"] == [0.2, None, -0.4]
    assert rows["ppo"]["calibration"] is None
    for row in rows.values():
        row["first_window_mean"] = 0.0
    table = format_table(list(rows.values()))
    assert "| 0.200 [0.100, 0.300] | -0.10 [-0.40, +0.20] |" in table
    assert "| n/a | n/a |" in table


def test_summarize_mean_spread_and_unreached_levels() -> None:
    runs = [_run("sppo", 0, [0, 0, 1, 1] * 5), _run("sppo", 1, [1, 1, 1, 1] * 5), _run("ppo", 0, [0, 0, 0, 0] * 5)]
    rows = {row["algo"]: row for row in protocol.summarize(runs, start_success=0.3, window=4)}
    assert rows["sppo"]["final_success_per_seed"] == [0.5, 1.0]  # last max(4, 10% of 20) = 4 episodes
    assert rows["sppo"]["final_success_mean"] == 0.75
    assert rows["sppo"]["episodes_to_50"]["per_seed"] == [4, 4]
    assert rows["sppo"]["episodes_to_80"]["median"] is None  # seed 0 never reaches 80%
    assert rows["ppo"]["final_success_mean"] == 0.0
    for row in rows.values():
        row["first_window_mean"] = 0.0
    table = format_table(list(rows.values()))
    assert "| sppo | 2 | 0.30 |" in table and "1/2 seeds" in table and "never" in table


# --- the command ---------------------------------------------------------------------------------------------


def test_suite_command_writes_curves_summary_and_plot(zoo, tmp_path: Path) -> None:
    entry = yaml.safe_load(protocol.SUITE_CONFIG.read_text())[CARTPOLE]
    entry["rl"].update({"episodes": 16, "n_envs": 4, "episodes_per_update": 8, "batch_episodes": 4, "n_epochs": 1})
    entry["rl"]["calibration"] = {"states": 2, "rollouts": 2}
    config_path = tmp_path / "suite.yml"
    config_path.write_text(yaml.safe_dump({CARTPOLE: entry}))
    argv = ["suite", "--env", CARTPOLE, "--algos", "sppo", "ppo", "--seeds", "0", "1", "--window", "8"]
    result = zoo([*argv, "--config", str(config_path), "--out", "out", "--expert-cache", str(tmp_path / "cache")])
    assert result.code == 0, result.err
    out = tmp_path / "out" / CARTPOLE
    curves = json.loads((out / "curves.json").read_text())
    assert [(r["algo"], r["seed"]) for r in curves["runs"]] == [("sppo", 0), ("ppo", 0), ("sppo", 1), ("ppo", 1)]
    assert all(len(r["successes"]) == 16 for r in curves["runs"])
    assert [r["calibration"] is None for r in curves["runs"]] == [False, True, False, True]
    assert curves["runs"][0]["calibration"]["states"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert [row["algo"] for row in summary["rows"]] == ["sppo", "ppo"]
    _, meta = protocol.load_start_policy(protocol.start_policy_path(CARTPOLE))
    assert summary["rows"][0]["start_success"] == meta["start_success"]
    assert (out / "success.png").read_bytes()[:4] == b"\x89PNG"
    assert "episodes to 50%" in result.out
    assert not (tmp_path / "cache").exists()  # the committed start policy was used: no expert trained


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--algos", "sppo", "a2c"], "Unknown stage-3 algorithm"),
        (["--seeds", "0", "0"], "each once"),
        (["--jobs", "0"], "--jobs"),
        (["--episodes", "0"], "--episodes"),
    ],
)
def test_suite_command_rejects_bad_input(zoo, extra: list[str], message: str) -> None:
    result = zoo(["suite", "--env", CARTPOLE, *extra])
    assert result.code == 2
    assert message in result.err


def test_suite_command_unknown_task(zoo) -> None:
    result = zoo(["suite", "--env", "CartPole-v1"])
    assert result.code == 2
    assert "known:" in result.err


def _part(folder: Path, runs: list[protocol.RLRun], seconds: float, start_success: float = 0.3) -> Path:
    """A finished ``sppo-zoo suite`` folder holding ``runs`` (only what :func:`merge_results` reads)."""
    from sppo_rl.zoo.control_suite import _curves

    folder.mkdir(parents=True)
    summary = {
        "env_id": CARTPOLE,
        "command": f"part {folder.name}",
        "algos": list(dict.fromkeys(r.algo for r in runs)),
        "seeds": sorted({r.seed for r in runs}),
        "episodes": 8,
        "window": 4,
        "jobs": 2,
        "wall_clock_seconds": seconds,
        "start_policy": {"start_success": start_success},
        "config": {"rl": {"episodes": 8}},
        "versions": {},
        "rows": [],
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "curves.json").write_text(json.dumps(_curves(CARTPOLE, 4, start_success, runs)))
    return folder


def test_merge_results_puts_seed_groups_together(tmp_path: Path) -> None:
    from sppo_rl.zoo.control_suite import merge_results

    a = _part(tmp_path / "a", [_run("sppo", 0, [0, 0, 1, 1] * 2), _run("ppo", 0, [0.0] * 8)], seconds=60.0)
    b = _part(tmp_path / "b", [_run("sppo", 3, [1.0] * 8), _run("ppo", 3, [1, 1, 0, 0] * 2)], seconds=30.0)
    merged = merge_results([a, b], tmp_path / "merged")
    assert merged["seeds"] == [0, 3] and merged["wall_clock_seconds"] == 90.0
    assert [part["seeds"] for part in merged["parts"]] == [[0], [3]]
    rows = {row["algo"]: row for row in merged["rows"]}
    assert rows["sppo"]["final_success_per_seed"] == [0.5, 1.0]  # last max(4, 10% of 8) = 4 episodes
    assert rows["ppo"]["final_success_per_seed"] == [0.0, 0.5]
    assert rows["sppo"]["first_window_mean"] == 0.75  # (0.5 + 1) / 2
    curves = json.loads((tmp_path / "merged" / "curves.json").read_text())
    assert [(r["algo"], r["seed"]) for r in curves["runs"]] == [("sppo", 0), ("ppo", 0), ("sppo", 3), ("ppo", 3)]
    assert (tmp_path / "merged" / "success.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ZooError, match="appear twice"):
        merge_results([a, a], tmp_path / "twice")
    other = _part(tmp_path / "c", [_run("sppo", 4, [1.0] * 8)], seconds=1.0, start_success=0.5)
    with pytest.raises(ZooError, match="different start policies"):
        merge_results([a, other], tmp_path / "other")


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_a_killed_suite_takes_its_worker_processes_with_it(tmp_path: Path) -> None:
    """SIGKILL on ``sppo-zoo suite --jobs 2`` (a scheduler's time limit): its two training processes stop too."""
    import signal
    import subprocess
    import sys
    import time

    entry = yaml.safe_load(protocol.SUITE_CONFIG.read_text())[CARTPOLE]
    entry["rl"].update({"episodes": 100_000, "n_envs": 4, "episodes_per_update": 8, "batch_episodes": 4})
    config_path = tmp_path / "suite.yml"
    config_path.write_text(yaml.safe_dump({CARTPOLE: entry}))
    cmd = [sys.executable, "-m", "sppo_rl.zoo", "suite", "--env", CARTPOLE, "--algos", "sppo", "--seeds", "0", "1"]
    cmd += ["--jobs", "2", "--config", str(config_path), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        workers: list[int] = []
        while time.time() < deadline and proc.poll() is None:
            # the two spawned workers (and multiprocessing's resource tracker), once they are training
            workers = [p for p in _children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
            # past the imports (about 3 s of CPU), in the middle of a run
            if len(workers) >= 2 and all(_cpu_seconds(p) > 8 for p in workers):
                break
            time.sleep(0.2)
        assert proc.poll() is None and len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.time() + 60
        while any(_alive(p) for p in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not [p for p in workers if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
