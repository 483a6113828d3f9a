"""Target of the ``verl.plugins`` entry point: ``import verl`` imports this module, which registers SPPO.

Importing :mod:`~sppo_rl.integrations.verl.estimator` registers the ``seq_ppo`` estimator and importing
:mod:`~sppo_rl.integrations.verl.trainer` the ``seq_ppo`` trainer. verl catches any exception raised by a
plugin and logs it at DEBUG level only, so a broken install would go unnoticed until ``trainer_mode=seq_ppo``
is "unknown": this module logs the failure at ERROR level, with the traceback, before verl swallows it.
Without entry points (``VERL_USE_EXTERNAL_PLUGINS=none``), name this module in ``VERL_USE_EXTERNAL_MODULES``.
"""

from __future__ import annotations

import logging

_logger = logging.getLogger(__name__)

try:
    import sppo_rl.integrations.verl.estimator
    import sppo_rl.integrations.verl.trainer  # noqa: F401
except Exception:
    _logger.exception(
        "sppo-rl's verl plugin failed to load: the seq_ppo estimator and trainer are NOT registered. "
        "sppo-rl is tested with the verl version pinned by its [verl] extra (see docs/verl.md)."
    )
    raise
