"""Bridges from sppo-rl to other training engines, each behind its own extra.

- :mod:`sppo_rl.integrations.verl`: SPPO as a plugin of upstream verl (``pip install "sppo-rl[verl]"``).

Nothing here is imported by ``import sppo_rl``; each bridge imports its engine when it is imported.
"""
