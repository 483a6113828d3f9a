"""Sparse, verifiable-outcome control tasks (the RLVR control suite), imported as ``sppo_rl.envs``."""
