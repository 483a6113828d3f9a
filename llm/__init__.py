"""SPPO for language models (prompt -> response as a one-step environment), imported as ``sppo_rl.llm``."""
