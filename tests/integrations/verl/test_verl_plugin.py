"""The plugin loads by itself wherever verl is imported (this process, fresh processes, Ray workers), and says
so loudly when it cannot."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest
import ray

CHECK_REGISTRIES = """
import verl
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
print("estimator", core_algos.ADV_ESTIMATOR_REGISTRY["seq_ppo"].__module__)
print("trainer", TRAINER_REGISTRY["seq_ppo"].__module__)
"""


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this venv that has not imported sppo_rl itself."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


def test_entry_point_is_declared_in_the_verl_plugins_group() -> None:
    (entry,) = [ep for ep in entry_points(group="verl.plugins") if ep.name == "sppo_rl"]
    assert entry.value == "sppo_rl.integrations.verl.plugin"


def test_import_verl_registers_seq_ppo_in_a_fresh_process() -> None:
    result = _python(CHECK_REGISTRIES)
    assert result.returncode == 0, result.stderr
    assert "estimator sppo_rl.integrations.verl.estimator" in result.stdout
    assert "trainer sppo_rl.integrations.verl.trainer" in result.stdout
    assert "verl plugin failed" not in result.stderr


@pytest.mark.parametrize(
    "first_import",
    [
        "import sppo_rl.integrations.verl.estimator",
        "import sppo_rl.integrations.verl.losses",
        "from sppo_rl.integrations.verl import SeqPPOTrainer",
    ],
)
def test_importing_a_module_of_the_plugin_before_verl_registers_everything_once(first_import: str) -> None:
    # verl's import loads the plugin, which imports these modules: no half-imported module may be met
    result = _python(first_import + "\n" + CHECK_REGISTRIES)
    assert result.returncode == 0, result.stderr
    assert "trainer sppo_rl.integrations.verl.trainer" in result.stdout
    assert "verl plugin failed" not in result.stderr


def test_verl_use_external_modules_also_loads_it_when_entry_points_are_off() -> None:
    result = _python(
        CHECK_REGISTRIES,
        VERL_USE_EXTERNAL_PLUGINS="none",
        VERL_USE_EXTERNAL_MODULES="sppo_rl.integrations.verl.plugin",
    )
    assert result.returncode == 0, result.stderr
    assert "trainer sppo_rl.integrations.verl.trainer" in result.stdout


def test_a_plugin_that_fails_to_import_logs_an_error_with_its_traceback() -> None:
    # the trainer module made unimportable, as a verl release that moved PPOTrainerSync would
    result = _python("import sys; sys.modules['sppo_rl.integrations.verl.trainer'] = None; import verl")
    assert result.returncode == 0  # verl swallows plugin errors...
    assert "ERROR" in result.stderr  # ...at DEBUG level; ours is logged at ERROR, with the cause
    assert "sppo-rl's verl plugin failed to load: the seq_ppo estimator and trainer are NOT registered" in (
        result.stderr
    )
    assert "Traceback" in result.stderr and "sppo_rl.integrations.verl.trainer" in result.stderr


@ray.remote
def _registries_in_worker() -> tuple[int, bool, str, str]:
    import sys

    import verl  # noqa: F401  (a worker imports verl; the entry point does the rest)
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    return (
        os.getpid(),
        "sppo_rl.integrations.verl.plugin" in sys.modules,
        core_algos.ADV_ESTIMATOR_REGISTRY["seq_ppo"].__module__,
        TRAINER_REGISTRY["seq_ppo"].__module__,
    )


def test_plugin_loads_inside_ray_workers(local_ray: None) -> None:
    pid, plugin_imported, estimator_module, trainer_module = ray.get(_registries_in_worker.remote(), timeout=300)
    assert pid != os.getpid()
    assert plugin_imported
    assert estimator_module == "sppo_rl.integrations.verl.estimator"
    assert trainer_module == "sppo_rl.integrations.verl.trainer"
