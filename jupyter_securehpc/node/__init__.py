"""The secure node launcher: what runs inside the Slurm job on a compute node."""
