"""jupyter-securehpc: encrypted, network-isolated JupyterLab projects on Slurm GPU clusters."""

__version__ = "0.1.0.dev0"
