"""``python -m sppo_rl.llm train|eval|make-tiny ...`` (same as the ``sppo-llm`` command)."""

import sys

from .cli import main

sys.exit(main())
