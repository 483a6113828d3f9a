"""sppo-rl: Sequence-Level PPO (SPPO, arXiv 2604.08865) for stable-baselines3 users and LLM fine-tuning.

>>> from sppo_rl import SPPO
>>> model = SPPO("MlpPolicy", "CartPole-v1").learn(10_000)  # doctest: +SKIP
"""

from sppo_rl.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, SPPOPolicy
from sppo_rl.sppo import SPPO, EpisodeLengthError
from sppo_rl.value_heads import BernoulliValueHead, GaussianValueHead, OutcomeError, ValueHead
from sppo_rl.version import __version__

__all__ = [
    "SPPO",
    "BernoulliValueHead",
    "CnnPolicy",
    "EpisodeLengthError",
    "GaussianValueHead",
    "MlpPolicy",
    "MultiInputPolicy",
    "OutcomeError",
    "SPPOPolicy",
    "ValueHead",
    "__version__",
]
