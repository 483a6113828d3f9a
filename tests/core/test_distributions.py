"""The rollout's sampling without distribution objects is SB3's sampling: same draws, log-probs and entropies.

For each action space SPPO supports, the fast functions of :mod:`sppo_rl.distributions` are compared with SB3's own
distribution objects on the same actor output: seeded draws must be identical, log-probabilities and entropies
equal; and many draws must follow the distribution (frequency bounds against the exact probabilities).
"""

import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution, make_proba_distribution
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox, IdentityEnvMultiBinary, IdentityEnvMultiDiscrete

from sppo_rl import SPPO
from sppo_rl.distributions import (
    FastBernoulli,
    FastCategorical,
    FastDiagGaussian,
    FastMultiCategorical,
    fast_distribution,
)

SPACES = {
    "discrete": spaces.Discrete(4),
    "box": spaces.Box(-1.0, 1.0, (3,)),
    "multidiscrete": spaces.MultiDiscrete([3, 2, 4]),
    "multibinary": spaces.MultiBinary(3),
}
OUTPUT_DIM = {"discrete": 4, "box": 3, "multidiscrete": 9, "multibinary": 3}
LOG_STD = th.tensor([-0.5, 0.0, 0.3])


def _sb3_distribution(kind: str, output: th.Tensor):
    dist = make_proba_distribution(SPACES[kind])
    return dist.proba_distribution(output, LOG_STD) if kind == "box" else dist.proba_distribution(output)


def _output(kind: str, n: int = 64) -> th.Tensor:
    return th.randn(n, OUTPUT_DIM[kind], generator=th.Generator().manual_seed(3)) * 2.0


@pytest.mark.parametrize("kind", list(SPACES))
def test_same_seed_same_draws_log_probs_and_entropies_as_sb3(kind):
    fast = fast_distribution(make_proba_distribution(SPACES[kind]))
    log_std = LOG_STD if kind == "box" else None
    output = _output(kind)
    th.manual_seed(11)
    sb3 = _sb3_distribution(kind, output)
    sb3_actions = sb3.get_actions()
    th.manual_seed(11)
    actions, log_prob = fast.sample(output, log_std)
    assert th.equal(actions, sb3_actions)  # the same random calls on the same probabilities
    assert actions.dtype == sb3_actions.dtype
    th.testing.assert_close(log_prob, sb3.log_prob(sb3_actions))
    log_prob2, entropy = fast.log_prob_entropy(output, log_std, actions)
    th.testing.assert_close(log_prob2, log_prob)
    th.testing.assert_close(entropy, sb3.entropy())


def test_fast_distribution_picks_the_class_of_each_space():
    kinds = {kind: type(fast_distribution(make_proba_distribution(space))) for kind, space in SPACES.items()}
    assert kinds == {
        "discrete": FastCategorical,
        "box": FastDiagGaussian,
        "multidiscrete": FastMultiCategorical,
        "multibinary": FastBernoulli,
    }
    with pytest.raises(NotImplementedError, match="SquashedDiagGaussian"):
        fast_distribution(SquashedDiagGaussianDistribution(2))


N_DRAWS = 40_000


def _within(freq: np.ndarray, p: np.ndarray, n: int) -> bool:
    """Every frequency within 5 standard errors of its probability (the draws are seeded: no flakiness)."""
    return bool(np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12))


def test_categorical_draws_follow_the_softmax():
    logits = th.tensor([[2.0, 0.5, -1.0, 0.0]]).repeat(N_DRAWS, 1)
    th.manual_seed(0)
    actions, log_prob = FastCategorical().sample(logits, None)
    p = th.softmax(logits[0], -1).numpy()
    freq = np.bincount(actions.numpy(), minlength=4) / N_DRAWS
    assert _within(freq, p, N_DRAWS)
    chi2 = float(((freq - p) ** 2 / p).sum() * N_DRAWS)
    assert chi2 < 16.27  # the 0.999 quantile of chi-square with 3 degrees of freedom
    th.testing.assert_close(log_prob, th.log(th.as_tensor(p))[actions])


def test_multi_categorical_draws_follow_each_dimension():
    logits = th.tensor([[1.0, 0.0, -1.0, 0.5, -0.5, 0.0, 1.0, 2.0, -2.0]]).repeat(N_DRAWS, 1)
    th.manual_seed(1)
    actions, _ = FastMultiCategorical([3, 2, 4]).sample(logits, None)
    for dim, (lo, hi) in enumerate([(0, 3), (3, 5), (5, 9)]):
        p = th.softmax(logits[0, lo:hi], -1).numpy()
        freq = np.bincount(actions[:, dim].numpy(), minlength=hi - lo) / N_DRAWS
        assert _within(freq, p, N_DRAWS), dim


def test_bernoulli_draws_follow_the_sigmoid():
    logits = th.tensor([[-1.5, 0.0, 2.0]]).repeat(N_DRAWS, 1)
    th.manual_seed(2)
    actions, _ = FastBernoulli().sample(logits, None)
    assert set(th.unique(actions).tolist()) <= {0.0, 1.0}
    assert _within(actions.mean(0).numpy(), th.sigmoid(logits[0]).numpy(), N_DRAWS)


def test_gaussian_draws_have_the_mean_and_std():
    mean = th.tensor([[0.5, -1.0, 0.0]]).repeat(N_DRAWS, 1)
    th.manual_seed(3)
    actions, log_prob = FastDiagGaussian().sample(mean, LOG_STD)
    std = LOG_STD.exp()
    se = (std / math.sqrt(N_DRAWS)).numpy()
    assert np.all(np.abs(actions.mean(0).numpy() - mean[0].numpy()) < 5 * se)
    assert np.all(np.abs(actions.std(0).numpy() / std.numpy() - 1) < 5 / math.sqrt(2 * N_DRAWS))
    z = (actions - mean) / std
    expected = (-0.5 * z**2 - LOG_STD - 0.5 * math.log(2 * math.pi)).sum(1)
    th.testing.assert_close(log_prob, expected)


ENVS = {
    "discrete": lambda: IdentityEnv(4, ep_length=8),
    "box": lambda: IdentityEnvBox(ep_length=8),
    "multidiscrete": lambda: IdentityEnvMultiDiscrete(2, ep_length=8),
    "multibinary": lambda: IdentityEnvMultiBinary(3, ep_length=8),
}


@pytest.mark.parametrize("kind", list(ENVS))
def test_policy_samples_as_its_sb3_distribution(kind):
    model = SPPO("MlpPolicy", make_vec_env(ENVS[kind], n_envs=1), policy_kwargs=dict(net_arch=[16]), seed=0)
    policy = model.policy
    obs = th.as_tensor(np.stack([model.observation_space.sample() for _ in range(32)])).float()
    with th.no_grad():
        th.manual_seed(5)
        distribution = policy.get_distribution(obs)
        expected = distribution.get_actions()
        th.manual_seed(5)
        actions, log_prob = policy.sample_actions(obs)
        assert th.equal(actions, expected)
        th.testing.assert_close(log_prob, distribution.log_prob(expected))
        log_prob2, entropy = policy.log_prob_and_entropy(obs, actions.float())  # as stored by the buffer
        th.testing.assert_close(log_prob2, log_prob)
        th.testing.assert_close(entropy, distribution.entropy())
