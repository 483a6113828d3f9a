"""Train, evaluate and tune SPPO and PPO from the command line, imported as ``sppo_rl.zoo``."""
