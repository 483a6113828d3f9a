"""The error type for bad input to the zoo (command line, YAML files, environment ids)."""

from __future__ import annotations

__all__ = ["ZooError"]


class ZooError(Exception):
    """A problem with what the user asked for: the CLI prints its message as one line and exits with code 2.

    Raised for unknown algorithms or environment ids, malformed or unknown hyperparameters, missing runs,
    unusable storages... never for a bug of the zoo itself (those keep their traceback).
    """
