"""SPPO as a drop-in for SB3's PPO: PPO's keywords and policy_kwargs, one copy of each tensor, save and load."""

import inspect
import warnings

import numpy as np
import pytest
import torch as th
from sppo_rl.envs.toy import LineTargetEnv
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.vec_env import DummyVecEnv

from sppo_rl import SPPO
from sppo_rl.arguments import PPO_KEYWORDS
from sppo_rl.buffers import EpisodeRolloutBuffer
from sppo_rl.policies import SPPOPolicy


def _env(n_envs=1):
    return make_vec_env(LineTargetEnv, n_envs=n_envs, seed=0)


def _linear_shapes(module):
    return [tuple(m.weight.shape) for m in module.modules() if isinstance(m, th.nn.Linear)]


# ---- policy_kwargs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "net_arch",
    [dict(pi=[8]), dict(vf=[8]), dict(pi=[8, 4], vf=[6]), [5, 5], [dict(vf=[8])], [dict(pi=[8], vf=[3])], None],
)
def test_net_arch_builds_the_networks_ppo_builds(net_arch):
    """Every form PPO accepts gives SPPO the actor of PPO, and a critic trunk of PPO's value layers."""
    env = _env()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 warns about the pre-1.8 list form, for PPO and SPPO alike
        ppo = PPO("MlpPolicy", env, policy_kwargs=dict(net_arch=net_arch))
        sppo = SPPO("MlpPolicy", env, policy_kwargs=dict(net_arch=net_arch))
    actor = th.nn.ModuleList([sppo.policy.mlp_extractor, sppo.policy.action_net])
    assert _linear_shapes(actor) == _linear_shapes(th.nn.ModuleList([ppo.policy.mlp_extractor.policy_net,
                                                                     ppo.policy.action_net]))  # fmt: skip
    assert _linear_shapes(sppo.policy.critic.trunk) == _linear_shapes(ppo.policy.mlp_extractor.value_net)
    sppo.learn(20)


@pytest.mark.parametrize(
    ("net_arch", "match"),
    [
        (dict(pi=[8], qf=[8]), "unknown keys \\['qf'\\]"),
        (dict(pi=[8.5]), "net_arch\\['pi'\\] must be a list of positive layer sizes"),
        ([64, dict(pi=[8], vf=[8])], "shared by the actor and the critic"),
        ([0], "net_arch must be a list of positive layer sizes"),
    ],
)
def test_net_arch_that_ppo_would_misread_is_refused_with_the_reason(net_arch, match):
    with pytest.raises(ValueError, match=match):
        SPPO("MlpPolicy", _env(), policy_kwargs=dict(net_arch=net_arch))


def test_every_actor_critic_policy_argument_is_an_sppo_policy_argument():
    ppo_args = set(inspect.signature(ActorCriticPolicy.__init__).parameters)
    assert ppo_args <= set(inspect.signature(SPPOPolicy.__init__).parameters)


def test_share_features_extractor_false_is_accepted_and_true_refused():
    model = SPPO("MlpPolicy", _env(), policy_kwargs=dict(share_features_extractor=False))
    assert model.policy.share_features_extractor is False
    with pytest.raises(ValueError, match="share_features_extractor=True: the SPPO critic is decoupled"):
        SPPO("MlpPolicy", _env(), policy_kwargs=dict(share_features_extractor=True))


def test_gsde_options_as_ppo_takes_them_without_gsde():
    # full_std and use_expln are ignored without gSDE, as in PPO; squash_output needs gSDE (PPO asserts)
    SPPO("MlpPolicy", _env(), policy_kwargs=dict(full_std=False, use_expln=True, log_std_init=-1.0))
    with pytest.raises(ValueError, match="squash_output=True: SB3 squashes actions only with gSDE"):
        SPPO("MlpPolicy", _env(), policy_kwargs=dict(squash_output=True))


# ---- one copy of each tensor -------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["MlpPolicy", "CnnPolicy"])
def test_state_dict_holds_each_tensor_once_and_the_aliases_still_read(policy):
    if policy == "CnnPolicy":
        env = make_vec_env(lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1), n_envs=1)
    else:
        env = _env()
    model = SPPO(policy, env, n_steps=16, batch_episodes=2, n_epochs=1)
    state = model.policy.state_dict()
    storages = [t.untyped_storage().data_ptr() for t in state.values()]
    assert len(storages) == len(set(storages)), "a tensor is listed under two names"
    assert not [k for k in state if k.startswith(("value_net.", "pi_features_extractor.", "vf_features_extractor."))]
    n_params = sum(p.numel() for p in model.policy.parameters())
    assert sum(t.numel() for k, t in state.items() if "running" not in k and "num_" not in k) >= n_params
    # SB3 code that reads the aliases still finds the modules
    assert model.policy.value_net is model.policy.critic
    assert model.policy.pi_features_extractor is model.policy.features_extractor
    assert model.policy.vf_features_extractor is model.policy.critic.features_extractor
    model.learn(20)


