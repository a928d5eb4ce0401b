"""``python -m jupyter_securehpc.portal``: what the hub's service entry runs (see hubconfig.py)."""

from .app import main

main()
