"""sppo-rl: Sequence-Level PPO (SPPO, arXiv 2604.08865) for stable-baselines3 users and LLM fine-tuning.

>>> from sppo_rl import SPPO
>>> model = SPPO("MlpPolicy", "CartPole-v1").learn(10_000)  # doctest: +SKIP
"""

from sppo_rl.version import __version__

__all__ = ["__version__"]
