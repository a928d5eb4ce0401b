"""The words every layer shares: project and dataset names, ``OWNER/DATASET`` references, the store layout.

It sits below ``keys/``, ``stores/`` and ``projects/`` and imports none of them, so that each can use the
same rules without an import pointing back up.
"""

from .datasets import DatasetRef
from .layout import StoreLayout, dataset_parts, datasets_parts, workspace_parts
from .names import MAX_LENGTH, InvalidName, name_key, validate_name

__all__ = [
    "MAX_LENGTH",
    "DatasetRef",
    "InvalidName",
    "StoreLayout",
    "dataset_parts",
    "datasets_parts",
    "name_key",
    "validate_name",
    "workspace_parts",
]
