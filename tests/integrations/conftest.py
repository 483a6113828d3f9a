"""Tests of the bridges to other engines, each run in the engine's own venv (``make test-verl``).

The verl tests are collected only where verl is installed: the project's main venv (``make test``) has no
verl, and ``tests/integrations/verl/conftest.py`` turns any skip into a failure where it is installed.
"""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("verl") else ["verl"]
