"""``python -m sppo_rl.zoo ...``: the same as the ``sppo-zoo`` command."""

from .cli import main

raise SystemExit(main())