def test_saved_file_holds_the_critic_once(tmp_path):
    model = SPPO("MlpPolicy", _env(), n_steps=16, batch_episodes=2, n_epochs=1, policy_kwargs=dict(net_arch=[8]))
    model.save(tmp_path / "m.zip")
    _, params, _ = load_from_zip_file(tmp_path / "m.zip")
    keys = list(params["policy"])
    assert sorted(k for k in keys if "critic" in k or "value" in k) == sorted(
        f"critic.{k}" for k in model.policy.critic.state_dict()
    )


def test_partial_set_parameters_does_not_depend_on_key_order():
    model = SPPO("MlpPolicy", _env(), policy_kwargs=dict(net_arch=[8]), seed=0)
    params = model.get_parameters()["policy"]
    new_head = th.full_like(params["critic.head.linear.weight"], 0.25)
    new_actor = th.full_like(params["action_net.weight"], -0.5)
    for order in ([("critic.head.linear.weight", new_head), ("action_net.weight", new_actor)],
                  [("action_net.weight", new_actor), ("critic.head.linear.weight", new_head)]):  # fmt: skip
        other = SPPO("MlpPolicy", _env(), policy_kwargs=dict(net_arch=[8]), seed=1)
        other.set_parameters({"policy": dict(order)}, exact_match=False)
        assert th.equal(other.policy.critic.head.linear.weight.detach(), new_head)
        assert th.equal(other.policy.action_net.weight.detach(), new_actor)


def test_files_written_with_the_aliases_still_load():
    model = SPPO("MlpPolicy", _env(), policy_kwargs=dict(net_arch=[8]), seed=0)
    old_style = {}
    for key, value in model.policy.state_dict().items():
        old_style[key] = value.clone()
        if key.startswith("critic."):  # files written before the fix held the critic twice
            old_style["value_net." + key[len("critic.") :]] = value.clone()
    other = SPPO("MlpPolicy", _env(), policy_kwargs=dict(net_arch=[8]), seed=1)
    other.policy.load_state_dict(old_style)
    for key, value in model.policy.state_dict().items():
        assert th.equal(other.policy.state_dict()[key], value), key
    # an alias alone fills its tensor; an alias that contradicts its tensor is refused, whatever the order
    only_alias = {"value_net.head.linear.bias": th.tensor([0.75])}
    other.policy.load_state_dict(only_alias, strict=False)
    assert other.policy.critic.head.linear.bias.item() == 0.75
    clash = {"value_net.head.linear.bias": th.tensor([1.0]), "critic.head.linear.bias": th.tensor([2.0])}
    for items in (list(clash.items()), list(clash.items())[::-1]):
        with pytest.raises(ValueError, match="name the same tensor but hold different values"):
            other.policy.load_state_dict(dict(items), strict=False)


# ---- load with policy_kwargs -------------------------------------------------------------------------------------


def test_load_accepts_the_policy_kwargs_it_was_trained_with(tmp_path):
    kwargs = dict(net_arch=dict(pi=[8], vf=[4]), activation_fn=th.nn.ReLU)
    model = SPPO("MlpPolicy", _env(), n_steps=16, batch_episodes=2, n_epochs=1, policy_kwargs=kwargs)
    model.learn(20)  # value_head="auto" is resolved and stored
    model.save(tmp_path / "m.zip")
    for given in (kwargs, {**kwargs, "value_head": "auto"}, {**kwargs, "value_head": "bernoulli"}):
        loaded = SPPO.load(tmp_path / "m.zip", env=_env(), policy_kwargs=given)
        assert loaded.policy.critic_net_arch == [4] and loaded.value_head == "bernoulli"
    with pytest.raises(ValueError, match=r"differ from the model's in \['net_arch'\]"):
        SPPO.load(tmp_path / "m.zip", env=_env(), policy_kwargs={**kwargs, "net_arch": [8]})
    with pytest.raises(ValueError, match=r"differ from the model's in \['value_head'\]"):
        SPPO.load(tmp_path / "m.zip", env=_env(), policy_kwargs={**kwargs, "value_head": "gaussian"})


