"""Train, evaluate and tune SPPO and PPO from the command line, imported as ``sppo_rl.zoo``.

``sppo-zoo train | eval | tune`` (or ``python -m sppo_rl.zoo``), in the style of rl-baselines3-zoo; see
``docs/zoo.md``. Modules: :mod:`~sppo_rl.zoo.cli` (the command), :mod:`~sppo_rl.zoo.train`,
:mod:`~sppo_rl.zoo.evaluate`, :mod:`~sppo_rl.zoo.tune`, :mod:`~sppo_rl.zoo.search_spaces`,
:mod:`~sppo_rl.zoo.hyperparams` (the YAML files in ``hyperparams/``), :mod:`~sppo_rl.zoo.algos` (the algorithm
registry), :mod:`~sppo_rl.zoo.environments`, :mod:`~sppo_rl.zoo.runs` (run folders), :mod:`~sppo_rl.zoo.storage`
(Optuna storages), :mod:`~sppo_rl.zoo.plots`, :mod:`~sppo_rl.zoo.rl_zoo3_bridge`, :mod:`~sppo_rl.zoo.demo`
(``make demo``, the README's main job).
"""
