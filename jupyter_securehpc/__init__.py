"""jupyter-securehpc: encrypted, network-isolated JupyterLab projects on Slurm GPU clusters."""

__version__ = "0.1.0.dev0"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where JupyterLab finds the prebuilt extension (``jupyter labextension develop`` uses it too)."""
    return [{"src": "labextension", "dest": "jupyter-securehpc-labextension"}]
