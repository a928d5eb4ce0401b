"""The secure Slurm spawner: a project's JupyterLab on a GPU node, in the node launcher's sandbox.

``options`` (what a user may choose), ``script`` (the batch script, from validated values only) and
``api`` (the strict port report that replaces batchspawner's callback) are the guards; ``spawner`` joins
them with OpenBao and Slurm.
"""