# ---- PPO's own keywords ------------------------------------------------------------------------------------------

# Every keyword of PPO's constructor, with a value a PPO script might pass, and what SPPO does with it:
# "meaning": accepted and used; "warn": accepted, ignored with a warning; "refuse": ValueError naming the equivalent.
PPO_CALL = {
    "learning_rate": (1e-3, "meaning"),
    "n_steps": (64, "meaning"),
    "batch_size": (64, "refuse: batch_episodes"),
    "n_epochs": (4, "meaning"),
    "gamma": (0.99, "warn"),
    "gae_lambda": (0.95, "warn"),
    "clip_range": (0.1, "meaning"),
    "clip_range_vf": (0.2, "warn"),
    "normalize_advantage": (True, "meaning"),
    "ent_coef": (0.01, "meaning"),
    "vf_coef": (0.5, "warn"),
    "max_grad_norm": (0.5, "meaning"),
    "use_sde": (False, "meaning"),
    "sde_sample_freq": (4, "warn"),
    "rollout_buffer_class": (EpisodeRolloutBuffer, "meaning"),
    "rollout_buffer_kwargs": ({}, "meaning"),
    "target_kl": (0.02, "meaning"),
    "stats_window_size": (50, "meaning"),
    "tensorboard_log": (None, "meaning"),
    "policy_kwargs": (dict(net_arch=dict(pi=[8], vf=[8])), "meaning"),
    "verbose": (0, "meaning"),
    "seed": (3, "meaning"),
    "device": ("cpu", "meaning"),
}


def test_the_table_covers_every_ppo_keyword():
    ppo = set(inspect.signature(PPO.__init__).parameters) - {"self", "policy", "env", "_init_setup_model"}
    assert set(PPO_CALL) == ppo
    assert ppo <= set(inspect.signature(SPPO.__init__).parameters)
    assert set(PPO_KEYWORDS) == {k for k, (_, what) in PPO_CALL.items() if what != "meaning"} | {"use_sde"}


@pytest.mark.parametrize("keyword", list(PPO_CALL))
def test_each_ppo_keyword_is_used_warned_about_or_refused(keyword):
    value, what = PPO_CALL[keyword]
    if what.startswith("refuse"):
        with pytest.raises(ValueError, match=f"{keyword}=.*use {what.split(': ')[1]}="):
            SPPO("MlpPolicy", _env(), **{keyword: value})
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = SPPO("MlpPolicy", _env(), **{**dict(n_steps=16, batch_episodes=2, n_epochs=1), keyword: value})
    ours = [w for w in caught if str(w.message).startswith("SPPO ignores")]
    if what == "warn":
        assert len(ours) == 1 and f"SPPO ignores {keyword}={value!r}" in str(ours[0].message)
        assert ours[0].filename == __file__  # points at the caller's line
    else:
        assert not ours
        stored = getattr(model, keyword, getattr(model, f"_{keyword}", None))
        if keyword not in ("policy_kwargs", "seed", "device", "learning_rate", "clip_range", "use_sde"):
            assert stored == value
    model.learn(20)


def test_ppo_keyword_warning_is_shown_once_per_call_site():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's default: once per place in the code
        for _ in range(3):
            SPPO("MlpPolicy", _env(), gamma=0.99)
    assert len([w for w in caught if "SPPO ignores gamma" in str(w.message)]) == 1


def test_sb3_rollout_buffer_class_is_refused_naming_the_reason():
    from stable_baselines3.common.buffers import RolloutBuffer

    with pytest.raises(ValueError, match="rollout_buffer_class must be EpisodeRolloutBuffer"):
        SPPO("MlpPolicy", _env(), rollout_buffer_class=RolloutBuffer)


def test_a_ppo_script_runs_with_sppo_swapped_in():
    env = DummyVecEnv([LineTargetEnv, LineTargetEnv])
    policy_kwargs = dict(net_arch=dict(pi=[16], vf=[16]), share_features_extractor=False)
    kwargs = dict(learning_rate=3e-4, n_steps=32, n_epochs=2, gamma=1.0, gae_lambda=1.0, clip_range=0.2,
                  normalize_advantage=True, ent_coef=0.0, max_grad_norm=0.5, use_sde=False, target_kl=None,
                  policy_kwargs=policy_kwargs, seed=0)  # fmt: skip
    for cls in (PPO, SPPO):
        model = cls("MlpPolicy", env, **kwargs)
        model.learn(64)
        assert model.num_timesteps >= 64 and np.isfinite(model.logger.name_to_value["train/approx_kl"])
